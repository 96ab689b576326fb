//! `/openidm/system` end to end on a real gateway with the CSV file connector: the actions
//! of seed 004, CRUD and queries of system objects with IDM's rules (id from the URL,
//! unknown properties and types refused, no patch action), provisioner reload, and
//! liveSync/implicit sync/reconciliation between `system/csv/account` and `managed/user`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fixtures::{recon, shipped};
use common::{eventually, json_of, Gateway};
use serde_json::{json, Value};

const HEADER: &str = "uid,firstName,lastName,email,password\n";

fn provisioner(csv: &Path) -> Value {
    json!({
        "name": "csv",
        "enabled": true,
        "connectorRef": {
            "bundleName": "org.forgerock.openicf.connectors.csvfile-connector",
            "bundleVersion": "[1.5.0.0,1.6.0.0)",
            "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"
        },
        "configurationProperties": {
            "csvFile": csv.to_str().unwrap(),
            "headerUid": "uid",
            "headerName": "uid",
            "headerPassword": "password"
        },
        "operationTimeout": {"SEARCH": 10000},
        "objectTypes": {
            "account": {
                "$schema": "http://json-schema.org/draft-03/schema",
                "id": "__ACCOUNT__",
                "type": "object",
                "nativeType": "__ACCOUNT__",
                "properties": {
                    "name": {"type": "string", "nativeName": "__NAME__", "nativeType": "string",
                             "required": true},
                    "firstName": {"type": "string", "nativeName": "firstName", "nativeType": "string"},
                    "lastName": {"type": "string", "nativeName": "lastName", "nativeType": "string",
                                 "required": true},
                    "email": {"type": "string", "nativeName": "email", "nativeType": "string"},
                    "password": {"type": "string", "nativeName": "__PASSWORD__",
                                 "nativeType": "JAVA_TYPE_GUARDEDSTRING",
                                 "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]}
                }
            }
        }
    })
}

fn write_csv(path: &Path, rows: &[(&str, &str, &str, &str, &str)]) {
    let mut text = HEADER.to_string();
    for (uid, first, last, mail, pw) in rows {
        text.push_str(&format!("{uid},{first},{last},{mail},{pw}\n"));
    }
    let tmp = path.with_extension("tmp-test");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    csv: PathBuf,
}

fn csv_fixture(rows: &[(&str, &str, &str, &str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("accounts.csv");
    write_csv(&csv, rows);
    Fixture { _dir: dir, csv }
}

#[tokio::test]
async fn system_actions_crud_and_queries_follow_idm() {
    let f = csv_fixture(&[
        (
            "bjensen",
            "Barbara",
            "Jensen",
            "bjensen@example.com",
            "Passw0rd",
        ),
        ("jdoe", "John", "Doe", "jdoe@example.com", "secret1"),
    ]);
    let gw = Gateway::builder()
        .conf_file("provisioner.openicf-csv", provisioner(&f.csv))
        .start()
        .await;

    // Connector catalogue and status.
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=availableConnectors")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["connectorRef"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connectorName"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"org.forgerock.openicf.csvfile.CSVFileConnector"),
        "{v}"
    );
    assert!(
        names.contains(&"org.identityconnectors.ldap.LdapConnector"),
        "{v}"
    );
    assert_eq!(v["connectorRef"][0]["systemType"], "provisioner.openicf");
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["name"], "csv");
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["config"], "config/provisioner.openicf/csv");
    assert_eq!(v[0]["objectTypes"], json!(["__ALL__", "account"]));
    let (s, v) = json_of(
        gw.post("/openidm/system/csv?_action=test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=testConnectorServers")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!({"openicf": []})));

    // query-all-ids: _id and the naming attribute.
    let (s, v) = json_of(
        gw.get("/openidm/system/csv/account?_queryId=query-all-ids")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"],
        json!([{"_id": "bjensen", "name": "bjensen"}, {"_id": "jdoe", "name": "jdoe"}])
    );
    assert_eq!(v["resultCount"], 2);

    // Read: declared properties, the password never.
    let (s, v) = json_of(
        gw.get("/openidm/system/csv/account/bjensen")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"_id": "bjensen", "name": "bjensen", "firstName": "Barbara",
               "lastName": "Jensen", "email": "bjensen@example.com"})
    );

    // Create with _action=create; the body's _id is the uid.
    let (s, v) = json_of(
        gw.post("/openidm/system/csv/account?_action=create")
            .json(
                &json!({"_id": "jsmith", "name": "jsmith", "firstName": "James",
                          "lastName": "Smith", "email": "jsmith@example.com",
                          "password": "pw-jsmith"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["_id"], "jsmith");
    assert_eq!(v["lastName"], "Smith");
    assert!(v.get("password").is_none(), "{v}");
    assert!(std::fs::read_to_string(&f.csv)
        .unwrap()
        .contains("jsmith,James,Smith"));

    // PUT replaces the named attributes and keeps the others; null clears.
    let (s, v) = json_of(
        gw.put("/openidm/system/csv/account/jsmith")
            .header("If-Match", "*")
            .json(&json!({"lastName": "Smythe", "email": null}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"_id": "jsmith", "name": "jsmith", "firstName": "James",
               "lastName": "Smythe", "email": null})
    );
    // A different _id in the body: IDM's 500.
    let (s, v) = json_of(
        gw.put("/openidm/system/csv/account/jsmith")
            .json(&json!({"_id": "other", "lastName": "X"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["message"].as_str().unwrap()),
        (500, "The uid attribute is not single value attribute.")
    );
    // PATCH works; POST ?_action=patch does not.
    let (s, v) = json_of(
        gw.request(reqwest::Method::PATCH, "/openidm/system/csv/account/jsmith")
            .json(&json!([{"operation": "replace", "field": "/email", "value": "js@example.com"}]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["email"]), (200, &json!("js@example.com")), "{v}");
    let (s, v) = json_of(
        gw.post("/openidm/system/csv/account/jsmith?_action=patch")
            .json(&json!([{"operation": "replace", "field": "/email", "value": "x"}]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 501, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("send a PATCH request"));

    // Filter, sort, paging, _fields.
    let (s, v) = json_of(
        gw.get("/openidm/system/csv/account")
            .query(&[
                ("_queryFilter", "lastName sw \"S\" or firstName eq \"John\""),
                ("_sortKeys", "-name"),
                ("_fields", "name,email"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"],
        json!([{"_id": "jsmith", "name": "jsmith", "email": "js@example.com"},
               {"_id": "jdoe", "name": "jdoe", "email": "jdoe@example.com"}])
    );
    let mut seen = Vec::new();
    let mut cookie: Option<String> = None;
    loop {
        let mut q = vec![
            ("_queryFilter", "true".to_string()),
            ("_pageSize", "2".to_string()),
            ("_fields", "_id".to_string()),
        ];
        if let Some(c) = &cookie {
            q.push(("_pagedResultsCookie", c.clone()));
        }
        let (s, v) = json_of(
            gw.get("/openidm/system/csv/account")
                .query(&q)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        for o in v["result"].as_array().unwrap() {
            seen.push(o["_id"].as_str().unwrap().to_owned());
        }
        match v["pagedResultsCookie"].as_str() {
            Some(c) => cookie = Some(c.to_owned()),
            None => break,
        }
        assert!(seen.len() < 10, "paging does not end: {seen:?}");
    }
    seen.sort();
    assert_eq!(seen, ["bjensen", "jdoe", "jsmith"]);

    // Authenticate: the uid for good credentials, 401 otherwise.
    let (s, v) = json_of(
        gw.post("/openidm/system/csv/account?_action=authenticate")
            .json(&json!({"username": "bjensen", "password": "Passw0rd"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v), (200, json!({"_id": "bjensen"})));
    for (user, pw) in [("bjensen", "wrong"), ("nobody", "Passw0rd")] {
        let (s, v) = json_of(
            gw.post("/openidm/system/csv/account?_action=authenticate")
                .json(&json!({"username": user, "password": pw}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 401, "{user}: {v}");
    }

    // Bad input: clear CREST errors, nothing written.
    let before = std::fs::read_to_string(&f.csv).unwrap();
    for (method, path, body, code, needle) in [
        (
            "GET",
            "/openidm/system/nope/account/x",
            Value::Null,
            404,
            "System 'nope' is not configured",
        ),
        (
            "GET",
            "/openidm/system/csv/group/x",
            Value::Null,
            404,
            "Object type 'group' is not defined for system 'csv'",
        ),
        (
            "GET",
            "/openidm/system/csv/account/missing",
            Value::Null,
            404,
            "Object missing not found in system/csv/account",
        ),
        (
            "POST",
            "/openidm/system/csv/account?_action=create",
            json!({"name": "x1", "lastName": "L", "shoe": 42}),
            400,
            "Property 'shoe' is not defined for object type 'account' of system 'csv'",
        ),
        (
            "POST",
            "/openidm/system/csv/account?_action=create",
            json!({"name": "x2", "firstName": "F"}),
            400,
            "Required property 'lastName' missing",
        ),
        (
            "POST",
            "/openidm/system/csv/account?_action=create",
            json!({"name": "x3", "lastName": 7}),
            400,
            "must be a string",
        ),
        (
            "GET",
            "/openidm/system/csv/account?_queryFilter=shoe%20eq%201",
            Value::Null,
            400,
            "Query field '/shoe' is not defined",
        ),
        (
            "GET",
            "/openidm/system/csv/account?_queryFilter=password%20eq%20%22x%22",
            Value::Null,
            400,
            "cannot be read",
        ),
        (
            "GET",
            "/openidm/system/csv/account?_queryId=for-userName",
            Value::Null,
            400,
            "query id 'for-userName'",
        ),
        (
            "POST",
            "/openidm/system/csv/account?_action=script&_scriptId=addUser",
            Value::Null,
            501,
            "script action is not supported",
        ),
        (
            "POST",
            "/openidm/system/csv/account?_action=frobnicate",
            Value::Null,
            400,
            "Action 'frobnicate' is not supported",
        ),
    ] {
        let mut r = gw.request(method.parse().unwrap(), path);
        if !body.is_null() {
            r = r.json(&body);
        }
        let (s, v) = json_of(r.send().await.unwrap()).await;
        assert_eq!(s, code, "{method} {path}: {v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&f.csv).unwrap(),
        before,
        "a refused request wrote"
    );

    // Delete answers the object as it was.
    let (s, v) = json_of(
        gw.delete("/openidm/system/csv/account/jsmith")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["lastName"]), (200, &json!("Smythe")), "{v}");
    let r = gw
        .get("/openidm/system/csv/account/jsmith")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn provisioner_files_reload_live_and_bad_ones_keep_the_last_good() {
    let f = csv_fixture(&[("a1", "A", "One", "a1@example.com", "x")]);
    let gw = Gateway::builder().start().await;
    let r = gw
        .get("/openidm/system/csv/account/a1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    gw.write_conf("provisioner.openicf-csv", &provisioner(&f.csv));
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.get("/openidm/system/csv/account/a1")
                .send()
                .await
                .unwrap()
                .status()
                == 200
        })
        .await
    );
    // A broken file: rejected with a precise message, the last good one stays.
    let mut bad = provisioner(&f.csv);
    bad["connectorRef"]["connectorName"] = json!("org.example.NoSuchConnector");
    bad["objectTypes"]["account"]["properties"]["email"]["flags"] = json!(["NOT_A_FLAG"]);
    gw.write_conf("provisioner.openicf-csv", &bad);
    assert!(
        gw.wait_for_log("NOT_A_FLAG", Duration::from_secs(5)).await,
        "{}",
        gw.logs()
    );
    let logs = gw.logs();
    assert!(logs.contains("org.example.NoSuchConnector"), "{logs}");
    let r = gw
        .get("/openidm/system/csv/account/a1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The config endpoint shows the problem; disabling takes the system away.
    let mut disabled = provisioner(&f.csv);
    disabled["enabled"] = json!(false);
    gw.write_conf("provisioner.openicf-csv", &disabled);
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.get("/openidm/system/csv/account/a1")
                .send()
                .await
                .unwrap()
                .status()
                == 404
        })
        .await
    );
    let (_, v) = json_of(
        gw.post("/openidm/system?_action=test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (&v[0]["enabled"], &v[0]["ok"]),
        (&json!(false), &json!(false)),
        "{v}"
    );
    gw.remove_conf("provisioner.openicf-csv");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, v) = json_of(
                gw.post("/openidm/system?_action=test")
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            v == json!([])
        })
        .await
    );
    // testConfig checks a configuration without saving it.
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=testConfig")
            .json(&provisioner(&f.csv))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=testConfig")
            .json(&bad)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["ok"]), (200, &json!(false)), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("NoSuchConnector"),
        "{v}"
    );
}

fn csv_to_user_mapping() -> Value {
    json!({"mappings": [{
        "name": "systemCsvAccount_managedUser",
        "source": "system/csv/account",
        "target": "managed/user",
        "properties": [
            {"source": "name", "target": "userName"},
            {"source": "firstName", "target": "givenName"},
            {"source": "lastName", "target": "sn"},
            {"source": "email", "target": "mail"}
        ],
        "correlationQuery": {"_queryFilter": "userName eq \"${source.name}\""},
        "policies": [
            {"situation": "ABSENT", "action": "CREATE"},
            {"situation": "FOUND", "action": "UPDATE"},
            {"situation": "CONFIRMED", "action": "UPDATE"},
            {"situation": "SOURCE_MISSING", "action": "DELETE"},
            {"situation": "UNQUALIFIED", "action": "DELETE"}
        ]
    }]})
}

async fn user_by_name(gw: &Gateway, name: &str) -> Option<Value> {
    let (_, v) = json_of(
        gw.get("/openidm/managed/user")
            .query(&[("_queryFilter", format!("userName eq \"{name}\""))])
            .send()
            .await
            .unwrap(),
    )
    .await;
    v["result"].as_array().and_then(|r| r.first().cloned())
}

#[tokio::test]
async fn recon_and_live_sync_from_a_csv_file_into_managed_users() {
    let f = csv_fixture(&[
        ("u1", "Ann", "One", "u1@example.com", "x"),
        ("u2", "Bob", "Two", "u2@example.com", "x"),
    ]);
    let gw = Gateway::builder()
        .conf_file("provisioner.openicf-csv", provisioner(&f.csv))
        .conf_file("managed", shipped("managed"))
        .conf_file("sync", csv_to_user_mapping())
        .start()
        .await;

    // Reconciliation reads the system through the router like any resource.
    let run = recon(&gw, "systemCsvAccount_managedUser").await;
    assert_eq!(run["state"], "SUCCESS", "{run}\n{}", gw.logs());
    assert_eq!(user_by_name(&gw, "u1").await.unwrap()["sn"], "One");
    assert_eq!(
        user_by_name(&gw, "u2").await.unwrap()["mail"],
        "u2@example.com"
    );

    // The first liveSync records a token (IDM's shape), and pushes nothing.
    let (s, v) = json_of(
        gw.post("/openidm/system?_action=liveSync&source=system/csv/account")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["_id"], "SYSTEMCSVACCOUNT");
    assert!(v["_rev"].is_string(), "{v}");
    assert!(v["connectorData"].get("syncToken").is_some(), "{v}");
    assert!(v["connectorData"]["nativeType"].is_string(), "{v}");

    // Changes made in the file itself: one added, one changed, one removed.
    write_csv(
        &f.csv,
        &[
            ("u2", "Bob", "Twoson", "u2@example.com", "x"),
            ("u3", "Cy", "Three", "u3@example.com", "x"),
        ],
    );
    let (s, v) = json_of(
        gw.post("/openidm/system/csv/account?_action=liveSync")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["_id"]), (200, &json!("SYSTEMCSVACCOUNT")), "{v}");
    assert_eq!(user_by_name(&gw, "u3").await.unwrap()["givenName"], "Cy");
    assert_eq!(user_by_name(&gw, "u2").await.unwrap()["sn"], "Twoson");
    assert!(
        user_by_name(&gw, "u1").await.is_none(),
        "u1 was deleted from the file"
    );

    // A scheduled liveSync picks up the next change by itself.
    gw.write_conf(
        "schedule-csv-livesync",
        &json!({"enabled": true, "type": "simple", "repeatInterval": 300,
                "invokeService": "provisioner",
                "invokeContext": {"action": "liveSync", "source": "system/csv/account"}}),
    );
    write_csv(
        &f.csv,
        &[
            ("u2", "Bob", "Twoson", "u2@example.com", "x"),
            ("u3", "Cy", "Three", "u3@example.com", "x"),
            ("u4", "Di", "Four", "u4@example.com", "x"),
        ],
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            user_by_name(&gw, "u4").await.is_some()
        })
        .await,
        "{}",
        gw.logs()
    );

    // A write of a system object through REST is pushed at once (implicit sync), as for
    // managed objects.
    let r = gw
        .post("/openidm/system/csv/account?_action=create")
        .json(&json!({"name": "u5", "firstName": "Ed", "lastName": "Five",
                      "email": "u5@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert!(
        eventually(Duration::from_secs(10), || async {
            user_by_name(&gw, "u5")
                .await
                .is_some_and(|u| u["sn"] == "Five")
        })
        .await,
        "{}",
        gw.logs()
    );
}

/// `POST system/csv/account?_action=liveSync`: status and body.
async fn live_sync(gw: &Gateway) -> (u16, Value) {
    json_of(
        gw.post("/openidm/system/csv/account?_action=liveSync")
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Rows `<prefix><i>` for `i` in `range`; a row named in `bad` has no email, which the
/// managed user requires, so its push always fails.
fn numbered(prefix: &str, range: std::ops::Range<usize>, bad: &[usize]) -> Vec<[String; 5]> {
    range
        .map(|i| {
            let mail = if bad.contains(&i) {
                String::new()
            } else {
                format!("{prefix}{i}@example.com")
            };
            [
                format!("{prefix}{i}"),
                "First".into(),
                format!("Last{i}"),
                mail,
                "pw".into(),
            ]
        })
        .collect()
}

fn write_rows(path: &Path, rows: &[[String; 5]]) {
    let borrowed: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|[a, b, c, d, e]| (a.as_str(), b.as_str(), c.as_str(), d.as_str(), e.as_str()))
        .collect();
    write_csv(path, &borrowed);
}

/// A gateway syncing `system/csv/account` into `managed/user` with `handler` as the
/// provisioner's `syncFailureHandler` (none when null), its first liveSync done.
async fn live_sync_gateway(f: &Fixture, handler: Value) -> Gateway {
    let mut p = provisioner(&f.csv);
    if !handler.is_null() {
        p["syncFailureHandler"] = handler;
    }
    let gw = Gateway::builder()
        .conf_file("provisioner.openicf-csv", p)
        .conf_file("managed", shipped("managed"))
        .conf_file("sync", csv_to_user_mapping())
        .start()
        .await;
    assert_eq!(live_sync(&gw).await.0, 200);
    gw
}

/// IDM without a `syncFailureHandler` retries a failing change for ever: every run stops
/// before it, the token never moves past it, and the changes after it wait.
#[tokio::test]
async fn without_a_failure_handler_live_sync_retries_the_failing_change_every_run() {
    let f = csv_fixture(&[]);
    let gw = live_sync_gateway(&f, Value::Null).await;
    write_rows(&f.csv, &numbered("a", 1..4, &[2]));
    for run in 1..=2u64 {
        let (s, v) = live_sync(&gw).await;
        assert_eq!(s, 500, "{v}");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(&format!("'a2' (failure {run})")), "{v}");
        assert!(user_by_name(&gw, "a1").await.is_some());
        assert!(user_by_name(&gw, "a3").await.is_none(), "run {run}");
    }
    assert!(gw.logs().contains("liveSync stopped"));
}

/// `maxRetries: 1, postRetryAction: logged-ignore`: the first run stops at the failing
/// change, the second gives up on it (logged) and moves past it; the changes after it
/// arrive and the token moves on.
#[tokio::test]
async fn a_change_that_never_pushes_is_logged_after_its_retries_and_the_rest_arrive() {
    let f = csv_fixture(&[]);
    let gw = live_sync_gateway(
        &f,
        json!({"maxRetries": 1, "postRetryAction": "logged-ignore"}),
    )
    .await;
    write_rows(&f.csv, &numbered("b", 1..6, &[2]));
    let (s, v) = live_sync(&gw).await;
    assert_eq!(s, 500, "{v}");
    assert!(user_by_name(&gw, "b3").await.is_none());

    let (s, v) = live_sync(&gw).await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    assert!(v.get("syncFailure").is_none(), "{v}");
    for name in ["b1", "b3", "b4", "b5"] {
        assert!(user_by_name(&gw, name).await.is_some(), "{name}");
    }
    assert!(user_by_name(&gw, "b2").await.is_none());
    assert!(gw.logs().contains("logged-ignore"));
    // The token moved past it: the next run has nothing to push and succeeds.
    write_rows(&f.csv, &numbered("b", 1..7, &[2]));
    assert_eq!(live_sync(&gw).await.0, 200);
    assert!(user_by_name(&gw, "b6").await.is_some());
}

/// `maxRetries: 0, postRetryAction: dead-letter-queue`: the failing change goes to IDM's
/// dead-letter queue of the provisioner at once, listed, read and deleted over REST.
#[tokio::test]
async fn a_failing_change_goes_to_the_dead_letter_queue_and_the_run_goes_on() {
    let f = csv_fixture(&[]);
    let gw = live_sync_gateway(
        &f,
        json!({"maxRetries": 0, "postRetryAction": "dead-letter-queue"}),
    )
    .await;
    write_rows(&f.csv, &numbered("c", 1..5, &[1, 3]));
    let (s, v) = live_sync(&gw).await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    assert!(user_by_name(&gw, "c2").await.is_some());
    assert!(user_by_name(&gw, "c4").await.is_some());

    let (s, v) = json_of(
        gw.get("/openidm/repo/synchronisation/deadLetterQueue/csv?_queryFilter=true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut uids: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap())
        .collect();
    uids.sort();
    assert_eq!(uids, ["c1", "c3"], "{v}");
    let letter = &v["result"][0];
    assert_eq!(letter["systemIdentifier"], "csv");
    assert_eq!(letter["objectType"], "account");
    assert!(
        letter["failureCause"]
            .as_str()
            .unwrap()
            .contains("Policy validation failed"),
        "{letter}"
    );
    assert!(!letter.to_string().contains("pw"), "{letter}");
    let path = format!(
        "/openidm/repo/synchronisation/deadLetterQueue/csv/{}",
        letter["_id"].as_str().unwrap()
    );
    assert_eq!(gw.get(&path).send().await.unwrap().status(), 200);
    assert_eq!(gw.delete(&path).send().await.unwrap().status(), 200);
    assert_eq!(gw.get(&path).send().await.unwrap().status(), 404);
}

/// `postRetryAction: {"script": …}`: the script sees IDM's `syncFailure` (token, system,
/// object type, uid, failed record) and `failureCause`, and the run goes on; a throwing
/// script stops the run before the change so the next run retries it.
#[tokio::test(flavor = "multi_thread")]
async fn a_post_retry_script_handles_a_failing_change_and_a_throwing_one_stops_the_run() {
    let f = csv_fixture(&[]);
    let gw = live_sync_gateway(
        &f,
        json!({"maxRetries": 0, "postRetryAction": {"script": {"type": "text/javascript",
            "source": "openidm.create('managed/group', null, {name: 'failed-' + syncFailure.uid, \
                       description: syncFailure.systemIdentifier + '/' + syncFailure.objectType + ' ' \
                       + syncFailure.failedRecord.operation + ': ' + failureCause});"}}}),
    )
    .await;
    write_rows(&f.csv, &numbered("d", 1..4, &[2]));
    let (s, v) = live_sync(&gw).await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    assert!(user_by_name(&gw, "d1").await.is_some());
    assert!(user_by_name(&gw, "d3").await.is_some());
    let (s, groups) = json_of(
        gw.get("/openidm/managed/group?_queryFilter=true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(groups["resultCount"], 1, "{groups}");
    let g = &groups["result"][0];
    assert_eq!(g["name"], "failed-d2", "{g}");
    let d = g["description"].as_str().unwrap();
    assert!(d.starts_with("csv/account CREATE_OR_UPDATE: "), "{d}");
    assert!(d.contains("Policy validation failed"), "{d}");

    let f = csv_fixture(&[]);
    let gw = live_sync_gateway(
        &f,
        json!({"maxRetries": 0, "postRetryAction": {"script": {"type": "text/javascript",
            "source": "throw {code: 500, message: 'handler down'};"}}}),
    )
    .await;
    write_rows(&f.csv, &numbered("e", 1..4, &[2]));
    let (s, v) = live_sync(&gw).await;
    assert_eq!(s, 500, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("postRetryAction script failed"),
        "{v}"
    );
    assert!(user_by_name(&gw, "e1").await.is_some());
    assert!(
        user_by_name(&gw, "e3").await.is_none(),
        "the run went past a change it kept"
    );
}

/// A bad `syncFailureHandler` is refused at load with the IDM forms named.
#[tokio::test]
async fn a_bad_sync_failure_handler_is_refused_at_load() {
    let f = csv_fixture(&[]);
    let mut p = provisioner(&f.csv);
    p["syncFailureHandler"] = json!({"maxRetries": 2, "postRetryAction": "retry-later"});
    let gw = Gateway::builder()
        .conf_file("provisioner.openicf-csv", p)
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    assert!(
        gw.logs()
            .contains("/syncFailureHandler: postRetryAction must be"),
        "{}",
        gw.logs()
    );
}

/// More changes than one connector batch (500): every batch is pushed and the token
/// follows each one.
#[tokio::test]
async fn live_sync_pushes_more_changes_than_one_batch() {
    let f = csv_fixture(&[]);
    let gw = live_sync_gateway(&f, Value::Null).await;
    write_rows(&f.csv, &numbered("d", 0..620, &[]));
    let (s, v) = live_sync(&gw).await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    let (_, page) = json_of(
        gw.get("/openidm/managed/user?_queryFilter=true&_fields=_id&_totalPagedResultsPolicy=EXACT&_pageSize=1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["totalPagedResults"], 620, "{page}");
    assert!(user_by_name(&gw, "d619").await.is_some());
    // Nothing left behind the token.
    assert_eq!(live_sync(&gw).await.0, 200);
}

/// IDM's default policies in liveSync: a row removed from the file is SOURCE_MISSING, whose
/// default action is EXCEPTION: the managed user is NOT deleted, and the change counts as a
/// failure (here logged and passed at once).
#[tokio::test]
async fn live_sync_with_default_policies_never_deletes_on_source_missing() {
    let f = csv_fixture(&[]);
    let mut p = provisioner(&f.csv);
    p["syncFailureHandler"] = json!({"maxRetries": 0, "postRetryAction": "logged-ignore"});
    let mut mapping = csv_to_user_mapping();
    mapping["mappings"][0]
        .as_object_mut()
        .unwrap()
        .remove("policies");
    let gw = Gateway::builder()
        .conf_file("provisioner.openicf-csv", p)
        .conf_file("managed", shipped("managed"))
        .conf_file("sync", mapping)
        .start()
        .await;
    assert_eq!(live_sync(&gw).await.0, 200);
    write_rows(&f.csv, &numbered("e", 1..3, &[]));
    let (s, v) = live_sync(&gw).await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    assert!(user_by_name(&gw, "e1").await.is_some());

    write_rows(&f.csv, &numbered("e", 2..3, &[]));
    let (s, v) = live_sync(&gw).await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    assert!(
        user_by_name(&gw, "e1").await.is_some(),
        "the target was deleted"
    );
    let logs = gw.logs();
    assert!(
        logs.contains("SOURCE_MISSING is handled as an EXCEPTION"),
        "{logs}"
    );
    assert!(logs.contains("logged-ignore"), "{logs}");
}

/// Seed 002's conditional table on system objects: `PUT` with `If-Match` (`*` or a revision)
/// on a missing account is a 404 and writes no row; without it the `PUT` creates.
#[tokio::test]
async fn put_with_if_match_never_creates_a_system_object() {
    let f = csv_fixture(&[("bjensen", "Barbara", "Jensen", "b@example.com", "Passw0rd")]);
    let gw = Gateway::builder()
        .conf_file("provisioner.openicf-csv", provisioner(&f.csv))
        .start()
        .await;
    let body = json!({"firstName": "Nadia", "lastName": "New", "email": "n@example.com"});
    for if_match in ["*", "\"1\""] {
        let (s, v) = json_of(
            gw.put("/openidm/system/csv/account/nnew")
                .header("If-Match", if_match)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 404, "If-Match {if_match}: {v}");
        assert!(
            !std::fs::read_to_string(&f.csv).unwrap().contains("nnew"),
            "If-Match {if_match} created the account"
        );
    }
    let (s, v) = json_of(
        gw.put("/openidm/system/csv/account/nnew")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    assert!(std::fs::read_to_string(&f.csv).unwrap().contains("nnew"));
}
