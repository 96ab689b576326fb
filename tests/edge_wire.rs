//! IDM's wire at the pingora edge, spoken over raw TCP (HTTP client libraries escape or
//! refuse what these tests need to send): query characters that curl sends raw and Jetty
//! accepts, and CREST JSON errors for everything the framework itself refuses.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::fixtures::shipped;
use common::*;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

const ADMIN_HEADERS: &str =
    "X-OpenIDM-Username: openidm-admin\r\nX-OpenIDM-Password: openidm-admin\r\n";

/// A response read off the socket: status, headers (lowercased names) and body.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// A CREST error with this status: JSON body `{"code","reason","message"}`, JSON
    /// content type, no `Server` header.
    fn assert_crest_error(&self, status: u16, what: &str) -> Value {
        assert_eq!(self.status, status, "{what}: {self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|v| v.starts_with("application/json")),
            "{what}: {self:?}"
        );
        assert_no_server_header(&self.headers, what);
        let body = self.json();
        assert_eq!(body["code"], status, "{what}: {body}");
        assert!(body["reason"].is_string(), "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        body
    }
}

fn assert_no_server_header(headers: &[(String, String)], what: &str) {
    assert!(
        !headers.iter().any(|(n, _)| n == "server"),
        "{what}: a Server header was sent: {headers:?}"
    );
}

/// Writes `request` and reads the whole answer (the gateway closes after it: every
/// request here says `Connection: close` or is refused, which closes the connection).
fn raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A refused request may be answered and closed before all of it was written.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out)
}

fn parse_response(out: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(out);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // An unpaged query is streamed: chunked on HTTP/1.1.
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(&out[head.len() + 4..])
    } else {
        body.to_owned()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// The payload of a complete chunked body.
fn dechunk(mut raw: &[u8]) -> String {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("chunk size line missing: {raw:?}"));
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return String::from_utf8(body).unwrap();
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Reads one response framed by its `Content-Length`, leaving the connection open.
fn read_one_response(s: &mut TcpStream) -> RawResponse {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((_, rest)) = text.split_once("\r\n\r\n") {
            let r = parse_response(&out);
            let len: usize = r.header("content-length").unwrap().parse().unwrap();
            if rest.len() >= len {
                return r;
            }
        }
    }
}

/// `GET <target>` as the admin, the target written to the socket exactly as given.
fn raw_get(addr: SocketAddr, target: &str) -> RawResponse {
    raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{ADMIN_HEADERS}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// Every character of the brief, raw, in one filter value: a `"` and a `\` escaped for
/// the filter grammar (`\"`, `\\`), the others as they are.
const ODD_NAME: &str = "q\"<b>{c}|^`\\";
const ODD_FILTER_QUERY: &str = "_queryFilter=userName+eq+\"q\\\"<b>{c}|^`\\\\\"&_fields=userName";

async fn gateway_with_users() -> Gateway {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    for (id, name) in [("psmith", "psmith"), ("odd", ODD_NAME), ("other", "other")] {
        let r = gw
            .put(&format!("/openidm/managed/user/{id}"))
            .header("If-None-Match", "*")
            .json(&json!({"userName": name, "givenName": "G", "sn": "S",
                "mail": format!("{id}@example.com"), "password": "Passw0rd!"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    gw
}

fn user_names(body: &Value) -> Vec<&str> {
    body["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result: {body}"))
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_query_characters_are_accepted_and_mean_what_they_say() {
    let gw = gateway_with_users().await;
    // The README's walkthrough line, as curl sends it.
    let r = raw_get(
        gw.addr,
        "/openidm/managed/user?_queryFilter=userName+eq+\"psmith\"&_fields=userName,mail",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(user_names(&body), ["psmith"], "{body}");
    assert_eq!(body["result"][0]["mail"], "psmith@example.com");

    // All of them at once, decoded exactly once: only the user with that exact name.
    let r = raw_get(
        gw.addr,
        &format!("/openidm/managed/user?{ODD_FILTER_QUERY}"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(user_names(&r.json()), [ODD_NAME], "{r:?}");

    // Raw and percent-encoded forms mix, as they do in a browser's address bar.
    let r = raw_get(
        gw.addr,
        "/openidm/managed/user?_queryFilter=userName%20eq%20\"psmith\"&_fields=userName",
    );
    assert_eq!(user_names(&r.json()), ["psmith"], "{r:?}");

    // In a path too (`` ` `` and `<`, `>` are refused there by the URI type).
    let r = raw_get(gw.addr, "/openidm/managed/user/q\"<b>`");
    let body = r.assert_crest_error(404, "odd id");
    assert!(
        body["message"].as_str().unwrap().contains("q\"<b>`"),
        "the id is decoded once: {body}"
    );

    // An encoded `%22` is a quote character, not the three characters `%22`.
    let r = raw_get(
        gw.addr,
        "/openidm/managed/user?_queryFilter=userName+eq+\"%2522\"&_fields=userName",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["resultCount"], 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_query_characters_reach_a_remote_equivalently() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.idm-dc1", basic_instance(&up.url(), "u", "p"))
        .start()
        .await;
    let r = raw_get(
        gw.addr,
        &format!("/openidm/external/idm/dc1/managed/user?{ODD_FILTER_QUERY}"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let forwarded = up.last().unwrap();
    assert_eq!(forwarded.path(), "/openidm/managed/user");
    let decode = |q: &str| percent_decode_str(q).decode_utf8().unwrap().into_owned();
    assert_eq!(
        decode(forwarded.query().unwrap()),
        decode(ODD_FILTER_QUERY),
        "forwarded {:?}",
        forwarded.uri
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_raw_characters_keeps_its_body_and_the_next_request() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.idm-dc1", basic_instance(&up.url(), "u", "p"))
        .start()
        .await;
    let body = br#"{"userName":"x\"<y>"}"#;
    // Header and body in one write, so the escape has a body behind the header to keep; then
    // a second request on the same connection (pingora does not pipeline: one at a time).
    let mut first = format!(
        "POST /openidm/external/idm/dc1/managed/user?_action=create&q=\"<a>\" HTTP/1.1\r\nHost: x\r\n{ADMIN_HEADERS}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    first.extend_from_slice(body);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&first).unwrap();
    let r = read_one_response(&mut s);
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(r.header("connection"), Some("close"), "{r:?}");
    s.write_all(
        format!("GET /openidm/external/idm/dc1/second?b=`x` HTTP/1.1\r\nHost: x\r\n{ADMIN_HEADERS}Connection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = parse_response(&out);
    assert_eq!(r.status, 200, "{r:?}");

    let seen = up.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body_len, body.len() as u64);
    assert_eq!(seen[0].body_sha256, sha256_hex(body));
    assert_eq!(seen[1].path(), "/openidm/second");
    let decode = |q: &str| percent_decode_str(q).decode_utf8().unwrap().into_owned();
    assert_eq!(decode(seen[0].query().unwrap()), "_action=create&q=\"<a>\"");
    assert_eq!(decode(seen[1].query().unwrap()), "b=`x`");
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_query_characters_through_a_gateway_to_a_second_one() {
    let b = gateway_with_users().await;
    let a = Gateway::builder()
        .conf_file(
            "external.idm-b",
            basic_instance(
                &format!("{}/openidm/", b.base_url()),
                "openidm-admin",
                "openidm-admin",
            ),
        )
        .start()
        .await;
    let r = raw_get(
        a.addr,
        &format!("/openidm/external/idm/b/managed/user?{ODD_FILTER_QUERY}"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(user_names(&r.json()), [ODD_NAME], "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_stay_refused_with_raw_characters_around_them() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.idm-dc1", basic_instance(&up.url(), "u", "p"))
        .start()
        .await;
    for target in [
        "/openidm/external/idm/dc1/../config?q=\"x\"",
        "/openidm/external/idm/dc1/%2e%2e/config?q=<x>",
        "/openidm/external/idm/dc1/a%2fb?q=`",
        "/openidm/external/idm/dc1/\"x\"/../../config",
    ] {
        raw_get(gw.addr, target).assert_crest_error(400, target);
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_the_framework_cannot_read_get_crest_errors() {
    let gw = Gateway::start().await;
    let mut too_large = b"GET /openidm/info/ping HTTP/1.1\r\nHost: x\r\n".to_vec();
    // Few headers (a count over httparse's limit would be refused for that instead), 1.2 MB.
    for i in 0..20 {
        too_large.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(60_000)).as_bytes());
    }
    too_large.extend_from_slice(b"\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "bad request line",
            b"GET /openidm/info/ping HTTP/7.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        ("not HTTP at all", b"\x16\x03\x01 hello\r\n\r\n".to_vec(), 400),
        (
            "bad header name",
            b"GET /openidm/info/ping HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n".to_vec(),
            400,
        ),
        (
            "invalid Content-Length",
            b"POST /openidm/managed/user HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "conflicting Content-Length",
            b"POST /openidm/managed/user HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            b"POST /openidm/managed/user HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "non-chunked final Transfer-Encoding",
            b"POST /openidm/managed/user HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "two Host headers",
            b"GET /openidm/info/ping HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec(),
            400,
        ),
        ("headers too large", too_large, 431),
        (
            "CONNECT",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
            405,
        ),
    ];
    for (what, request, status) in cases {
        let r = raw(gw.addr, &request);
        let body = r.assert_crest_error(status, what);
        assert!(
            !body["message"].as_str().unwrap().contains("buf:"),
            "{what}: the request bytes must not be echoed: {body}"
        );
    }
    // The gateway is still serving.
    raw_get(gw.addr, "/openidm/info/ping").json();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_response_names_pingora() {
    let up = RecordingUpstream::start();
    up.add_response_header("Server", "Pingora");
    let gw = Gateway::builder()
        .conf_file("external.idm-dc1", basic_instance(&up.url(), "u", "p"))
        .start()
        .await;
    for target in [
        "/openidm/info/ping",
        "/openidm/config",
        "/openidm/managed/nothing",
        "/elsewhere",
        "/openidm/external/idm/dc1/managed/user?_queryFilter=true",
        "/openidm/external/idm/nope/managed/user",
    ] {
        let r = raw_get(gw.addr, target);
        assert_no_server_header(&r.headers, target);
    }
    assert_eq!(up.count(), 1);
}

/// How long pingora waits for more of a caller's request: the keepalive timeout of a
/// connection for its header, the session's read timeout for its body (both 60 s).
const CALLER_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_stops_arriving_gets_a_408() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file("external.idm-dc1", {
            // The remote waits for the body too: its own timeout must not fire first.
            let mut instance = basic_instance(&up.url(), "u", "p");
            instance["readTimeout"] = json!(CALLER_READ_TIMEOUT.as_secs() * 2000);
            instance
        })
        .start()
        .await;
    let partial_body = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{ADMIN_HEADERS}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"userName\":"
        )
    };
    let cases = [
        (
            "header",
            "GET /openidm/info/ping HTTP/1.1\r\nHost: x\r\n".to_owned(),
        ),
        (
            "local body",
            partial_body("/openidm/managed/user?_action=create"),
        ),
        (
            "proxied body",
            partial_body("/openidm/external/idm/dc1/managed/user?_action=create"),
        ),
    ];
    // The three wait out the timeout side by side; each reads until the gateway closes.
    let addr = gw.addr;
    let waits: Vec<_> = cases
        .into_iter()
        .map(|(what, request)| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(CALLER_READ_TIMEOUT * 2)).unwrap();
                s.write_all(request.as_bytes()).unwrap();
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                (what, out)
            })
        })
        .collect();
    for wait in waits {
        let (what, out) = wait.join().unwrap();
        assert!(!out.is_empty(), "{what}: no answer; log:\n{}", gw.logs());
        parse_response(&out).assert_crest_error(408, what);
    }
    assert!(
        up.requests().iter().all(|r| !r.body_complete),
        "no half-read body was passed on as complete"
    );
}
