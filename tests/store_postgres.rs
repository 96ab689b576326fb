//! The gateway on the PostgreSQL store (`--store postgres://…`): two gateways on one
//! database see each other's writes (managed users created, queried, conditionally
//! updated), and a store that refuses us fails start-up with a message that names the
//! server but never the password.

mod common;

use std::time::Duration;

use common::fixtures::{managed_with_other, recon, seed_users, shipped, situations};
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

/// Sync state on PostgreSQL: the implicit-sync queue (a push per write), links, recon runs
/// and the store audit handler, all in the shared database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_links_queue_runs_and_audit_live_in_postgres() {
    let Some(pg) = server_with_database().await else {
        return;
    };
    let mut audit = shipped("audit");
    audit["auditServiceConfig"]["handlerForQueries"] = json!("repo");
    audit["eventHandlers"][1]["config"]["enabled"] = json!(true);
    let props = json!([
        {"source": "userName", "target": "userName"},
        {"source": "mail", "target": "mail"},
        {"source": "givenName", "target": "givenName"},
        {"source": "sn", "target": "sn"}
    ]);
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file("audit", audit)
        .conf_file(
            "sync",
            json!({"mappings": [
                {"name": "u2o", "source": "managed/user", "target": "managed/other",
                 "properties": props, "enableSync": true,
                 "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}]}
            ]}),
        )
        .arg("--store")
        .arg(&format!(
            "postgres://gw:{PASSWORD}@127.0.0.1:{}/idm",
            pg.port
        ))
        .start()
        .await;

    // Implicit sync: each write queued and pushed (the queue drains).
    seed_users(&gw, 20).await;
    let others = |gw: &Gateway| {
        let r = gw.get("/openidm/managed/other?_queryFilter=true&_fields=_id");
        async move { r.send().await.unwrap().json::<Value>().await.unwrap()["resultCount"].clone() }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while others(&gw).await != 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "implicit sync did not push 20 users"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let q: Value = gw
            .get("/openidm/sync/queue?_queryFilter=true")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if q["resultCount"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the queue did not drain: {q}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A recon finds every pair linked by implicit sync; its run is stored.
    let run = recon(&gw, "u2o").await;
    assert_eq!(
        situations(&run),
        vec![("CONFIRMED".to_string(), 20)],
        "{run}"
    );
    let found: Value = gw
        .get("/openidm/managed/user?_queryFilter=userName%20eq%20%22user3%22&_fields=_id")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = found["result"][0]["_id"].as_str().unwrap().to_owned();
    let linked: Value = gw
        .post(&format!(
            "/openidm/sync?_action=getLinkedResources&resourceName=managed/user/{id}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(linked.to_string().contains("managed/other"), "{linked}");
    let runs: Value = gw
        .get("/openidm/recon")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        runs.to_string().contains(run["_id"].as_str().unwrap()),
        "{runs}"
    );

    // Audit events went to the store and are queried from it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let q: Value = gw
            .get("/openidm/audit/recon?_queryFilter=true")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if q["resultCount"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recon audit in the store: {q}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
