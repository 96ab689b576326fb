//! Micro-benchmarks of the work the gateway does on every proxied request, outside pingora:
//! path classification, request/response header rewriting, the bearer-token cache hit and
//! the verified-credential cache hit, the `access.json` check, and the audit events of a
//! request.
//!
//! `cargo bench --bench hot_paths -- --warm-up-time 1 --measurement-time 3`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use idm_gateway::auth::{Authenticator, CachingAuthenticator, StaticAdmin};
use idm_gateway::config::{BearerConfig, InstanceUrl, Secret, TokenAuthMethod, Trust};
use idm_gateway::metrics::Metrics;
use idm_gateway::proxy::{classify, rewrite_request, rewrite_response, transaction_id, Route};
use idm_gateway::remote::TokenSource;

const PLAIN_PATH: &str = "/openidm/external/idm/dc1/managed/user";
const ENCODED_PATH: &str =
    "/openidm/external/idm/dc%2D1/managed/user/j%C3%BCrgen%20m%C3%BCller%40example.com";
const CALLER_URI: &[u8] =
    b"/openidm/external/idm/dc1/managed/user?_queryFilter=userName%20eq%20%22bjensen%22&_fields=userName,mail&_pageSize=50";

/// Polls a future once and returns its output if it is ready (the cache-hit paths never
/// wait), falling back to the runtime otherwise so the bench stays correct either way.
fn ready_or_block<F: Future>(rt: &Runtime, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => rt.block_on(fut),
    }
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.bench_function("remote_plain", |b| {
        b.iter(|| {
            let r = classify(black_box(PLAIN_PATH)).unwrap();
            debug_assert!(matches!(r, Route::Remote { .. }));
            black_box(r);
        })
    });
    g.bench_function("remote_percent_encoded", |b| {
        b.iter(|| {
            let r = classify(black_box(ENCODED_PATH)).unwrap();
            debug_assert!(matches!(r, Route::Remote { .. }));
            black_box(r);
        })
    });
    g.finish();
}

/// What a browser-based admin UI sends through the gateway.
fn caller_request() -> RequestHeader {
    let mut req = RequestHeader::build("GET", CALLER_URI, Some(16)).unwrap();
    for (k, v) in [
        ("host", "gateway.example.com:8443"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        ("accept", "application/json, text/javascript, */*; q=0.01"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-api-version", "protocol=2.1,resource=1.0"),
        ("x-openidm-username", "openidm-admin"),
        ("x-openidm-password", "openidm-admin"),
        ("x-openidm-nosession", "true"),
        ("x-requested-with", "XMLHttpRequest"),
        ("cookie", "session-jwt=eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.abc; i18next=en"),
        ("connection", "keep-alive"),
        ("referer", "https://gateway.example.com:8443/admin/"),
        ("content-type", "application/json"),
    ] {
        req.append_header(k, v).unwrap();
    }
    req
}

fn remote_url() -> InstanceUrl {
    InstanceUrl {
        tls: true,
        host: "idm.example.com".into(),
        port: 8443,
        base_path: "/openidm/".into(),
        authority: "idm.example.com:8443".into(),
    }
}

/// What IDM answers to a query.
fn upstream_response() -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, Some(10)).unwrap();
    for (k, v) in [
        ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("content-type", "application/json;charset=utf-8"),
        ("content-length", "251"),
        ("cache-control", "no-store"),
        ("content-api-version", "protocol=2.1,resource=1.0"),
        (
            "set-cookie",
            "session-jwt=eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.abc; Path=/; HttpOnly",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "SAMEORIGIN"),
    ] {
        resp.append_header(k, v).unwrap();
    }
    resp.set_version(http::Version::HTTP_2);
    resp
}

fn header_rewrite(c: &mut Criterion) {
    let url = remote_url();
    let auth = HeaderValue::from_static("Basic b3BlbmlkbS1hZG1pbjpvcGVuaWRtLWFkbWlu");
    let txid = HeaderValue::from_static("5d1a3c5e-8a0e-4c7e-9a55-0c1f2e3d4b5a");
    let template = caller_request();
    let rest = "managed/user";

    let mut g = c.benchmark_group("headers");
    // Baseline for the two rewrite benches below: cloning the template is their setup.
    g.bench_function("clone_request_template", |b| {
        b.iter(|| black_box(template.clone()))
    });
    g.bench_function("rewrite_request", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |req| rewrite_request(req, &url, rest, &auth, &txid).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // A caller without a transaction id: a fresh UUID per request.
    let bare = RequestHeader::build("GET", CALLER_URI, None).unwrap();
    g.bench_function("new_transaction_id", |b| {
        b.iter(|| black_box(transaction_id(&bare)))
    });
    let resp_template = upstream_response();
    g.bench_function("rewrite_response", |b| {
        b.iter_batched_ref(
            || resp_template.clone(),
            |resp| rewrite_response(resp, &txid, false).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A one-route OAuth2 token endpoint: every request gets the same client-credentials
/// response. Returns its URL.
async fn token_endpoint() -> url::Url {
    const BODY: &str = r#"{"access_token":"bench-access-token-0123456789","token_type":"Bearer","expires_in":3600}"#;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(2048);
                // Read the head, then as much body as Content-Length announces.
                let want = loop {
                    if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break i + 4 + len;
                    }
                };
                while buf.len() < want {
                    if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}/oauth2/token").parse().unwrap()
}

fn caches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();

    let token_url = rt.block_on(token_endpoint());
    let config = BearerConfig {
        client_id: "idm-gateway".into(),
        client_secret: Secret::new("bench-secret"),
        token_endpoint: token_url,
        scope: vec!["fr:idm:*".into()],
        scope_delimiter: " ".into(),
        auth_method: TokenAuthMethod::ClientSecretBasic,
    };
    let client = idm_gateway::tls::http_client_builder(&Trust::default())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let source = Arc::new(TokenSource::new(
        "dc1",
        &config,
        client,
        Arc::new(Metrics::new()),
    ));
    let first = rt
        .block_on(source.token())
        .expect("warm-up token from the local endpoint");
    assert_eq!(
        first.header.to_str().unwrap(),
        "Bearer bench-access-token-0123456789"
    );

    let admin = StaticAdmin::new(&Secret::new("pw")).unwrap();
    let auth = CachingAuthenticator::new(Arc::new(admin));
    assert!(
        rt.block_on(auth.authenticate("openidm-admin", "pw"))
            .is_some(),
        "warm-up authentication"
    );

    let mut g = c.benchmark_group("cache_hit");
    g.bench_function("token_source_token", |b| {
        b.iter(|| black_box(ready_or_block(&rt, source.token()).unwrap()))
    });
    g.bench_function("caching_authenticator", |b| {
        b.iter(|| {
            let caller = ready_or_block(
                &rt,
                auth.authenticate(black_box("openidm-admin"), black_box("pw")),
            );
            black_box(caller.unwrap())
        })
    });
    g.finish();
}

/// `access.json` (the shipped rules) for a proxied request: an administrator (an early
/// rule), a user on their own object (`customAuthz`), and a refusal (every rule tried).
fn access_rules(c: &mut Criterion) {
    use idm_gateway::access::{AccessConfig, Target};
    use idm_gateway::crest::Caller;
    use idm_gateway::managed::ManagedSchema;
    let rules = AccessConfig::default();
    let managed = ManagedSchema::default();
    let admin = Caller::new(
        "openidm-admin",
        "internal/user",
        vec![
            "internal/role/openidm-authorized".into(),
            "internal/role/openidm-admin".into(),
        ],
    );
    let user = Caller::new(
        "b1",
        "managed/user",
        vec!["internal/role/openidm-authorized".into()],
    );
    let check = |caller: &Caller, path: &str| {
        rules.allows(&Target {
            path,
            method: "read",
            action: None,
            caller,
            request: None,
            managed: &managed,
        })
    };
    assert!(check(&admin, "external/idm/dc1/managed/user/b1"));
    assert!(check(&user, "managed/user/b1"));
    assert!(!check(&user, "external/idm/dc1/managed/user/b1"));
    let mut g = c.benchmark_group("access");
    g.bench_function("admin_proxied", |b| {
        b.iter(|| black_box(check(&admin, black_box("external/idm/dc1/managed/user/b1"))))
    });
    g.bench_function("own_object", |b| {
        b.iter(|| black_box(check(&user, black_box("managed/user/b1"))))
    });
    g.bench_function("refused", |b| {
        b.iter(|| black_box(check(&user, black_box("external/idm/dc1/managed/user/b1"))))
    });
    g.finish();
}

/// The two audit events every request makes with the shipped `audit.json` (`access` and
/// `authentication`), serialized as the request path does it.
fn audit_events(c: &mut Criterion) {
    use idm_gateway::audit::event::{access, authentication};
    use idm_gateway::audit::AccessRecord;
    use idm_gateway::crest::Caller;
    let caller = Caller::new(
        "openidm-admin",
        "internal/user",
        vec!["internal/role/openidm-admin".into()],
    );
    let req = caller_request();
    let record = AccessRecord {
        txid: "8c5e5f5a-2a5c-4b6e-9f0d-1a2b3c4d5e6f",
        caller: Some(&caller),
        client: Some("127.0.0.1:51234".parse().unwrap()),
        server: Some("127.0.0.1:8080".parse().unwrap()),
        secure: false,
        method: "GET",
        path: req.uri.path(),
        query: req.uri.query(),
        headers: &req.headers,
        status: 200,
        elapsed: Duration::from_millis(3),
    };
    let ip = Some("127.0.0.1".parse().unwrap());
    let mut g = c.benchmark_group("audit");
    g.bench_function("access_event", |b| {
        b.iter(|| black_box(access(black_box(&record))))
    });
    g.bench_function("authentication_event", |b| {
        b.iter(|| {
            black_box(authentication(
                "openidm-admin",
                Some(&caller),
                "8c5e5f5a-2a5c-4b6e-9f0d-1a2b3c4d5e6f",
                ip,
            ))
        })
    });
    g.bench_function("timestamp", |b| {
        b.iter(|| black_box(idm_gateway::audit::event::now()))
    });
    g.bench_function("event_id", |b| {
        b.iter(|| black_box(idm_gateway::audit::event::new_id()))
    });
    g.finish();
}

criterion_group!(
    benches,
    routing,
    header_rewrite,
    caches,
    access_rules,
    audit_events
);
criterion_main!(benches);
