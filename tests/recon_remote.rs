//! Reconciliation across two gateways: B holds managed users, A reconciles
//! `external/idm/b/managed/user` → `managed/user` through the internal router's remote
//! CREST client (B's credentials from `external.idm-b.json`), and back.

mod common;

use common::fixtures::{get_run, recon, seed_users, shipped, situations, user};

use common::{basic_instance, Gateway};
use serde_json::{json, Value};

fn props() -> Value {
    json!([
        {"source": "userName", "target": "userName"},
        {"source": "mail", "target": "mail"},
        {"source": "givenName", "target": "givenName"},
        {"source": "sn", "target": "sn"}
    ])
}

async fn users(gw: &Gateway) -> Vec<Value> {
    let v: Value = gw
        .get("/openidm/managed/user?_queryFilter=true&_sortKeys=userName")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["result"].as_array().unwrap().clone()
}

#[tokio::test]
async fn recon_from_a_remote_gateway_and_back() {
    let b = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .admin_password("b-admin")
        .start()
        .await;
    for i in 0..25 {
        let r = b
            .put(&format!("/openidm/managed/user/b{i}"))
            .header("If-None-Match", "*")
            .json(&user(i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let a = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file("external.idm-b", basic_instance(&b.url("/openidm/"), "openidm-admin", "b-admin"))
        .conf_file(
            "sync",
            json!({"mappings": [
                {"name": "bUser_aUser", "source": "external/idm/b/managed/user", "target": "managed/user",
                 "properties": props(),
                 "correlationQuery": {"_queryFilter": "userName eq \"${source.userName}\""},
                 "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}],
                 "reconSourceQueryPageSize": 7},
                {"name": "aUser_bUser", "source": "managed/user", "target": "external/idm/b/managed/user",
                 "links": "bUser_aUser", "properties": props(), "enableSync": false,
                 "correlationQuery": {"_queryFilter": "userName eq \"${source.userName}\""}}
            ]}),
        )
        .start()
        .await;

    // A one-user A object already exists: correlation links it instead of creating a twin.
    let r = a
        .put("/openidm/managed/user/pre")
        .header("If-None-Match", "*")
        .json(&json!({"userName": "user3", "givenName": "Old", "sn": "Old", "mail": "old@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let run = recon(&a, "bUser_aUser").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(
        situations(&run),
        vec![("ABSENT".to_string(), 24), ("FOUND".to_string(), 1)],
        "{run}"
    );
    let got = users(&a).await;
    assert_eq!(got.len(), 25);
    let pre = got.iter().find(|u| u["_id"] == "pre").unwrap();
    assert_eq!(
        pre["mail"], "user3@example.com",
        "FOUND → UPDATE with mapped values"
    );

    // Nothing changed: a second run confirms everything and writes nothing.
    let revs: Vec<Value> = got.iter().map(|u| u["_rev"].clone()).collect();
    let run = recon(&a, "bUser_aUser").await;
    assert_eq!(
        situations(&run),
        vec![("CONFIRMED".to_string(), 25)],
        "{run}"
    );
    let again: Vec<Value> = users(&a).await.iter().map(|u| u["_rev"].clone()).collect();
    assert_eq!(revs, again, "an unchanged re-run writes nothing");

    // A change on B is an UPDATE on A; a deletion on B is SOURCE_MISSING → DELETE.
    let r = b
        .request(reqwest::Method::PATCH, "/openidm/managed/user/b5")
        .json(&json!([{"operation": "replace", "field": "/sn", "value": "Changed"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = b.delete("/openidm/managed/user/b6").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let run = recon(&a, "bUser_aUser").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    let got = users(&a).await;
    assert_eq!(got.len(), 24);
    assert!(got
        .iter()
        .any(|u| u["userName"] == "user5" && u["sn"] == "Changed"));
    assert!(!got.iter().any(|u| u["userName"] == "user6"));

    // Back: a user created on A goes to B through the shared links.
    let r = a
        .put("/openidm/managed/user/a-only")
        .header("If-None-Match", "*")
        .json(&user(100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let run = recon(&a, "aUser_bUser").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    let on_b = users(&b).await;
    assert!(on_b.iter().any(|u| u["userName"] == "user100"), "{on_b:?}");
    assert_eq!(on_b.len(), 25);

    // B goes away: the run fails, and nothing on A is deleted or unlinked.
    drop(b);
    let before = users(&a).await.len();
    let run = recon(&a, "bUser_aUser").await;
    assert_eq!(run["state"], "FAILED", "{run}");
    assert_eq!(users(&a).await.len(), before);
}

/// B is killed (SIGKILL) while A reconciles from it, between two source pages: the run ends
/// FAILED naming the source, and A keeps every user and link — the pages B never answered are
/// not taken for deleted sources, even with SOURCE_MISSING → DELETE. With B back, the next
/// run confirms everything.
#[tokio::test]
async fn a_remote_source_killed_mid_run_fails_the_run_and_deletes_nothing() {
    const USERS: usize = 300;
    let mut b = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .admin_password("b-admin")
        .start()
        .await;
    seed_users(&b, USERS).await;
    // B is a gateway: it answers `in`, so A reads B's objects by id with `_id in '[…]'`.
    let mut instance = basic_instance(&b.url("/openidm/"), "openidm-admin", "b-admin");
    instance["queryFilterIn"] = json!(true);
    let a = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file("external.idm-b", instance)
        .conf_file(
            "sync",
            json!({"mappings": [
                {"name": "bUser_aUser", "source": "external/idm/b/managed/user", "target": "managed/user",
                 "properties": props(), "enableSync": false, "taskThreads": 1,
                 "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}],
                 "reconSourceQueryPageSize": 5}
            ]}),
        )
        .start()
        .await;
    let run = recon(&a, "bUser_aUser").await;
    assert_eq!(
        situations(&run),
        vec![("ABSENT".to_string(), USERS as u64)],
        "{run}"
    );

    // Kill B once the run is past its first page and still active; a run that finished
    // before the kill (a fast machine) is simply started again.
    let mut killed = None;
    for _ in 0..5 {
        let r = a
            .post("/openidm/recon?_action=recon&mapping=bUser_aUser")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let id = r.json::<Value>().await.unwrap()["_id"]
            .as_str()
            .unwrap()
            .to_owned();
        loop {
            let run = get_run(&a, &id).await;
            if run["state"] != "ACTIVE" {
                break;
            }
            if run["progress"]["source"]["existing"]["processed"]
                .as_u64()
                .unwrap()
                >= 5
            {
                b.stop();
                killed = Some(id.clone());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        if killed.is_some() {
            break;
        }
    }
    let id = killed.expect("B was killed during a run");
    let mut run = get_run(&a, &id).await;
    while run["state"] == "ACTIVE" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        run = get_run(&a, &id).await;
    }
    assert_eq!(run["state"], "FAILED", "{run}");
    let reason = run["failureReason"].as_str().unwrap();
    assert!(reason.contains("external/idm/b/managed/user"), "{reason}");
    assert_eq!(run["progress"]["target"]["deleted"], 0, "{run}");
    assert_eq!(users(&a).await.len(), USERS);

    b.restart().await;
    let run = recon(&a, "bUser_aUser").await;
    assert_eq!(
        situations(&run),
        vec![("CONFIRMED".to_string(), USERS as u64)],
        "{run}"
    );
}
