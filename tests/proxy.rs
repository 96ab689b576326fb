//! The federation proxy end to end: the real binary in front of recording, TLS, fault
//! and gateway upstreams.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const USER_PATH: &str = "/openidm/external/idm/dc1/managed/user";

async fn gateway_with(instance: Value) -> Gateway {
    Gateway::builder()
        .conf_file("external.idm-dc1", instance)
        .start()
        .await
}

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_path_query_and_rewrites_headers() {
    let up = RecordingUpstream::start();
    let gw = gateway_with(basic_instance(&up.url(), "remote-user", "remote-pw")).await;
    let query =
        "_queryFilter=userName%20eq%20%22b%C3%A9a%22&_fields=_id,userName&x=1+2&empty=&flag";
    let resp = gw
        .get(&format!("{USER_PATH}?{query}"))
        .header("X-Requested-With", "XMLHttpRequest")
        .header("Cookie", "session-jwt=caller-secret")
        .header("Accept-API-Version", "protocol=2.1,resource=1.0")
        .header("If-None-Match", "\"0000000012\"")
        .header("X-ForgeRock-TransactionId", "tx-123")
        .header("X-OpenIDM-NoSession", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-forgerock-transactionid"], "tx-123");
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "remote cookies must not reach the caller"
    );
    assert_eq!(resp.headers()["x-upstream"], "recording");

    let r = up.last().unwrap();
    assert_eq!(
        r.uri,
        format!("/openidm/managed/user?{query}"),
        "query byte for byte"
    );
    assert_eq!(
        r.header("host").unwrap(),
        format!("127.0.0.1:{}", up.port())
    );
    assert_eq!(
        r.header_all("authorization"),
        vec![basic("remote-user", "remote-pw")]
    );
    assert_eq!(r.header("x-requested-with"), Some("RemoteIDMProxy"));
    assert_eq!(
        r.header("accept-api-version"),
        Some("protocol=2.1,resource=1.0")
    );
    assert_eq!(r.header("if-none-match"), Some("\"0000000012\""));
    assert_eq!(r.header("x-forgerock-transactionid"), Some("tx-123"));
    assert!(!r.has_header("cookie"));
    for (name, _) in &r.headers {
        assert!(!name.starts_with("x-openidm-"), "{name} forwarded");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn caller_credentials_never_reach_the_remote() {
    let up = RecordingUpstream::start();
    let gw = gateway_with(basic_instance(&up.url(), "remote-user", "remote-pw")).await;
    let resp = gw
        .anon(Method::GET, USER_PATH)
        .header("Authorization", basic("openidm-admin", "openidm-admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = up.last().unwrap();
    assert_eq!(
        r.header_all("authorization"),
        vec![basic("remote-user", "remote-pw")]
    );
    // No X-Requested-With from the caller: none is invented.
    assert!(!r.has_header("x-requested-with"));
    // A transaction id is generated when the caller sends none, and returned.
    let txid = r.header("x-forgerock-transactionid").unwrap().to_owned();
    assert_eq!(txid.len(), 36);
    assert_eq!(resp.headers()["x-forgerock-transactionid"], txid.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_are_authenticated_before_anything_is_forwarded() {
    let up = RecordingUpstream::start();
    let gw = gateway_with(basic_instance(&up.url(), "u", "p")).await;
    for req in [
        gw.anon(Method::GET, USER_PATH),
        gw.as_user(Method::GET, USER_PATH, "openidm-admin", "wrong"),
        gw.as_user(Method::GET, USER_PATH, "someone", "openidm-admin"),
        gw.anon(Method::GET, USER_PATH)
            .header("Authorization", "Basic !!!"),
        gw.anon(Method::GET, USER_PATH)
            .header("X-OpenIDM-Username", "openidm-admin"),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!({"code":401,"reason":"Unauthorized","message":"Access Denied"})
        );
    }
    assert_eq!(
        up.count(),
        0,
        "nothing may be forwarded for unauthenticated callers"
    );
    let ping: Value = gw
        .anon(Method::GET, "/openidm/info/ping")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ping,
        json!({"_id":"","state":"ACTIVE_READY","shortDesc":"OpenIDM ready"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_is_relayed_with_its_body() {
    let up = RecordingUpstream::start();
    let gw = gateway_with(basic_instance(&up.url(), "u", "p")).await;
    let body = br#"{"userName":"bjensen","givenName":"Barbara"}"#.to_vec();
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        up.clear();
        let mut req = gw
            .request(method.clone(), &format!("{USER_PATH}/bjensen?_action=x"))
            .header("If-Match", "\"3\"");
        if method != Method::GET {
            req = req
                .header("Content-Type", "application/json")
                .body(body.clone());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let r = up.last().unwrap();
        assert_eq!(r.method, method.as_str());
        assert_eq!(r.uri, "/openidm/managed/user/bjensen?_action=x");
        assert_eq!(r.header("if-match"), Some("\"3\""));
        if method != Method::GET {
            assert_eq!(r.body_sha256, sha256_hex(&body), "{method}");
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
    }
    // Remote status codes pass through untouched.
    let resp = gw
        .get("/openidm/external/idm/dc1/status/412")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 412);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways_with_flat_memory() {
    let up = RecordingUpstream::start();
    let gw = gateway_with(basic_instance(&up.url(), "u", "p")).await;
    // Warm up so the baseline includes runtime and pool allocations.
    assert_eq!(gw.get(USER_PATH).send().await.unwrap().status(), 200);
    let before = rss_kib(gw.pid());

    let upload = big_pattern(24 * 1024 * 1024);
    let resp = gw
        .post(&format!("{USER_PATH}?_action=create"))
        .header("Content-Type", "application/octet-stream")
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = up.last().unwrap();
    assert!(r.body_complete);
    assert_eq!(r.body_len, upload.len() as u64);
    assert_eq!(r.body_sha256, sha256_hex(&upload));
    drop(upload);

    let n: u64 = 48 * 1024 * 1024;
    let mut resp = gw
        .get(&format!("/openidm/external/idm/dc1/big?n={n}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut seen: u64 = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        for (i, b) in chunk.iter().enumerate() {
            assert_eq!(
                *b,
                big_pattern_byte(seen + i as u64),
                "byte {}",
                seen + i as u64
            );
        }
        seen += chunk.len() as u64;
    }
    assert_eq!(seen, n);
    let after = rss_kib(gw.pid());
    // 72 MiB went through; a buffering proxy would grow by at least that much.
    assert!(
        after.saturating_sub(before) < 24 * 1024,
        "gateway RSS grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_and_bad_encoding_are_refused_and_never_forwarded() {
    let up = RecordingUpstream::start();
    let gw = gateway_with(basic_instance(&up.url(), "u", "p")).await;
    for path in [
        "/openidm/external/idm/dc1/../config",
        "/openidm/external/idm/dc1/managed/./user",
        "/openidm/external/idm/dc1/%2e%2e/config",
        "/openidm/external/idm/dc1/%2E%2e/%2e%2E/info",
        "/openidm/external/idm/dc1/.%2e/x",
        "/openidm/external/idm/dc1/x%zz",
    ] {
        let (status, body) = gw.raw_get(path);
        assert_eq!(status, 400, "{path}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["reason"], "Bad Request");
    }
    assert_eq!(up.count(), 0);
    // A dot inside a segment is fine.
    let (status, _) = gw.raw_get("/openidm/external/idm/dc1/managed/user/a..b");
    assert_eq!(status, 200);
    assert_eq!(up.last().unwrap().uri, "/openidm/managed/user/a..b");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_disabled_instances_are_404() {
    let up = RecordingUpstream::start();
    let mut disabled = basic_instance(&up.url(), "u", "p");
    disabled["enabled"] = json!(false);
    let gw = Gateway::builder()
        .conf_file("external.idm-off", disabled)
        .start()
        .await;
    for (path, needle) in [
        (
            "/openidm/external/idm/nope/managed/user",
            "'nope' is not configured",
        ),
        (
            "/openidm/external/idm/off/managed/user",
            "'off' is disabled",
        ),
    ] {
        let resp = gw.get(path).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 404);
        assert_eq!(body["reason"], "Not Found");
        assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
    }
    assert_eq!(up.count(), 0);
}

async fn crest_error(gw: &Gateway, path: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let resp = gw.get(path).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_failures_become_crest_errors_naming_the_instance() {
    let hanging = HangingUpstream::start();
    let resetting = ResettingUpstream::start();
    let garbage = GarbageUpstream::start();
    let closed_port = free_port();
    let with_timeout = |url: String| {
        let mut v = basic_instance(&url, "u", "secret-remote-pw");
        v["readTimeout"] = json!(500);
        v
    };
    let gw = Gateway::builder()
        .conf_file("external.idm-hang", with_timeout(hanging.url()))
        .conf_file("external.idm-reset", with_timeout(resetting.url()))
        .conf_file("external.idm-garbage", with_timeout(garbage.url()))
        .conf_file(
            "external.idm-down",
            with_timeout(format!("http://127.0.0.1:{closed_port}/openidm/")),
        )
        .start()
        .await;
    for (name, code) in [
        ("down", 502),
        ("hang", 504),
        ("reset", 502),
        ("garbage", 502),
    ] {
        let (status, body, took) =
            crest_error(
            &gw,
            &format!("/openidm/external/idm/{name}/managed/user?_queryFilter=password%20eq%20%22query-secret-x%22"),
        )
        .await;
        assert_eq!(status, code, "{name}: {body}");
        assert_eq!(body["code"], code);
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(&format!("'{name}'")), "{name}: {message}");
        if name == "garbage" {
            // The remote CREST client's message for the same failure (tests/remote_client.rs).
            assert_eq!(
                message,
                "Remote instance 'garbage' sent an invalid HTTP response"
            );
        }
        assert!(!body.to_string().contains("secret-remote-pw"));
        assert!(took < Duration::from_secs(10), "{name} took {took:?}");
    }
    let logs = gw.logs();
    assert!(!logs.contains("secret-remote-pw"));
    assert!(
        !logs.contains("query-secret-x"),
        "query strings must not reach the logs"
    );
    let metrics = gw
        .get("/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"idm_gateway_upstream_errors_total{instance="hang",kind="read_timeout"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"idm_gateway_upstream_errors_total{instance="down",kind="connect_refused"} 1"#
    ));
    assert!(
        metrics
            .contains(r#"idm_gateway_upstream_errors_total{instance="garbage",kind="protocol"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_remote_with_http2_and_trust_from_certs_dir() {
    let pki = TestPki::new();
    let trusted = RecordingUpstream::start_tls(pki.server_config());
    let untrusted = RecordingUpstream::start_tls(pki.untrusted_server_config());
    let wrong_name = RecordingUpstream::start_tls(pki.server_config_for(&["other.example.com"]));
    let https = |up: &RecordingUpstream| format!("https://127.0.0.1:{}/openidm/", up.port());
    let gw = Gateway::builder()
        .cert("test-ca.pem", &pki.ca_pem())
        .conf_file(
            "external.idm-ok",
            basic_instance(&https(&trusted), "u", "p"),
        )
        .conf_file(
            "external.idm-bad-ca",
            basic_instance(&https(&untrusted), "u", "p"),
        )
        .conf_file(
            "external.idm-bad-name",
            basic_instance(&https(&wrong_name), "u", "p"),
        )
        .start()
        .await;

    let resp = gw
        .get("/openidm/external/idm/ok/managed/user?_queryFilter=true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_11,
        "HTTP/1 caller gets HTTP/1.1 framing"
    );
    let r = trusted.last().unwrap();
    assert!(r.tls);
    assert_eq!(
        r.version, "HTTP/2.0",
        "TLS remotes are spoken to over HTTP/2 when offered"
    );
    assert_eq!(r.uri, "/openidm/managed/user?_queryFilter=true");

    for name in ["bad-ca", "bad-name"] {
        let (status, body, _) =
            crest_error(&gw, &format!("/openidm/external/idm/{name}/managed/user")).await;
        assert_eq!(status, 502, "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains("TLS"), "{body}");
    }
    assert_eq!(untrusted.count(), 0);
    assert_eq!(wrong_name.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_gateway_is_a_remote_idm() {
    let b = Gateway::builder()
        .admin_password("b-admin-pw")
        .start()
        .await;
    let remote = basic_instance(
        &format!("{}/openidm/", b.base_url()),
        "openidm-admin",
        "b-admin-pw",
    );
    let a = Gateway::builder()
        .conf_file("external.idm-b", remote)
        .start()
        .await;

    let login: Value = a
        .get("/openidm/external/idm/b/info/login")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["authenticationId"], "openidm-admin");
    let config = a
        .get("/openidm/external/idm/b/config")
        .header("X-ForgeRock-TransactionId", "through-two-gateways")
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 200);
    assert_eq!(
        config.headers()["x-forgerock-transactionid"],
        "through-two-gateways"
    );
    let config: Value = config.json().await.unwrap();
    assert_eq!(config["_id"], "");
    assert!(config["configurations"].is_array());
    // B's own errors pass through A as they are.
    let resp = a
        .get("/openidm/external/idm/b/nothing/here")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(
        b.wait_for_log("through-two-gateways", Duration::from_secs(5))
            .await,
        "{}",
        b.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_remote_learns_the_callers_address_and_forged_ones_are_dropped() {
    let up = RecordingUpstream::start();
    let forged = |gw: &Gateway| {
        gw.get(USER_PATH)
            .header("X-Forwarded-For", "1.2.3.4")
            .header("Forwarded", "for=1.2.3.4")
            .header("X-Forwarded-Proto", "https")
            .header("X-Real-IP", "1.2.3.4")
    };
    // The caller (127.0.0.1) is not a trusted proxy: only the address the gateway saw.
    let gw = gateway_with(basic_instance(&up.url(), "u", "p")).await;
    assert_eq!(forged(&gw).send().await.unwrap().status(), 200);
    let r = up.last().unwrap();
    assert_eq!(r.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.header("forwarded"), Some("for=127.0.0.1;proto=http"));
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert!(!r.has_header("x-real-ip"));

    // Behind a trusted proxy (gateway.json trustedProxies), its chain is kept.
    let gw = Gateway::builder()
        .conf_file("external.idm-dc1", basic_instance(&up.url(), "u", "p"))
        .conf_file("gateway", json!({"trustedProxies": ["127.0.0.0/8"]}))
        .start()
        .await;
    assert_eq!(forged(&gw).send().await.unwrap().status(), 200);
    let r = up.last().unwrap();
    assert_eq!(r.header("x-forwarded-for"), Some("1.2.3.4, 127.0.0.1"));
    assert_eq!(
        r.header("forwarded"),
        Some("for=1.2.3.4, for=127.0.0.1;proto=http")
    );
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));

    // Both framings at once is refused, not guessed, and never forwarded.
    let before = up.count();
    let (status, body) = {
        use std::io::{Read, Write};
        let addr = gw.base_url().trim_start_matches("http://").to_owned();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST {USER_PATH}?_action=create HTTP/1.1\r\nHost: x\r\nX-OpenIDM-Username: openidm-admin\r\nX-OpenIDM-Password: {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n",
            gw.admin_password()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status: u16 = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, out)
    };
    assert_eq!(status, 400, "{body}");
    assert_eq!(up.count(), before, "nothing forwarded");
    // A bad trustedProxies entry stops the start with the reason.
    let (_, log) = Gateway::builder()
        .conf_file("gateway", json!({"trustedProxies": ["10.0.0.0/33"]}))
        .start_expect_exit(Duration::from_secs(20))
        .await;
    assert!(log.contains("trustedProxies"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn locations_of_the_remote_point_at_the_gateway() {
    let b = Gateway::builder()
        .admin_password("b-admin-pw")
        .start()
        .await;
    let a = Gateway::builder()
        .conf_file(
            "external.idm-b",
            basic_instance(
                &format!("{}/openidm/", b.base_url()),
                "openidm-admin",
                "b-admin-pw",
            ),
        )
        .start()
        .await;
    // Straight to B: B's own path.
    let direct = b
        .post("/openidm/internal/role?_action=create")
        .json(&json!({"name": "direct"}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 201);
    let id = direct.json::<Value>().await.unwrap()["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Through A: the caller is sent back to A's route, never to B's address.
    let through = a
        .post("/openidm/external/idm/b/internal/role?_action=create")
        .json(&json!({"name": "through"}))
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), 201);
    let location = through.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = through.json().await.unwrap();
    assert_eq!(
        location,
        format!(
            "/openidm/external/idm/b/internal/role/{}",
            created["_id"].as_str().unwrap()
        )
    );
    assert!(!location.contains(&b.base_url()));
    let again = a.get(&location).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_ne!(id, created["_id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_and_instances_over_their_rate_get_429_with_retry_after() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.idm-dc1", basic_instance(&up.url(), "u", "p"))
        .conf_file(
            "gateway",
            json!({"rateLimit": {
                "perCaller": {"requestsPerSecond": 0.01, "burst": 4},
                "perInstance": {"requestsPerSecond": 0.01, "burst": 1}}}),
        )
        .start()
        .await;
    // Another caller, made by the administrator (1 of its 4).
    let made = gw
        .put("/openidm/internal/user/plain")
        .json(&json!({"password": "Passw0rd!x",
                      "authzRoles": [{"_ref": "internal/role/openidm-authorized"}]}))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.status());
    // The instance's one request, then it is over its rate (the caller is not).
    assert_eq!(gw.get(USER_PATH).send().await.unwrap().status(), 200);
    let limited = gw.get(USER_PATH).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["code"], 429);
    assert!(
        body["message"].as_str().unwrap().contains("instance"),
        "{body}"
    );
    assert_eq!(up.count(), 1, "the limited request was not forwarded");
    // The administrator's 4th request passes, its 5th does not.
    assert_eq!(
        gw.get("/openidm/info/login").send().await.unwrap().status(),
        200
    );
    let limited = gw.get("/openidm/info/login").send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // Each caller has its own bucket.
    let other = gw
        .as_user(Method::GET, "/openidm/info/login", "plain", "Passw0rd!x")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    // A bad quota stops the start with the reason.
    let (_, log) = Gateway::builder()
        .conf_file(
            "gateway",
            json!({"rateLimit": {"perCaller": {"requestsPerSecond": -1}}}),
        )
        .start_expect_exit(Duration::from_secs(20))
        .await;
    assert!(log.contains("perCaller.requestsPerSecond"), "{log}");
}

#[tokio::test]
async fn proxied_bodies_over_the_limit_are_refused_with_413() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.idm-dc1", basic_instance(&up.url(), "u", "p"))
        .conf_file("gateway", json!({"maxProxyBodyBytes": 1000}))
        .start()
        .await;
    let post = |body: reqwest::Body| {
        gw.post(&format!("{USER_PATH}?_action=create"))
            .header("content-type", "application/json")
            .body(body)
    };
    // Within the limit: forwarded.
    let r = post(vec![b'x'; 900].into()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.count(), 1);
    // A declared length over it: refused before anything is sent.
    let (code, body) = json_of(post(vec![b'x'; 2000].into()).send().await.unwrap()).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["code"], 413);
    assert!(body["message"].as_str().unwrap().contains("1000"), "{body}");
    assert_eq!(up.count(), 1);
    // A chunked body that grows past it: 413 too.
    {
        use std::io::{Read, Write};
        let addr = gw.base_url().trim_start_matches("http://").to_owned();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!(
            "POST {USER_PATH}?_action=create HTTP/1.1\r\nHost: x\r\nX-OpenIDM-Username: openidm-admin\r\nX-OpenIDM-Password: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            gw.admin_password()
        )
        .into_bytes();
        for _ in 0..4 {
            req.extend_from_slice(format!("{:x}\r\n", 600).as_bytes());
            req.extend_from_slice(&[b'y'; 600]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let _ = s.write_all(&req);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    }
    // Whatever the remote saw of it, it never got a complete request.
    assert!(up.requests().iter().all(|rec| rec.body_len <= 1000));
}

#[tokio::test]
async fn the_access_log_names_the_client_its_agent_and_the_upstream_time() {
    let up = RecordingUpstream::start();
    let gw = gateway_with(basic_instance(&up.url(), "u", "p")).await;
    let r = gw
        .get(&format!("{USER_PATH}/1"))
        .header("user-agent", "idm-test-agent/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        gw.wait_for_log("idm-test-agent/1.0", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("idm-test-agent/1.0"))
        .unwrap()
        .to_owned();
    assert!(line.contains("client=127.0.0.1"), "{line}");
    assert!(line.contains("upstream_ms="), "{line}");
}
