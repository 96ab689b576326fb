//! Header rewriting between caller and remote, as plain functions over pingora's header
//! types so they can be tested without a session.

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::InstanceUrl;

pub const TRANSACTION_ID: &str = "x-forgerock-transactionid";
pub const REMOTE_IDM_PROXY: HeaderValue = HeaderValue::from_static("RemoteIDMProxy");
const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Longest caller-supplied transaction id that is forwarded as is.
pub const MAX_TRANSACTION_ID: usize = 128;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus proxy credentials: never forwarded.
/// `transfer-encoding` is framing and is left to pingora.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

/// The caller's transaction id if it is sane, else a new one.
pub fn transaction_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get(TRANSACTION_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_TRANSACTION_ID && b.iter().all(|c| c.is_ascii_graphic())
        {
            return v.clone();
        }
    }
    new_transaction_id()
}

/// A random (v4) UUID from the thread-local CSPRNG: no `getrandom` system call and no
/// `String` per request.
pub fn new_transaction_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut buf).as_bytes())
        .expect("uuid is a header value")
}

/// Rewrites the caller's request into the one the remote receives:
/// path under the instance's base path (query byte for byte), `Host` of the remote,
/// caller credentials/cookies/`X-OpenIDM-*`/hop-by-hop removed, the remote's
/// `Authorization` set, `X-Requested-With` → `RemoteIDMProxy`, transaction id set.
pub fn rewrite_request(
    req: &mut RequestHeader,
    url: &InstanceUrl,
    rest: &str,
    authorization: &HeaderValue,
    txid: &HeaderValue,
) -> pingora::Result<()> {
    let mut path_and_query = String::with_capacity(url.base_path.len() + rest.len() + 64);
    path_and_query.push_str(&url.base_path);
    path_and_query.push_str(rest);
    if let Some(q) = req.uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let uri = http::Uri::builder()
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| {
            pingora::Error::explain(
                pingora::ErrorType::InvalidHTTPHeader,
                format!("cannot build the upstream URI: {e}"),
            )
        })?;
    req.set_uri(uri);

    // Headers named in `Connection` are hop-by-hop too (HTTP/1.1 callers rarely send one:
    // nothing is collected then).
    if req.headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = req
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            req.remove_header(&name);
        }
    }
    remove_where(req, |n| {
        HOP_BY_HOP.contains(&n)
            || n == "authorization"
            || n == "cookie"
            || n.starts_with("x-openidm-")
    });

    req.insert_header(header::HOST, url.authority.as_str())?;
    req.insert_header(header::AUTHORIZATION, authorization.clone())?;
    if req.headers.contains_key(&X_REQUESTED_WITH) {
        req.insert_header("x-requested-with", REMOTE_IDM_PROXY)?;
    }
    req.insert_header(TRANSACTION_ID, txid.clone())?;
    Ok(())
}

/// The forwarding headers a caller may send: kept only from a trusted proxy.
const FORWARDING: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// Whether `peer` is one of the trusted proxies (`gateway.json` `trustedProxies`).
pub fn is_trusted(peer: Option<std::net::IpAddr>, trusted: &[ipnet::IpNet]) -> bool {
    peer.is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)))
}

/// Tells the remote who the caller is: the address the gateway saw is appended to
/// `X-Forwarded-For` and `Forwarded`, and `X-Forwarded-Proto` says how it reached the
/// gateway. What the caller sent in these headers is kept only when the caller is a
/// trusted proxy (else any caller could forge the address in the remote's audit log).
pub fn forward_client(
    req: &mut RequestHeader,
    peer: Option<std::net::IpAddr>,
    trusted: bool,
    tls: bool,
) -> pingora::Result<()> {
    if !trusted {
        remove_where(req, |n| FORWARDING.contains(&n));
    }
    let Some(ip) = peer else {
        return Ok(());
    };
    // `name: <what a trusted proxy sent>, <add>`.
    let joined = |req: &RequestHeader, name: &HeaderName, add: String| {
        let mut before = req
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let Some(first) = before.next() else {
            return add;
        };
        let mut out = first.to_owned();
        for v in before.chain([add.as_str()]) {
            out.push_str(", ");
            out.push_str(v);
        }
        out
    };
    let proto = if tls { "https" } else { "http" };
    let forwarded = match ip {
        std::net::IpAddr::V4(v4) => format!("for={v4};proto={proto}"),
        std::net::IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto={proto}"),
    };
    let xff = joined(req, &X_FORWARDED_FOR, ip.to_string());
    let forwarded = joined(req, &header::FORWARDED, forwarded);
    req.insert_header("x-forwarded-for", xff)?;
    req.insert_header(header::FORWARDED, forwarded)?;
    if !req.headers.contains_key(&X_FORWARDED_PROTO) {
        req.insert_header("x-forwarded-proto", proto)?;
    }
    Ok(())
}

/// Removes every header whose (lower-case) name `strip` selects, in one pass over the
/// headers the request has (a handful) rather than one lookup per name stripped.
fn remove_where(req: &mut RequestHeader, strip: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| strip(k.as_str()))
        .cloned()
        .collect();
    for name in names {
        req.remove_header(&name);
    }
}

/// A remote's `Location` pointing into the remote (its `instanceUrl`, absolute or as a
/// path) is made to point at the gateway's route to it (`/openidm/external/idm/<name>/…`),
/// so the caller never learns the remote's internal address. Others are left as they are.
pub fn rewrite_location(
    resp: &mut ResponseHeader,
    url: &InstanceUrl,
    instance: &str,
) -> pingora::Result<()> {
    let Some(location) = resp
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let scheme = if url.tls { "https://" } else { "http://" };
    let path = match location.strip_prefix(scheme) {
        Some(rest) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let default_port = if url.tls { 443 } else { 80 };
            let same = authority.eq_ignore_ascii_case(&url.authority)
                || (url.port == default_port
                    && authority.eq_ignore_ascii_case(&format!("{}:{default_port}", url.host)));
            if !same {
                return Ok(());
            }
            if path.is_empty() {
                "/"
            } else {
                path
            }
        }
        None if location.starts_with('/') && !location.starts_with("//") => location,
        None => return Ok(()),
    };
    let Some(rest) = path.strip_prefix(url.base_path.as_str()) else {
        return Ok(());
    };
    let rewritten = format!("/openidm/external/idm/{instance}/{rest}");
    resp.insert_header(header::LOCATION, rewritten)?;
    Ok(())
}

/// Rewrites the remote's response for the caller: no remote cookies, no remote `Server`
/// (the caller talks to the gateway, and a version banner helps only an attacker), the
/// transaction id, HTTP/1.1 framing for HTTP/1 callers whatever the remote spoke.
pub fn rewrite_response(
    resp: &mut ResponseHeader,
    txid: &HeaderValue,
    downstream_h2: bool,
) -> pingora::Result<()> {
    resp.remove_header(&header::SET_COOKIE);
    resp.remove_header(&header::SERVER);
    resp.insert_header(TRANSACTION_ID, txid.clone())?;
    if !downstream_h2 {
        resp.set_version(http::Version::HTTP_11);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_into_the_remote_point_at_the_gateway() {
        let url = InstanceUrl {
            tls: true,
            host: "idm.internal".into(),
            port: 443,
            base_path: "/openidm/".into(),
            authority: "idm.internal".into(),
        };
        let located = |l: &str| {
            let mut r = ResponseHeader::build(201, None).unwrap();
            r.insert_header("location", l).unwrap();
            rewrite_location(&mut r, &url, "dc1").unwrap();
            r.headers["location"].to_str().unwrap().to_owned()
        };
        let gw = "/openidm/external/idm/dc1/managed/user/u1?_fields=x";
        assert_eq!(
            located("https://idm.internal/openidm/managed/user/u1?_fields=x"),
            gw
        );
        assert_eq!(
            located("https://IDM.internal:443/openidm/managed/user/u1?_fields=x"),
            gw
        );
        assert_eq!(located("/openidm/managed/user/u1?_fields=x"), gw);
        // Elsewhere: another host, scheme or path, or a protocol-relative URL.
        for other in [
            "https://elsewhere/openidm/managed/user/u1",
            "http://idm.internal/openidm/managed/user/u1",
            "https://idm.internal:8443/openidm/x",
            "/other/x",
            "//idm.internal/openidm/x",
        ] {
            assert_eq!(located(other), other);
        }
        let mut r = ResponseHeader::build(200, None).unwrap();
        rewrite_location(&mut r, &url, "dc1").unwrap();
        assert!(r.headers.get("location").is_none());
    }

    #[test]
    fn forwarding_headers_come_from_trusted_proxies_only() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let forged = || {
            let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
            r.insert_header("x-forwarded-for", "1.2.3.4").unwrap();
            r.insert_header("forwarded", "for=1.2.3.4").unwrap();
            r.insert_header("x-forwarded-proto", "https").unwrap();
            r.insert_header("x-real-ip", "1.2.3.4").unwrap();
            r
        };
        let text = |r: &RequestHeader, h: &str| {
            r.headers
                .get(h)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        // A direct caller: what it sent is dropped, the address seen is what counts.
        let caller: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        assert!(!is_trusted(Some(caller), &trusted));
        let mut r = forged();
        forward_client(&mut r, Some(caller), false, false).unwrap();
        assert_eq!(text(&r, "x-forwarded-for"), "192.0.2.7");
        assert_eq!(text(&r, "forwarded"), "for=192.0.2.7;proto=http");
        assert_eq!(text(&r, "x-forwarded-proto"), "http");
        assert_eq!(text(&r, "x-real-ip"), "");
        // A trusted proxy: its chain is kept and the proxy's address appended.
        let proxy: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        assert!(is_trusted(Some(proxy), &trusted));
        let mut r = forged();
        forward_client(&mut r, Some(proxy), true, true).unwrap();
        assert_eq!(text(&r, "x-forwarded-for"), "1.2.3.4, 10.1.2.3");
        assert_eq!(
            text(&r, "forwarded"),
            "for=1.2.3.4, for=10.1.2.3;proto=https"
        );
        assert_eq!(text(&r, "x-forwarded-proto"), "https");
        // IPv6 is quoted in Forwarded (RFC 7239 §6).
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        forward_client(&mut r, Some("::1".parse().unwrap()), false, false).unwrap();
        assert_eq!(text(&r, "forwarded"), "for=\"[::1]\";proto=http");
    }

    fn url() -> InstanceUrl {
        InstanceUrl {
            tls: true,
            host: "idm.example.com".into(),
            port: 8443,
            base_path: "/openidm/".into(),
            authority: "idm.example.com:8443".into(),
        }
    }

    fn caller_request() -> RequestHeader {
        let mut req = RequestHeader::build(
            "PUT",
            b"/openidm/external/idm/dc1/managed/user/a%20b?_queryFilter=userName%20eq%20%22x%22&b=1+2",
            None,
        )
        .unwrap();
        for (k, v) in [
            ("host", "gateway.local"),
            ("authorization", "Basic Y2FsbGVyOnNlY3JldA=="),
            ("cookie", "session-jwt=abc"),
            ("x-openidm-username", "openidm-admin"),
            ("x-openidm-password", "openidm-admin"),
            ("x-openidm-nosession", "true"),
            ("x-requested-with", "XMLHttpRequest"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eDp5"),
            ("accept-api-version", "protocol=2.1,resource=1.0"),
            ("content-type", "application/json"),
            ("if-match", "\"00000000f20217df\""),
            ("if-none-match", "*"),
        ] {
            req.append_header(k, v).unwrap();
        }
        req
    }

    #[test]
    fn request_is_rewritten_for_the_remote() {
        let mut req = caller_request();
        let auth = HeaderValue::from_static("Bearer remote-token");
        let txid = HeaderValue::from_static("tx-1");
        rewrite_request(&mut req, &url(), "managed/user/a%20b", &auth, &txid).unwrap();

        assert_eq!(
            req.uri.to_string(),
            "/openidm/managed/user/a%20b?_queryFilter=userName%20eq%20%22x%22&b=1+2"
        );
        let h = &req.headers;
        assert_eq!(h["host"], "idm.example.com:8443");
        assert_eq!(h["authorization"], "Bearer remote-token");
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert_eq!(h["x-requested-with"], "RemoteIDMProxy");
        assert_eq!(h[TRANSACTION_ID], "tx-1");
        for kept in [
            "accept-api-version",
            "content-type",
            "if-match",
            "if-none-match",
        ] {
            assert!(h.contains_key(kept), "{kept} must be forwarded");
        }
        for gone in [
            "cookie",
            "x-openidm-username",
            "x-openidm-password",
            "x-openidm-nosession",
            "connection",
            "x-drop-me",
            "keep-alive",
            "te",
            "proxy-authorization",
        ] {
            assert!(!h.contains_key(gone), "{gone} must not be forwarded");
        }
    }

    #[test]
    fn x_requested_with_is_only_set_when_present() {
        let mut req = RequestHeader::build("GET", b"/openidm/external/idm/a/x", None).unwrap();
        let auth = HeaderValue::from_static("Basic dTpw");
        rewrite_request(&mut req, &url(), "x", &auth, &HeaderValue::from_static("t")).unwrap();
        assert!(!req.headers.contains_key("x-requested-with"));
        assert_eq!(req.uri.to_string(), "/openidm/x");
    }

    #[test]
    fn transaction_id_is_kept_only_when_sane() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(TRANSACTION_ID, "abc-123").unwrap();
        assert_eq!(transaction_id(&req), "abc-123");
        req.insert_header(TRANSACTION_ID, "x".repeat(MAX_TRANSACTION_ID + 1))
            .unwrap();
        assert_eq!(transaction_id(&req).len(), 36);
        let fresh = RequestHeader::build("GET", b"/", None).unwrap();
        assert_ne!(transaction_id(&fresh), transaction_id(&fresh));
    }

    #[test]
    fn response_drops_remote_cookies_and_server() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("server", "Pingora").unwrap();
        resp.append_header("set-cookie", "a=b").unwrap();
        resp.append_header("set-cookie", "c=d").unwrap();
        resp.set_version(http::Version::HTTP_2);
        rewrite_response(&mut resp, &HeaderValue::from_static("t"), false).unwrap();
        assert!(!resp.headers.contains_key("set-cookie"));
        assert!(!resp.headers.contains_key("server"));
        assert_eq!(resp.headers[TRANSACTION_ID], "t");
        assert_eq!(resp.version, http::Version::HTTP_11);
    }
}
