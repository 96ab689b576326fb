//! Script jobs (`invokeService: "script"`) and IDM's task scanner (`invokeService:
//! "taskscanner"`, `/openidm/taskscanner`) end to end on a real gateway: scripts that write
//! managed objects through `openidm.*`, the `taskState` markers that make a scan resume where it
//! stopped, failures, cancel, and bad input.

mod common;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::fixtures::{js, shipped, user};
use common::{eventually, json_of, Gateway};
use serde_json::{json, Value};

/// A schedule that never fires by itself (runs are started over REST).
const NEVER: &str = "0 0 0 1 1 ? 2099";

fn schedule(cron: &str, service: &str, context: Value) -> Value {
    json!({"enabled": true, "type": "cron", "schedule": cron, "persisted": true,
           "concurrentExecution": false, "invokeService": service, "invokeContext": context})
}

/// IDM's sample sunset scan (schedule-taskscan_sunset.json) over `managed/user`, with
/// `task` as the script source.
fn sunset_scan(task: &str, extra: Value) -> Value {
    let mut ctx = json!({
        "waitForCompletion": false,
        "numberOfThreads": 5,
        "scan": {
            "_queryFilter": "((/sunset/date lt \"${Time.now}\") AND !(/sunset/task-completed pr))",
            "object": "managed/user",
            "taskState": {"started": "/sunset/task-started", "completed": "/sunset/task-completed"},
            "recovery": {"timeout": "10m"}
        },
        "task": {"script": js(task)}
    });
    for (k, v) in extra.as_object().unwrap() {
        ctx[k] = v.clone();
    }
    schedule(NEVER, "taskscanner", ctx)
}

/// The task of IDM's sunset sample: deactivates the user, through the router.
const DEACTIVATE: &str = "openidm.patch(objectID, null, \
     [{operation: 'replace', field: '/accountStatus', value: 'inactive'}]);\ntrue";

async fn gateway(schedules: &[(&str, Value)]) -> Gateway {
    let mut b = Gateway::builder().conf_file("managed", shipped("managed"));
    for (name, doc) in schedules {
        b = b.conf_file(&format!("schedule-{name}"), doc.clone());
    }
    b.start().await
}

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Users `<prefix>0..<prefix><n>` (numbered from `first` for unique user names) with
/// `sunset` set to `sunset` (none if null), 16 requests at a time.
async fn seed(gw: &Gateway, prefix: &str, first: usize, n: usize, sunset: Value) {
    let ids: Vec<usize> = (first..first + n).collect();
    for chunk in ids.chunks(16) {
        futures_util::future::join_all(chunk.iter().map(|&i| {
            let mut body = user(i);
            if !sunset.is_null() {
                body["sunset"] = sunset.clone();
            }
            async move {
                let (status, out) = json_of(
                    gw.put(&format!("/openidm/managed/user/{prefix}{i}"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                assert!(status == 201 || status == 200, "{status} {out}");
            }
        }))
        .await;
    }
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    json_of(gw.get(path).send().await.unwrap()).await
}

async fn post(gw: &Gateway, path: &str) -> (u16, Value) {
    json_of(gw.post(path).send().await.unwrap()).await
}

/// Every user whose `_id` starts with `prefix`.
async fn users(gw: &Gateway, prefix: &str) -> Vec<Value> {
    let (status, v) = get(
        gw,
        &format!("/openidm/managed/user?_queryFilter=_id%20sw%20%22{prefix}%22"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["result"].as_array().unwrap().clone()
}

/// `POST taskscanner?_action=execute&name=<name>`: the run's id.
async fn execute(gw: &Gateway, name: &str) -> String {
    let (status, body) = post(
        gw,
        &format!("/openidm/taskscanner?_action=execute&name={name}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["_id"].as_str().unwrap().to_owned()
}

/// `GET taskscanner/<id>` once the run has ended.
async fn ended(gw: &Gateway, id: &str) -> Value {
    let path = format!("/openidm/taskscanner/{id}");
    assert!(
        eventually(Duration::from_secs(30), || async {
            !get(gw, &path).await.1["ended"].is_null()
        })
        .await,
        "{}",
        gw.logs()
    );
    get(gw, &path).await.1
}

fn progress(run: &Value) -> (&str, u64, u64, u64, u64) {
    let p = &run["progress"];
    (
        p["state"].as_str().unwrap(),
        p["processed"].as_u64().unwrap(),
        p["total"].as_u64().unwrap(),
        p["successes"].as_u64().unwrap(),
        p["failures"].as_u64().unwrap(),
    )
}

async fn metrics(gw: &Gateway) -> String {
    gw.get("/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_job_writes_through_the_router_and_a_throwing_one_is_counted() {
    let maker = schedule(
        NEVER,
        "script",
        json!({"script": js("openidm.create('managed/user', input.id, \
            {userName: input.id, givenName: 'Job', sn: 'Made', mail: input.id + '@example.com'})"),
            "id": "fromjob"}),
    );
    let thrower = schedule(
        NEVER,
        "script",
        json!({"script": js("var x = 1;\nthrow {code: 500, message: 'boom'}")}),
    );
    let gw = gateway(&[("maker", maker), ("thrower", thrower)]).await;

    let (status, fired) = post(&gw, "/openidm/scheduler/job/maker?_action=trigger").await;
    assert_eq!(status, 200, "{fired}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&gw, "/openidm/managed/user/fromjob").await.0 == 200
        })
        .await,
        "{}",
        gw.logs()
    );
    let (_, made) = get(&gw, "/openidm/managed/user/fromjob").await;
    assert_eq!(made["userName"], "fromjob");
    assert_eq!(made["sn"], "Made");

    // A script that throws: the fire itself started, the run failed; the gateway serves on.
    let (status, fired) = post(&gw, "/openidm/scheduler/job/thrower?_action=trigger").await;
    assert_eq!(status, 200, "{fired}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            metrics(&gw)
                .await
                .contains(r#"idm_gateway_scheduler_fires_total{job="thrower",outcome="failed"} 1"#)
        })
        .await,
        "{}",
        metrics(&gw).await
    );
    let text = metrics(&gw).await;
    assert!(
        !text.contains(r#"idm_gateway_scheduler_fires_total{job="maker",outcome="failed"}"#),
        "{text}"
    );
    assert!(gw.logs().contains("scheduled script failed"));
    assert_eq!(get(&gw, "/openidm/info/ping").await.0, 200);
    // The job can run again once the failed run is over.
    let (status, _) = post(&gw, "/openidm/scheduler/job/thrower?_action=trigger").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_script_job_fires_by_itself() {
    let ticker = schedule(
        "* * * * * ?",
        "script",
        json!({"script": js("var id = 'tick' + Date.now();\n\
            openidm.create('managed/user', id, {userName: id, givenName: 'T', sn: 'T', mail: id + '@example.com'})")}),
    );
    let gw = gateway(&[("ticker", ticker)]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            users(&gw, "tick").await.len() >= 2
        })
        .await,
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_over_fifty_users_completes_each_once() {
    let gw = gateway(&[("sunset", sunset_scan(DEACTIVATE, json!({})))]).await;
    let past = iso(Utc::now() - chrono::Duration::days(1));
    let future = iso(Utc::now() + chrono::Duration::days(30));
    seed(&gw, "old", 0, 50, json!({"date": past})).await;
    seed(&gw, "later", 100, 3, json!({"date": future})).await;

    // IDM names the schedule by its config name; the bare name works too.
    let id = execute(&gw, "schedule/sunset").await;
    let run = ended(&gw, &id).await;
    assert_eq!(progress(&run), ("COMPLETED", 50, 50, 50, 0), "{run}");
    assert_eq!(run["_id"], id.as_str());
    assert!(run["started"].as_i64().unwrap() <= run["ended"].as_i64().unwrap());

    let done = users(&gw, "old").await;
    assert_eq!(done.len(), 50);
    for u in &done {
        assert_eq!(u["accountStatus"], "inactive", "{u}");
        let started = u["sunset"]["task-started"]
            .as_str()
            .expect("started marker");
        let completed = u["sunset"]["task-completed"]
            .as_str()
            .expect("completed marker");
        assert!(started.ends_with('Z') && started <= completed, "{u}");
        assert_eq!(u["sunset"]["date"], past.as_str());
    }
    for u in users(&gw, "later").await {
        assert_ne!(u["accountStatus"], "inactive", "{u}");
        assert!(u["sunset"].get("task-started").is_none(), "{u}");
    }

    // Nothing is left for the next run.
    let again = execute(&gw, "sunset").await;
    assert_eq!(
        progress(&ended(&gw, &again).await),
        ("COMPLETED", 0, 0, 0, 0)
    );
    let (status, list) = get(&gw, "/openidm/taskscanner").await;
    assert_eq!(status, 200, "{list}");
    let tasks = list["tasks"].as_array().unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t["_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str(), again.as_str()], "{list}");
    assert!(tasks.iter().all(|t| t["name"] == "sunset"), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_object_is_counted_and_left_started_while_the_others_complete() {
    let task = "if (input.userName === 'user2') { throw {code: 400, message: 'not this one'}; }\n\
                if (input.userName === 'user3') { false } else {\n"
        .to_owned()
        + DEACTIVATE
        + "}";
    let gw = gateway(&[(
        "sunset",
        sunset_scan(
            &task,
            json!({"waitForCompletion": true, "numberOfThreads": 2}),
        ),
    )])
    .await;
    let past = iso(Utc::now() - chrono::Duration::hours(1));
    seed(&gw, "f", 0, 6, json!({"date": past})).await;

    // waitForCompletion: the execute answers once the run is over.
    let id = execute(&gw, "sunset").await;
    let (_, run) = get(&gw, &format!("/openidm/taskscanner/{id}")).await;
    assert_eq!(progress(&run), ("COMPLETED", 6, 6, 4, 2), "{run}");
    for u in users(&gw, "f").await {
        let failed = u["userName"] == "user2" || u["userName"] == "user3";
        assert!(u["sunset"]["task-started"].is_string(), "{u}");
        assert_eq!(u["sunset"].get("task-completed").is_some(), !failed, "{u}");
        assert_eq!(u["accountStatus"] == "inactive", !failed, "{u}");
    }
    // Started and not completed: not taken again before the recovery timeout.
    let again = execute(&gw, "sunset").await;
    let (_, run) = get(&gw, &format!("/openidm/taskscanner/{again}")).await;
    assert_eq!(progress(&run), ("COMPLETED", 0, 0, 0, 0), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_slow_run_and_the_next_run_resumes() {
    // ~20 ms of work per object, one at a time.
    let slow =
        "var until = Date.now() + 20;\nwhile (Date.now() < until) { openidm.read(objectID); }\n"
            .to_owned()
            + DEACTIVATE;
    let gw = gateway(&[("sunset", sunset_scan(&slow, json!({"numberOfThreads": 1})))]).await;
    let past = iso(Utc::now() - chrono::Duration::hours(1));
    seed(&gw, "c", 0, 200, json!({"date": past})).await;

    let id = execute(&gw, "sunset").await;
    let path = format!("/openidm/taskscanner/{id}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            get(&gw, &path).await.1["progress"]["processed"].as_u64() >= Some(1)
        })
        .await
    );
    let (status, body) = post(&gw, &format!("{path}?_action=cancel")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"_id": id, "action": "cancel", "status": "SUCCESS"})
    );
    // As in IDM, the state says so at once, before the object in flight is done.
    assert_eq!(get(&gw, &path).await.1["progress"]["state"], "CANCELLED");
    let run = ended(&gw, &id).await;
    let (state, processed, total, successes, failures) = progress(&run);
    assert_eq!((state, total, failures), ("CANCELLED", 200, 0), "{run}");
    assert!(processed < 200 && successes == processed, "{run}");
    let completed = users(&gw, "c")
        .await
        .iter()
        .filter(|u| u["sunset"].get("task-completed").is_some())
        .count() as u64;
    assert_eq!(completed, processed);

    // An ended run cannot be cancelled; an unknown one is a 404.
    let (status, body) = post(&gw, &format!("{path}?_action=cancel")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("FAILURE")),
        "{body}"
    );
    let (status, body) = post(&gw, "/openidm/taskscanner/nope?_action=cancel").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["reason"], "Not Found");

    // The next run takes only what the cancelled one left.
    gw.write_conf(
        "schedule-sunset",
        &sunset_scan(DEACTIVATE, json!({"waitForCompletion": true})),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let (_, job) = get(&gw, "/openidm/scheduler/job/sunset").await;
            job["invokeContext"]["waitForCompletion"] == true
        })
        .await
    );
    let rest = execute(&gw, "sunset").await;
    let (_, run) = get(&gw, &format!("/openidm/taskscanner/{rest}")).await;
    let left = 200 - processed;
    assert_eq!(progress(&run), ("COMPLETED", left, left, left, 0), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_started_marker_is_redone_and_a_fresh_one_is_not() {
    let gw = gateway(&[(
        "sunset",
        sunset_scan(DEACTIVATE, json!({"waitForCompletion": true})),
    )])
    .await;
    let past = iso(Utc::now() - chrono::Duration::days(2));
    let stale = iso(Utc::now() - chrono::Duration::minutes(11));
    let fresh = iso(Utc::now() - chrono::Duration::minutes(1));
    seed(
        &gw,
        "stale",
        0,
        1,
        json!({"date": past, "task-started": stale}),
    )
    .await;
    seed(
        &gw,
        "fresh",
        1,
        1,
        json!({"date": past, "task-started": fresh}),
    )
    .await;
    seed(&gw, "new", 2, 1, json!({"date": past})).await;

    let id = execute(&gw, "sunset").await;
    let (_, run) = get(&gw, &format!("/openidm/taskscanner/{id}")).await;
    assert_eq!(progress(&run), ("COMPLETED", 2, 2, 2, 0), "{run}");

    let (_, s) = get(&gw, "/openidm/managed/user/stale0").await;
    assert!(s["sunset"]["task-completed"].is_string(), "{s}");
    assert!(
        s["sunset"]["task-started"].as_str().unwrap() > stale.as_str(),
        "{s}"
    );
    assert_eq!(s["accountStatus"], "inactive");
    let (_, f) = get(&gw, "/openidm/managed/user/fresh1").await;
    assert_eq!(f["sunset"]["task-started"], fresh.as_str(), "{f}");
    assert!(f["sunset"].get("task-completed").is_none(), "{f}");
    assert_ne!(f["accountStatus"], "inactive");
    let (_, n) = get(&gw, "/openidm/managed/user/new2").await;
    assert!(n["sunset"]["task-completed"].is_string(), "{n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_crest_errors_and_a_broken_script_file_is_rejected() {
    let recon_like = schedule(NEVER, "script", json!({"script": js("1")}));
    let gw = gateway(&[
        ("sunset", sunset_scan(DEACTIVATE, json!({}))),
        ("plain", recon_like),
    ])
    .await;

    // IDM answers an execute it cannot resolve with 400 ("Error obtaining named config").
    for (path, status) in [
        ("/openidm/taskscanner?_action=execute&name=nope", 400),
        ("/openidm/taskscanner?_action=execute", 400),
        ("/openidm/taskscanner?_action=execute&name=plain", 400),
        ("/openidm/taskscanner?_action=explode", 400),
    ] {
        let (got, body) = post(&gw, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["code"], status, "{body}");
        assert!(
            body["reason"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
    let (_, body) = post(&gw, "/openidm/taskscanner?_action=execute&name=nope").await;
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    let (status, body) = get(&gw, "/openidm/taskscanner/nope").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["reason"], "Not Found");

    // A broken task script rejects the file with its line; the last good schedule stays.
    gw.write_conf(
        "schedule-sunset",
        &sunset_scan("var ok = 1;\nvar broken = (;", json!({})),
    );
    assert!(
        gw.wait_for_log("config rejected", Duration::from_secs(10))
            .await
    );
    let logs = gw.logs();
    assert!(logs.contains("invokeContext.task.script"), "{logs}");
    assert!(logs.contains("line 2"), "{logs}");
    let (_, job) = get(&gw, "/openidm/scheduler/job/sunset").await;
    assert_eq!(
        job["invokeContext"]["task"]["script"]["source"], DEACTIVATE,
        "{job}"
    );
    seed(
        &gw,
        "b",
        0,
        2,
        json!({"date": iso(Utc::now() - chrono::Duration::hours(1))}),
    )
    .await;
    let id = execute(&gw, "sunset").await;
    assert_eq!(progress(&ended(&gw, &id).await), ("COMPLETED", 2, 2, 2, 0));

    // The same for a script job's script.
    gw.write_conf(
        "schedule-plain",
        &schedule(NEVER, "script", json!({"script": js("1 +")})),
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            gw.logs_now().matches("config rejected").count() >= 2
        })
        .await
    );
    assert!(gw.logs().contains("invokeContext.script"));
    let (_, job) = get(&gw, "/openidm/scheduler/job/plain").await;
    assert_eq!(job["invokeContext"]["script"]["source"], "1", "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_that_waits_for_completion_does_not_hold_up_other_schedules() {
    let gw = gateway(&[]).await;
    let past = iso(Utc::now() - chrono::Duration::hours(1));
    seed(&gw, "w", 0, 100, json!({"date": past})).await;
    // ~50 ms per object, one at a time: the scan's first run lasts seconds.
    let slow =
        "var until = Date.now() + 50;\nwhile (Date.now() < until) { openidm.read(objectID); }\n"
            .to_owned()
            + DEACTIVATE;
    let mut scan = sunset_scan(
        &slow,
        json!({"waitForCompletion": true, "numberOfThreads": 1}),
    );
    scan["schedule"] = json!("* * * * * ?");
    gw.write_conf("schedule-slowscan", &scan);
    gw.write_conf(
        "schedule-ticker",
        &schedule(
            "* * * * * ?",
            "script",
            json!({"script": js("var id = 'tick' + Date.now();\n\
                openidm.create('managed/user', id, {userName: id, givenName: 'T', sn: 'T', mail: id + '@example.com'})")}),
        ),
    );
    // The first run of the scan (the one that does the work), once over.
    let first = || async {
        get(&gw, "/openidm/taskscanner").await.1["tasks"]
            .as_array()
            .and_then(|t| t.first().cloned())
    };
    assert!(
        eventually(Duration::from_secs(60), || async {
            first().await.is_some_and(|t| !t["ended"].is_null())
        })
        .await,
        "{}",
        gw.logs()
    );
    let run = first().await.unwrap();
    assert_eq!(progress(&run), ("COMPLETED", 100, 100, 100, 0), "{run}");
    let (started, ended) = (
        run["started"].as_i64().unwrap(),
        run["ended"].as_i64().unwrap(),
    );
    // The ticker kept firing every second while the scan ran.
    let during = users(&gw, "tick")
        .await
        .iter()
        .filter_map(|u| u["_id"].as_str()?.strip_prefix("tick")?.parse::<i64>().ok())
        .filter(|t| (started..ended).contains(t))
        .count();
    assert!(
        during >= 2,
        "{during} ticks during a run of {} ms",
        ended - started
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_records_bounds_a_run_and_an_ids_only_query_never_redoes_completed_objects() {
    let mut scan = sunset_scan(
        DEACTIVATE,
        json!({"waitForCompletion": true, "numberOfThreads": 2, "maxRecords": 3}),
    );
    let query = scan["invokeContext"]["scan"].as_object_mut().unwrap();
    query.remove("_queryFilter");
    query.insert("_queryId".into(), json!("query-all-ids"));
    let gw = gateway(&[("ids", scan)]).await;
    // No `sunset` at all: the markers' parent object is made by the claim.
    seed(&gw, "q", 0, 5, Value::Null).await;

    // A scheduler trigger starts a run too, and names it.
    let (status, fired) = post(&gw, "/openidm/scheduler/job/ids?_action=trigger").await;
    assert_eq!(status, 200, "{fired}");
    let id = fired["taskScanId"].as_str().expect("taskScanId").to_owned();
    let run = ended(&gw, &id).await;
    assert_eq!(progress(&run), ("COMPLETED", 3, 3, 3, 0), "{run}");
    assert_eq!(run["name"], "ids");

    // query-all-ids answers ids only: the markers are read, completed objects skipped.
    let second = execute(&gw, "ids").await;
    let (_, run) = get(&gw, &format!("/openidm/taskscanner/{second}")).await;
    assert_eq!(progress(&run), ("COMPLETED", 2, 2, 2, 0), "{run}");
    let third = execute(&gw, "ids").await;
    let (_, run) = get(&gw, &format!("/openidm/taskscanner/{third}")).await;
    assert_eq!(progress(&run), ("COMPLETED", 0, 0, 0, 0), "{run}");
    let all = users(&gw, "q").await;
    assert!(
        all.iter()
            .all(|u| u["sunset"]["task-completed"].is_string() && u["accountStatus"] == "inactive"),
        "{all:?}"
    );
}
