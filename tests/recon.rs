//! Reconciliation end to end on one gateway: `managed/user` → `managed/other` through the
//! router, runs stored and listed with IDM's JSON, links, correlation, cancel, restart, and
//! mapping files validated with the last good mapping kept.

mod common;

use common::fixtures::{
    get_run, managed_with_other, put_user, recon, seed_users, situations, user,
};

use std::time::Duration;

use common::{eventually, Gateway};
use serde_json::{json, Value};

fn mapping(extra: Value) -> Value {
    let mut m = json!({
        "name": "u2o",
        "source": "managed/user",
        "target": "managed/other",
        "properties": [
            {"source": "userName", "target": "userName"},
            {"source": "mail", "target": "mail"},
            {"source": "givenName", "target": "givenName"},
            {"source": "sn", "target": "sn"}
        ],
        "correlationQuery": {"_queryFilter": "mail eq \"${source.mail}\""},
        "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}],
        // Reconciliation alone: these tests count what a run finds (tests/implicit_sync.rs
        // covers implicit sync).
        "enableSync": false
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

/// IDM's keys in IDM's order, then the gateway extra `nodeId` (the cluster node running it).
const RUN_KEYS: [&str; 14] = [
    "_id",
    "mapping",
    "state",
    "stage",
    "stageDescription",
    "progress",
    "situationSummary",
    "statusSummary",
    "durationSummary",
    "parameters",
    "started",
    "ended",
    "duration",
    "nodeId",
];

/// Target objects by userName, with their `_rev`.
async fn targets(gw: &Gateway) -> Vec<Value> {
    let v: Value = gw
        .get("/openidm/managed/other?_queryFilter=true&_sortKeys=userName")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["result"].as_array().unwrap().clone()
}

fn status(run: &Value) -> (u64, u64) {
    (
        run["statusSummary"]["SUCCESS"].as_u64().unwrap(),
        run["statusSummary"]["FAILURE"].as_u64().unwrap(),
    )
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[tokio::test]
async fn recon_creates_then_confirms_without_writing_then_updates_and_deletes() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file("sync", json!({"mappings": [mapping(json!({}))]}))
        .start()
        .await;
    seed_users(&gw, 5).await;

    // First run: every source is ABSENT and created, with a link.
    let run = recon(&gw, "u2o").await;
    let keys: Vec<&str> = run
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, RUN_KEYS, "{run:#}");
    assert_eq!(run["state"], "SUCCESS");
    assert_eq!(run["stage"], "COMPLETED_SUCCESS");
    assert_eq!(run["stageDescription"], "reconciliation completed.");
    assert_eq!(run["mapping"], "u2o");
    assert_eq!(run["situationSummary"].as_object().unwrap().len(), 15);
    assert_eq!(situations(&run), pairs(&[("ABSENT", 5)]));
    assert_eq!(status(&run), (5, 0));
    assert_eq!(run["progress"]["source"]["existing"]["processed"], 5);
    assert_eq!(run["progress"]["source"]["existing"]["total"], "5");
    assert_eq!(run["progress"]["target"]["created"], 5);
    assert_eq!(run["progress"]["links"]["created"], 5);
    assert_eq!(
        run["parameters"]["sourceQuery"]["resourceName"],
        "managed/user"
    );
    assert!(run["started"].as_str().unwrap().ends_with('Z'));
    assert!(run["duration"].is_u64());
    let first = targets(&gw).await;
    assert_eq!(first.len(), 5);
    assert_eq!(first[0]["mail"], "user0@example.com");
    assert_eq!(first[0]["sn"], "Sn0");

    // Second run, nothing changed: all CONFIRMED, nothing written.
    let run = recon(&gw, "u2o").await;
    assert_eq!(situations(&run), pairs(&[("CONFIRMED", 5)]));
    assert_eq!(run["progress"]["target"]["unchanged"], 5);
    assert_eq!(run["progress"]["target"]["updated"], 0);
    assert_eq!(run["progress"]["links"]["created"], 0);
    let second = targets(&gw).await;
    let revs = |v: &[Value]| v.iter().map(|t| t["_rev"].clone()).collect::<Vec<_>>();
    assert_eq!(revs(&first), revs(&second));

    // A changed source: UPDATE of that target only.
    let mut changed = user(1);
    changed["sn"] = json!("Changed");
    put_user(&gw, "u1", &changed).await;
    let run = recon(&gw, "u2o").await;
    assert_eq!(situations(&run), pairs(&[("CONFIRMED", 5)]));
    assert_eq!(run["progress"]["target"]["updated"], 1);
    let third = targets(&gw).await;
    assert_eq!(third[1]["sn"], "Changed");
    assert_ne!(third[1]["_rev"], second[1]["_rev"]);
    assert_eq!(third[0]["_rev"], second[0]["_rev"]);

    // getLinkedResources follows the link.
    let linked: Value = gw
        .post("/openidm/sync?_action=getLinkedResources&resourceName=managed/user/u1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(linked.as_array().unwrap().len(), 1, "{linked}");
    assert_eq!(
        linked[0]["resourceName"],
        format!("managed/other/{}", third[1]["_id"].as_str().unwrap())
    );
    assert_eq!(linked[0]["linkType"], "u2o");
    assert_eq!(linked[0]["linkQualifier"], "default");
    assert_eq!(linked[0]["content"]["sn"], "Changed");

    // A deleted source: SOURCE_MISSING in the target phase, DELETE per the policy.
    let r = gw.delete("/openidm/managed/user/u2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let run = recon(&gw, "u2o").await;
    assert_eq!(
        situations(&run),
        pairs(&[("CONFIRMED", 4), ("SOURCE_MISSING", 1)])
    );
    assert_eq!(run["progress"]["target"]["deleted"], 1);
    assert_eq!(status(&run), (5, 0));
    let fourth = targets(&gw).await;
    assert_eq!(fourth.len(), 4);
    assert!(fourth.iter().all(|t| t["userName"] != "user2"));

    // The list, in IDM's envelope and key order; one run read and deleted.
    let list: Value = gw
        .get("/openidm/recon")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runs = list["reconciliations"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, RUN_KEYS);
    }
    let id = runs[0]["_id"].as_str().unwrap();
    let r = gw
        .delete(&format!("/openidm/recon/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .get(&format!("/openidm/recon/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Mappings in processing order, as a query envelope.
    let ms: Value = gw
        .get("/openidm/sync/mappings?_queryFilter=true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ms["resultCount"], 1);
    assert_eq!(ms["result"][0]["name"], "u2o");

    // Metrics.
    let text = gw
        .get("/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"idm_gateway_recon_runs_total{mapping="u2o",outcome="SUCCESS"} 4"#),
        "{text}"
    );
    assert!(text.contains(
        r#"idm_gateway_recon_objects_total{action="CREATE",mapping="u2o",situation="ABSENT"} 5"#
    ));
}

#[tokio::test]
async fn correlation_links_a_found_target_and_counts_ambiguous_as_failure() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file("mapping-u2o", mapping(json!({})))
        .start()
        .await;
    put_user(
        &gw,
        "ua",
        &json!({"userName": "ua", "givenName": "A", "sn": "A", "mail": "a@x.example"}),
    )
    .await;
    put_user(
        &gw,
        "ud",
        &json!({"userName": "ud", "givenName": "D", "sn": "D", "mail": "dup@x.example"}),
    )
    .await;
    for (id, mail) in [
        ("o1", "a@x.example"),
        ("d1", "dup@x.example"),
        ("d2", "dup@x.example"),
    ] {
        let r = gw
            .put(&format!("/openidm/managed/other/{id}"))
            .json(&json!({"userName": format!("old-{id}"), "mail": mail}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let run = recon(&gw, "u2o").await;
    // ua → o1 (FOUND → UPDATE + link); ud → AMBIGUOUS (EXCEPTION); d1, d2 stay unlinked:
    // UNASSIGNED (EXCEPTION by default).
    assert_eq!(
        situations(&run),
        pairs(&[("UNASSIGNED", 2), ("AMBIGUOUS", 1), ("FOUND", 1)])
    );
    assert_eq!(status(&run), (1, 3));
    assert_eq!(run["state"], "SUCCESS");
    let o1: Value = gw
        .get("/openidm/managed/other/o1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(o1["userName"], "ua");
    assert_eq!(o1["givenName"], "A");
    let linked: Value = gw
        .post("/openidm/sync?_action=getLinkedResources&resourceName=managed/user/ua")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(linked[0]["resourceName"], "managed/other/o1");
    // And from the target side.
    let linked: Value = gw
        .post("/openidm/sync?_action=getLinkedResources&resourceName=managed/other/o1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(linked[0]["resourceName"], "managed/user/ua");
    assert!(gw.wait_for_log("AMBIGUOUS", Duration::from_secs(2)).await);
    assert!(gw.logs().contains("ud"));

    // reconById of a source whose target was linked.
    let r: Value = gw
        .post("/openidm/recon?_action=reconById&mapping=u2o&id=ua&waitForCompletion=true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = get_run(&gw, r["_id"].as_str().unwrap()).await;
    assert_eq!(situations(&run), pairs(&[("CONFIRMED", 1)]));
    assert_eq!(run["parameters"]["sourceIds"], json!(["ua"]));
}

#[tokio::test]
async fn cancel_stops_a_long_run_and_a_run_cut_off_by_a_stop_is_failed() {
    let mut gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file(
            "sync",
            json!({"mappings": [mapping(json!({"taskThreads": 1, "reconSourceQueryPageSize": 10}))]}),
        )
        .start()
        .await;
    // Enough objects that the run is still going when the cancel arrives (the engine reads
    // pages ahead, so a few hundred objects take well under 100 ms).
    seed_users(&gw, 1500).await;
    let started: Value = gw
        .post("/openidm/recon?_action=recon&mapping=u2o")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["state"], "ACTIVE");
    let id = started["_id"].as_str().unwrap().to_owned();
    // A second full run of the same mapping is refused while the first is active.
    let r = gw
        .post("/openidm/recon?_action=recon&mapping=u2o")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r: Value = gw
        .post(&format!("/openidm/recon/{id}?_action=cancel"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"_id": id, "action": "cancel", "status": "INITIATED"})
    );
    let canceled = eventually(Duration::from_secs(1), || async {
        get_run(&gw, &id).await["state"] == "CANCELED"
    })
    .await;
    assert!(canceled, "{:#}", get_run(&gw, &id).await);
    let run = get_run(&gw, &id).await;
    assert_eq!(run["stage"], "COMPLETED_CANCELED");
    assert!(
        run["progress"]["source"]["existing"]["processed"]
            .as_u64()
            .unwrap()
            < 1500,
        "{run:#}"
    );

    // A run active when the gateway is killed shows FAILED after the restart.
    let started: Value = gw
        .post("/openidm/recon?_action=recon&mapping=u2o")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cut = started["_id"].as_str().unwrap().to_owned();
    gw.restart().await;
    let run = get_run(&gw, &cut).await;
    assert_eq!(run["state"], "FAILED", "{run:#}");
    assert_eq!(run["stage"], "COMPLETED_FAILED");
    // The canceled run survived the restart too.
    assert_eq!(get_run(&gw, &id).await["state"], "CANCELED");
}

#[tokio::test]
async fn bad_mapping_file_is_rejected_and_the_last_good_stays_live() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file("mapping-u2o", mapping(json!({})))
        .start()
        .await;
    seed_users(&gw, 2).await;
    // Unknown mapping: a 400 that names it.
    let r = gw
        .post("/openidm/recon?_action=recon&mapping=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("'nope'"));

    let bad = mapping(json!({"properties": [
        {"source": "mail", "target": "mail", "transform": {"type": "text/javascript", "source": "x +"}}],
        "taskThreads": -1}));
    gw.write_conf("mapping-u2o", &bad);
    let rejected = eventually(Duration::from_secs(3), || async {
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
            .any(|c| c["_id"] == "mapping/u2o" && c.get("problems").is_some())
    })
    .await;
    assert!(rejected);
    assert!(gw
        .logs()
        .contains("properties[0].transform line 1: syntax error"));
    assert!(gw.logs().contains("taskThreads"));
    // The last good mapping still runs, with its four properties.
    let run = recon(&gw, "u2o").await;
    assert_eq!(situations(&run), pairs(&[("ABSENT", 2)]));
    assert_eq!(targets(&gw).await[0]["sn"], "Sn0");
    let m: Value = gw
        .get("/openidm/sync/mappings/u2o")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["properties"].as_array().unwrap().len(), 4);
}

/// Pages of one source: each page is read while the one before it is processed and its
/// links are written while the next one is. Neither changes what a run finds: a target
/// correlated on one page counts as linked on the next, and a target a page updated is
/// compared afresh on the next page.
#[tokio::test]
async fn read_ahead_pages_see_the_previous_page_s_links_and_writes() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file(
            "mapping-u2o",
            mapping(json!({
                "reconSourceQueryPageSize": 1,
                "policies": [
                    {"situation": "SOURCE_MISSING", "action": "DELETE"},
                    {"situation": "FOUND_ALREADY_LINKED", "action": "UPDATE"}
                ]
            })),
        )
        .start()
        .await;
    // u2 is linked to o2 by a first run.
    put_user(
        &gw,
        "u2",
        &json!({"userName": "u2", "givenName": "Two", "sn": "S", "mail": "same@x.example"}),
    )
    .await;
    let r = gw
        .put("/openidm/managed/other/o2")
        .json(&json!({"userName": "old", "mail": "same@x.example"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let run = recon(&gw, "u2o").await;
    assert_eq!(situations(&run), pairs(&[("FOUND", 1)]));

    // u1 (the page before u2's) finds o2 linked to u2 and, by policy, updates it, but may
    // not link it too (one link per target: the store refuses, a failure for u1); u2's
    // page then finds o2 changed and updates it back.
    put_user(
        &gw,
        "u1",
        &json!({"userName": "u1", "givenName": "One", "sn": "S", "mail": "same@x.example"}),
    )
    .await;
    let run = recon(&gw, "u2o").await;
    assert_eq!(
        sorted(situations(&run)),
        pairs(&[("CONFIRMED", 1), ("FOUND_ALREADY_LINKED", 1)])
    );
    assert_eq!(status(&run), (1, 1), "{run}");
    assert_eq!(run["progress"]["target"]["updated"], 2, "{run}");
    let linked: Value = gw
        .post("/openidm/sync?_action=getLinkedResources&resourceName=managed/other/o2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(linked.as_array().unwrap().len(), 1, "{linked}");
    assert_eq!(linked[0]["resourceName"], "managed/user/u2");
    let o2 = &targets(&gw).await[0];
    assert_eq!(
        (&o2["userName"], &o2["givenName"]),
        (&json!("u2"), &json!("Two")),
        "{o2}"
    );

    // A third source correlating to a target the page before it correlated (and whose link
    // may still be in flight) finds it linked; u1, never linked, finds o2 linked again.
    for (id, mail) in [("v1", "v@x.example"), ("v2", "v@x.example")] {
        put_user(
            &gw,
            id,
            &json!({"userName": id, "givenName": "V", "sn": "V", "mail": mail}),
        )
        .await;
    }
    let r = gw
        .put("/openidm/managed/other/ov")
        .json(&json!({"userName": "old-v", "mail": "v@x.example"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let run = recon(&gw, "u2o").await;
    assert_eq!(
        sorted(situations(&run)),
        pairs(&[("CONFIRMED", 1), ("FOUND", 1), ("FOUND_ALREADY_LINKED", 2)])
    );
    let linked: Value = gw
        .post("/openidm/sync?_action=getLinkedResources&resourceName=managed/user/v1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(linked[0]["resourceName"], "managed/other/ov");
}

fn sorted(mut v: Vec<(String, u64)>) -> Vec<(String, u64)> {
    v.sort();
    v
}
