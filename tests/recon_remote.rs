//! Reconciliation across two gateways: B holds managed users, A reconciles
//! `external/idm/b/managed/user` → `managed/user` through the internal router's remote
//! CREST client (B's credentials from `external.idm-b.json`), and back.

mod common;

use common::fixtures::{recon, shipped, situations, user};

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
