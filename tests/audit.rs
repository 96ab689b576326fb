//! Audit (`conf/audit.json`) with the real gateway binary: events in the JSON files and in
//! the store, queried over `/openidm/audit/<topic>`; no secret in any event; rotation by
//! size; a full queue counted, never waited on.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, json_of, send, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

const JSON_HANDLER: &str = "org.forgerock.audit.handlers.json.JsonAuditEventHandler";

fn shipped(name: &str) -> Value {
    let path = format!("{}/conf/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An `audit.json` with one JSON handler (the data dir's `audit/`) answering queries;
/// `config` adds to the handler's config (`topics`, `buffering`, `fileRotation`, …).
fn json_handler(config: Value) -> Value {
    let mut handler = json!({"name": "json", "logDirectory": "&{idm.data.dir}/audit"});
    for (k, v) in config.as_object().expect("handler config is an object") {
        handler[k] = v.clone();
    }
    json!({
        "auditServiceConfig": {"handlerForQueries": "json"},
        "eventHandlers": [{"class": JSON_HANDLER, "config": handler}]
    })
}

/// A JSON handler auditing `activity` only, every write action kept, written every 20 ms.
fn activity_only() -> Value {
    let mut audit = json_handler(json!({
            "buffering": {"writeInterval": "20 millis"},
            "topics": ["activity"]}));
    audit["eventTopics"] = json!({"activity": {"filter": {"actions":
            ["create", "update", "delete", "patch", "action"]}}});
    audit
}

/// `GET info/version` with transaction id `txid`, answered 200.
async fn get_version(gw: &Gateway, txid: &str) {
    let r = gw
        .get("/openidm/info/version")
        .header("X-ForgeRock-TransactionId", txid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn audit_dir(gw: &Gateway) -> PathBuf {
    gw.data_dir().join("audit")
}

/// Every line of every file in `dir` whose name starts with `prefix`. The writer may rotate
/// a file between the listing and the read: then the directory is read again.
fn lines(dir: &Path, prefix: &str) -> Vec<Value> {
    'listing: for _ in 0..20 {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let text = match std::fs::read_to_string(e.path()) {
                    Ok(text) => text,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue 'listing;
                    }
                    Err(err) => panic!("{}: {err}", e.path().display()),
                };
                for l in text.lines() {
                    out.push(serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")));
                }
            }
        }
        return out;
    }
    panic!("{} kept changing while being read", dir.display())
}

async fn query(gw: &Gateway, topic: &str, filter: &str) -> Vec<Value> {
    let r = gw
        .get(&format!("/openidm/audit/{topic}"))
        .query(&[("_queryFilter", filter)])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200, "{body}");
    body["result"].as_array().cloned().unwrap_or_default()
}

async fn eventually_found(gw: &Gateway, topic: &str, filter: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = query(gw, topic, filter).await;
        if !found.is_empty() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {topic} event matches {filter}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_land_in_files_and_store_without_secrets() {
    // The shipped audit.json (IDM's defaults: JSON files) with the store handler turned
    // on and answering queries.
    let mut audit = shipped("audit");
    audit["auditServiceConfig"]["handlerForQueries"] = json!("repo");
    audit["eventHandlers"][1]["config"]["enabled"] = json!(true);
    let gw = Gateway::builder()
        .conf_file("audit", audit)
        .conf_file("managed", shipped("managed"))
        .admin_password("Adm1n-Secret-Pw")
        .start()
        .await;

    // access: a local request, found by its transaction id in the store and in the file.
    let r = gw
        .get("/openidm/config")
        .header("X-ForgeRock-TransactionId", "tx-audit-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let found = eventually_found(&gw, "access", r#"transactionId eq "tx-audit-1""#).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let e = &found[0];
    assert_eq!(e["eventName"], "access");
    assert_eq!(e["userId"], "openidm-admin");
    assert_eq!(e["request"]["operation"], "READ");
    assert_eq!(e["http"]["request"]["method"], "GET");
    assert_eq!(e["http"]["request"]["path"], "/openidm/config");
    assert_eq!(e["response"]["status"], "SUCCESSFUL");
    assert_eq!(e["response"]["statusCode"], "200");
    assert_eq!(e["response"]["elapsedTimeUnits"], "MILLISECONDS");
    assert_eq!(e["client"]["ip"], "127.0.0.1");
    let id = e["_id"].as_str().unwrap();
    let (status, one) = send(
        &gw,
        Method::GET,
        &format!("/openidm/audit/access/{id}"),
        None,
    )
    .await;
    assert_eq!((status, &one["transactionId"]), (200, &json!("tx-audit-1")));
    let all = query(&gw, "access", "true").await;
    assert!(all.len() >= 2, "{all:?}");
    let ok = eventually(Duration::from_secs(10), || async {
        lines(&audit_dir(&gw), "access.audit.json")
            .iter()
            .any(|l| l["transactionId"] == "tx-audit-1")
    })
    .await;
    assert!(ok, "tx-audit-1 not in access.audit.json");

    // authentication: a failure is audited with the principal, never the password.
    let r = gw
        .as_user(Method::GET, "/openidm/config", "mallory", "Wr0ng-Passw0rd")
        .header("X-ForgeRock-TransactionId", "tx-audit-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let found = eventually_found(&gw, "authentication", r#"transactionId eq "tx-audit-2""#).await;
    assert_eq!(found[0]["result"], "FAILED");
    assert_eq!(found[0]["principal"], json!(["mallory"]));
    let ok = eventually_found(&gw, "authentication", r#"result eq "SUCCESSFUL""#).await;
    assert_eq!(ok[0]["principal"], json!(["openidm-admin"]));
    // The failed request's access event: 401, no user.
    let denied = eventually_found(&gw, "access", r#"transactionId eq "tx-audit-2""#).await;
    assert_eq!(denied[0]["response"]["statusCode"], "401");
    assert_eq!(denied[0]["response"]["status"], "FAILED");

    // activity: a managed user create, with the caller and the object, not the password.
    let (status, user) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user?_action=create",
        Some(
            json!({"userName": "audrey", "givenName": "Audrey", "sn": "Audit",
            "mail": "audrey@example.com", "password": "S3cret-Passw0rd!"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let object_id = format!("managed/user/{}", user["_id"].as_str().unwrap());
    let found = eventually_found(&gw, "activity", &format!(r#"objectId eq "{object_id}""#)).await;
    assert_eq!(found[0]["operation"], "CREATE");
    assert_eq!(found[0]["runAs"], "openidm-admin");
    assert_eq!(found[0]["after"]["userName"], "audrey");

    // config: a config write.
    let (status, _) = send(
        &gw,
        Method::PUT,
        "/openidm/config/audit.test",
        Some(json!({"clientSecret": "Sh0uld-Not-Leak", "plain": 1})),
    )
    .await;
    assert_eq!(status, 201);
    let found = eventually_found(&gw, "config", r#"objectId eq "config/audit.test""#).await;
    assert_eq!(found[0]["operation"], "CREATE");
    assert_eq!(found[0]["after"]["plain"], 1);

    // No secret anywhere: files and store.
    let ok = eventually(Duration::from_secs(10), || async {
        lines(&audit_dir(&gw), "activity.audit.json").len() == 1
    })
    .await;
    assert!(ok, "activity not in its file");
    let mut everything = String::new();
    for e in std::fs::read_dir(audit_dir(&gw)).unwrap().flatten() {
        everything.push_str(&std::fs::read_to_string(e.path()).unwrap());
    }
    for topic in ["access", "authentication", "activity", "config"] {
        everything.push_str(&Value::Array(query(&gw, topic, "true").await).to_string());
    }
    for secret in [
        "Wr0ng-Passw0rd",
        "S3cret-Passw0rd!",
        "Sh0uld-Not-Leak",
        gw.admin_password(),
        "Basic ",
    ] {
        assert!(
            !everything.contains(secret),
            "'{secret}' is in an audit event"
        );
    }

    // Audit is for administrators only, and queries are _queryFilter only.
    let (status, _) = json_of(
        gw.as_user(
            Method::GET,
            "/openidm/audit/access?_queryFilter=true",
            "audrey",
            "S3cret-Passw0rd!",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(status == 401 || status == 403, "{status}");
    let (status, body) = send(
        &gw,
        Method::GET,
        "/openidm/audit/nosuchtopic?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_rotate_at_max_file_size_and_json_handler_answers_queries() {
    let max = 3000;
    let gw = Gateway::builder()
        .conf_file(
            "audit",
            json_handler(json!({
                "fileRotation": {"rotationEnabled": true, "maxFileSize": max},
                "fileRetention": {"maxNumberOfHistoryFiles": 2},
                "topics": ["access"]})),
        )
        .start()
        .await;
    for i in 0..40 {
        get_version(&gw, &format!("rot-{i}")).await;
    }
    let dir = audit_dir(&gw);
    let ok = eventually(Duration::from_secs(10), || async {
        lines(&dir, "access.audit.json")
            .iter()
            .any(|l| l["transactionId"] == "rot-39")
    })
    .await;
    assert!(ok, "rot-39 not written");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    let rotated: Vec<_> = files
        .iter()
        .filter(|(n, _)| n != "access.audit.json")
        .collect();
    // 40 events of several hundred bytes: several rotations, of which 2 are kept.
    assert_eq!(rotated.len(), 2, "{files:?}");
    for (name, len) in &files {
        assert!(name.starts_with("access.audit.json"), "{name}");
        assert!(*len <= max, "{name} has {len} bytes");
    }
    // The JSON handler answers queries from its current file.
    let found = query(&gw, "access", r#"transactionId eq "rot-39""#).await;
    assert_eq!(found.len(), 1, "{found:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_rotate_by_age_and_no_event_is_lost_across_rotations() {
    let gw = Gateway::builder()
        .conf_file(
            "audit",
            json_handler(json!({
                "buffering": {"writeInterval": "20 millis"},
                "fileRotation": {"rotationEnabled": true, "rotationInterval": "1 second",
                    "rotationFileSuffix": "-yyyy.MM.dd-HH.mm.ss.SSS"},
                "topics": ["access"]})),
        )
        .start()
        .await;
    let dir = audit_dir(&gw);
    let rotated_count = || {
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("access.audit.json-")
            })
            .count()
    };
    // Requests until two rotations were seen (bounded: a broken rotation fails here).
    let mut sent = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rotated_count() < 2 {
        assert!(std::time::Instant::now() < deadline, "no rotation by age");
        get_version(&gw, &format!("age-{sent}")).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = format!("age-{}", sent - 1);
    let written = eventually(Duration::from_secs(10), || async {
        lines(&dir, "access.audit.json")
            .iter()
            .any(|l| l["transactionId"] == last.as_str())
    })
    .await;
    assert!(written, "{last} not written");
    // Every request's event is in exactly one of the files.
    let all = lines(&dir, "access.audit.json");
    for i in 0..sent {
        let tx = format!("age-{i}");
        let n = all
            .iter()
            .filter(|l| l["transactionId"] == tx.as_str())
            .count();
        assert_eq!(n, 1, "{tx} written {n} times");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_is_counted_and_requests_do_not_wait() {
    let gw = Gateway::builder()
        .conf_file(
            "audit",
            json!({
                "eventHandlers": [{"class": JSON_HANDLER, "config": {
                    "name": "json", "logDirectory": "&{idm.data.dir}/audit",
                    "buffering": {"maxSize": 2}, "topics": ["access"]}},
                    {"class": "org.forgerock.audit.handlers.syslog.SyslogAuditEventHandler",
                     "config": {"name": "syslog"}}]
            }),
        )
        .build_only();
    // A FIFO nobody reads: the handler blocks opening it, for ever (a stuck disk).
    let dir = audit_dir(&gw);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("access.audit.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let gw = gw.spawn().await;
    for _ in 0..20 {
        let r = gw.get("/openidm/info/version").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let (status, text) = {
        let r = gw.get("/openidm/metrics/prometheus").send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(status, 200);
    let dropped: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"idm_gateway_audit_dropped_total{topic="access"} "#))
        .unwrap_or_else(|| panic!("no dropped counter in\n{text}"))
        .parse()
        .unwrap();
    // 20 requests (and the start-up pings) into a queue of 2 that is never read.
    assert!(dropped >= 17.0, "dropped {dropped}");
    assert!(gw.logs().contains("queue is full"), "{}", gw.logs());
    // The unsupported handler class was skipped with a warning, not refused.
    assert!(
        gw.logs().contains("SyslogAuditEventHandler"),
        "{}",
        gw.logs()
    );
    // Without a handlerForQueries, queries say why.
    let (status, body) = send(
        &gw,
        Method::GET,
        "/openidm/audit/access?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_queued_is_written_when_the_gateway_stops() {
    // A write interval far longer than the test: only the stop can write the events.
    let mut gw = Gateway::builder()
        .conf_file(
            "audit",
            json_handler(json!({
                "buffering": {"maxSize": 1000, "writeInterval": "10 seconds"},
                "topics": ["access", "authentication"]})),
        )
        .arg("--shutdown-grace-seconds=1")
        .start()
        .await;
    for i in 0..5 {
        get_version(&gw, &format!("stop-{i}")).await;
    }
    let status = gw.terminate(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gw.logs()
    );
    let access = lines(&audit_dir(&gw), "access.audit.json");
    for i in 0..5 {
        let tx = format!("stop-{i}");
        assert!(
            access.iter().any(|l| l["transactionId"] == tx.as_str()),
            "{tx} not written at stop: {access:?}"
        );
    }
    let authentication = lines(&audit_dir(&gw), "authentication.audit.json");
    assert!(
        authentication
            .iter()
            .any(|l| l["transactionId"] == "stop-4" && l["result"] == "SUCCESSFUL"),
        "{authentication:?}"
    );
    // The log writer wrote its last lines too.
    assert!(gw.logs().contains("idm-gateway stopped"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_and_recon_audit_each_object_with_idms_fields() {
    let mapping = json!({
        "name": "u2o", "source": "managed/user", "target": "managed/other",
        "properties": [{"source": "userName", "target": "userName"},
                       {"source": "mail", "target": "mail"}],
        "correlationQuery": {"_queryFilter": "userName eq \"${source.userName}\""},
        "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}]
    });
    let gw = Gateway::builder()
        .conf_file("managed", common::fixtures::managed_with_other())
        .conf_file("sync", json!({"mappings": [mapping]}))
        .conf_file(
            "audit",
            json_handler(json!({
                "buffering": {"writeInterval": "20 millis"},
                "topics": ["recon", "sync"]})),
        )
        .start()
        .await;

    // Implicit sync: one `sync` event for the push.
    let r = gw
        .put("/openidm/managed/user/u1")
        .json(&common::fixtures::user(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let pushed = eventually_found(&gw, "sync", r#"sourceObjectId eq "managed/user/u1""#).await;
    let e = &pushed[0];
    assert_eq!(e["eventName"], "sync");
    assert_eq!(e["mapping"], "u2o");
    assert_eq!(e["situation"], "ABSENT");
    assert_eq!(e["action"], "CREATE");
    assert_eq!(e["status"], "SUCCESS");
    assert!(
        e["targetObjectId"]
            .as_str()
            .is_some_and(|t| t.starts_with("managed/other/")),
        "{e}"
    );
    assert!(e.get("reconId").is_none(), "{e}");

    // A second user, whose target is then changed by hand: the run finds both users
    // CONFIRMED and updates their targets (IDM's default policy).
    let r = gw
        .put("/openidm/managed/user/u2")
        .json(&common::fixtures::user(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let target = eventually_found(&gw, "sync", r#"sourceObjectId eq "managed/user/u2""#).await[0]
        ["targetObjectId"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = gw
        .request(Method::PATCH, &format!("/openidm/{target}"))
        .json(&json!([{"operation": "replace", "field": "mail", "value": "changed@example.com"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, run) = send(
        &gw,
        Method::POST,
        "/openidm/recon?_action=recon&mapping=u2o&waitForCompletion=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{run}");
    let recon_id = run["_id"].as_str().unwrap().to_owned();
    // One entry per user; the handler writes every 20 ms, so wait for both.
    let entry_filter = format!(r#"reconId eq "{recon_id}" and entryType eq "entry""#);
    let both = eventually(Duration::from_secs(10), || async {
        query(&gw, "recon", &entry_filter).await.len() >= 2
    })
    .await;
    assert!(both, "{:?}", query(&gw, "recon", &entry_filter).await);
    let entries = query(&gw, "recon", &entry_filter).await;
    let by_source = |id: &str| {
        entries
            .iter()
            .filter(|e| e["sourceObjectId"] == format!("managed/user/{id}").as_str())
            .collect::<Vec<_>>()
    };
    let u2 = by_source("u2");
    assert_eq!(u2.len(), 1, "{entries:?}");
    assert_eq!(u2[0]["situation"], "CONFIRMED");
    assert_eq!(u2[0]["action"], "UPDATE");
    assert_eq!(u2[0]["reconciling"], "source");
    assert_eq!(u2[0]["targetObjectId"], target.as_str());
    assert_eq!(u2[0]["mapping"], "u2o");
    assert_eq!(u2[0]["status"], "SUCCESS");
    assert_eq!(by_source("u1").len(), 1, "{entries:?}");
    // Start and summary of the run are there as well (the summary is written once the run
    // has ended, which may be just after the answer).
    for kind in ["start", "summary"] {
        let found = eventually_found(
            &gw,
            "recon",
            &format!(r#"reconId eq "{recon_id}" and entryType eq "{kind}""#),
        )
        .await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0]["mapping"], "u2o");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_of_internal_users_and_roles_are_activity() {
    let gw = Gateway::builder()
        .conf_file("audit", activity_only())
        .start()
        .await;
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/role/auditors",
        Some(json!({"name": "auditors", "description": "Read the audit"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let found = eventually_found(&gw, "activity", r#"objectId eq "internal/role/auditors""#).await;
    assert_eq!(found[0]["operation"], "CREATE");
    assert_eq!(found[0]["runAs"], "openidm-admin");
    assert_eq!(found[0]["after"]["description"], "Read the audit");
    // An update carries the role as it was.
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/role/auditors",
        Some(json!({"name": "auditors", "description": "Read and export the audit"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let found = eventually_found(
        &gw,
        "activity",
        r#"objectId eq "internal/role/auditors" and operation eq "UPDATE""#,
    )
    .await;
    assert_eq!(found[0]["before"]["description"], "Read the audit");
    assert_eq!(
        found[0]["after"]["description"],
        "Read and export the audit"
    );
    assert_eq!(found[0]["changedFields"], json!(["/description"]));

    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/user/svc-audit",
        Some(json!({"password": "Svc-Audit-Pw-1"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/internal/user/svc-audit",
        Some(json!([{"operation": "replace", "field": "password", "value": "Svc-Audit-Pw-2"}])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let found = eventually_found(
        &gw,
        "activity",
        r#"objectId eq "internal/user/svc-audit" and operation eq "PATCH""#,
    )
    .await;
    assert_eq!(found[0]["passwordChanged"], true, "{:?}", found[0]);
    assert!(found[0]["before"].is_object(), "{:?}", found[0]);
    // Reads are not activity; the passwords (and their hashes) are nowhere.
    let (status, _) = send(&gw, Method::GET, "/openidm/internal/role/auditors", None).await;
    assert_eq!(status, 200);
    let all = query(&gw, "activity", "true").await;
    assert!(all.iter().all(|e| e["operation"] != "READ"), "{all:?}");
    let text = Value::Array(all).to_string();
    for secret in ["Svc-Audit-Pw-1", "Svc-Audit-Pw-2", "$argon2", "\"hash\""] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_audit_json_applies_without_restart_and_a_bad_one_is_refused() {
    let access_only = json_handler(json!({
        "buffering": {"writeInterval": "20 millis"},
        "topics": ["access"]}));
    let gw = Gateway::builder()
        .conf_file("audit", access_only)
        .start()
        .await;
    let put_role = |name: &'static str| {
        let gw = &gw;
        async move {
            let (status, body) = send(
                gw,
                Method::PUT,
                &format!("/openidm/internal/role/{name}"),
                Some(json!({"name": name, "description": "reload"})),
            )
            .await;
            assert_eq!(status, 201, "{body}");
        }
    };
    put_role("before-reload").await;
    let dir = audit_dir(&gw);
    // The first conf load finds the file the audit started with: nothing is restarted.
    assert!(!gw.logs().contains("audit.json applied"), "{}", gw.logs());

    // Requests keep coming while the file changes: none of their events is lost.
    let requests = {
        let client = gw.client().clone();
        let url = gw.url("/openidm/info/version");
        let (user, password) = ("openidm-admin".to_owned(), gw.admin_password().to_owned());
        tokio::spawn(async move {
            for i in 0..40 {
                let r = client
                    .get(&url)
                    .header("X-OpenIDM-Username", &user)
                    .header("X-OpenIDM-Password", &password)
                    .header("X-ForgeRock-TransactionId", format!("during-{i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let with_activity = json_handler(json!({
        "buffering": {"writeInterval": "20 millis"},
        "topics": ["access", "activity"]}));
    gw.write_conf("audit", &with_activity);
    assert!(
        gw.wait_for_log("audit.json applied", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    requests.await.unwrap();

    // Activity is audited from now on, without a restart; the write before was not.
    put_role("after-reload").await;
    let found = eventually_found(
        &gw,
        "activity",
        r#"objectId eq "internal/role/after-reload""#,
    )
    .await;
    assert_eq!(found[0]["operation"], "CREATE");
    assert!(query(
        &gw,
        "activity",
        r#"objectId eq "internal/role/before-reload""#
    )
    .await
    .is_empty());
    let written = eventually(Duration::from_secs(10), || async {
        lines(&dir, "access.audit.json")
            .iter()
            .any(|l| l["transactionId"] == "during-39")
    })
    .await;
    assert!(written, "during-39 not written");
    let access = lines(&dir, "access.audit.json");
    for i in 0..40 {
        let tx = format!("during-{i}");
        let n = access
            .iter()
            .filter(|l| l["transactionId"] == tx.as_str())
            .count();
        assert_eq!(n, 1, "{tx} written {n} times");
    }

    // An invalid file is reported and the running configuration stays.
    gw.write_conf_bytes(
        "audit.json",
        json!({"eventHandlers": [{"class": JSON_HANDLER, "config": {
            "name": "json", "logDirectory": "&{idm.data.dir}/audit",
            "fileRotation": {"rotationEnabled": true, "rotationInterval": "soon"},
            "topics": ["access"]}}]})
        .to_string()
        .as_bytes(),
    );
    assert!(
        gw.wait_for_log("config rejected", Duration::from_secs(10))
            .await,
        "{}",
        gw.logs()
    );
    assert!(
        gw.logs().contains("fileRotation/rotationInterval"),
        "{}",
        gw.logs()
    );
    put_role("after-invalid").await;
    eventually_found(
        &gw,
        "activity",
        r#"objectId eq "internal/role/after-invalid""#,
    )
    .await;
    get_version(&gw, "after-invalid").await;
    eventually_found(&gw, "access", r#"transactionId eq "after-invalid""#).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn activity_updates_patches_and_deletes_carry_the_object_before() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file("audit", activity_only())
        .start()
        .await;
    let mut user = common::fixtures::user(7);
    user["password"] = json!("Before-Pw-1");
    common::fixtures::put_user(&gw, "b7", &user).await;
    let event_of = |operation: &'static str| {
        let gw = &gw;
        async move {
            let found = eventually_found(
                gw,
                "activity",
                &format!(r#"objectId eq "managed/user/b7" and operation eq "{operation}""#),
            )
            .await;
            assert_eq!(found.len(), 1, "{found:?}");
            found.into_iter().next().unwrap()
        }
    };
    let created = event_of("CREATE").await;
    assert_eq!(created["before"], Value::Null, "{created}");

    // Patch: before is the stored object as the caller sees it, after the answer.
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/b7",
        Some(json!([{"operation": "replace", "field": "mail", "value": "patched@example.com"}])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let patched = event_of("PATCH").await;
    assert_eq!(patched["before"]["mail"], "user7@example.com", "{patched}");
    assert_eq!(patched["before"]["userName"], "user7", "{patched}");
    assert_eq!(patched["after"]["mail"], "patched@example.com", "{patched}");
    assert_eq!(patched["changedFields"], json!(["/mail"]), "{patched}");
    assert_eq!(patched["passwordChanged"], false, "{patched}");

    // Update, with a new password: before has the patched mail; no password anywhere.
    let mut replaced = common::fixtures::user(7);
    replaced["sn"] = json!("Replaced");
    replaced["mail"] = json!("patched@example.com");
    replaced["password"] = json!("After-Pw-2");
    common::fixtures::put_user(&gw, "b7", &replaced).await;
    let updated = event_of("UPDATE").await;
    assert_eq!(updated["before"]["sn"], "Sn7", "{updated}");
    assert_eq!(
        updated["before"]["mail"], "patched@example.com",
        "{updated}"
    );
    assert_eq!(updated["after"]["sn"], "Replaced", "{updated}");
    assert!(
        updated["changedFields"]
            .as_array()
            .unwrap()
            .contains(&json!("/sn")),
        "{updated}"
    );
    assert_eq!(updated["passwordChanged"], true, "{updated}");

    // Delete: before is the deleted object, after is null.
    let (status, body) = send(&gw, Method::DELETE, "/openidm/managed/user/b7", None).await;
    assert_eq!(status, 200, "{body}");
    let deleted = event_of("DELETE").await;
    assert_eq!(deleted["before"]["sn"], "Replaced", "{deleted}");
    assert_eq!(deleted["after"], Value::Null, "{deleted}");

    let text = Value::Array(query(&gw, "activity", "true").await).to_string();
    for secret in ["Before-Pw-1", "After-Pw-2", "$crypto", "$argon2"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relationship_edges_written_through_a_sub_collection_are_activity() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file("audit", activity_only())
        .start()
        .await;
    common::fixtures::put_user(&gw, "e1", &common::fixtures::user(1)).await;
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/role/r1",
        Some(json!({"name": "r1"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user/e1/roles?_action=create",
        Some(json!({"_ref": "managed/role/r1"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let edge = body["_id"].as_str().expect("edge id").to_owned();
    let object_id = format!("managed/user/e1/roles/{edge}");
    let created = eventually_found(
        &gw,
        "activity",
        &format!(r#"objectId eq "{object_id}" and operation eq "CREATE""#),
    )
    .await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(
        created[0]["after"]["_ref"], "managed/role/r1",
        "{created:?}"
    );
    assert_eq!(created[0]["userId"], "openidm-admin", "{created:?}");

    // Reads of the sub-collection are not activity.
    let (status, body) = send(
        &gw,
        Method::GET,
        "/openidm/managed/user/e1/roles?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resultCount"], 1, "{body}");

    let (status, body) = send(
        &gw,
        Method::DELETE,
        &format!("/openidm/managed/user/e1/roles/{edge}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let deleted = eventually_found(
        &gw,
        "activity",
        &format!(r#"objectId eq "{object_id}" and operation eq "DELETE""#),
    )
    .await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(
        deleted[0]["before"]["_ref"], "managed/role/r1",
        "{deleted:?}"
    );
    assert_eq!(deleted[0]["after"], Value::Null, "{deleted:?}");
    let on_edges = query(&gw, "activity", r#"objectId sw "managed/user/e1/roles""#).await;
    assert_eq!(on_edges.len(), 2, "only the two writes: {on_edges:?}");
}
