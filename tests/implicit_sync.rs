//! Implicit sync: managed-object writes pushed to the targets of their mappings at once
//! (no recon), `enableSync: false`, failed pushes queued in `sync/queue` and retried as the
//! mapping's `queuedSync` says (then logged or dead-lettered), pushes that survive a
//! SIGKILL, IDM's default policies, reconciliation and implicit sync of one source never
//! making twin targets, and no ping-pong between two mappings in opposite directions.

mod common;

use common::fixtures::{managed_with_other, shipped, user};

use std::time::Duration;

use common::{basic_instance, eventually, free_port, Gateway};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

fn props() -> Value {
    json!([
        {"source": "userName", "target": "userName"},
        {"source": "mail", "target": "mail"},
        {"source": "givenName", "target": "givenName"},
        {"source": "sn", "target": "sn"}
    ])
}

fn mapping(name: &str, source: &str, target: &str, extra: Value) -> Value {
    let mut m = json!({
        "name": name,
        "source": source,
        "target": target,
        "properties": props(),
        "correlationQuery": {"_queryFilter": "userName eq \"${source.userName}\""},
        "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}]
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

async fn all(gw: &Gateway, resource: &str) -> Vec<Value> {
    let v: Value = gw
        .get(&format!(
            "/openidm/{resource}?_queryFilter=true&_sortKeys=userName"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["result"].as_array().cloned().unwrap_or_default()
}

async fn queue(gw: &Gateway) -> Vec<Value> {
    let r = gw
        .get("/openidm/sync/queue?_queryFilter=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["result"].as_array().cloned().unwrap()
}

async fn create(gw: &Gateway, resource: &str, id: &str, body: &Value) -> reqwest::Response {
    gw.put(&format!("/openidm/{resource}/{id}"))
        .header("If-None-Match", "*")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn patch(gw: &Gateway, path: &str, field: &str, value: &str) -> reqwest::Response {
    gw.request(reqwest::Method::PATCH, path)
        .json(&json!([{"operation": "replace", "field": field, "value": value}]))
        .send()
        .await
        .unwrap()
}

/// The values of `field` in `resource`, sorted.
async fn values(gw: &Gateway, resource: &str, field: &str) -> Vec<String> {
    let mut out: Vec<String> = all(gw, resource)
        .await
        .iter()
        .filter_map(|o| o[field].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn create_update_delete_are_pushed_at_once_and_in_order() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file(
            "sync",
            json!({"mappings": [mapping("u2o", "managed/user", "managed/other", json!({}))]}),
        )
        .start()
        .await;

    // Create: ABSENT → CREATE, linked.
    assert_eq!(
        create(&gw, "managed/user", "u1", &user(1)).await.status(),
        201
    );
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "userName").await == ["user1"]
        })
        .await
    );
    let linked: Value = gw
        .post("/openidm/sync?_action=getLinkedResources&resourceName=managed/user/u1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(linked.as_array().unwrap().len(), 1, "{linked}");
    assert_eq!(linked[0]["content"]["mail"], "user1@example.com");

    // Update (PUT and PATCH): CONFIRMED → UPDATE.
    let mut changed = user(1);
    changed["sn"] = json!("Renamed");
    let r = gw
        .put("/openidm/managed/user/u1")
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "sn").await == ["Renamed"]
        })
        .await
    );

    // Quick successive writes of one object: the last one wins.
    for i in 0..8 {
        let r = patch(
            &gw,
            "/openidm/managed/user/u1",
            "givenName",
            &format!("G{i}"),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "givenName").await == ["G7"]
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(values(&gw, "managed/other", "givenName").await, ["G7"]);
    assert_eq!(all(&gw, "managed/other").await.len(), 1);

    // A second user, created with a server-chosen id.
    let r = gw
        .post("/openidm/managed/user?_action=create")
        .json(&user(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "userName").await == ["user1", "user2"]
        })
        .await
    );

    // Delete: the link gives SOURCE_MISSING → DELETE (the mapping's policy).
    let r = gw.delete("/openidm/managed/user/u1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "userName").await == ["user2"]
        })
        .await
    );
    // The queue row goes once the push that wrote the target is done.
    assert!(eventually(WAIT, || async { queue(&gw).await.is_empty() }).await);

    // Nothing was reconciled.
    let runs: Value = gw
        .get("/openidm/recon")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["reconciliations"], json!([]));
}

#[tokio::test]
async fn enable_sync_false_pushes_nothing() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file(
            "sync",
            json!({"mappings": [mapping("u2o", "managed/user", "managed/other",
                json!({"enableSync": false}))]}),
        )
        .start()
        .await;
    assert_eq!(
        create(&gw, "managed/user", "u1", &user(1)).await.status(),
        201
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(all(&gw, "managed/other").await.is_empty());
    assert!(queue(&gw).await.is_empty());
}

#[tokio::test]
async fn a_failed_push_is_queued_and_retried_until_it_succeeds() {
    let port = free_port();
    let dead = format!("http://127.0.0.1:{port}/openidm/");
    let a = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file(
            "external.idm-x",
            basic_instance(&dead, "openidm-admin", "b-admin"),
        )
        .conf_file(
            "sync",
            json!({"mappings": [mapping("aUser_xUser", "managed/user",
                "external/idm/x/managed/user", json!({"queuedSync": {"maxRetries": -1}}))]}),
        )
        .start()
        .await;

    // The caller's write succeeds although its push cannot.
    assert_eq!(
        create(&a, "managed/user", "u1", &user(1)).await.status(),
        201
    );
    assert!(
        eventually(WAIT, || async {
            matches!(queue(&a).await.as_slice(),
                [e] if e["attempts"].as_u64() >= Some(2))
        })
        .await,
        "{:?}",
        queue(&a).await
    );
    let entry = queue(&a).await.remove(0);
    assert_eq!(entry["mapping"], "aUser_xUser");
    assert_eq!(entry["sourceId"], "u1");
    assert_eq!(entry["operation"], "create");
    assert!(entry["_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(entry["nextAttempt"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    let error = entry["lastError"].as_str().unwrap();
    assert!(!error.is_empty());
    assert!(!error.contains("b-admin"), "{error}");
    // One entry per object: a read by id and a filter on it.
    let r = a
        .get(&format!(
            "/openidm/sync/queue/{}",
            entry["_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = a
        .get("/openidm/sync/queue?_queryFilter=mapping+eq+%22nope%22")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["resultCount"], 0);
    // An update meanwhile is still a 200, and still one entry.
    let r = patch(&a, "/openidm/managed/user/u1", "sn", "Later").await;
    assert_eq!(r.status(), 200);
    let metrics = a
        .get("/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("idm_gateway_implicit_sync_failures_total{mapping=\"aUser_xUser\"}"),
        "{metrics}"
    );
    assert_eq!(queue(&a).await.len(), 1);

    // The target comes up (another gateway) and the conf points at it: the retry succeeds
    // with the latest state, and the queue empties.
    let b = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .admin_password("b-admin")
        .start()
        .await;
    a.write_conf(
        "external.idm-x",
        &basic_instance(&b.url("/openidm/"), "openidm-admin", "b-admin"),
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            queue(&a).await.is_empty()
        })
        .await,
        "{:?}",
        queue(&a).await
    );
    let on_b = all(&b, "managed/user").await;
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_eq!(on_b[0]["userName"], "user1");
    assert_eq!(on_b[0]["sn"], "Later");

    // From now on pushes go straight through.
    let r = patch(&a, "/openidm/managed/user/u1", "sn", "Again").await;
    assert_eq!(r.status(), 200);
    assert!(
        eventually(WAIT, || async {
            values(&b, "managed/user", "sn").await == ["Again"]
        })
        .await
    );
}

#[tokio::test]
async fn a_push_the_target_rejects_is_retried_after_the_conf_is_fixed() {
    // `other` requires a property the mapping does not fill: the create is rejected.
    let mut managed = managed_with_other();
    let other = managed["objects"]
        .as_array_mut()
        .unwrap()
        .last_mut()
        .unwrap();
    other["schema"]["required"] = json!(["userName", "mail", "employeeNumber"]);
    other["schema"]["properties"]["employeeNumber"] = json!({"type": "string"});
    let gw = Gateway::builder()
        .conf_file("managed", managed.clone())
        .conf_file(
            "sync",
            json!({"mappings": [mapping("u2o", "managed/user", "managed/other",
                json!({"queuedSync": {"maxRetries": -1}}))]}),
        )
        .start()
        .await;
    assert_eq!(
        create(&gw, "managed/user", "u1", &user(1)).await.status(),
        201
    );
    assert!(
        eventually(WAIT, || async {
            queue(&gw)
                .await
                .first()
                .is_some_and(|e| e["attempts"].as_u64() >= Some(1))
        })
        .await
    );
    assert!(all(&gw, "managed/other").await.is_empty());

    // Fixed: the mapping fills the property.
    let mut props = props();
    props
        .as_array_mut()
        .unwrap()
        .push(json!({"target": "employeeNumber", "default": "E-1"}));
    gw.write_conf(
        "sync",
        &json!({"mappings": [mapping("u2o", "managed/user", "managed/other",
            json!({"properties": props, "queuedSync": {"maxRetries": -1}}))]}),
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            queue(&gw).await.is_empty()
        })
        .await,
        "{:?}",
        queue(&gw).await
    );
    assert_eq!(
        values(&gw, "managed/other", "employeeNumber").await,
        ["E-1"]
    );
}

#[tokio::test]
async fn opposite_mappings_sharing_links_do_not_loop() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file(
            "sync",
            json!({"mappings": [
                mapping("u2o", "managed/user", "managed/other", json!({})),
                mapping("o2u", "managed/other", "managed/user", json!({"links": "u2o"}))
            ]}),
        )
        .start()
        .await;
    assert_eq!(
        create(&gw, "managed/user", "u1", &user(1)).await.status(),
        201
    );
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "userName").await == ["user1"]
        })
        .await
    );
    // The other direction: an edit of the target flows back to the user.
    let other_id = all(&gw, "managed/other").await[0]["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = patch(
        &gw,
        &format!("/openidm/managed/other/{other_id}"),
        "sn",
        "FromOther",
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/user", "sn").await == ["FromOther"]
        })
        .await
    );
    // A new object on the other side creates its twin.
    assert_eq!(
        create(&gw, "managed/other", "o2", &user(2)).await.status(),
        201
    );
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/user", "userName").await == ["user1", "user2"]
        })
        .await
    );
    // Then everything settles: no revision moves any more, no twin of a twin.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let revs = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|o| o["_rev"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = (
        revs(all(&gw, "managed/user").await),
        revs(all(&gw, "managed/other").await),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = (
        revs(all(&gw, "managed/user").await),
        revs(all(&gw, "managed/other").await),
    );
    assert_eq!(before, after);
    assert_eq!(before.0.len(), 2);
    assert_eq!(before.1.len(), 2);
    assert!(queue(&gw).await.is_empty());
}

/// `managed_with_other` whose `other.userName` is unique, so a push of a user whose name an
/// unlinked `other` already has can never succeed.
fn managed_with_unique_other() -> Value {
    let mut managed = managed_with_other();
    let other = managed["objects"]
        .as_array_mut()
        .unwrap()
        .last_mut()
        .unwrap();
    other["schema"]["properties"]["userName"]["policies"] = json!([{"policyId": "unique"}]);
    managed
}

/// u2o without a correlation query: every source without a link is ABSENT (CREATE).
fn uncorrelated(extra: Value) -> Value {
    let mut m = mapping("u2o", "managed/user", "managed/other", extra);
    m.as_object_mut().unwrap().remove("correlationQuery");
    json!({"mappings": [m]})
}

async fn dead_letters(gw: &Gateway, name: &str) -> Vec<Value> {
    let r = gw
        .get(&format!(
            "/openidm/repo/synchronisation/deadLetterQueue/{name}?_queryFilter=true"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["result"].as_array().cloned().unwrap()
}

/// A push that can never succeed is retried `queuedSync.maxRetries` times, then stored in the
/// dead-letter queue and leaves the sync queue; the pushes after it are not held up.
#[tokio::test]
async fn a_push_that_never_succeeds_ends_in_the_dead_letter_queue_and_the_others_arrive() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_unique_other())
        .conf_file(
            "sync",
            uncorrelated(json!({"queuedSync": {"maxRetries": 2, "retryDelay": 100,
                "postRetryAction": "dead-letter-queue"}})),
        )
        .start()
        .await;
    let r = create(&gw, "managed/other", "taken", &json!({"userName": "user2"})).await;
    assert_eq!(r.status(), 201);
    for i in 1..=4 {
        let r = create(&gw, "managed/user", &format!("u{i}"), &user(i)).await;
        assert_eq!(r.status(), 201);
    }
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "userName").await == ["user1", "user2", "user3", "user4"]
        })
        .await
    );
    assert!(
        eventually(WAIT, || async {
            queue(&gw).await.is_empty() && dead_letters(&gw, "u2o").await.len() == 1
        })
        .await,
        "{:?}\n{}",
        queue(&gw).await,
        gw.logs()
    );
    let letter = dead_letters(&gw, "u2o").await.remove(0);
    assert_eq!(letter["sourceId"], "u2", "{letter}");
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert!(
        letter["failureCause"]
            .as_str()
            .unwrap()
            .contains("Policy validation failed"),
        "{letter}"
    );
    let path = format!(
        "/openidm/repo/synchronisation/deadLetterQueue/u2o/{}",
        letter["_id"].as_str().unwrap()
    );
    assert_eq!(gw.delete(&path).send().await.unwrap().status(), 200);
    assert!(dead_letters(&gw, "u2o").await.is_empty());
}

/// `postRetryAction: {"script": …}` (IDM's form): the script runs with `syncFailure` and
/// `failureCause` once the retries are used up, and the entry leaves the queue; a script
/// that throws keeps the entry queued (nothing is given up on a broken handler).
#[tokio::test(flavor = "multi_thread")]
async fn a_post_retry_script_sees_the_failure_and_a_throwing_one_keeps_the_push() {
    let mut managed = managed_with_unique_other();
    managed["objects"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "syncfailure", "schema": {"properties": {}}}));
    let handler = |source: &str| {
        json!({"queuedSync": {"maxRetries": 1, "retryDelay": 100,
            "postRetryAction": {"script": {"type": "text/javascript", "source": source}}}})
    };
    let gw = Gateway::builder()
        .conf_file("managed", managed.clone())
        .conf_file(
            "sync",
            uncorrelated(handler(
                "openidm.create('managed/syncfailure', null, {mapping: syncFailure.mapping, \
                 sourceId: syncFailure.sourceId, attempts: syncFailure.attempts, cause: failureCause});",
            )),
        )
        .start()
        .await;
    assert_eq!(
        create(&gw, "managed/other", "taken", &json!({"userName": "user2"}))
            .await
            .status(),
        201
    );
    for i in 1..=3 {
        assert_eq!(
            create(&gw, "managed/user", &format!("u{i}"), &user(i))
                .await
                .status(),
            201
        );
    }
    assert!(
        eventually(WAIT, || async {
            queue(&gw).await.is_empty() && all(&gw, "managed/syncfailure").await.len() == 1
        })
        .await,
        "{:?}\n{}",
        queue(&gw).await,
        gw.logs()
    );
    let record = all(&gw, "managed/syncfailure").await.remove(0);
    assert_eq!(record["mapping"], "u2o", "{record}");
    assert_eq!(record["sourceId"], "u2", "{record}");
    assert_eq!(record["attempts"], 2, "{record}");
    assert!(
        record["cause"]
            .as_str()
            .unwrap()
            .contains("Policy validation failed"),
        "{record}"
    );
    assert_eq!(
        values(&gw, "managed/other", "userName").await,
        ["user1", "user2", "user3"]
    );
    assert!(dead_letters(&gw, "u2o").await.is_empty());

    // A handler that throws: the push is kept, and retried.
    let gw = Gateway::builder()
        .conf_file("managed", managed)
        .conf_file(
            "sync",
            uncorrelated(handler("throw {code: 500, message: 'handler down'};")),
        )
        .start()
        .await;
    create(&gw, "managed/other", "taken", &json!({"userName": "user2"})).await;
    create(&gw, "managed/user", "u2", &user(2)).await;
    assert!(
        gw.wait_for_log(
            "the postRetryAction script failed; the push stays queued",
            WAIT
        )
        .await,
        "{}",
        gw.logs()
    );
    let queued = queue(&gw).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["sourceId"], "u2");
}

/// `DELETE sync/queue/<id>` (seed 002) drops a queued push.
#[tokio::test]
async fn a_queued_push_can_be_deleted() {
    let dead = format!("http://127.0.0.1:{}/openidm/", free_port());
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file(
            "external.idm-x",
            basic_instance(&dead, "openidm-admin", "x"),
        )
        .conf_file(
            "sync",
            json!({"mappings": [mapping("aUser_xUser", "managed/user",
                "external/idm/x/managed/user", json!({"queuedSync": {"maxRetries": -1}}))]}),
        )
        .start()
        .await;
    assert_eq!(
        create(&gw, "managed/user", "u1", &user(1)).await.status(),
        201
    );
    assert!(eventually(WAIT, || async { queue(&gw).await.len() == 1 }).await);
    let id = queue(&gw).await[0]["_id"].as_str().unwrap().to_owned();
    let path = format!("/openidm/sync/queue/{id}");
    let r = gw.delete(&path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let removed: Value = r.json().await.unwrap();
    assert_eq!(removed["sourceId"], "u1");
    assert_eq!(gw.get(&path).send().await.unwrap().status(), 404);
    assert_eq!(gw.delete(&path).send().await.unwrap().status(), 404);
    assert!(queue(&gw).await.is_empty());
}

/// IDM's default policies: a deleted source whose target exists is SOURCE_MISSING, whose
/// default action is EXCEPTION: the target stays, the push counts as failed (and, with
/// `maxRetries: 0`, is logged at once and leaves the queue).
#[tokio::test]
async fn a_delete_with_default_policies_keeps_the_target_and_records_a_failure() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file(
            "sync",
            json!({"mappings": [mapping("u2o", "managed/user", "managed/other",
                json!({"policies": [], "queuedSync": {"maxRetries": 0}}))]}),
        )
        .start()
        .await;
    assert_eq!(
        create(&gw, "managed/user", "u1", &user(1)).await.status(),
        201
    );
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "userName").await == ["user1"]
        })
        .await
    );
    let r = gw.delete("/openidm/managed/user/u1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        gw.wait_for_log("implicit sync gave up", WAIT).await,
        "{}",
        gw.logs()
    );
    assert!(gw
        .logs()
        .contains("SOURCE_MISSING is handled as an EXCEPTION"));
    // The entry leaves the queue just after the line is logged.
    assert!(eventually(WAIT, || async { queue(&gw).await.is_empty() }).await);
    assert_eq!(values(&gw, "managed/other", "userName").await, ["user1"]);
}

/// Acknowledged writes whose pushes hang (a target that accepts and never answers) are
/// pushed after the gateway is SIGKILLed and restarted: the queue rows were committed with
/// the writes.
#[tokio::test]
async fn acknowledged_writes_are_pushed_after_a_sigkill() {
    let b = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .admin_password("b-admin")
        .start()
        .await;
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}/openidm/", hole.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let mut a = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file(
            "external.idm-x",
            basic_instance(&hole_url, "openidm-admin", "b-admin"),
        )
        .conf_file(
            "sync",
            json!({"mappings": [mapping("aUser_xUser", "managed/user",
                "external/idm/x/managed/user", json!({"queuedSync": {"maxRetries": -1}}))]}),
        )
        .start()
        .await;
    for i in 0..20 {
        let r = create(&a, "managed/user", &format!("u{i}"), &user(i)).await;
        assert_eq!(r.status(), 201);
    }
    a.stop(); // SIGKILL
    a.write_conf(
        "external.idm-x",
        &basic_instance(&b.url("/openidm/"), "openidm-admin", "b-admin"),
    );
    a.restart().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            all(&b, "managed/user").await.len() == 20
        })
        .await,
        "{} on b\n{}",
        all(&b, "managed/user").await.len(),
        a.logs()
    );
    assert!(eventually(WAIT, || async { queue(&a).await.is_empty() }).await);
    holder.abort();
}

/// Reconciliation and implicit sync of the same sources at the same time: without a
/// correlation query every unlinked source is ABSENT, so two of them assessing one source
/// at once would create two targets. Queued pushes (rejected until the conf is fixed) are
/// retried while reconciliations run: they are serialised, one target per source.
#[tokio::test]
async fn reconciliation_and_implicit_sync_at_once_make_no_twin_targets() {
    let mut managed = managed_with_other();
    let other = managed["objects"]
        .as_array_mut()
        .unwrap()
        .last_mut()
        .unwrap();
    other["schema"]["required"] = json!(["userName", "employeeNumber"]);
    other["schema"]["properties"]["employeeNumber"] = json!({"type": "string"});
    let retry = json!({"maxRetries": -1, "retryDelay": 50});
    let gw = Gateway::builder()
        .conf_file("managed", managed)
        .conf_file("sync", uncorrelated(json!({"queuedSync": retry})))
        .start()
        .await;
    let n = 120;
    let gw = &gw;
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        futures_util::future::join_all(chunk.iter().map(|&i| async move {
            let r = create(gw, "managed/user", &format!("u{i}"), &user(i)).await;
            assert_eq!(r.status(), 201);
        }))
        .await;
    }
    assert!(
        eventually(WAIT, || async {
            let q = queue(gw).await;
            q.len() == n && q.iter().all(|e| e["attempts"].as_u64() >= Some(1))
        })
        .await
    );
    // Fixed: the queued pushes go through, while reconciliations run.
    let mut props = props();
    props
        .as_array_mut()
        .unwrap()
        .push(json!({"target": "employeeNumber", "default": "E"}));
    gw.write_conf(
        "sync",
        &uncorrelated(json!({"properties": props, "queuedSync": retry})),
    );
    assert!(
        eventually(WAIT, || async {
            gw.get("/openidm/sync/mappings/u2o")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["properties"]
                .as_array()
                .is_some_and(|p| p.len() == 5)
        })
        .await
    );
    for _ in 0..3 {
        common::fixtures::recon(gw, "u2o").await;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            queue(gw).await.is_empty()
        })
        .await
    );
    let names = values(gw, "managed/other", "userName").await;
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names.len(), unique.len(), "twin targets: {names:?}");
    assert_eq!(names.len(), n);
}

/// A source correlating to a target another source is linked to is FOUND_ALREADY_LINKED,
/// IDM's default EXCEPTION: a failure for that source; the target keeps its one link.
#[tokio::test]
async fn a_correlation_onto_a_linked_target_is_an_exception_and_adds_no_link() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file(
            "sync",
            json!({"mappings": [mapping("u2o", "managed/user", "managed/other",
                json!({"queuedSync": {"maxRetries": 0},
                       "correlationQuery": {"_queryFilter": "mail eq \"${source.mail}\""}}))]}),
        )
        .start()
        .await;
    assert_eq!(
        create(&gw, "managed/user", "u1", &user(1)).await.status(),
        201
    );
    assert!(
        eventually(WAIT, || async {
            values(&gw, "managed/other", "userName").await == ["user1"]
        })
        .await
    );
    // Another user with the same mail correlates to user1's target.
    let mut twin = user(1);
    twin["userName"] = json!("twin");
    assert_eq!(
        create(&gw, "managed/user", "twin", &twin).await.status(),
        201
    );
    assert!(
        gw.wait_for_log("FOUND_ALREADY_LINKED is handled as an EXCEPTION", WAIT)
            .await,
        "{}",
        gw.logs()
    );
    assert!(eventually(WAIT, || async { queue(&gw).await.is_empty() }).await);
    assert_eq!(values(&gw, "managed/other", "userName").await, ["user1"]);
    let target = all(&gw, "managed/other").await[0]["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let linked: Value = gw
        .post(&format!(
            "/openidm/sync?_action=getLinkedResources&resourceName=managed/other/{target}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(linked.as_array().unwrap().len(), 1, "{linked}");
    assert_eq!(linked[0]["resourceName"], "managed/user/u1");
}
