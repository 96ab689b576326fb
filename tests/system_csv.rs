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
