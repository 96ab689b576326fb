//! Reconciliation never destroys data by accident: IDM's filter scopes, the empty-source and
//! `maxDeletes` guards, partial answers from a remote, filter injection through correlation
//! templates, a failing object amid others, and the situations and actions the other recon
//! tests do not reach — each against a real gateway, with IDM's default policies unless a
//! test says otherwise.

mod common;

use common::fixtures::{
    all_of, managed_with_other, pairs, put_user, recon, recon_by_id, recon_with, seed_users,
    situations, status, user,
};
use common::{basic_instance, Gateway, ScriptedCrest};
use serde_json::{json, Value};

/// `managed/user` → `managed/other`, reconciliation only.
fn mapping(name: &str, extra: Value) -> Value {
    let mut m = json!({
        "name": name,
        "source": "managed/user",
        "target": "managed/other",
        "properties": [
            {"source": "userName", "target": "userName"},
            {"source": "mail", "target": "mail"},
            {"source": "givenName", "target": "givenName"},
            {"source": "sn", "target": "sn"}
        ],
        "correlationQuery": {"_queryFilter": "mail eq \"${source.mail}\""},
        "enableSync": false
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

async fn gateway(mappings: Vec<Value>) -> Gateway {
    Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file("sync", json!({ "mappings": mappings }))
        .start()
        .await
}

fn user_with_status(i: usize, status: &str) -> Value {
    let mut u = user(i);
    u["accountStatus"] = json!(status);
    u
}

async fn put_other(gw: &Gateway, id: &str, body: &Value) {
    let r = gw
        .put(&format!("/openidm/managed/other/{id}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

fn user_names(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["userName"].as_str().unwrap())
        .collect()
}

/// IDM's documented `"/source/accountStatus eq \"active\""` qualifies the active sources.
/// Evaluated on the bare source (the bug), it matched nothing: every linked source was
/// UNQUALIFIED and the default DELETE removed every target.
#[tokio::test]
async fn idm_source_condition_keeps_qualified_targets_and_deletes_only_the_unqualified() {
    let gw = gateway(vec![
        mapping("u2o", json!({})),
        mapping(
            "active",
            json!({"links": "u2o",
                   "sourceCondition": "/source/accountStatus eq \"active\""}),
        ),
    ])
    .await;
    for (i, s) in ["active", "active", "inactive", "active"]
        .iter()
        .enumerate()
    {
        put_user(&gw, &format!("u{i}"), &user_with_status(i, s)).await;
    }
    let run = recon(&gw, "u2o").await;
    assert_eq!(situations(&run), pairs(&[("ABSENT", 4)]), "{run}");
    // An inactive source without a link: not this mapping's business.
    put_user(&gw, "u4", &user_with_status(4, "inactive")).await;

    let run = recon(&gw, "active").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(
        situations(&run),
        pairs(&[("SOURCE_IGNORED", 1), ("UNQUALIFIED", 1), ("CONFIRMED", 3)]),
        "{run}"
    );
    assert_eq!(status(&run), (5, 0));
    assert_eq!(run["progress"]["target"]["deleted"], 1);
    let left = all_of(&gw, "managed/other").await;
    assert_eq!(user_names(&left), ["user0", "user1", "user3"]);
}

/// A filter that could never match in IDM's scope is refused when the mapping is loaded, with
/// a message naming the mapping and IDM's form; the run of a refused mapping is a 400, so
/// nothing runs with it.
#[tokio::test]
async fn a_bare_pointer_filter_is_refused_at_load_with_idm_s_form() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file(
            "mapping-hr",
            mapping(
                "hr",
                json!({"sourceCondition": "accountStatus eq \"active\""}),
            ),
        )
        .start()
        .await;
    let r = gw
        .post("/openidm/recon?_action=recon&mapping=hr")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let logs = gw.logs();
    assert!(
        logs.contains("mapping 'hr'") && logs.contains("IDM's form: /source/accountStatus eq"),
        "{logs}"
    );
}

/// An empty source set (every source deleted, or a source that answers nothing) stops the run
/// before the target phase with IDM's message; nothing is deleted. The request body can allow
/// it, as in IDM, and then SOURCE_MISSING takes its policy.
#[tokio::test]
async fn an_empty_source_fails_before_the_target_phase_unless_allowed() {
    let gw = gateway(vec![mapping(
        "u2o",
        json!({"policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}]}),
    )])
    .await;
    seed_users(&gw, 3).await;
    recon(&gw, "u2o").await;
    for i in 0..3 {
        let r = gw
            .delete(&format!("/openidm/managed/user/u{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let run = recon(&gw, "u2o").await;
    assert_eq!(
        (&run["state"], &run["stage"]),
        (&json!("FAILED"), &json!("COMPLETED_FAILED")),
        "{run}"
    );
    let reason = run["failureReason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "Cannot reconcile from an empty data source, unless allowEmptySourceSet is true."
        ) && reason.contains("Mapping 'u2o'"),
        "{reason}"
    );
    assert_eq!(situations(&run), pairs(&[]));
    assert_eq!(all_of(&gw, "managed/other").await.len(), 3);

    let r = gw
        .post("/openidm/recon?_action=recon&mapping=u2o")
        .json(&json!({"allowEmptySourceSet": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let run = recon_with(&gw, "u2o", &json!({"allowEmptySourceSet": true})).await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(run["parameters"]["allowEmptySourceSet"], true);
    assert_eq!(situations(&run), pairs(&[("SOURCE_MISSING", 3)]));
    assert!(run.get("failureReason").is_none());
    assert!(all_of(&gw, "managed/other").await.is_empty());
}

/// The same with the mapping's own `allowEmptySourceSet`.
#[tokio::test]
async fn allow_empty_source_set_in_the_mapping() {
    let gw = gateway(vec![mapping("u2o", json!({"allowEmptySourceSet": true}))]).await;
    put_other(&gw, "stray", &json!({"userName": "stray"})).await;
    let run = recon(&gw, "u2o").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    // Unlinked target: UNASSIGNED, IDM's default EXCEPTION (a failure; kept).
    assert_eq!(situations(&run), pairs(&[("UNASSIGNED", 1)]));
    assert_eq!(status(&run), (0, 1));
    assert_eq!(all_of(&gw, "managed/other").await.len(), 1);
}

/// `maxDeletes` lets the run delete that many targets, refuses the next delete and ends the
/// run FAILED, saying so.
#[tokio::test]
async fn max_deletes_stops_the_run_before_the_next_delete() {
    let gw = gateway(vec![mapping(
        "u2o",
        json!({"maxDeletes": 2, "taskThreads": 1,
               "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}]}),
    )])
    .await;
    seed_users(&gw, 8).await;
    recon(&gw, "u2o").await;
    for i in 0..5 {
        gw.delete(&format!("/openidm/managed/user/u{i}"))
            .send()
            .await
            .unwrap();
    }
    let run = recon(&gw, "u2o").await;
    assert_eq!(run["state"], "FAILED", "{run}");
    let reason = run["failureReason"].as_str().unwrap();
    assert!(
        reason.contains("Mapping 'u2o': maxDeletes is 2") && reason.contains("delete(s) refused"),
        "{reason}"
    );
    assert_eq!(run["progress"]["target"]["deleted"], 2);
    assert_eq!(all_of(&gw, "managed/other").await.len(), 6);

    // Under the limit the run succeeds.
    let run = recon(&gw, "u2o").await;
    assert_eq!(run["state"], "FAILED", "{run}");
    assert_eq!(all_of(&gw, "managed/other").await.len(), 4);
    let run = recon(&gw, "u2o").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(
        situations(&run),
        pairs(&[("CONFIRMED", 3), ("SOURCE_MISSING", 1)])
    );
    assert_eq!(user_names(&all_of(&gw, "managed/other").await).len(), 3);
}

/// A source value written into a correlation template is one string value of the filter,
/// whatever quotes it holds: it never widens the query to other targets.
#[tokio::test]
async fn correlation_values_cannot_inject_filter_text() {
    let gw = gateway(vec![mapping(
        "double",
        json!({"correlationQuery": {"_queryFilter": "userName eq \"${source.userName}\""}}),
    )])
    .await;
    put_other(
        &gw,
        "admin",
        &json!({"userName": "admin", "mail": "admin@example.com", "sn": "Admin"}),
    )
    .await;
    let mut u = user(1);
    u["userName"] = json!("x\" or true or \"");
    put_user(&gw, "u1", &u).await;
    let run = recon(&gw, "double").await;
    assert_eq!(
        situations(&run),
        pairs(&[("ABSENT", 1), ("UNASSIGNED", 1)]),
        "{run}"
    );

    let gw = gateway(vec![mapping(
        "single",
        json!({"correlationQuery": {"_queryFilter": "userName eq '${source.userName}'"}}),
    )])
    .await;
    put_other(
        &gw,
        "admin",
        &json!({"userName": "admin", "mail": "admin@example.com", "sn": "Admin"}),
    )
    .await;
    let mut u = user(2);
    u["userName"] = json!("x' or userName eq 'admin");
    put_user(&gw, "u2", &u).await;
    let run = recon(&gw, "single").await;
    assert_eq!(
        situations(&run),
        pairs(&[("ABSENT", 1), ("UNASSIGNED", 1)]),
        "{run}"
    );
    let admin: Value = gw
        .get("/openidm/managed/other/admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&admin["userName"], &admin["sn"]),
        (&json!("admin"), &json!("Admin"))
    );
    let names = all_of(&gw, "managed/other").await;
    assert!(user_names(&names).contains(&"x' or userName eq 'admin"));
}

/// An object whose action is EXCEPTION (MISSING, by IDM's default) in the middle of a page
/// counts one FAILURE; the objects after it are reconciled.
#[tokio::test]
async fn a_failing_object_in_the_middle_of_a_page_never_blocks_the_rest() {
    let gw = gateway(vec![mapping("u2o", json!({}))]).await;
    seed_users(&gw, 5).await;
    recon(&gw, "u2o").await;
    let before = all_of(&gw, "managed/other").await;
    let middle = before[2]["_id"].as_str().unwrap();
    gw.delete(&format!("/openidm/managed/other/{middle}"))
        .send()
        .await
        .unwrap();
    for i in [3, 4] {
        let mut u = user(i);
        u["sn"] = json!("Changed");
        put_user(&gw, &format!("u{i}"), &u).await;
    }
    let run = recon(&gw, "u2o").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(
        situations(&run),
        pairs(&[("MISSING", 1), ("CONFIRMED", 4)]),
        "{run}"
    );
    assert_eq!(status(&run), (4, 1));
    assert_eq!(run["progress"]["target"]["updated"], 2);
    let after = all_of(&gw, "managed/other").await;
    assert_eq!(user_names(&after), ["user0", "user1", "user3", "user4"]);
    assert!(after[2..].iter().all(|t| t["sn"] == "Changed"));
}

/// Situations and actions the other tests do not reach: UNQUALIFIED → UNLINK, SOURCE_IGNORED,
/// TARGET_IGNORED, FOUND → LINK, ABSENT → IGNORE, MISSING and LINK_ONLY (IDM's default
/// EXCEPTION), ALL_GONE.
#[tokio::test]
async fn situations_and_actions() {
    let gw = gateway(vec![
        mapping("u2o", json!({})),
        mapping(
            "acts",
            json!({"links": "u2o",
                   "sourceCondition": "/source/accountStatus eq \"active\"",
                   "validTarget": "/target/sn pr",
                   // IDM's policy condition, on {object: <source>, linkQualifier}.
                   "policies": [{"situation": "UNQUALIFIED", "action": "UNLINK",
                                 "condition": "/object/accountStatus eq \"inactive\""},
                                {"situation": "FOUND", "action": "LINK"},
                                {"situation": "ABSENT", "action": "IGNORE"}]}),
        ),
    ])
    .await;
    for i in 0..3 {
        put_user(&gw, &format!("u{i}"), &user_with_status(i, "active")).await;
    }
    let run = recon(&gw, "u2o").await;
    assert_eq!(situations(&run), pairs(&[("ABSENT", 3)]));
    let linked = all_of(&gw, "managed/other").await;

    // u0 stays CONFIRMED; u1 becomes inactive (UNQUALIFIED → UNLINK: its target stays);
    // u2's target is deleted (MISSING); u3 finds a target of its own (FOUND → LINK, not
    // updated); u4 has none (ABSENT → IGNORE); u5 is inactive and unlinked (SOURCE_IGNORED);
    // a target without `sn` and without a link fails validTarget (TARGET_IGNORED).
    put_user(&gw, "u1", &user_with_status(1, "inactive")).await;
    gw.delete(&format!(
        "/openidm/managed/other/{}",
        linked[2]["_id"].as_str().unwrap()
    ))
    .send()
    .await
    .unwrap();
    put_user(&gw, "u3", &user_with_status(3, "active")).await;
    put_other(
        &gw,
        "t3",
        &json!({"userName": "user3", "mail": "user3@example.com", "sn": "Kept"}),
    )
    .await;
    put_user(&gw, "u4", &user_with_status(4, "active")).await;
    put_user(&gw, "u5", &user_with_status(5, "inactive")).await;
    put_other(&gw, "nosn", &json!({"userName": "nosn"})).await;

    let run = recon(&gw, "acts").await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(
        situations(&run),
        pairs(&[
            ("SOURCE_IGNORED", 1),
            ("UNQUALIFIED", 1),
            ("ABSENT", 1),
            ("TARGET_IGNORED", 1),
            ("MISSING", 1),
            // u1's target, unlinked by this run: the target phase sees it unlinked.
            ("UNASSIGNED", 1),
            ("CONFIRMED", 1),
            ("FOUND", 1),
        ]),
        "{run}"
    );
    // MISSING and UNASSIGNED are EXCEPTIONs by default.
    assert_eq!(status(&run), (6, 2));
    assert_eq!(run["progress"]["links"]["created"], 1);
    let after = all_of(&gw, "managed/other").await;
    assert_eq!(
        user_names(&after),
        ["nosn", "user0", "user1", "user3"],
        "nothing created, nothing deleted"
    );
    let t3 = after.iter().find(|t| t["_id"] == "t3").unwrap();
    assert_eq!(t3["sn"], "Kept", "LINK links without updating");
    let linked: Value = gw
        .post("/openidm/sync?_action=getLinkedResources&resourceName=managed/user/u3")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(linked[0]["resourceName"], "managed/other/t3", "{linked}");
    let unlinked: Value = gw
        .post("/openidm/sync?_action=getLinkedResources&resourceName=managed/user/u1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unlinked, json!([]), "UNLINK removed u1's link");

    // u2's source goes too: its link remains, target and source gone (LINK_ONLY, EXCEPTION).
    gw.delete("/openidm/managed/user/u2").send().await.unwrap();
    let run = recon_by_id(&gw, "acts", "u2").await;
    assert_eq!(situations(&run), pairs(&[("LINK_ONLY", 1)]), "{run}");
    assert_eq!(status(&run), (0, 1));
    // Nothing at all: ALL_GONE (NOREPORT).
    let run = recon_by_id(&gw, "acts", "nobody").await;
    assert_eq!(situations(&run), pairs(&[("ALL_GONE", 1)]), "{run}");
    assert_eq!(status(&run), (1, 0));
}

/// A fake remote source whose answers can be partial in CREST's two ways. `mode`: 0 whole
/// answers; 1 every query ends with an `error` member after its first result; 2 the source
/// query returns only `a` and reads by id come back with a paging cookie.
fn scripted_source(mode: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> ScriptedCrest {
    ScriptedCrest::start(move |target| {
        let all: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|id| {
                json!({"_id": id, "_rev": "1", "userName": format!("user-{id}"),
                       "givenName": "G", "sn": "S", "mail": format!("{id}@example.com")})
            })
            .collect();
        // A by-id read names its ids (`_id eq "a" or …`); the source query is `true`.
        let by_id = target.contains("_id eq");
        let wanted: Vec<Value> = all
            .iter()
            .filter(|o| !by_id || target.contains(&format!("\"{}\"", o["_id"].as_str().unwrap())))
            .cloned()
            .collect();
        match mode.load(std::sync::atomic::Ordering::SeqCst) {
            0 => json!({"result": wanted, "resultCount": wanted.len(),
                        "pagedResultsCookie": null, "totalPagedResults": -1}),
            1 => json!({"result": wanted[..wanted.len().min(1)], "resultCount": 1,
                        "error": {"code": 500, "reason": "Internal Server Error",
                                  "message": "connection to the backend lost"}}),
            _ if by_id => json!({"result": wanted[..wanted.len().min(1)], "resultCount": 1,
                                 "pagedResultsCookie": "more"}),
            _ => json!({"result": [all[0]], "resultCount": 1, "pagedResultsCookie": null}),
        }
    })
}

/// A remote source that answers part of a page — CREST's mid-stream `error`, or a by-id read
/// with a paging cookie — fails the run: the objects left out are never taken for deleted
/// sources, so SOURCE_MISSING → DELETE removes nothing.
#[tokio::test]
async fn a_partial_answer_from_a_remote_source_fails_the_run_and_deletes_nothing() {
    let mode = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fake = scripted_source(mode.clone());
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file("external.idm-f", basic_instance(&fake.url(), "u", "p"))
        .conf_file(
            "sync",
            json!({"mappings": [{
                "name": "f2o", "source": "external/idm/f/managed/user", "target": "managed/other",
                "properties": [{"source": "userName", "target": "userName"},
                               {"source": "mail", "target": "mail"}],
                "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}],
                "reconSourceQueryPageSize": 10}]}),
        )
        .start()
        .await;
    let run = recon(&gw, "f2o").await;
    assert_eq!(situations(&run), pairs(&[("ABSENT", 3)]), "{run}");
    assert_eq!(all_of(&gw, "managed/other").await.len(), 3);
    let run = recon(&gw, "f2o").await;
    assert_eq!(situations(&run), pairs(&[("CONFIRMED", 3)]), "{run}");
    // The remote is asked `_id eq … or …`, never `in`, which it may not support.
    assert!(fake.asked().iter().all(|t| !t.contains(" in ")));

    for m in [1, 2] {
        mode.store(m, std::sync::atomic::Ordering::SeqCst);
        let run = recon(&gw, "f2o").await;
        assert_eq!(run["state"], "FAILED", "mode {m}: {run}");
        let reason = run["failureReason"].as_str().unwrap();
        let expect = if m == 1 { "part-way" } else { "paging cookie" };
        assert!(reason.contains(expect), "mode {m}: {reason}");
        assert_eq!(run["progress"]["target"]["deleted"], 0, "mode {m}: {run}");
        assert_eq!(all_of(&gw, "managed/other").await.len(), 3, "mode {m}");
    }
    mode.store(0, std::sync::atomic::Ordering::SeqCst);
    let run = recon(&gw, "f2o").await;
    assert_eq!(situations(&run), pairs(&[("CONFIRMED", 3)]), "{run}");
}

/// The guard covers the source phase's deletes too (UNQUALIFIED → DELETE, IDM's default).
#[tokio::test]
async fn max_deletes_also_guards_unqualified_deletes() {
    let gw = gateway(vec![
        mapping("u2o", json!({})),
        mapping(
            "active",
            json!({"links": "u2o", "maxDeletes": 1,
                   "sourceCondition": "/source/accountStatus eq \"active\""}),
        ),
    ])
    .await;
    for i in 0..4 {
        put_user(&gw, &format!("u{i}"), &user_with_status(i, "active")).await;
    }
    recon(&gw, "u2o").await;
    for i in 1..4 {
        put_user(&gw, &format!("u{i}"), &user_with_status(i, "inactive")).await;
    }
    let run = recon(&gw, "active").await;
    assert_eq!(run["state"], "FAILED", "{run}");
    assert!(
        run["failureReason"]
            .as_str()
            .unwrap()
            .contains("maxDeletes is 1"),
        "{run}"
    );
    assert_eq!(run["progress"]["target"]["deleted"], 1, "{run}");
    assert_eq!(all_of(&gw, "managed/other").await.len(), 3);
}
