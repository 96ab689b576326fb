//! The scheduler end to end on one gateway: `conf/schedule-<name>.json` jobs reconciling
//! `managed/user` → `managed/other`, no overlapping runs, pause/resume/trigger, jobs created
//! and removed over REST, and a broken schedule file rejected with the last good one kept.

mod common;

use common::fixtures::{managed_with_other, seed_users};

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
        // Only scheduled reconciliations may create targets here, not implicit sync.
        "enableSync": false
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

fn schedule(expr: &str, extra: Value) -> Value {
    let mut s = json!({
        "enabled": true,
        "type": "cron",
        "schedule": expr,
        "persisted": true,
        "misfirePolicy": "fireAndProceed",
        "invokeService": "sync",
        "invokeContext": {"action": "reconcile", "mapping": "u2o"},
        "invokeLogLevel": "info"
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

async fn gateway(extra_mapping: Value, schedules: &[(&str, Value)]) -> Gateway {
    let mut b = Gateway::builder()
        .conf_file("managed", managed_with_other())
        .conf_file("sync", json!({"mappings": [mapping(extra_mapping)]}));
    for (name, doc) in schedules {
        b = b.conf_file(&format!("schedule-{name}"), doc.clone());
    }
    b.start().await
}

async fn get_json(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = gw.get(path).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post_json(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = gw.post(path).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn target_count(gw: &Gateway) -> usize {
    let (_, v) = get_json(gw, "/openidm/managed/other?_queryFilter=true").await;
    v["result"].as_array().map(Vec::len).unwrap_or(0)
}

/// The recon runs of mapping u2o.
async fn runs(gw: &Gateway) -> Vec<Value> {
    let (_, v) = get_json(gw, "/openidm/recon").await;
    v["reconciliations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["mapping"] == "u2o")
        .collect()
}

async fn active_runs(gw: &Gateway) -> usize {
    runs(gw)
        .await
        .iter()
        .filter(|r| r["state"] == "ACTIVE")
        .count()
}

/// Run count once no run is active.
async fn settled_run_count(gw: &Gateway) -> usize {
    assert!(
        eventually(Duration::from_secs(10), || async {
            active_runs(gw).await == 0
        })
        .await
    );
    runs(gw).await.len()
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

#[tokio::test]
async fn a_cron_job_every_two_seconds_reconciles_and_is_listed() {
    let gw = gateway(
        json!({}),
        &[("every2s", schedule("*/2 * * * * ?", json!({})))],
    )
    .await;
    seed_users(&gw, 3).await;
    assert!(
        eventually(Duration::from_secs(8), || async {
            target_count(&gw).await == 3
        })
        .await,
        "{}",
        gw.logs()
    );

    let (status, list) = get_json(&gw, "/openidm/scheduler/job?_queryFilter=true").await;
    assert_eq!(status, 200, "{list}");
    let jobs = list["result"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    let job = &jobs[0];
    assert_eq!(job["_id"], "every2s");
    assert_eq!(job["enabled"], true);
    assert_eq!(job["type"], "cron");
    assert_eq!(job["schedule"], "*/2 * * * * ?");
    assert_eq!(job["invokeService"], "sync");
    assert_eq!(
        job["invokeContext"],
        json!({"action": "reconcile", "mapping": "u2o"})
    );
    assert_eq!(job["concurrentExecution"], false);
    assert_eq!(job["paused"], false);
    assert!(job["nextRunDate"].as_str().unwrap().ends_with('Z'), "{job}");
    assert!(
        job["previousRunDate"].as_str().unwrap().ends_with('Z'),
        "{job}"
    );

    let (status, one) = get_json(&gw, "/openidm/scheduler/job/every2s").await;
    assert_eq!(status, 200);
    assert_eq!(one["_id"], "every2s");
    // The legacy path answers too.
    let (status, legacy) = get_json(&gw, "/openidm/scheduler/every2s").await;
    assert_eq!((status, &legacy["_id"]), (200, &json!("every2s")));
    let (status, missing) = get_json(&gw, "/openidm/scheduler/job/nope").await;
    assert_eq!(status, 404);
    assert_eq!(missing["reason"], "Not Found");

    let text = metrics(&gw).await;
    assert!(
        text.contains(r#"idm_gateway_scheduler_fires_total{job="every2s",outcome="started"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_run_is_never_overlapped_by_the_next_fire() {
    let gw = gateway(
        json!({"taskThreads": 1, "reconSourceQueryPageSize": 10}),
        &[],
    )
    .await;
    seed_users(&gw, 400).await;
    gw.write_conf("schedule-slow", &schedule("* * * * * ?", json!({})));
    assert!(
        eventually(Duration::from_secs(5), || async {
            active_runs(&gw).await == 1
        })
        .await
    );
    // While it runs: fires are skipped, a manual trigger is refused, never two ACTIVE runs.
    let (status, body) = post_json(&gw, "/openidm/scheduler/job/slow?_action=trigger").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["reason"], "Conflict");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        assert!(active_runs(&gw).await <= 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            metrics(&gw).await.contains(
                r#"idm_gateway_scheduler_fires_total{job="slow",outcome="skipped_overlap"}"#,
            )
        })
        .await
    );
    // Stop it before the gateway goes away.
    let r = gw
        .delete("/openidm/scheduler/job/slow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn pause_stops_firing_resume_restarts_and_trigger_runs_now() {
    let gw = gateway(json!({}), &[("tick", schedule("* * * * * ?", json!({})))]).await;
    seed_users(&gw, 2).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            !runs(&gw).await.is_empty()
        })
        .await
    );

    let (status, paused) = post_json(&gw, "/openidm/scheduler/job/tick?_action=pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["nextRunDate"], Value::Null);
    let before = settled_run_count(&gw).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs(&gw).await.len(), before, "a paused job fired");

    // Trigger runs a paused job now, once.
    let (status, fired) = post_json(&gw, "/openidm/scheduler/job/tick?_action=trigger").await;
    assert_eq!(status, 200, "{fired}");
    assert_eq!(fired["mapping"], "u2o");
    assert!(fired["reconId"].is_string());
    assert_eq!(settled_run_count(&gw).await, before + 1);

    let (status, resumed) = post_json(&gw, "/openidm/scheduler/job/tick?_action=resume").await;
    assert_eq!(status, 200);
    assert_eq!(resumed["paused"], false);
    assert!(resumed["nextRunDate"].is_string());
    assert!(
        eventually(Duration::from_secs(5), || async {
            runs(&gw).await.len() > before + 1
        })
        .await
    );

    let (status, _) = post_json(&gw, "/openidm/scheduler/job/nope?_action=pause").await;
    assert_eq!(status, 404);
    let (status, body) = post_json(&gw, "/openidm/scheduler/job/tick?_action=explode").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn put_creates_a_job_live_and_delete_removes_it() {
    let gw = gateway(json!({}), &[]).await;
    seed_users(&gw, 2).await;

    // An invalid job is refused with every problem, and nothing is written.
    let r = gw
        .put("/openidm/scheduler/job/live")
        .json(&json!({"schedule": "every minute", "invokeService": "script"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    // The cron expression, and the script a script job needs.
    let problems = body["detail"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{body}");
    assert!(
        problems[0].as_str().unwrap().contains("'schedule'"),
        "{body}"
    );
    assert!(
        problems[1]
            .as_str()
            .unwrap()
            .contains("'invokeContext.script'"),
        "{body}"
    );
    assert!(!gw.conf_dir().join("schedule-live.json").exists());

    let r = gw
        .put("/openidm/scheduler/job/live")
        .json(&schedule("* * * * * ?", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["_id"], "live");
    assert!(created["nextRunDate"].is_string(), "{created}");
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(gw.conf_dir().join("schedule-live.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk["schedule"], "* * * * * ?");
    assert!(
        eventually(Duration::from_secs(5), || async {
            target_count(&gw).await == 2
        })
        .await
    );

    // Replace: 200, applied at once.
    let r = gw
        .put("/openidm/scheduler/job/live")
        .json(&schedule("0 0 0 1 1 ? 2099", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let replaced: Value = r.json().await.unwrap();
    assert_eq!(replaced["nextRunDate"], "2099-01-01T00:00:00.000Z");

    let r = gw
        .delete("/openidm/scheduler/job/live")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!gw.conf_dir().join("schedule-live.json").exists());
    let (status, _) = get_json(&gw, "/openidm/scheduler/job/live").await;
    assert_eq!(status, 404);
    let r = gw
        .delete("/openidm/scheduler/job/live")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_invalid_schedule_file_is_rejected_and_the_last_good_kept() {
    let far = schedule("0 0 0 1 1 ? 2099", json!({}));
    let gw = gateway(json!({}), &[("j", far)]).await;
    seed_users(&gw, 1).await;
    gw.write_conf(
        "schedule-j",
        &schedule("0 0 0 L * ?", json!({"timeZone": "Mars/Olympus"})),
    );
    assert!(
        gw.wait_for_log("config rejected", Duration::from_secs(5))
            .await
    );
    let logs = gw.logs();
    assert!(logs.contains("L, W and # are not supported"), "{logs}");
    assert!(logs.contains("'timeZone'"), "{logs}");
    let (_, job) = get_json(&gw, "/openidm/scheduler/job/j").await;
    assert_eq!(job["schedule"], "0 0 0 1 1 ? 2099");
    assert_eq!(target_count(&gw).await, 0);

    // A good change applies at once.
    gw.write_conf("schedule-j", &schedule("* * * * * ?", json!({})));
    assert!(
        eventually(Duration::from_secs(6), || async {
            target_count(&gw).await == 1
        })
        .await
    );
    // Removing the file stops the job.
    gw.remove_conf("schedule-j");
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_json(&gw, "/openidm/scheduler/job/j").await.0 == 404
        })
        .await
    );
    let before = settled_run_count(&gw).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(runs(&gw).await.len(), before);
}

/// A script job that fires once a day at `at` (UTC), with `misfirePolicy`.
fn daily_script(at: chrono::DateTime<chrono::Utc>, misfire: &str) -> Value {
    use chrono::Timelike;
    json!({"enabled": true, "persisted": true, "type": "cron",
           "schedule": format!("{} {} {} * * ?", at.second(), at.minute(), at.hour()),
           "misfirePolicy": misfire, "invokeService": "script",
           "invokeContext": {"script": {"type": "text/javascript", "source": "1;"}}})
}

fn started(metrics: &str, job: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("idm_gateway_scheduler_fires_total{"))
        .filter(|l| l.contains(&format!("job=\"{job}\"")) && l.contains("outcome=\"started\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A persisted trigger whose time passed while the gateway was down: after the restart
/// `fireAndProceed` fires it once at once, `doNothing` waits for the next time (tomorrow).
#[tokio::test]
async fn a_trigger_missed_while_down_follows_its_misfire_policy_after_a_restart() {
    let at = chrono::Utc::now() + chrono::Duration::seconds(4);
    let mut gw = Gateway::builder()
        .conf_file("schedule-catchup", daily_script(at, "fireAndProceed"))
        .conf_file("schedule-skip", daily_script(at, "doNothing"))
        .start()
        .await;
    // Both triggers are stored with their next fire time before the gateway goes down.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let v: Value = gw
                .get("/openidm/scheduler/trigger?_queryFilter=true")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["resultCount"] == 2
        })
        .await
    );
    gw.stop();
    // Past the fire time by more than the misfire threshold (5 s).
    let wait = (at + chrono::Duration::seconds(6)) - chrono::Utc::now();
    tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
    gw.restart().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            started(&metrics(&gw).await, "catchup") == 1
        })
        .await,
        "fireAndProceed fires the missed trigger once after the restart"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let m = metrics(&gw).await;
    assert_eq!(
        started(&m, "catchup"),
        1,
        "fired once, not once per missed trigger"
    );
    assert_eq!(started(&m, "skip"), 0, "doNothing skips the missed trigger");
    let job: Value = gw
        .get("/openidm/scheduler/job/skip")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = job["nextRunDate"].as_str().unwrap_or_default().to_owned();
    assert!(
        next > (at + chrono::Duration::hours(23)).to_rfc3339(),
        "the skipped job's next run is the next day: {job}"
    );
}
