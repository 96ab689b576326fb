//! Who the caller is (issue 14): IDM's `authentication.json` modules against the real
//! gateway, `rsFilter` with a real OAuth2 server (introspection and JWT access tokens),
//! failures of the authorization server, and login throttling.

mod common;

use std::time::Duration;

use common::fixtures::{managed_encrypted, shipped};
use common::oauth::OidcProvider;
use common::*;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

/// `idm_gateway_<name>{labels…}` from the gateway's metrics (0 when absent).
async fn metric(gw: &Gateway, name: &str, labels: &str) -> f64 {
    let text = gw
        .get("/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

async fn login(gw: &Gateway, user: &str, password: &str) -> (u16, Value) {
    json_of(
        gw.as_user(Method::GET, "/openidm/info/login", user, password)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn create_user(gw: &Gateway, id: &str, user_name: &str, password: &str, status: &str) {
    let (code, body) = send(
        gw,
        Method::PUT,
        &format!("/openidm/managed/user/{id}"),
        Some(
            json!({"userName": user_name, "givenName": "B", "sn": "Jensen",
            "mail": format!("{user_name}@example.com"), "password": password,
            "accountStatus": status}),
        ),
    )
    .await;
    assert!(code == 201 || code == 200, "{code} {body}");
}

#[tokio::test]
async fn idm_default_modules_log_in_managed_internal_and_static_users() {
    let gw = Gateway::builder()
        .conf_file("authentication", shipped("authentication"))
        .conf_file("managed", managed_encrypted())
        .start()
        .await;
    create_user(&gw, "b1", "bjensen", "Passw0rd-1", "active").await;
    create_user(&gw, "s1", "sleeper", "Passw0rd-2", "inactive").await;

    // MANAGED_USER: found by userName, the managed object's id, default role.
    let (code, body) = login(&gw, "bjensen", "Passw0rd-1").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["authorization"]["id"], "b1");
    assert_eq!(body["authorization"]["component"], "managed/user");
    assert_eq!(
        body["authorization"]["roles"],
        json!(["internal/role/openidm-authorized"])
    );
    // Not an administrator.
    let r = gw
        .as_user(
            Method::GET,
            "/openidm/managed/user?_queryFilter=true",
            "bjensen",
            "Passw0rd-1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // credential-query finds active accounts only; a wrong password fails the same way.
    for (user, password) in [
        ("sleeper", "Passw0rd-2"),
        ("bjensen", "wrong"),
        ("nobody", "x"),
    ] {
        let (code, body) = login(&gw, user, password).await;
        assert_eq!(code, 401, "{user}: {body}");
        assert_eq!(body["message"], "Access Denied", "{user}: {body}");
    }

    // authzRoles granted to the managed user count at the next login.
    let (code, body) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user/b1/authzRoles?_action=create",
        Some(json!({"_ref": "internal/role/openidm-admin"})),
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let (code, body) = login(&gw, "bjensen", "Passw0rd-1").await;
    assert_eq!(code, 200);
    let roles = body["authorization"]["roles"].as_array().unwrap().clone();
    assert!(
        roles.contains(&json!("internal/role/openidm-admin")),
        "{body}"
    );

    // A password change takes effect at once (the old one was cached).
    let (code, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/b1",
        Some(json!([{"operation": "replace", "field": "password", "value": "Passw0rd-new"}])),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(login(&gw, "bjensen", "Passw0rd-1").await.0, 401);
    assert_eq!(login(&gw, "bjensen", "Passw0rd-new").await.0, 200);
    // Deactivating the account too.
    let (code, _) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/b1",
        Some(json!([{"operation": "replace", "field": "accountStatus", "value": "inactive"}])),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(login(&gw, "bjensen", "Passw0rd-new").await.0, 401);

    // STATIC_USER anonymous: openidm-reg, may ping but not read its login.
    let r = gw
        .as_user(Method::GET, "/openidm/info/ping", "anonymous", "anonymous")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(login(&gw, "anonymous", "anonymous").await.0, 403);
    assert_eq!(login(&gw, "anonymous", "wrong").await.0, 401);

    // STATIC_USER openidm-admin with &{openidm.admin.password}: the stored password.
    let (code, body) = login(&gw, "openidm-admin", gw.admin_password()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["authorization"]["component"], "internal/user");

    // Failed logins are counted; the log names the user, never the password.
    assert!(
        metric(
            &gw,
            "idm_gateway_login_failures_total",
            "reason=\"credentials\""
        )
        .await
            >= 5.0
    );
    let logs = gw.logs();
    assert!(logs.contains("nobody"), "failed login not logged");
    assert!(!logs.contains("Passw0rd-1") && !logs.contains("Passw0rd-new"));
}

#[tokio::test]
async fn a_bad_authentication_file_is_refused_and_the_last_good_one_stays() {
    let gw = Gateway::builder()
        .conf_file("authentication", shipped("authentication"))
        .start()
        .await;
    let (code, body) = send(
        &gw,
        Method::PUT,
        "/openidm/config/authentication",
        Some(json!({"serverAuthContext": {"authModules": [
            {"name": "MANAGED_USER", "properties": {"queryId": "no-such-query"}}]}})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("queryId"),
        "{body}"
    );
    assert_eq!(login(&gw, "anonymous", "anonymous").await.0, 403);
    // A file with the managed-user module only: internal and static users are refused
    // from the next request on.
    let mut doc = shipped("authentication");
    doc["serverAuthContext"]["authModules"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["name"] == "MANAGED_USER");
    let (code, body) = send(
        &gw,
        Method::PUT,
        "/openidm/config/authentication",
        Some(doc),
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            login(&gw, "anonymous", "anonymous").await.0 == 401
        })
        .await
    );
}

const RS_CLIENT: &str = "idm-resource-server";
const RS_SECRET: &str = "rs-secret";

fn rs_filter(op: &OidcProvider, extra: Value) -> Value {
    let mut rs = json!({
        "clientId": RS_CLIENT,
        "clientSecret": RS_SECRET,
        "tokenIntrospectUrl": op.introspection_endpoint(),
        "scopes": ["fr:idm:*"],
        "cache": {"maxTimeout": "300 seconds"},
        "staticUserMapping": [{
            "subject": "admin-app",
            "localUser": "internal/user/openidm-admin",
            "roles": ["internal/role/openidm-authorized", "internal/role/openidm-admin"]
        }],
        "subjectMapping": [{
            "queryOnResource": "managed/user",
            "propertyMapping": {"sub": "userName"},
            "userRoles": "authzRoles/*",
            "defaultRoles": ["internal/role/openidm-authorized"]
        }]
    });
    for (k, v) in extra.as_object().unwrap() {
        rs[k] = v.clone();
    }
    let mut doc = shipped("authentication");
    doc["rsFilter"] = rs;
    doc
}

fn provider(format: &str) -> OidcProvider {
    let clients = json!([
        {"client_id": "admin-app", "client_secret": "admin-secret", "scope": "fr:idm:*"},
        {"client_id": "bjensen", "client_secret": "bj-secret", "scope": "fr:idm:* other"},
        {"client_id": "stranger", "client_secret": "st-secret", "scope": "fr:idm:*"},
        {"client_id": "narrow", "client_secret": "n-secret", "scope": "other"}
    ])
    .to_string();
    OidcProvider::start_env(
        RS_CLIENT,
        RS_SECRET,
        "client_secret_basic",
        &["fr:idm:*"],
        3600,
        &[("EXTRA_CLIENTS", &clients), ("ACCESS_TOKEN_FORMAT", format)],
    )
}

async fn with_token(gw: &Gateway, path: &str, token: &str) -> (u16, Value) {
    json_of(
        gw.anon(Method::GET, path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn rs_filter_introspects_each_token_once_and_maps_its_subject() {
    let op = provider("opaque");
    let gw = Gateway::builder()
        .conf_file("authentication", rs_filter(&op, json!({})))
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    create_user(&gw, "b1", "bjensen", "Passw0rd-1", "active").await;

    // staticUserMapping: the administrator's roles.
    let admin = op
        .token_for("admin-app", "admin-secret", &["fr:idm:*"])
        .await;
    for _ in 0..20 {
        let (code, body) = with_token(&gw, "/openidm/managed/user?_queryFilter=true", &admin).await;
        assert_eq!(code, 200, "{body}");
    }
    // A new token used by 16 requests at once: one introspection (single flight).
    let admin2 = op
        .token_for("admin-app", "admin-secret", &["fr:idm:*"])
        .await;
    let answers = join_all((0..16).map(|_| with_token(&gw, "/openidm/info/login", &admin2))).await;
    assert!(answers.iter().all(|(c, _)| *c == 200), "{answers:?}");
    let checks = metric(
        &gw,
        "idm_gateway_token_checks_total",
        "method=\"introspection\",outcome=\"accepted\"",
    )
    .await;
    assert_eq!(checks, 2.0, "one introspection per token");

    // subjectMapping: the managed user whose userName is the subject.
    let bj = op.token_for("bjensen", "bj-secret", &["fr:idm:*"]).await;
    let (code, body) = with_token(&gw, "/openidm/info/login", &bj).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["authorization"]["id"], "b1");
    assert_eq!(body["authorization"]["component"], "managed/user");
    assert_eq!(
        body["authorization"]["roles"],
        json!(["internal/role/openidm-authorized"])
    );
    assert_eq!(
        with_token(&gw, "/openidm/managed/user?_queryFilter=true", &bj)
            .await
            .0,
        403
    );

    // Refused: a subject with no account, a token without the required scope, garbage,
    // and a bearer token where none was issued.
    let stranger = op.token_for("stranger", "st-secret", &["fr:idm:*"]).await;
    assert_eq!(
        with_token(&gw, "/openidm/info/login", &stranger).await.0,
        401
    );
    let narrow = op.token_for("narrow", "n-secret", &["other"]).await;
    assert_eq!(with_token(&gw, "/openidm/info/login", &narrow).await.0, 401);
    let (code, body) = with_token(&gw, "/openidm/info/login", "not-a-token").await;
    assert_eq!(code, 401);
    assert_eq!(body["reason"], "Unauthorized");

    // The classic modules keep working next to rsFilter (a gateway extra).
    assert_eq!(login(&gw, "bjensen", "Passw0rd-1").await.0, 200);
    assert_eq!(
        login(&gw, "openidm-admin", gw.admin_password()).await.0,
        200
    );

    // Token values never reach the log.
    let logs = gw.logs();
    for t in [&admin, &admin2, &bj, &stranger, &narrow] {
        assert!(!logs.contains(t.as_str()));
    }
    assert!(!logs.contains(RS_SECRET));
}

#[tokio::test]
async fn an_unreachable_or_hanging_authorization_server_fails_fast_with_401() {
    let op = provider("opaque");
    // Accepts connections and never answers.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}/introspect", hanging.local_addr().unwrap());
    let refused_url = format!("http://127.0.0.1:{}/introspect", free_port());
    let token = op
        .token_for("admin-app", "admin-secret", &["fr:idm:*"])
        .await;
    for url in [hang_url, refused_url] {
        let gw = Gateway::builder()
            .conf_file(
                "authentication",
                rs_filter(
                    &op,
                    json!({"tokenIntrospectUrl": url, "requestTimeoutMs": 500}),
                ),
            )
            .start()
            .await;
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            with_token(&gw, "/openidm/info/login", &token),
        )
        .await
        .expect("the gateway answered");
        assert_eq!(answer.0, 401, "{answer:?}");
        // Not cached: the next request asks again.
        let _ = with_token(&gw, "/openidm/info/login", &token).await;
        assert_eq!(
            metric(
                &gw,
                "idm_gateway_token_checks_total",
                "method=\"introspection\",outcome=\"unavailable\""
            )
            .await,
            2.0
        );
        // Basic credentials do not depend on it.
        assert_eq!(
            login(&gw, "openidm-admin", gw.admin_password()).await.0,
            200
        );
    }
    drop(hanging);
}

#[tokio::test]
async fn jwt_access_tokens_are_validated_locally_against_the_jwks() {
    let op = provider("jwt");
    let jwt = |audience: &str| {
        json!({"jwt": {"jwksUri": format!("{}/jwks", op.issuer()), "issuer": op.issuer(),
            "audience": audience, "clockSkewSeconds": 30}})
    };
    let mut doc = rs_filter(&op, jwt("idm-gateway"));
    // No introspection at all: every token must validate locally.
    doc["rsFilter"]
        .as_object_mut()
        .unwrap()
        .remove("tokenIntrospectUrl");
    let gw = Gateway::builder()
        .conf_file("authentication", doc)
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    create_user(&gw, "b1", "bjensen", "Passw0rd-1", "active").await;
    let admin = op
        .token_for("admin-app", "admin-secret", &["fr:idm:*"])
        .await;
    assert_eq!(admin.split('.').count(), 3, "a JWT: {admin}");
    for _ in 0..5 {
        let (code, body) = with_token(&gw, "/openidm/managed/user?_queryFilter=true", &admin).await;
        assert_eq!(code, 200, "{body}");
    }
    let bj = op.token_for("bjensen", "bj-secret", &["fr:idm:*"]).await;
    let (code, body) = with_token(&gw, "/openidm/info/login", &bj).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["authorization"]["id"], "b1");
    assert_eq!(
        metric(
            &gw,
            "idm_gateway_token_checks_total",
            "method=\"jwt\",outcome=\"accepted\""
        )
        .await,
        2.0
    );
    // A changed signature, and a token whose scope is missing, are refused.
    let mut tampered = admin.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        with_token(&gw, "/openidm/info/login", &tampered).await.0,
        401
    );
    let narrow = op.token_for("narrow", "n-secret", &["other"]).await;
    assert_eq!(with_token(&gw, "/openidm/info/login", &narrow).await.0, 401);

    // Another audience configured: the same tokens are refused.
    let mut doc = rs_filter(&op, jwt("someone-else"));
    doc["rsFilter"]
        .as_object_mut()
        .unwrap()
        .remove("tokenIntrospectUrl");
    gw.write_conf("authentication", &doc);
    let fresh = op
        .token_for("admin-app", "admin-secret", &["fr:idm:*"])
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            with_token(&gw, "/openidm/info/login", &fresh).await.0 == 401
        })
        .await
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_user_and_address_without_telling_who_exists() {
    let gw = Gateway::builder()
        .conf_file("authentication", shipped("authentication"))
        .conf_file(
            "gateway",
            json!({"loginThrottle": {"maxFailuresPerUser": 3, "maxFailuresPerAddress": 1000,
                "windowSeconds": 60}}),
        )
        .start()
        .await;
    // The administrator's credentials are verified (and cached) before the attack.
    assert_eq!(
        login(&gw, "openidm-admin", gw.admin_password()).await.0,
        200
    );
    for user in ["openidm-admin", "no-such-user"] {
        for i in 0..4 {
            let (code, body) = login(&gw, user, &format!("guess-{i}")).await;
            assert_eq!(code, 401, "{user} {i}: {body}");
        }
    }
    let mut messages = Vec::new();
    for user in ["openidm-admin", "no-such-user"] {
        let r = gw
            .as_user(Method::GET, "/openidm/info/login", user, "guess-9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "{user}");
        assert!(r.headers().get("retry-after").is_some());
        let (_, body) = json_of(r).await;
        messages.push(body["message"].clone());
    }
    assert_eq!(messages[0], messages[1], "the same answer for both");
    // The already verified administrator is not locked out by the guesses.
    assert_eq!(
        login(&gw, "openidm-admin", gw.admin_password()).await.0,
        200
    );
    // Other users are not affected.
    assert_eq!(login(&gw, "anonymous", "anonymous").await.0, 403);
    assert!(
        metric(
            &gw,
            "idm_gateway_login_failures_total",
            "reason=\"throttled\""
        )
        .await
            >= 2.0
    );
}
