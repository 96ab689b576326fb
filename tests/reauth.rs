//! Re-authentication for protected properties (issue 14): `X-OpenIDM-Reauth-Password`
//! with the shipped `access.json` (`reauthIfProtectedAttributeChange()`) and
//! `POST /openidm/authentication?_action=reauthenticate`, with the real gateway binary.

mod common;

use common::fixtures::shipped;
use common::oauth::OidcProvider;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const OLD: &str = "Old-Passw0rd-7c1";
const NEW: &str = "New-Passw0rd-9d4";
const WRONG: &str = "Wrong-Passw0rd-3e2";
const ME: &str = "/openidm/managed/user/b1";
const REAUTH: &str = "/openidm/authentication?_action=reauthenticate";

/// The shipped `managed.json` with `mail` protected too (IDM's default marks it so in
/// some versions): a protected property the caller can read back.
fn managed_with_protected_mail() -> Value {
    let mut managed = shipped("managed");
    for o in managed["objects"].as_array_mut().unwrap() {
        if o["name"] == "user" {
            o["schema"]["properties"]["mail"]["isProtected"] = json!(true);
        }
    }
    managed
}

async fn gateway() -> Gateway {
    Gateway::builder()
        .conf_file("authentication", shipped("authentication"))
        .conf_file("managed", managed_with_protected_mail())
        .conf_file("audit", shipped("audit"))
        .conf_file(
            "gateway",
            json!({"loginThrottle": {"maxFailuresPerUser": 3, "maxFailuresPerAddress": 1000,
                "windowSeconds": 60}}),
        )
        .start()
        .await
}

async fn create_user(gw: &Gateway) {
    let (code, body) = send(
        gw,
        Method::PUT,
        ME,
        Some(
            json!({"userName": "bjensen", "givenName": "B", "sn": "Jensen",
            "mail": "bjensen@example.com", "password": OLD, "accountStatus": "active"}),
        ),
    )
    .await;
    assert!(code == 201 || code == 200, "{code} {body}");
}

/// `method path` as bjensen (password `password`), with `reauth` as the re-authentication
/// header when given.
async fn as_bjensen(
    gw: &Gateway,
    method: Method,
    path: &str,
    password: &str,
    reauth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = gw.as_user(method, path, "bjensen", password);
    if let Some(p) = reauth {
        r = r.header("X-OpenIDM-Reauth-Password", p);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    json_of(r.send().await.unwrap()).await
}

fn replace(field: &str, value: &str) -> Option<Value> {
    Some(json!([{"operation": "replace", "field": field, "value": value}]))
}

async fn login(gw: &Gateway, password: &str) -> u16 {
    as_bjensen(gw, Method::GET, "/openidm/info/login", password, None, None)
        .await
        .0
}

/// `idm_gateway_login_failures_total{reason="credentials"}`.
async fn failed_logins(gw: &Gateway) -> f64 {
    let text = gw
        .get("/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("idm_gateway_login_failures_total{reason=\"credentials\"} "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Everything the gateway wrote: its log and its audit files.
fn written(gw: &Gateway) -> String {
    let mut all = gw.logs();
    if let Ok(dir) = std::fs::read_dir(gw.data_dir().join("audit")) {
        for f in dir.flatten() {
            all.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
        }
    }
    all
}

#[tokio::test]
async fn a_managed_user_changes_a_protected_property_only_with_the_current_password() {
    let gw = gateway().await;
    create_user(&gw).await;

    // No header: 403, nothing changed.
    let (code, body) =
        as_bjensen(&gw, Method::PATCH, ME, OLD, None, replace("/password", NEW)).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["message"], "Access denied");
    assert_eq!(login(&gw, NEW).await, 401);
    assert_eq!(login(&gw, OLD).await, 200);

    // A wrong password: 403, nothing changed, and it counts as a failed login.
    let failures = failed_logins(&gw).await;
    let (code, body) = as_bjensen(
        &gw,
        Method::PATCH,
        ME,
        OLD,
        Some(WRONG),
        replace("/password", NEW),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["message"], "Access denied");
    assert_eq!(failed_logins(&gw).await, failures + 1.0);
    assert_eq!(login(&gw, NEW).await, 401);

    // A property that is not protected needs no header.
    let (code, body) = as_bjensen(
        &gw,
        Method::PATCH,
        ME,
        OLD,
        None,
        replace("/givenName", "Babs"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["givenName"], "Babs");

    // PUT: a protected property written with its stored value is no change; a non-editable
    // one (accountStatus) unchanged is fine too; the private password is kept.
    let object = |mail: &str| {
        json!({"userName": "bjensen", "givenName": "Babs", "sn": "Jensen", "mail": mail,
            "accountStatus": "active"})
    };
    let (code, body) = as_bjensen(
        &gw,
        Method::PUT,
        ME,
        OLD,
        None,
        Some(object("bjensen@example.com")),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // A changed protected value needs the header.
    let (code, body) = as_bjensen(
        &gw,
        Method::PUT,
        ME,
        OLD,
        None,
        Some(object("babs@example.com")),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = as_bjensen(
        &gw,
        Method::PUT,
        ME,
        OLD,
        Some(OLD),
        Some(object("babs@example.com")),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["mail"], "babs@example.com");
    // Changing what the user may not edit stays refused, whatever the header.
    let mut inactive = object("babs@example.com");
    inactive["accountStatus"] = json!("inactive");
    let (code, _) = as_bjensen(&gw, Method::PUT, ME, OLD, Some(OLD), Some(inactive)).await;
    assert_eq!(code, 403);

    // The right password: 200; the new password works, the old does not.
    let (code, body) = as_bjensen(
        &gw,
        Method::PATCH,
        ME,
        OLD,
        Some(OLD),
        replace("/password", NEW),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(login(&gw, NEW).await, 200);
    assert_eq!(login(&gw, OLD).await, 401);

    // The re-authentication password is in no log line and no audit event (of which
    // there are some: the writes above).
    let all = written(&gw);
    assert!(
        all.contains("\"eventName\":\"activity\""),
        "no audit written"
    );
    for secret in [WRONG, OLD, NEW] {
        assert!(!all.contains(secret), "{secret} written");
    }
}

#[tokio::test]
async fn the_reauthenticate_action_checks_the_callers_own_password() {
    let gw = gateway().await;
    create_user(&gw).await;

    let (code, body) = as_bjensen(&gw, Method::POST, REAUTH, OLD, Some(OLD), None).await;
    assert_eq!((code, &body), (200, &json!({"reauthenticated": true})));
    // IDM's UI sends non-ASCII passwords RFC 5987-encoded (logged in here with Basic,
    // which carries UTF-8).
    let (code, body) = send(
        &gw,
        Method::PATCH,
        ME,
        replace("/password", "Passw\u{a3}rd-1x"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = json_of(
        gw.anon(Method::POST, REAUTH)
            .basic_auth("bjensen", Some("Passw\u{a3}rd-1x"))
            .header("X-OpenIDM-Reauth-Password", "UTF-8''Passw%C2%A3rd-1x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send(&gw, Method::PATCH, ME, replace("/password", OLD)).await;
    assert_eq!(code, 200, "{body}");
    let pw = OLD;

    let (code, body) = as_bjensen(&gw, Method::POST, REAUTH, pw, None, None).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "Reauthentication failed, missing or empty headers"
    );
    let (code, body) = as_bjensen(&gw, Method::POST, REAUTH, pw, Some(WRONG), None).await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "Reauthentication failed for bjensen");
    assert_eq!(body["reason"], "Forbidden");

    // An internal user re-authenticates against its own module.
    let (code, body) = json_of(
        gw.request(Method::POST, REAUTH)
            .header("X-OpenIDM-Reauth-Password", gw.admin_password())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((code, &body), (200, &json!({"reauthenticated": true})));
    // Anonymous may not; other actions and methods are IDM's errors.
    let (code, _) = json_of(
        gw.as_user(Method::POST, REAUTH, "anonymous", "anonymous")
            .header("X-OpenIDM-Reauth-Password", "anonymous")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 403);
    let (code, body) = send(
        &gw,
        Method::POST,
        "/openidm/authentication?_action=fly",
        None,
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "Action fly on authentication service not supported"
    );
    let (code, _) = send(&gw, Method::GET, "/openidm/authentication", None).await;
    assert_eq!(code, 501);

    // Wrong re-authentications count as failed logins: past the limit (3 per name), even
    // the right password is throttled, on the action as on a protected write.
    for _ in 0..3 {
        let (code, _) = as_bjensen(&gw, Method::POST, REAUTH, pw, Some(WRONG), None).await;
        assert_eq!(code, 403);
    }
    let (code, body) = as_bjensen(&gw, Method::POST, REAUTH, pw, Some(pw), None).await;
    assert_eq!(code, 429, "{body}");
    let (code, _) = as_bjensen(
        &gw,
        Method::PATCH,
        ME,
        pw,
        Some(pw),
        replace("/password", NEW),
    )
    .await;
    assert_eq!(code, 429);
    assert!(!written(&gw).contains(WRONG));
}

#[tokio::test]
async fn an_administrator_changes_a_protected_property_without_reauthenticating() {
    let gw = gateway().await;
    create_user(&gw).await;
    let (code, body) = send(&gw, Method::PATCH, ME, replace("/password", NEW)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(login(&gw, NEW).await, 200);
    assert_eq!(login(&gw, OLD).await, 401);
    let (code, body) = send(&gw, Method::PATCH, ME, replace("/mail", "b@example.com")).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_bearer_token_caller_cannot_reauthenticate_with_a_password() {
    let clients =
        json!([{"client_id": "bjensen", "client_secret": "bj-secret", "scope": "fr:idm:*"}])
            .to_string();
    let op = OidcProvider::start_env(
        "idm-resource-server",
        "rs-secret",
        "client_secret_basic",
        &["fr:idm:*"],
        3600,
        &[
            ("EXTRA_CLIENTS", &clients),
            ("ACCESS_TOKEN_FORMAT", "opaque"),
        ],
    );
    let mut auth = shipped("authentication");
    auth["rsFilter"] = json!({
        "clientId": "idm-resource-server",
        "clientSecret": "rs-secret",
        "tokenIntrospectUrl": op.introspection_endpoint(),
        "scopes": ["fr:idm:*"],
        "subjectMapping": [{
            "queryOnResource": "managed/user",
            "propertyMapping": {"sub": "userName"},
            "defaultRoles": ["internal/role/openidm-authorized"]
        }]
    });
    let gw = Gateway::builder()
        .conf_file("authentication", auth)
        .conf_file("managed", managed_with_protected_mail())
        .start()
        .await;
    create_user(&gw).await;
    let token = op.token_for("bjensen", "bj-secret", &["fr:idm:*"]).await;
    let with_token = |method: Method, path: &str, body: Option<Value>| {
        let mut r = gw
            .anon(method, path)
            .bearer_auth(&token)
            .header("X-OpenIDM-Reauth-Password", OLD);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move { json_of(r.send().await.unwrap()).await }
    };
    // The token's caller is bjensen, and the password is bjensen's: still refused.
    let (code, body) = with_token(Method::GET, ME, None).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = with_token(Method::POST, REAUTH, None).await;
    assert_eq!(code, 403);
    assert_eq!(body["message"], "Reauthentication failed for b1");
    let (code, _) = with_token(Method::PATCH, ME, replace("/password", NEW)).await;
    assert_eq!(code, 403);
    let (code, body) = with_token(Method::PATCH, ME, replace("/givenName", "Babs")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(login(&gw, OLD).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reauthentication_password_is_never_forwarded_to_a_remote() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file(
            "external.idm-dc1",
            basic_instance(&up.url(), "remote-user", "remote-pw"),
        )
        .start()
        .await;
    let resp = gw
        .request(Method::PATCH, "/openidm/external/idm/dc1/managed/user/b1")
        .header("X-OpenIDM-Reauth-Password", OLD)
        .json(&json!([{"operation": "replace", "field": "/password", "value": NEW}]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = up.last().unwrap();
    assert!(!r.has_header("x-openidm-reauth-password"));
    assert!(r.headers.iter().all(|(_, v)| !v.contains(OLD)));
}
