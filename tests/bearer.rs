//! OAuth2 client-credentials (bearer) remote instances end to end: the real binary in
//! front of a recording upstream, with a real authorization server (oidc-provider) or the
//! switchable fake token endpoint.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use serde_json::{json, Value};

const QUERY: &str = "managed/user?_queryFilter=true";

/// Caller path for `rest` under instance `name`.
fn path(name: &str, rest: &str) -> String {
    format!("/openidm/external/idm/{name}/{rest}")
}

/// The usual caller path under instance `name`.
fn user_path(name: &str) -> String {
    path(name, QUERY)
}

/// A bearer instance using `ep`, with `extra` properties merged in.
fn fake_instance(up: &RecordingUpstream, ep: &FakeTokenEndpoint, extra: Value) -> Value {
    let mut conf = json!({
        "authType": "bearer",
        "instanceUrl": up.url(),
        "clientId": "gw-client",
        "clientSecret": "gw-secret-Zq81",
        "tokenEndpoint": ep.token_endpoint(),
        "scope": ["fr:idm:*"],
        "scopeDelimiter": " ",
        "tokenEndpointAuthMethod": "client_secret_basic",
    });
    let obj = conf.as_object_mut().unwrap();
    for (k, v) in extra.as_object().expect("extra must be an object") {
        obj.insert(k.clone(), v.clone());
    }
    conf
}

async fn gateway_with(name: &str, conf: Value) -> Gateway {
    start(Gateway::builder().conf_file(&format!("external.idm-{name}"), conf)).await
}

/// Starts the gateway and makes one authenticated local request, so that the caller's
/// (argon2) authentication is cached and later timings measure only the proxying.
async fn start(builder: GatewayBuilder) -> Gateway {
    let gw = builder.start().await;
    let resp = gw
        .get("/openidm/metrics/prometheus")
        .send()
        .await
        .expect("warm-up request");
    assert_eq!(resp.status(), 200, "warm-up: {}", gw.logs());
    gw
}

/// The token of an `Authorization: Bearer <t>` the upstream received.
fn bearer_of(rec: &Recorded) -> String {
    let auth = rec
        .header("authorization")
        .unwrap_or_else(|| panic!("no Authorization header upstream: {rec:?}"));
    auth.strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer Authorization upstream: {auth:?}"))
        .to_owned()
}

/// The token the recording upstream echoed in its JSON body (`headers.authorization`).
fn echoed_bearer(body: &Value) -> String {
    let auth = body["headers"]["authorization"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no echoed authorization in {body}"));
    auth.strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer Authorization: {auth:?}"))
        .to_owned()
}

/// GET the usual path; returns status and body text.
async fn get(gw: &Gateway, name: &str) -> (u16, String) {
    let resp = gw.get(&user_path(name)).send().await.expect("gateway GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// GET that must answer 200; returns the token the upstream echoed.
async fn get_ok_token(gw: &Gateway, name: &str) -> String {
    let (status, body) = get(gw, name).await;
    assert_eq!(status, 200, "{body}\n{}", gw.logs());
    echoed_bearer(&serde_json::from_str(&body).expect("upstream JSON"))
}

/// Checks a gateway-made 502 CREST body; returns its message.
fn assert_bad_gateway(status: u16, body: &str, instance: &str, secret: &str) -> String {
    assert_eq!(status, 502, "{body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["code"], 502, "{v}");
    assert_eq!(v["reason"], "Bad Gateway", "{v}");
    let message = v["message"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        message.contains(&format!("'{instance}'")),
        "message does not name instance {instance}: {message}"
    );
    assert!(!body.contains(secret), "client secret in 502 body: {body}");
    message.to_owned()
}

// ---------------------------------------------------------------------------------------
// 1. Real authorization server, auth methods, scope parameter.

async fn oidc_token_reaches_upstream(method: &str) {
    let secret = format!("oidc-secret-{method}-8c1f");
    let scopes = ["fr:idm:*", "read"];
    let op = tokio::task::block_in_place(|| {
        OidcProvider::start(
            "gw-oidc",
            &secret,
            method,
            &["fr:idm:*", "read", "write"],
            3600,
        )
    });
    let up = RecordingUpstream::start();
    let gw = gateway_with(
        "x",
        json!({
            "authType": "bearer",
            "instanceUrl": up.url(),
            "clientId": "gw-oidc",
            "clientSecret": secret,
            "tokenEndpoint": op.token_endpoint(),
            "scope": scopes,
            "scopeDelimiter": " ",
            "tokenEndpointAuthMethod": method,
        }),
    )
    .await;

    let (status, body) = get(&gw, "x").await;
    assert_eq!(
        status,
        200,
        "{body}\ngateway:\n{}\nop:\n{}",
        gw.logs(),
        op.logs()
    );
    assert_eq!(up.count(), 1);
    let rec = up.last().unwrap();
    assert_eq!(rec.header_all("authorization").len(), 1, "{rec:?}");
    let token = bearer_of(&rec);
    assert!(token.len() >= 20, "implausible token {token:?}");

    let info = op.introspect(&token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "gw-oidc", "{info}");
    let mut granted: Vec<&str> = info["scope"].as_str().unwrap_or("").split(' ').collect();
    granted.sort_unstable();
    assert_eq!(granted, ["fr:idm:*", "read"], "{info}");

    // The token is cached: a second request reuses it.
    let (status, _) = get(&gw, "x").await;
    assert_eq!(status, 200);
    assert_eq!(bearer_of(&up.last().unwrap()), token);
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_client_secret_basic() {
    oidc_token_reaches_upstream("client_secret_basic").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_client_secret_post() {
    oidc_token_reaches_upstream("client_secret_post").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_request_form_auth_methods_and_scope_delimiter() {
    let up = RecordingUpstream::start();
    let comma = FakeTokenEndpoint::start();
    let post = FakeTokenEndpoint::start();
    let noscope = FakeTokenEndpoint::start();
    // A secret with characters that RFC 6749 §2.3.1 wants form-encoded inside Basic.
    let odd_secret = "s3c:r+e t/%&=é";
    let gw = start(
        Gateway::builder()
            .conf_file(
                "external.idm-comma",
                fake_instance(
                    &up,
                    &comma,
                    json!({"scope": ["a", "b"], "scopeDelimiter": ",", "clientSecret": odd_secret}),
                ),
            )
            .conf_file(
                "external.idm-post",
                fake_instance(
                    &up,
                    &post,
                    json!({
                        "scope": ["fr:idm:*", "openid"],
                        "tokenEndpointAuthMethod": "client_secret_post",
                        "clientSecret": "post-secret&x=1",
                    }),
                ),
            )
            .conf_file(
                "external.idm-noscope",
                fake_instance(&up, &noscope, json!({"scope": []})),
            ),
    )
    .await;

    assert_eq!(get_ok_token(&gw, "comma").await, "tok-1");
    assert_eq!(comma.count(), 1);
    let req = comma.last_request().unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(req.form_value("scope"), Some("a,b"), "body {:?}", req.body);
    assert_eq!(
        req.basic_credentials(),
        Some(("gw-client".to_owned(), odd_secret.to_owned())),
        "Authorization {:?}",
        req.authorization
    );
    assert_eq!(req.form_value("client_secret"), None);
    assert!(
        req.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")),
        "{:?}",
        req.content_type
    );

    assert_eq!(get_ok_token(&gw, "post").await, "tok-1");
    assert_eq!(post.count(), 1);
    let req = post.last_request().unwrap();
    assert_eq!(
        req.authorization, None,
        "client_secret_post sent Authorization"
    );
    assert_eq!(req.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(req.form_value("client_id"), Some("gw-client"));
    assert_eq!(req.form_value("client_secret"), Some("post-secret&x=1"));
    assert_eq!(req.form_value("scope"), Some("fr:idm:* openid"));

    assert_eq!(get_ok_token(&gw, "noscope").await, "tok-1");
    let req = noscope.last_request().unwrap();
    assert_eq!(req.form_value("scope"), None, "body {:?}", req.body);
    assert_eq!(up.count(), 3);
}

// ---------------------------------------------------------------------------------------
// 2. Single flight.

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cold_requests_fetch_one_token() {
    let up = RecordingUpstream::start();
    // Slow enough that all callers pile up behind the one fetch.
    let ep = FakeTokenEndpoint::start_with(TokenMode::Slow(Duration::from_millis(300)));
    let gw = gateway_with("x", fake_instance(&up, &ep, json!({}))).await;

    let results = join_all((0..100).map(|_| get(&gw, "x"))).await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(echoed_bearer(&serde_json::from_str(body).unwrap()), "tok-1");
    }
    assert_eq!(ep.count(), 1, "token requests for 100 cold callers");
    assert_eq!(up.count(), 100);
    assert!(up.requests().iter().all(|r| bearer_of(r) == "tok-1"));
}

// ---------------------------------------------------------------------------------------
// 3. Expiry and refresh ahead of expiry.

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_is_replaced() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start_with(TokenMode::Ok { ttl_secs: 4 });
    let gw = gateway_with("x", fake_instance(&up, &ep, json!({}))).await;

    assert_eq!(get_ok_token(&gw, "x").await, "tok-1");
    assert_eq!(get_ok_token(&gw, "x").await, "tok-1");
    assert_eq!(ep.count(), 1);

    // Idle past the lifetime: no refresh ahead happened, the token simply expired.
    tokio::time::sleep(Duration::from_millis(4300)).await;
    assert_eq!(ep.count(), 1, "token fetched while idle");
    assert_eq!(get_ok_token(&gw, "x").await, "tok-2");
    assert_eq!(ep.count(), 2);
    assert_eq!(get_ok_token(&gw, "x").await, "tok-2");
    assert_eq!(ep.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_is_refreshed_ahead_of_expiry_without_failures() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start_with(TokenMode::Ok { ttl_secs: 4 });
    let gw = gateway_with("x", fake_instance(&up, &ep, json!({}))).await;

    // Steady requests every ~200 ms over two 4 s lifetimes. Once tok-2 is in use, the
    // endpoint turns slow (1 s, and its tokens then last an hour), so the refresh of
    // tok-2 is in flight long enough to see requests keep using tok-2 meanwhile.
    // Each entry: (token endpoint count just before sending, token the upstream saw).
    let mut seen: Vec<(usize, String)> = Vec::new();
    let mut slowed = false;
    let t0 = Instant::now();
    // ~2 lifetimes; longer only on a machine so loaded that tok-3 has not come yet.
    while t0.elapsed() < Duration::from_millis(8200)
        || (seen.last().is_none_or(|(_, t)| t != "tok-3") && t0.elapsed() < Duration::from_secs(16))
    {
        let fetches_before = ep.count();
        let (status, body) = get(&gw, "x").await;
        assert_eq!(
            status,
            200,
            "request {} at {:?} failed: {body}\n{seen:?}",
            seen.len(),
            t0.elapsed()
        );
        let token = echoed_bearer(&serde_json::from_str(&body).unwrap());
        if !slowed && token == "tok-2" {
            ep.set_mode(TokenMode::Slow(Duration::from_millis(1000)));
            slowed = true;
        }
        seen.push((fetches_before, token));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Tokens are used in issue order, never going back to an older one, and every one
    // fetched was used.
    let order: Vec<u32> = seen
        .iter()
        .map(|(_, t)| t.strip_prefix("tok-").unwrap().parse().unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(order.first(), Some(&1), "{seen:?}");
    assert_eq!(order.last(), Some(&3), "{seen:?}");
    // One fetch per lifetime, never one per request: tok-1, its refresh, the refresh of
    // tok-2 (which lasts an hour).
    assert_eq!(ep.count(), 3, "{seen:?}");

    // The refresh runs in the background while the still-valid token is used: a
    // request sent after the token endpoint got the refresh request was still served
    // with tok-2. (Refreshing only on expiry would make it wait for tok-3.)
    assert!(
        seen.iter().any(|(before, t)| *before >= 3 && t == "tok-2"),
        "no request used tok-2 while its refresh was in flight: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. 401 from the remote: drop the token, retry once.

#[tokio::test(flavor = "multi_thread")]
async fn rejected_token_is_replaced_and_get_retried() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start();
    let gw = gateway_with("x", fake_instance(&up, &ep, json!({}))).await;
    up.reject_bearer("tok-1");

    assert_eq!(get_ok_token(&gw, "x").await, "tok-2");
    assert_eq!(up.count(), 2, "upstream attempts");
    assert_eq!(ep.count(), 2, "token fetches");
    let reqs = up.requests();
    assert_eq!(bearer_of(&reqs[0]), "tok-1");
    assert_eq!(bearer_of(&reqs[1]), "tok-2");
    assert_eq!(reqs[0].uri, reqs[1].uri);
    assert_eq!(reqs[1].method, "GET");

    // The new token stays in use.
    assert_eq!(get_ok_token(&gw, "x").await, "tok-2");
    assert_eq!(ep.count(), 2);
    assert_eq!(up.count(), 3);

    // A remote that refuses the fresh token too: only one retry, the caller sees 401.
    up.reject_bearer("tok-2");
    up.reject_bearer("tok-3");
    let (status, body) = get(&gw, "x").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(up.count(), 5, "one attempt plus exactly one retry");
    assert_eq!(ep.count(), 3);
    // tok-3 was dropped too: the next request starts with a new token.
    up.clear_rejections();
    assert_eq!(get_ok_token(&gw, "x").await, "tok-4");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_token_post_body_is_replayed_intact() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start();
    let gw = gateway_with("x", fake_instance(&up, &ep, json!({}))).await;
    up.reject_bearer("tok-1");

    let body = serde_json::to_vec(&json!({
        "userName": "bjensen",
        "givenName": "Barbara",
        "sn": "Jensen",
        "mail": "bjensen@example.com",
    }))
    .unwrap();
    let resp = gw
        .post(&path("x", "managed/user?_action=create"))
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", gw.logs());
    let echoed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(echoed_bearer(&echoed), "tok-2");

    assert_eq!(up.count(), 2, "upstream attempts");
    assert_eq!(ep.count(), 2, "token fetches");
    let want = sha256_hex(&body);
    for (i, rec) in up.requests().iter().enumerate() {
        assert_eq!(rec.method, "POST", "attempt {i}");
        assert!(rec.body_complete, "attempt {i}");
        assert_eq!(rec.body_len, body.len() as u64, "attempt {i}");
        assert_eq!(rec.body_sha256, want, "attempt {i}");
        assert_eq!(rec.query(), Some("_action=create"), "attempt {i}");
    }
    assert_eq!(echoed["bodySha256"], want.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_token_with_large_body_is_not_retried_but_dropped() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start();
    let gw = gateway_with("x", fake_instance(&up, &ep, json!({}))).await;
    up.reject_bearer("tok-1");

    // Larger than pingora's 64 KiB retry buffer: the body cannot be replayed.
    let body = big_pattern(1024 * 1024);
    let resp = gw
        .post(&path("x", "managed/user?_action=create"))
        .header("Content-Type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 401, "{text}\n{}", gw.logs());
    assert_eq!(up.count(), 1, "a non-replayable body was retried");
    let rec = up.last().unwrap();
    assert_eq!(bearer_of(&rec), "tok-1");
    assert_eq!(rec.body_len, body.len() as u64);
    assert_eq!(rec.body_sha256, sha256_hex(&body));
    assert_eq!(ep.count(), 1);

    // The rejected token was dropped all the same.
    assert_eq!(get_ok_token(&gw, "x").await, "tok-2");
    assert_eq!(ep.count(), 2);
    assert_eq!(up.count(), 2);
}

// ---------------------------------------------------------------------------------------
// 5. Token endpoint failures.

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_error_is_502_and_remembered_briefly() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start_with(TokenMode::Status(500));
    let secret = "tok-ep-fail-secret-77Q";
    let gw = gateway_with(
        "x",
        fake_instance(&up, &ep, json!({"clientSecret": secret})),
    )
    .await;

    let (status, body) = get(&gw, "x").await;
    let first = Instant::now();
    let message = assert_bad_gateway(status, &body, "x", secret);
    assert!(message.contains("token"), "{message}");
    assert_eq!(ep.count(), 1);

    // Within the failure memory the endpoint is not asked again.
    for _ in 0..5 {
        let (status, body) = get(&gw, "x").await;
        assert_bad_gateway(status, &body, "x", secret);
    }
    if first.elapsed() < Duration::from_millis(800) {
        assert_eq!(ep.count(), 1, "failed token fetch not remembered");
    } else {
        eprintln!("slow machine: skipped failure-memory count check");
    }
    assert_eq!(up.count(), 0, "forwarded without a token");

    // After it, a new attempt is made (and now succeeds).
    ep.set_mode(TokenMode::Ok { ttl_secs: 3600 });
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(first.elapsed())).await;
    let before = ep.count();
    assert_eq!(get_ok_token(&gw, "x").await, "tok-1");
    assert_eq!(ep.count(), before + 1);
    assert_eq!(
        up.count(),
        1,
        "only the successful request reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_unauthorized_and_garbage_are_502() {
    let up = RecordingUpstream::start();
    let refused = FakeTokenEndpoint::start_with(TokenMode::Status(401));
    let garbage = FakeTokenEndpoint::start_with(TokenMode::Garbage);
    let gw = start(
        Gateway::builder()
            .conf_file(
                "external.idm-refused",
                fake_instance(&up, &refused, json!({"clientSecret": "refused-secret-1"})),
            )
            .conf_file(
                "external.idm-garbage",
                fake_instance(&up, &garbage, json!({"clientSecret": "garbage-secret-2"})),
            ),
    )
    .await;

    let (status, body) = get(&gw, "refused").await;
    assert_bad_gateway(status, &body, "refused", "refused-secret-1");
    assert_eq!(refused.count(), 1);

    let (status, body) = get(&gw, "garbage").await;
    assert_bad_gateway(status, &body, "garbage", "garbage-secret-2");
    assert_eq!(garbage.count(), 1);

    assert_eq!(up.count(), 0, "forwarded without a token");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_token_endpoint_times_out_with_502() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start_with(TokenMode::Slow(Duration::from_secs(8)));
    let gw = gateway_with(
        "x",
        fake_instance(
            &up,
            &ep,
            json!({"readTimeout": 1000, "clientSecret": "slow-sec-3"}),
        ),
    )
    .await;

    let t = Instant::now();
    let (status, body) = get(&gw, "x").await;
    let took = t.elapsed();
    let message = assert_bad_gateway(status, &body, "x", "slow-sec-3");
    assert!(
        took < Duration::from_secs(5),
        "502 after {took:?}, token endpoint delay is 8 s\n{}",
        gw.logs()
    );
    assert!(
        took >= Duration::from_millis(900),
        "502 after {took:?}, before the 1 s read timeout"
    );
    assert!(message.contains("in time"), "{message}");
    assert_eq!(ep.count(), 1);
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------------------------------
// 6. Credential changes in the conf file.

#[tokio::test(flavor = "multi_thread")]
async fn changed_secret_drops_the_cached_token() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start();
    let conf = fake_instance(&up, &ep, json!({"clientSecret": "old-secret"}));
    let gw = gateway_with("x", conf.clone()).await;
    assert_eq!(get_ok_token(&gw, "x").await, "tok-1");
    assert_eq!(ep.count(), 1);

    let mut changed = conf.clone();
    changed["clientSecret"] = json!("new-secret");
    gw.write_conf("external.idm-x", &changed);
    let switched = eventually(Duration::from_secs(3), || async {
        get_ok_token(&gw, "x").await != "tok-1"
    })
    .await;
    assert!(switched, "still tok-1 3 s after the secret changed");
    assert_eq!(ep.count(), 2);
    let req = ep.last_request().unwrap();
    assert_eq!(
        req.basic_credentials(),
        Some(("gw-client".to_owned(), "new-secret".to_owned()))
    );
    assert_eq!(bearer_of(&up.last().unwrap()), "tok-2");
    assert_eq!(get_ok_token(&gw, "x").await, "tok-2");
    assert_eq!(ep.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_rewrite_keeps_the_cached_token() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start();
    let conf = fake_instance(&up, &ep, json!({}));
    let gw = gateway_with("x", conf.clone()).await;
    assert_eq!(get_ok_token(&gw, "x").await, "tok-1");

    // Same settings, different bytes (compact instead of pretty), then a marker instance:
    // once the marker is live, the rewrite has been processed too.
    gw.write_conf_bytes("external.idm-x.json", &serde_json::to_vec(&conf).unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    gw.write_conf("external.idm-marker", &basic_instance(&up.url(), "u", "p"));
    let live = eventually(Duration::from_secs(3), || async {
        get(&gw, "marker").await.0 == 200
    })
    .await;
    assert!(live, "marker instance not live after 3 s\n{}", gw.logs());

    assert_eq!(get_ok_token(&gw, "x").await, "tok-1");
    assert_eq!(
        ep.count(),
        1,
        "token fetched again after an unchanged rewrite"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Secrets stay out of logs and metrics.

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_logged_nor_in_metrics() {
    let secret = "very-secret-client-password-4F2x";
    let wrong = "wrong-client-password-9KkE";
    let op = tokio::task::block_in_place(|| {
        OidcProvider::start("gw-log", secret, "client_secret_post", &["fr:idm:*"], 3600)
    });
    let up = RecordingUpstream::start();
    let conf = |s: &str| {
        json!({
            "authType": "bearer",
            "instanceUrl": up.url(),
            "clientId": "gw-log",
            "clientSecret": s,
            "tokenEndpoint": op.token_endpoint(),
            "scope": ["fr:idm:*"],
            "tokenEndpointAuthMethod": "client_secret_post",
        })
    };
    let gw = start(
        Gateway::builder()
            .env("RUST_LOG", "debug")
            .conf_file("external.idm-x", conf(secret))
            .conf_file("external.idm-bad", conf(wrong)),
    )
    .await;

    // Success, a rejected token with its retry, and a refused client. `status/200` so
    // that the upstream does not echo the token in its body (pingora logs bodies at
    // debug level).
    let ok_path = path("x", "status/200");
    let resp = gw.get(&ok_path).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let first = bearer_of(&up.last().unwrap());
    up.reject_bearer(&first);
    let resp = gw.get(&ok_path).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(up.count(), 3);
    let second = bearer_of(&up.last().unwrap());
    assert_ne!(first, second);
    let (status, body) = get(&gw, "bad").await;
    assert_bad_gateway(status, &body, "bad", wrong);

    let resp = gw.get("/openidm/metrics/prometheus").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = resp.text().await.unwrap();
    let success = metrics
        .lines()
        .find(|l| {
            l.starts_with("idm_gateway_token_fetches_total{")
                && l.contains("instance=\"x\"")
                && l.contains("outcome=\"success\"")
        })
        .unwrap_or_else(|| panic!("no success token fetch metric:\n{metrics}"));
    let n: f64 = success.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, 2.0, "{success}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("idm_gateway_token_fetches_total{")
                && l.contains("instance=\"bad\"")
                && l.contains("outcome=\"failure\"")),
        "no failure token fetch metric:\n{metrics}"
    );

    // Let the access log of the last request flush.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gw.logs();
    assert!(logs.contains("token fetch failed"), "{logs}");
    for needle in [secret, wrong, first.as_str(), second.as_str()] {
        assert!(!logs.contains(needle), "{needle:?} in gateway log:\n{logs}");
        assert!(!metrics.contains(needle), "{needle:?} in metrics");
    }
}
