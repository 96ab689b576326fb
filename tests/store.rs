//! The store through the gateway: acknowledged writes survive SIGKILL, conditional
//! updates are atomic under concurrency, managed.json reloads live, internal users
//! authenticate callers and authorization is enforced.

mod common;

use common::fixtures::shipped;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

fn user(i: usize) -> Value {
    json!({"userName": format!("user{i}"), "givenName": "G", "sn": "S", "mail": format!("u{i}@example.com")})
}

/// Guards: "acknowledged writes survive kill -9". Writers create numbered users while the
/// gateway is SIGKILLed; after a restart every create that got a 201 is there and the
/// store opens cleanly.
#[tokio::test]
async fn acknowledged_creates_survive_sigkill() {
    let mut gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let gw_ref = &gw;
    let writers = (0..8).map(|_| {
        let acked = acked.clone();
        let next = next.clone();
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let resp = gw_ref
                    .put(&format!("/openidm/managed/user/u{i}"))
                    .header("If-None-Match", "*")
                    .json(&user(i))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(i),
                    Ok(r) => panic!("unexpected status {} for u{i}", r.status()),
                    Err(_) => return, // the gateway is gone
                }
            }
        }
    });
    let killer = async {
        // Let some writes through first.
        while acked.lock().unwrap().len() < 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let pid = gw_ref.pid();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    };
    tokio::join!(futures_util::future::join_all(writers), killer);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200);

    gw.restart().await;
    let page: Value = gw
        .get("/openidm/managed/user?_queryId=query-all-ids")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = page["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|i| !stored.contains(&format!("u{i}")))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged creates lost: {lost:?}",
        lost.len()
    );
    // The store still takes writes.
    let resp = gw
        .put("/openidm/managed/user/after-crash")
        .header("If-None-Match", "*")
        .json(&user(1_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

/// Guards: "no lost update": many PUTs with the same If-Match, exactly one wins per
/// revision; the others get 412.
#[tokio::test]
async fn concurrent_conditional_updates_one_winner_per_revision() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let created: Value = gw
        .put("/openidm/managed/user/target")
        .header("If-None-Match", "*")
        .json(&user(0))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut rev = created["_rev"].as_str().unwrap().to_owned();
    for round in 0..5 {
        let tasks = (0..32).map(|k| {
            let rev = rev.clone();
            let gw = &gw;
            async move {
                let mut body = user(0);
                body["description"] = json!(format!("round {round} writer {k}"));
                let resp = gw
                    .put("/openidm/managed/user/target")
                    .header("If-Match", format!("\"{rev}\""))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                (status, body)
            }
        });
        let results = futures_util::future::join_all(tasks).await;
        let winners: Vec<&Value> = results
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
            .collect();
        let losers = results.iter().filter(|(s, _)| *s == 412).count();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert_eq!(losers, 31, "round {round}");
        let now: Value = gw
            .get("/openidm/managed/user/target")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(now["description"], winners[0]["description"]);
        assert_ne!(now["_rev"].as_str().unwrap(), rev);
        rev = now["_rev"].as_str().unwrap().to_owned();
    }
}

#[tokio::test]
async fn managed_json_reloads_live_and_bad_file_keeps_last_good() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let resp = gw
        .get("/openidm/managed/device?_queryFilter=true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let mut doc = shipped("managed");
    doc["objects"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "device", "schema": {"required": ["serial"], "properties": {"serial": {"type": "string", "searchable": true}}}}));
    gw.write_conf("managed", &doc);
    assert!(
        eventually(Duration::from_secs(3), || async {
            gw.get("/openidm/managed/device?_queryFilter=true")
                .send()
                .await
                .unwrap()
                .status()
                == 200
        })
        .await
    );
    let resp = gw
        .post("/openidm/managed/device?_action=create")
        .json(&json!({"model": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "serial is required");

    // A broken managed.json is rejected; the last good types stay live.
    gw.write_conf_bytes("managed.json", br#"{"objects": [{"name": 42}]}"#);
    assert!(
        eventually(Duration::from_secs(3), || async {
            let list: Value = gw
                .get("/openidm/config")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            list["configurations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["_id"] == "managed" && c.get("problems").is_some())
        })
        .await
    );
    assert_eq!(
        gw.get("/openidm/managed/device?_queryFilter=true")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // PUT through the config endpoint validates first.
    let resp = gw
        .put("/openidm/config/managed")
        .json(&json!({"objects": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn internal_users_authenticate_and_authorization_is_enforced() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .admin_password("s3cret-admin")
        .start()
        .await;
    // Seeded: admin and anonymous, passwords never shown.
    let admin: Value = gw
        .get("/openidm/internal/user/openidm-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut refs: Vec<&str> = admin["authzRoles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_ref"].as_str().unwrap())
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        [
            "internal/role/openidm-admin",
            "internal/role/openidm-authorized"
        ]
    );
    assert!(admin.get("password").is_none());
    let roles: Value = gw
        .get("/openidm/internal/role?_queryId=query-all-ids")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(roles["resultCount"], 3);

    // anonymous: ping only.
    let r = gw
        .as_user(Method::GET, "/openidm/info/ping", "anonymous", "anonymous")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in [
        "/openidm/managed/user?_queryFilter=true",
        "/openidm/config",
        "/openidm/internal/user/openidm-admin",
    ] {
        let r = gw
            .as_user(Method::GET, path, "anonymous", "anonymous")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["reason"], "Forbidden");
    }
    // No or wrong credentials: 401.
    let r = gw
        .anon(Method::GET, "/openidm/managed/user?_queryFilter=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = gw
        .as_user(Method::GET, "/openidm/info/login", "openidm-admin", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A new internal user with only openidm-authorized: info/login yes, managed no.
    let r = gw
        .put("/openidm/internal/user/auditor")
        .header("If-None-Match", "*")
        .json(&json!({"password": "Aud1tor!", "authzRoles": [{"_ref": "internal/role/openidm-authorized"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let login: Value = gw
        .as_user(Method::GET, "/openidm/info/login", "auditor", "Aud1tor!")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["authenticationId"], "auditor");
    assert_eq!(
        login["authorization"]["roles"],
        json!(["internal/role/openidm-authorized"])
    );
    let r = gw
        .as_user(
            Method::GET,
            "/openidm/managed/user?_queryFilter=true",
            "auditor",
            "Aud1tor!",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = gw
        .as_user(
            Method::GET,
            "/openidm/external/idm/x/managed/user",
            "auditor",
            "Aud1tor!",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the proxy is for administrators");

    // Changing the password takes effect at once (the credential cache is dropped).
    let r = gw
        .request(Method::PATCH, "/openidm/internal/user/auditor")
        .json(&json!([{"operation": "replace", "field": "/password", "value": "N3w-pass"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .as_user(Method::GET, "/openidm/info/login", "auditor", "Aud1tor!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = gw
        .as_user(Method::GET, "/openidm/info/login", "auditor", "N3w-pass")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The stored hash is argon2, never the clear text.
    let db = std::fs::read(gw.data_dir().join("repo.sqlite")).unwrap_or_default();
    let text = String::from_utf8_lossy(&db);
    assert!(!text.contains("Aud1tor!") && !text.contains("s3cret-admin"));
}

/// The admin password from config/env replaces a stored one that differs at start.
#[tokio::test]
async fn configured_admin_password_rotates_on_restart() {
    let gw = Gateway::builder().admin_password("first-pw").start().await;
    assert_eq!(
        gw.get("/openidm/info/login").send().await.unwrap().status(),
        200
    );
    let gw = gw.with_admin_password("second-pw").await;
    assert_eq!(
        gw.get("/openidm/info/login").send().await.unwrap().status(),
        200
    );
    let r = gw
        .as_user(
            Method::GET,
            "/openidm/info/login",
            "openidm-admin",
            "first-pw",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
