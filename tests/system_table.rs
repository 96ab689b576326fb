//! `/openidm/system/<name>/account` on the database table connector (a SQLite table) end
//! to end: CRUD and filtered, paged queries over HTTP, reconciliation `managed/user` →
//! table, and liveSync table → `managed/user` through a change column.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fixtures::{recon, seed_users, shipped};
use common::{eventually, json_of, Gateway};
use serde_json::{json, Value};

fn provisioner(db: &Path) -> Value {
    json!({
        "name": "hrdb",
        "connectorRef": {
            "bundleName": "org.forgerock.openicf.connectors.databasetable-connector",
            "bundleVersion": "[1.5.0.0,1.6.0.0)",
            "connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"
        },
        "configurationProperties": {
            "jdbcUrlTemplate": format!("jdbc:sqlite:{}", db.display()),
            "table": "people",
            "keyColumn": "login",
            "changeLogColumn": "changed"
        },
        "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
            "login": {"type": "string", "nativeName": "__NAME__", "required": true},
            "surname": {"type": "string", "required": true},
            "email": {"type": "string"},
            "age": {"type": "integer"},
            "changed": {"type": "integer", "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]}
        }}}
    })
}

/// The table, with a trigger that stamps every write in `changed` (a change column as a
/// database would keep one).
fn create_table(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "CREATE TABLE people (login TEXT PRIMARY KEY, surname TEXT NOT NULL, email TEXT,
                              age INTEGER, changed INTEGER);
         CREATE TABLE seq (n INTEGER NOT NULL); INSERT INTO seq VALUES (0);
         CREATE TRIGGER people_ins AFTER INSERT ON people BEGIN
           UPDATE seq SET n = n + 1;
           UPDATE people SET changed = (SELECT n FROM seq) WHERE login = NEW.login; END;
         CREATE TRIGGER people_upd AFTER UPDATE OF login, surname, email, age ON people BEGIN
           UPDATE seq SET n = n + 1;
           UPDATE people SET changed = (SELECT n FROM seq) WHERE login = NEW.login; END;",
    )
    .unwrap();
}

fn sql(db: &Path, statement: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(statement)
        .unwrap();
}

#[tokio::test]
async fn table_objects_crud_queries_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hr.db");
    create_table(&db);
    let gw = Gateway::builder()
        .conf_file("provisioner.openicf-hrdb", provisioner(&db))
        .start()
        .await;

    for i in 0..7 {
        let (s, v) = json_of(
            gw.post("/openidm/system/hrdb/account?_action=create")
                .json(&json!({"login": format!("l{i}"), "surname": format!("S{i}"), "age": 20 + i}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["_id"], format!("l{i}"));
        assert_eq!(v["age"], 20 + i);
    }
    // A PUT with an id creates (upsert) and a second one updates.
    let (s, v) = json_of(
        gw.put("/openidm/system/hrdb/account/zed")
            .json(&json!({"surname": "Zed", "email": "z@example.com"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["login"]), (201, &json!("zed")), "{v}");
    let (s, v) = json_of(
        gw.put("/openidm/system/hrdb/account/zed")
            .json(&json!({"age": 99}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, &v["age"], &v["surname"]),
        (200, &json!(99), &json!("Zed")),
        "{v}"
    );

    // Filter pushed down to SQL, sorted, paged.
    let mut seen = Vec::new();
    let mut cookie: Option<String> = None;
    loop {
        let mut q = vec![
            (
                "_queryFilter",
                "age ge 22 and !(login eq \"l5\")".to_string(),
            ),
            ("_sortKeys", "-age".to_string()),
            ("_pageSize", "2".to_string()),
            ("_fields", "age".to_string()),
        ];
        if let Some(c) = &cookie {
            q.push(("_pagedResultsCookie", c.clone()));
        }
        let (s, v) = json_of(
            gw.get("/openidm/system/hrdb/account")
                .query(&q)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        seen.extend(
            v["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["age"].as_i64().unwrap()),
        );
        match v["pagedResultsCookie"].as_str() {
            Some(c) => cookie = Some(c.to_owned()),
            None => break,
        }
        assert!(seen.len() < 20);
    }
    assert_eq!(seen, [99, 26, 24, 23, 22]);

    // Errors: unknown property, duplicate key, a constraint of the table, missing object.
    for (body, code, needle) in [
        (json!({"login": "l1", "surname": "Dup"}), 412, "l1"),
        (
            json!({"login": "x", "surname": "X", "shoe": 1}),
            400,
            "Property 'shoe' is not defined",
        ),
        (json!({"login": "x", "surname": null}), 400, "surname"),
    ] {
        let (s, v) = json_of(
            gw.post("/openidm/system/hrdb/account?_action=create")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, code, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let (s, _) = json_of(
        gw.delete("/openidm/system/hrdb/account/l3")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = json_of(
        gw.delete("/openidm/system/hrdb/account/l3")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let count: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM people", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 7);
}

#[tokio::test]
async fn recon_into_a_table_and_live_sync_out_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hr.db");
    create_table(&db);
    let mappings = json!({"mappings": [
        {
            "name": "managedUser_hrdb",
            "source": "managed/user",
            "target": "system/hrdb/account",
            "enableSync": false,
            "properties": [
                {"source": "userName", "target": "login"},
                {"source": "sn", "target": "surname"},
                {"source": "mail", "target": "email"}
            ],
            "correlationQuery": {"_queryFilter": "login eq \"${source.userName}\""},
            "policies": [
                {"situation": "ABSENT", "action": "CREATE"},
                {"situation": "CONFIRMED", "action": "UPDATE"},
                {"situation": "FOUND", "action": "UPDATE"}
            ]
        },
        {
            "name": "hrdb_managedUser",
            "source": "system/hrdb/account",
            "target": "managed/user",
            "properties": [
                {"source": "login", "target": "userName"},
                {"source": "surname", "target": "sn"},
                {"source": "surname", "target": "givenName"},
                {"source": "email", "target": "mail"}
            ],
            "correlationQuery": {"_queryFilter": "userName eq \"${source.login}\""},
            "policies": [
                {"situation": "ABSENT", "action": "CREATE"},
                {"situation": "CONFIRMED", "action": "UPDATE"},
                {"situation": "FOUND", "action": "UPDATE"}
            ]
        }
    ]});
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .conf_file("provisioner.openicf-hrdb", provisioner(&db))
        .conf_file("sync", mappings)
        .start()
        .await;
    seed_users(&gw, 30).await;

    let run = recon(&gw, "managedUser_hrdb").await;
    assert_eq!(run["state"], "SUCCESS", "{run}\n{}", gw.logs());
    assert_eq!(run["situationSummary"]["ABSENT"], 30, "{run}");
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM people WHERE email LIKE 'user%@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 30);
    let run = recon(&gw, "managedUser_hrdb").await;
    assert_eq!(run["situationSummary"]["CONFIRMED"], 30, "{run}");

    // liveSync out of the table: first run takes the token, then changes flow.
    let (s, v) = json_of(
        gw.post("/openidm/system/hrdb/account?_action=liveSync")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["_id"]), (200, &json!("SYSTEMHRDBACCOUNT")), "{v}");
    sql(&db, "UPDATE people SET surname = 'Changed' WHERE login = 'user4';
              INSERT INTO people (login, surname, email) VALUES ('newbie', 'New', 'newbie@example.com');");
    let (s, v) = json_of(
        gw.post("/openidm/system/hrdb/account?_action=liveSync")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}\n{}", gw.logs());
    let check = |name: &'static str| {
        let gw = &gw;
        async move {
            let (_, v) = json_of(
                gw.get("/openidm/managed/user")
                    .query(&[("_queryFilter", format!("userName eq \"{name}\""))])
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            v["result"][0].clone()
        }
    };
    assert_eq!(check("user4").await["sn"], "Changed");
    assert_eq!(check("newbie").await["mail"], "newbie@example.com");
    // Nothing new: the token stays.
    let (_, again) = json_of(
        gw.post("/openidm/system/hrdb/account?_action=liveSync")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["connectorData"], v["connectorData"]);
    assert!(
        eventually(Duration::from_secs(2), || async {
            check("newbie").await.is_object()
        })
        .await
    );
}
