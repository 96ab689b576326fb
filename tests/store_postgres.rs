//! The gateway on the PostgreSQL store (`--store postgres://…`): two gateways on one
//! database see each other's writes (managed users created, queried, conditionally
//! updated), and a store that refuses us fails start-up with a message that names the
//! server but never the password.

mod common;

use std::time::Duration;

use common::fixtures::shipped;
use common::postgres::PgServer;
use common::Gateway;
use serde_json::{json, Value};

const PASSWORD: &str = "gw-Secret-pw-7";

async fn server_with_database() -> Option<PgServer> {
    let pg = PgServer::start()?;
    pg.exec(&format!("CREATE ROLE gw LOGIN PASSWORD '{PASSWORD}'"))
        .await;
    pg.exec("CREATE DATABASE idm OWNER gw").await;
    Some(pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_postgres_store() {
    let Some(pg) = server_with_database().await else {
        return;
    };
    // One node with the password in the URL, one with it in IDM_GATEWAY_STORE_PASSWORD.
    let a = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .arg("--store")
        .arg(&format!(
            "postgres://gw:{PASSWORD}@127.0.0.1:{}/idm",
            pg.port
        ))
        .start()
        .await;
    let b = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .env(
            "IDM_GATEWAY_STORE",
            &format!("postgres://gw@127.0.0.1:{}/idm", pg.port),
        )
        .env("IDM_GATEWAY_STORE_PASSWORD", PASSWORD)
        .start()
        .await;

    let r = a
        .put("/openidm/managed/user/u1")
        .header("If-None-Match", "*")
        .json(&json!({"userName": "alice", "givenName": "Alice", "sn": "A", "mail": "alice@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let created: Value = r.json().await.unwrap();
    for i in 0..5 {
        let r = b
            .post("/openidm/managed/user?_action=create")
            .json(&json!({"userName": format!("bob{i}"), "givenName": "Bob", "sn": "B", "mail": format!("bob{i}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }

    // Each node reads and queries what the other wrote.
    let read: Value = b
        .get("/openidm/managed/user/u1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["userName"], "alice");
    assert_eq!(read["_rev"], created["_rev"]);
    let page: Value = a
        .get("/openidm/managed/user?_queryFilter=userName%20sw%20%22bob%22&_sortKeys=-userName&_pageSize=2&_totalPagedResultsPolicy=EXACT")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob4", "bob3"], "{page}");
    assert_eq!(page["totalPagedResults"], 5, "{page}");
    assert!(page["pagedResultsCookie"].is_string(), "{page}");

    // Unpaged: streamed from the store.
    let all: Value = b
        .get("/openidm/managed/user?_queryFilter=true&_fields=userName")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["resultCount"], 6, "{all}");

    // A conditional update on one node makes the other's revision stale.
    let rev = created["_rev"].as_str().unwrap();
    let r = b
        .put("/openidm/managed/user/u1")
        .header("If-Match", rev)
        .json(&json!({"userName": "alice", "givenName": "Alicia", "sn": "A", "mail": "alice@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = a
        .put("/openidm/managed/user/u1")
        .header("If-Match", rev)
        .json(&json!({"userName": "alice", "givenName": "Al", "sn": "A", "mail": "alice@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 412, "{body}");

    // Relationships: edges written through one node answer the other's queries, from
    // either side.
    let r = a
        .put("/openidm/managed/role/r1")
        .header("If-None-Match", "*")
        .json(&json!({"name": "r1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = a
        .put("/openidm/managed/user/carol")
        .header("If-None-Match", "*")
        .json(
            &json!({"userName": "carol", "givenName": "C", "sn": "C", "mail": "carol@example.com",
                      "roles": [{"_ref": "managed/role/r1"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let holders: Value = b
        .get("/openidm/managed/user?_queryFilter=/roles/_refResourceId%20eq%20%22r1%22&_fields=_id")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = holders["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["carol"], "{holders}");
    let members: Value = b
        .get("/openidm/managed/role/r1/members?_queryFilter=true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members["resultCount"], 1, "{members}");
    assert_eq!(members["result"][0]["_refResourceId"], "carol", "{members}");

    for gw in [&a, &b] {
        let logs = gw.logs_now();
        assert!(!logs.contains(PASSWORD), "the store password was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_us_fails_startup_without_the_password() {
    let Some(pg) = server_with_database().await else {
        return;
    };
    let url = format!("postgres://gw:wrong-{PASSWORD}@127.0.0.1:{}/idm", pg.port);
    let (status, logs) = Gateway::builder()
        .arg("--store")
        .arg(&url)
        .start_expect_exit(Duration::from_secs(60))
        .await;
    let status = status.expect("the gateway exits when its store refuses it");
    assert!(!status.success());
    assert!(
        logs.contains(&format!(
            "cannot open the store at postgres://gw:***@127.0.0.1:{}/idm",
            pg.port
        )),
        "{logs}"
    );
    assert!(!logs.contains(PASSWORD), "{logs}");

    // Not a store URL at all: refused without echoing it.
    let (status, logs) = Gateway::builder()
        .env(
            "IDM_GATEWAY_STORE",
            &format!("mysql://gw:{PASSWORD}@127.0.0.1/idm"),
        )
        .start_expect_exit(Duration::from_secs(60))
        .await;
    assert!(!status.expect("exits").success());
    assert!(logs.contains("must be 'sqlite' or postgres://"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}
