//! Proves the shared test harness (tests/common) works, without the gateway.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[tokio::test]
async fn recording_upstream_records_plain_http1() {
    let up = RecordingUpstream::start();
    let body = b"{\"userName\":\"bjensen\"}".to_vec();
    let resp = http_client()
        .post(format!(
            "{}managed/user?_action=create&x=%2F+a&x=2",
            up.url()
        ))
        .header("X-Test", "one")
        .header("X-Test", "two")
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.headers()["set-cookie"], "upstream=secret");
    assert_eq!(resp.headers()["x-upstream"], "recording");
    let echo: Value = resp.json().await.unwrap();

    assert_eq!(up.count(), 1);
    let rec = up.last().unwrap();
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.uri, "/openidm/managed/user?_action=create&x=%2F+a&x=2");
    assert_eq!(rec.path(), "/openidm/managed/user");
    assert_eq!(rec.query(), Some("_action=create&x=%2F+a&x=2"));
    assert_eq!(rec.version, "HTTP/1.1");
    assert_eq!(rec.header_all("x-test"), vec!["one", "two"]);
    assert_eq!(rec.header("content-type"), Some("application/json"));
    assert_eq!(rec.body_len, body.len() as u64);
    assert_eq!(rec.body_sha256, sha256_hex(&body));
    assert!(rec.body_complete && !rec.tls);

    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], rec.uri);
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["x-test"], serde_json::json!(["one", "two"]));
    assert_eq!(echo["bodyLen"], body.len());
    assert_eq!(echo["bodySha256"], sha256_hex(&body));

    up.clear();
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn recording_upstream_h2c_prior_knowledge() {
    let up = RecordingUpstream::start();
    let client = client_builder().http2_prior_knowledge().build().unwrap();
    let resp = client
        .get(format!("{}config/ui?q=1", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let rec = up.last().unwrap();
    assert_eq!(rec.version, "HTTP/2.0");
    assert_eq!(rec.uri, "/openidm/config/ui?q=1");
    assert_eq!(
        rec.authority.as_deref(),
        Some(up.addr().to_string().as_str())
    );
}

#[tokio::test]
async fn recording_upstream_tls_alpn_h2_and_http1() {
    let pki = TestPki::new();
    let up = RecordingUpstream::start_tls(pki.server_config());
    assert!(up.url().starts_with("https://127.0.0.1:"));

    let h2 = pki.client_builder().build().unwrap();
    let resp = h2
        .get(format!("{}info/ping", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let rec = up.last().unwrap();
    assert_eq!(rec.version, "HTTP/2.0");
    assert!(rec.tls);

    let h1 = pki.client_builder().http1_only().build().unwrap();
    let resp = h1
        .get(format!("{}info/ping", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(up.last().unwrap().version, "HTTP/1.1");

    // "localhost" is in the certificate too.
    let resp = h2
        .get(format!("https://localhost:{}/openidm/x", up.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A client trusting only the unrelated CA must refuse the upstream.
    let other = reqwest::Certificate::from_pem(pki.other_ca_pem().as_bytes()).unwrap();
    let untrusting = client_builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(other)
        .build()
        .unwrap();
    assert!(untrusting.get(up.url()).send().await.is_err());
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn recording_upstream_big_status_reject_delay() {
    let up = RecordingUpstream::start();

    // /big streams exactly n bytes of the pattern, in several chunks.
    let n: usize = 3 * 1024 * 1024 + 17;
    let resp = http_client()
        .get(format!("{}files/big?n={n}", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.content_length(), Some(n as u64));
    let mut resp = resp;
    let mut offset = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        for b in chunk {
            assert_eq!(b, big_pattern_byte(offset), "byte {offset}");
            offset += 1;
        }
    }
    assert_eq!(offset, n as u64);

    // /status/<code>
    let resp = http_client()
        .get(format!("{}managed/user/status/503", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 503);
    let resp = http_client()
        .delete(format!("{}status/204", up.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    // Bearer rejection.
    up.reject_bearer("expired");
    let resp = http_client()
        .get(up.url())
        .bearer_auth("expired")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Access Denied");
    let resp = http_client()
        .get(up.url())
        .bearer_auth("fresh")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Delay.
    up.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    let resp = http_client().get(up.url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(up.count(), 6);
    assert!(up.connections() >= 1);
}

#[tokio::test]
async fn recording_upstream_hashes_large_upload() {
    let up = RecordingUpstream::start();
    let body = big_pattern(5 * 1024 * 1024 + 3);
    let resp = http_client()
        .put(format!("{}upload", up.url()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rec = up.last().unwrap();
    assert_eq!(rec.body_len, body.len() as u64);
    assert_eq!(rec.body_sha256, sha256_hex(&body));
}

#[tokio::test]
async fn fault_upstreams_misbehave() {
    let client = client_builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();

    let hanging = HangingUpstream::start();
    let err = client.get(hanging.url()).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(hanging.connections(), 1);

    let resetting = ResettingUpstream::start();
    let err = client.get(resetting.url()).send().await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");

    let garbage = GarbageUpstream::start();
    assert!(client.get(garbage.url()).send().await.is_err());

    // 5 bytes, one every 50 ms: the head arrives at once, the body slowly.
    let slow = SlowBodyUpstream::start(5, Duration::from_millis(50));
    let t = Instant::now();
    let resp = http_client().get(slow.url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(5));
    let head_at = t.elapsed();
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..], &big_pattern(5)[..]);
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(
        head_at < Duration::from_millis(200),
        "head took {head_at:?}"
    );
}

#[tokio::test]
async fn fake_token_endpoint_modes() {
    let ep = FakeTokenEndpoint::start_with(TokenMode::Ok { ttl_secs: 5 });
    let client = http_client();

    let resp = client
        .post(ep.token_endpoint())
        .basic_auth("my-client", Some("s3cr3t"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "fr:idm:* a"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let tok: Value = resp.json().await.unwrap();
    assert_eq!(tok["access_token"], "tok-1");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 5);
    let req = ep.last_request().unwrap();
    assert_eq!(
        req.basic_credentials(),
        Some(("my-client".to_string(), "s3cr3t".to_string()))
    );
    assert_eq!(req.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(req.scopes(), vec!["fr:idm:*", "a"]);
    assert!(ep.last_authorization().unwrap().starts_with("Basic "));

    // client_secret_post style
    let resp = client
        .post(ep.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "c"),
            ("client_secret", "s"),
        ])
        .send()
        .await
        .unwrap();
    let tok: Value = resp.json().await.unwrap();
    assert_eq!(tok["access_token"], "tok-2");
    assert_eq!(ep.last_authorization(), None);
    assert!(ep
        .last_form()
        .contains(&("client_secret".to_string(), "s".to_string())));

    ep.set_mode(TokenMode::Status(500));
    let resp = client.post(ep.token_endpoint()).send().await.unwrap();
    assert_eq!(resp.status(), 500);

    ep.set_mode(TokenMode::Garbage);
    let resp = client.post(ep.token_endpoint()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.is_err());

    ep.set_mode(TokenMode::Slow(Duration::from_millis(300)));
    let t = Instant::now();
    let resp = client.post(ep.token_endpoint()).send().await.unwrap();
    let tok: Value = resp.json().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(tok["access_token"], "tok-3");

    assert_eq!(ep.count(), 5);
    assert_eq!(ep.issued(), vec!["tok-1", "tok-2", "tok-3"]);
}

#[test]
fn pki_issues_certs_and_writes_ca() {
    let pki = TestPki::new();
    let (cert, key) = pki.server_cert(&["localhost", "127.0.0.1"]);
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(key.contains("PRIVATE KEY"));
    assert_ne!(pki.ca_pem(), pki.other_ca_pem());
    let dir = tempfile::tempdir().unwrap();
    let path = pki.write_ca(dir.path(), "corp-ca");
    assert_eq!(path, dir.path().join("corp-ca.pem"));
    assert_eq!(std::fs::read_to_string(path).unwrap(), pki.ca_pem());
}

async fn oidc_round_trip(method: &str) {
    let op = OidcProvider::start(
        "gateway-client",
        "gateway-secret-0123456789",
        method,
        &["fr:idm:*", "openid", "read"],
        120,
    );
    assert!(op.token_endpoint().ends_with("/token"));
    let tok = op.fetch_token(&["fr:idm:*", "read"]).await;
    let access = tok["access_token"].as_str().expect("access_token");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["scope"], "fr:idm:* read");
    let expires = tok["expires_in"].as_u64().unwrap();
    assert!(expires > 100 && expires <= 120, "expires_in {expires}");

    let info = op.introspect(access).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "gateway-client");
    assert_eq!(info["scope"], "fr:idm:* read");

    let bogus = op.introspect("not-a-token").await;
    assert_eq!(bogus["active"], false);

    // Wrong authentication method is refused.
    let mut form = vec![("grant_type", "client_credentials")];
    let wrong = if method == "client_secret_basic" {
        form.extend([
            ("client_id", "gateway-client"),
            ("client_secret", "gateway-secret-0123456789"),
        ]);
        http_client().post(op.token_endpoint()).form(&form)
    } else {
        http_client()
            .post(op.token_endpoint())
            .basic_auth("gateway-client", Some("gateway-secret-0123456789"))
            .form(&form)
    };
    let resp = wrong.send().await.unwrap();
    assert_eq!(resp.status(), 401, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn oidc_provider_client_secret_basic() {
    oidc_round_trip("client_secret_basic").await;
}

#[tokio::test]
async fn oidc_provider_client_secret_post() {
    oidc_round_trip("client_secret_post").await;
}

#[tokio::test]
async fn gateway_spawn_captures_exit_and_writes_conf() {
    // An unknown flag makes any clap-based main exit quickly; this exercises
    // temp dirs, conf writing, spawning and log capture without needing a
    // working gateway.
    let (status, _logs) = Gateway::builder()
        .conf_file(
            "external.idm-east",
            basic_instance("http://127.0.0.1:1/openidm/", "u", "p"),
        )
        .arg("--definitely-not-a-flag")
        .start_expect_exit(Duration::from_secs(20))
        .await;
    assert!(status.is_some(), "gateway did not exit on a bad flag");
}
