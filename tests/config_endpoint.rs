//! `/openidm/config/<id>` as a CREST resource: `_rev`/`ETag`, `If-Match`/`If-None-Match`,
//! atomic PATCH, 404 for a config that does not exist; and writes validated exactly as
//! start-up validates the file, so a REST write can never stop the next start.

mod common;

use std::time::Duration;

use common::{basic_instance, json_of, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

async fn put(gw: &Gateway, id: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = gw.put(&format!("/openidm/config/{id}")).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    json_of(req.send().await.unwrap()).await
}

async fn patch(gw: &Gateway, id: &str, ops: &Value, if_match: Option<&str>) -> (u16, Value) {
    let mut req = gw
        .request(Method::PATCH, &format!("/openidm/config/{id}"))
        .json(ops);
    if let Some(rev) = if_match {
        req = req.header("If-Match", rev);
    }
    json_of(req.send().await.unwrap()).await
}

async fn get(gw: &Gateway, id: &str) -> (u16, Value, Option<String>) {
    let r = gw
        .get(&format!("/openidm/config/{id}"))
        .send()
        .await
        .unwrap();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = json_of(r).await;
    (status, body, etag)
}

fn rev_of(body: &Value) -> String {
    body["_rev"]
        .as_str()
        .unwrap_or_else(|| panic!("no _rev in {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn config_objects_have_revisions_and_honour_preconditions() {
    let gw = Gateway::start().await;

    // A config that does not exist is a 404, as in IDM, whatever its name; a malformed id
    // stays a 400.
    for id in ["my-thing", "my.settings", "my/thing"] {
        let (status, body, _) = get(&gw, id).await;
        assert_eq!(status, 404, "{id}: {body}");
    }
    for id in ["..%2Fx", "a/b/c", ".hidden"] {
        let (status, body, _) = get(&gw, id).await;
        assert_eq!(status, 400, "{id}: {body}");
    }

    // Create-only PUT of a single config.
    let (status, created) = put(
        &gw,
        "my.settings",
        &json!({"counter": 0}),
        &[("If-None-Match", "*")],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let rev1 = rev_of(&created);
    let (status, body) = put(
        &gw,
        "my.settings",
        &json!({"counter": 5}),
        &[("If-None-Match", "*")],
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert!(
        std::fs::read_to_string(gw.conf_dir().join("my.settings.json"))
            .unwrap()
            .contains("\"counter\": 0")
    );

    // Read: `_rev` and an ETag that agree; If-None-Match with it is a 304.
    let (status, read, etag) = get(&gw, "my.settings").await;
    assert_eq!(status, 200);
    assert_eq!(read["_id"], "my.settings");
    assert_eq!(rev_of(&read), rev1);
    assert_eq!(etag.as_deref(), Some(format!("\"{rev1}\"").as_str()));
    let r = gw
        .get("/openidm/config/my.settings")
        .header("If-None-Match", format!("\"{rev1}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // PUT with a stale revision: 412 and the file is unchanged; with the current one: 200
    // and a new revision.
    let (status, body) = put(
        &gw,
        "my.settings",
        &json!({"counter": 1}),
        &[("If-Match", "\"not-the-rev\"")],
    )
    .await;
    assert_eq!(status, 412, "{body}");
    let (status, updated) = put(
        &gw,
        "my.settings",
        &json!({"counter": 1}),
        &[("If-Match", &format!("\"{rev1}\""))],
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let rev2 = rev_of(&updated);
    assert_ne!(rev1, rev2);

    // A hand edit of the file changes the revision: a client holding the old one is refused.
    gw.write_conf("my.settings", &json!({"counter": 100}));
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            get(&gw, "my.settings").await.1["counter"] == 100
        })
        .await
    );
    let (status, body) = patch(
        &gw,
        "my.settings",
        &json!([{"operation": "replace", "field": "/counter", "value": 2}]),
        Some(&rev2),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    let (_, read, _) = get(&gw, "my.settings").await;
    assert_eq!(read["counter"], 100);
    let rev3 = rev_of(&read);
    assert_ne!(rev3, rev2);

    // PATCH with the current revision applies and answers the new revision.
    let (status, patched) = patch(
        &gw,
        "my.settings",
        &json!([{"operation": "replace", "field": "/counter", "value": 3}]),
        Some(&rev3),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["counter"], 3);
    let (_, read, _) = get(&gw, "my.settings").await;
    assert_eq!(read["_rev"], patched["_rev"]);

    // PATCH and If-Match PUT of a missing config: 404, nothing created.
    let (status, body) = patch(
        &gw,
        "no.such",
        &json!([{"operation": "add", "field": "/a", "value": 1}]),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = put(&gw, "no.such", &json!({"a": 1}), &[("If-Match", "\"x\"")]).await;
    assert_eq!(status, 404, "{body}");
    assert!(!gw.conf_dir().join("no.such.json").exists());

    // DELETE honours If-Match too.
    let r = gw
        .delete("/openidm/config/my.settings")
        .header("If-Match", format!("\"{rev3}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = gw
        .delete("/openidm/config/my.settings")
        .header("If-Match", format!("\"{}\"", rev_of(&patched)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!gw.conf_dir().join("my.settings.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_never_lose_an_update() {
    let gw = Gateway::builder()
        .conf_file("counter", json!({"n": 0}))
        .start()
        .await;
    const N: usize = 24;
    let gw = std::sync::Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..N {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            patch(
                &gw,
                "counter",
                &json!([{"operation": "increment", "field": "/n", "value": 1}]),
                None,
            )
            .await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (_, read, _) = get(&gw, "counter").await;
    assert_eq!(read["n"], N, "{read}");

    // Two patches based on the same revision: exactly one wins.
    let rev = rev_of(&read);
    let one = json!([{"operation": "replace", "field": "/n", "value": -1}]);
    let two = json!([{"operation": "replace", "field": "/n", "value": -2}]);
    let (a, b) = tokio::join!(
        patch(&gw, "counter", &one, Some(&rev)),
        patch(&gw, "counter", &two, Some(&rev)),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{a:?} {b:?}");
}

/// One refused write per kind of config file: `(config id, file name, good document, bad
/// document)`.
fn kinds() -> Vec<(&'static str, &'static str, Value, Value)> {
    vec![
        (
            "gateway",
            "gateway.json",
            json!({"logFormat": "text"}),
            json!({"logFormat": "text", "lisen": "127.0.0.1:1"}),
        ),
        (
            "external.idm/a",
            "external.idm-a.json",
            basic_instance("http://127.0.0.1:1/openidm/", "u", "p"),
            json!({"authType": "basic", "instanceUrl": "nope"}),
        ),
        (
            "managed",
            "managed.json",
            common::fixtures::shipped("managed"),
            json!({"objects": [{"schema": {}}]}),
        ),
        (
            "mapping/u2o",
            "mapping-u2o.json",
            json!({"source": "managed/user", "target": "managed/user",
                   "properties": [{"source": "userName", "target": "userName"}]}),
            json!({"source": "managed/user", "properties": "nope"}),
        ),
        (
            "sync",
            "sync.json",
            json!({"mappings": []}),
            json!({"mappings": [{"name": "x"}]}),
        ),
        (
            "provisioner.openicf/csv",
            "provisioner.openicf-csv.json",
            json!({"name": "csv", "enabled": false,
                   "connectorRef": {"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
                   "configurationProperties": {"csvFile": "/nonexistent/x.csv"}}),
            json!({"name": "csv",
                   "connectorRef": {"connectorName": "org.example.NoSuchConnector"}}),
        ),
        (
            "schedule/job",
            "schedule-job.json",
            json!({"enabled": false, "schedule": "0 0 * * * ?",
                   "invokeService": "sync", "invokeContext": {"action": "reconcile", "mapping": "u2o"}}),
            json!({"schedule": "not a cron", "invokeService": "sync"}),
        ),
    ]
}

fn problems_of(body: &Value) -> Vec<String> {
    body["detail"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {body}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_that_would_be_rejected_at_start_are_refused_and_write_nothing() {
    let gw = Gateway::start().await;
    for (id, file, good, bad) in kinds() {
        let (status, body) = put(&gw, id, &good, &[]).await;
        assert!(status == 200 || status == 201, "{id}: {body}");
        let before = std::fs::read(gw.conf_dir().join(file)).unwrap();

        let (status, body) = put(&gw, id, &bad, &[]).await;
        assert_eq!(status, 400, "{id}: {body}");
        assert!(!problems_of(&body).is_empty(), "{id}: {body}");
        assert_eq!(
            std::fs::read(gw.conf_dir().join(file)).unwrap(),
            before,
            "{id}: the file must be unchanged, byte for byte"
        );

        // The same content by PATCH: replace every top-level field of the good document.
        let mut ops = Vec::new();
        for k in good.as_object().unwrap().keys() {
            ops.push(json!({"operation": "remove", "field": format!("/{k}")}));
        }
        for (k, v) in bad.as_object().unwrap() {
            ops.push(json!({"operation": "add", "field": format!("/{k}"), "value": v}));
        }
        let (status, body) = patch(&gw, id, &Value::Array(ops), None).await;
        assert_eq!(status, 400, "{id}: {body}");
        assert_eq!(std::fs::read(gw.conf_dir().join(file)).unwrap(), before);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_content_is_rejected_by_a_start_with_the_same_problems() {
    let gw = Gateway::start().await;
    for (id, file, _, bad) in kinds() {
        let (status, body) = put(&gw, id, &bad, &[]).await;
        assert_eq!(status, 400, "{id}: {body}");
        let problems = problems_of(&body);
        if id == "gateway" {
            // A bad gateway.json stops the start, with the same problem.
            let (exit, logs) = Gateway::builder()
                .conf_file(file, bad.clone())
                .start_expect_exit(Duration::from_secs(20))
                .await;
            let exit = exit.expect("the gateway must refuse to start");
            assert!(!exit.success(), "{logs}");
            for p in &problems {
                assert!(logs.contains(p.as_str()), "{p} not in {logs}");
            }
            continue;
        }
        // Any other file is rejected at start (not live), with the same problems.
        let other = Gateway::builder()
            .conf_file(file, bad.clone())
            .start()
            .await;
        let list: Value = other
            .get("/openidm/config")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entry = list["configurations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {list}"));
        assert_eq!(entry["problems"], json!(problems), "{id}");
    }
}
