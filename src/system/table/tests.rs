//! The table connector on SQLite databases in a temporary directory.

use super::*;
use crate::crest::filter::parse as parse_filter;
use crate::system::provisioner::{self, ObjectType};
use std::collections::HashSet;

const TABLE: &str = "my \"users\"";

pub(super) fn provisioner_with(props: Value) -> Provisioner {
    provisioner::parse(
        "db",
        &json!({
            "connectorRef": {
                "connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"
            },
            "poolConfigOption": {"maxObjects": 3, "maxIdle": 2},
            "configurationProperties": props,
        }),
    )
    .expect("provisioner")
}

fn account() -> ObjectType {
    ObjectType::new("account", ACCOUNT, vec![])
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A database with the users table (a trigger keeps `changed` growing) and a connector.
fn setup(change_log: bool) -> (tempfile::TempDir, PathBuf, TableConnector) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hr.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        r#"
        CREATE TABLE "my ""users""" (
            uid TEXT PRIMARY KEY,
            firstname TEXT,
            lastname TEXT,
            email VARCHAR(255),
            age INTEGER,
            "group" TEXT,
            password TEXT,
            changed INTEGER
        );
        CREATE TABLE seq (n INTEGER NOT NULL);
        INSERT INTO seq VALUES (0);
        CREATE TRIGGER users_ins AFTER INSERT ON "my ""users""" BEGIN
            UPDATE seq SET n = n + 1;
            UPDATE "my ""users""" SET changed = (SELECT n FROM seq) WHERE rowid = NEW.rowid;
        END;
        CREATE TRIGGER users_upd AFTER UPDATE OF uid, firstname, lastname, email, age, "group", password
            ON "my ""users""" BEGIN
            UPDATE seq SET n = n + 1;
            UPDATE "my ""users""" SET changed = (SELECT n FROM seq) WHERE rowid = NEW.rowid;
        END;
        INSERT INTO "my ""users""" (uid, firstname, lastname, email, age, "group", password) VALUES
            ('alice', 'Alice', 'Zed', 'alice@x.com', 30, 'a', 'pw-a'),
            ('bob', 'Bob', 'Young', NULL, 25, 'b', NULL),
            ('carol', 'Carol', 'Xu', 'carol@y.org', 41, 'a', 'pw-c');
        "#,
    )
    .unwrap();
    let mut props = json!({
        "jdbcUrlTemplate": "jdbc:sqlite:%d",
        "database": path.to_str().unwrap(),
        "table": TABLE,
        "keyColumn": "uid",
        "passwordColumn": "password",
    });
    if change_log {
        props["changeLogColumn"] = json!("changed");
    }
    let c = TableConnector::new(&provisioner_with(props)).unwrap();
    (dir, path, c)
}

async fn uids(c: &TableConnector, filter: &str) -> Vec<String> {
    let f = parse_filter(filter).unwrap();
    let page = c
        .query(&account(), Some(&f), &QueryOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{filter}: {e}"));
    page.objects.into_iter().map(|o| o.uid).collect()
}

#[tokio::test]
async fn crud_and_errors() {
    let (_dir, _path, c) = setup(false);
    let a = account();
    c.test().await.unwrap();
    let o = c.read(&a, "alice", &[]).await.unwrap().unwrap();
    assert_eq!(o.uid, "alice");
    assert_eq!(o.attributes["__NAME__"], "alice");
    assert_eq!(o.attributes["age"], 30);
    assert_eq!(o.attributes["group"], "a");
    assert!(!o.attributes.contains_key("password"));
    assert!(!o.attributes.contains_key("uid"));
    let o = c
        .read(
            &a,
            "bob",
            &[
                "email".into(),
                "age".into(),
                "password".into(),
                "__PASSWORD__".into(),
            ],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.attributes, attrs(json!({"age": 25})));
    assert!(c.read(&a, "nobody", &[]).await.unwrap().is_none());

    let uid = c
        .create(
            &a,
            Some("dave"),
            attrs(
                json!({"firstname": "Dave", "age": [52], "__PASSWORD__": "pw-d",
                         "email": null, "group": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(uid, "dave");
    let o = c.read(&a, "dave", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["age"], 52);
    assert_eq!(o.attributes["group"], "1");
    assert!(!o.attributes.contains_key("email"));
    let uid = c
        .create(&a, None, attrs(json!({"__NAME__": "erin"})))
        .await
        .unwrap();
    assert_eq!(uid, "erin");
    let uid = c.create(&a, None, Map::new()).await.unwrap();
    assert!(uuid::Uuid::parse_str(&uid).is_ok(), "{uid}");

    let e = c.create(&a, Some("alice"), Map::new()).await.unwrap_err();
    assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");
    let e = c
        .create(&a, Some("x"), attrs(json!({"nosuch": 1})))
        .await
        .unwrap_err();
    match e {
        ConnectorError::InvalidAttribute(m) => assert!(m.contains("'nosuch'"), "{m}"),
        e => panic!("{e:?}"),
    }
    let e = c
        .create(&a, Some("x"), attrs(json!({"__NAME__": "y"})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    let e = c
        .create(&a, Some("x"), attrs(json!({"email": ["a", "b"]})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    let e = c
        .update(&a, "nobody", attrs(json!({"age": 1})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
    let e = c.update(&a, "nobody", Map::new()).await.unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
    assert!(matches!(
        c.delete(&a, "nobody").await.unwrap_err(),
        ConnectorError::NotFound(_)
    ));
    let group = ObjectType::new("group", "__GROUP__", vec![]);
    assert!(matches!(
        c.read(&group, "alice", &[]).await.unwrap_err(),
        ConnectorError::NotSupported(_)
    ));
    assert!(matches!(
        c.latest_sync_token(&a).await.unwrap_err(),
        ConnectorError::NotSupported(m) if m.contains("changeLogColumn")
    ));

    // Update only the given columns; null clears; a new key renames.
    let uid = c
        .update(&a, "bob", attrs(json!({"email": "bob@x.com", "age": null})))
        .await
        .unwrap();
    assert_eq!(uid, "bob");
    let o = c.read(&a, "bob", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["email"], "bob@x.com");
    assert_eq!(o.attributes["firstname"], "Bob");
    assert!(!o.attributes.contains_key("age"));
    let uid = c
        .update(&a, "bob", attrs(json!({"__NAME__": "robert"})))
        .await
        .unwrap();
    assert_eq!(uid, "robert");
    assert!(c.read(&a, "bob", &[]).await.unwrap().is_none());
    assert!(c.read(&a, "robert", &[]).await.unwrap().is_some());
    let e = c
        .update(&a, "robert", attrs(json!({"uid": "alice"})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");
    let e = c
        .update(&a, "robert", attrs(json!({"__NAME__": null})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    assert_eq!(c.update(&a, "robert", Map::new()).await.unwrap(), "robert");

    c.delete(&a, "robert").await.unwrap();
    assert!(c.read(&a, "robert", &[]).await.unwrap().is_none());
}

#[tokio::test]
async fn every_filter_operator_in_sql() {
    let (_dir, _path, c) = setup(false);
    let cases: &[(&str, &[&str])] = &[
        ("true", &["alice", "bob", "carol"]),
        ("false", &[]),
        ("__UID__ eq 'bob'", &["bob"]),
        ("__NAME__ eq 'carol'", &["carol"]),
        ("uid eq 'alice'", &["alice"]),
        ("email co '@x'", &["alice"]),
        ("email co ''", &["alice", "carol"]),
        ("firstname sw 'Ca'", &["carol"]),
        ("email sw 'a'", &["alice"]),
        ("age sw 4", &[]),
        ("lastname gt 'Xu'", &["alice", "bob"]),
        ("lastname ge 'Xu'", &["alice", "bob", "carol"]),
        ("lastname lt 'Young'", &["carol"]),
        ("lastname le 'Young'", &["bob", "carol"]),
        ("age gt 29", &["alice", "carol"]),
        ("age ge 30.0", &["alice", "carol"]),
        ("age lt 30", &["bob"]),
        ("age le 25", &["bob"]),
        ("age eq 41", &["carol"]),
        ("email pr", &["alice", "carol"]),
        ("!(email pr)", &["bob"]),
        ("!(email eq 'alice@x.com')", &["bob", "carol"]),
        ("group eq 'a' and age gt 35", &["carol"]),
        ("group eq 'b' or age gt 35", &["bob", "carol"]),
        (r#"uid in '["bob","carol","nobody"]'"#, &["bob", "carol"]),
        ("uid in '[]'", &[]),
        ("firstname eq \"it's\" or lastname eq 'x\" OR 1=1 --'", &[]),
    ];
    for (filter, want) in cases {
        assert_eq!(uids(&c, filter).await, *want, "{filter}");
    }
    let a = account();
    for bad in ["nosuch eq 'x'", "password eq 'pw-a'", "name/first eq 'x'"] {
        let f = parse_filter(bad).unwrap();
        let e = c
            .query(&a, Some(&f), &QueryOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectorError::InvalidAttribute(_)),
            "{bad}: {e:?}"
        );
    }
}

#[tokio::test]
async fn paging_sorting_and_counting() {
    let (_dir, path, c) = setup(false);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute(&format!("DELETE FROM {}", quote(TABLE)), [])
            .unwrap();
        for i in 0..23 {
            conn.execute(
                &format!(
                    "INSERT INTO {} (uid, age, lastname) VALUES (?1, ?2, ?3)",
                    quote(TABLE)
                ),
                rusqlite::params![
                    format!("u{i:02}"),
                    i % 4,
                    if i % 5 == 0 {
                        None
                    } else {
                        Some(format!("n{}", i % 3))
                    }
                ],
            )
            .unwrap();
        }
    }
    let a = account();
    // Unsorted, sorted by one column, and by two with NULLs, each paged across calls.
    let sorts: Vec<Vec<(String, bool)>> = vec![
        vec![],
        vec![("age".into(), false)],
        vec![("lastname".into(), true), ("age".into(), false)],
        vec![("lastname".into(), false), ("__NAME__".into(), false)],
    ];
    let f = parse_filter("uid sw 'u'").unwrap();
    for sort in sorts {
        let all = c
            .query(
                &a,
                Some(&f),
                &QueryOptions {
                    sort: sort.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let want: Vec<String> = all.objects.iter().map(|o| o.uid.clone()).collect();
        assert_eq!(want.len(), 23);
        let mut seen = Vec::new();
        let mut cookie = None;
        loop {
            let page = c
                .query(
                    &a,
                    Some(&f),
                    &QueryOptions {
                        page_size: 5,
                        cookie: cookie.clone(),
                        sort: sort.clone(),
                        count: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(page.total, Some(23));
            assert!(page.objects.len() <= 5);
            seen.extend(page.objects.into_iter().map(|o| o.uid));
            match page.cookie {
                Some(next) => cookie = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, want, "sort {sort:?}");
        let unique: HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 23);
    }
    // The order itself: age descending, key ascending within.
    let page = c
        .query(
            &a,
            None,
            &QueryOptions {
                sort: vec![("age".into(), false)],
                page_size: 3,
                offset: 4,
                count: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got: Vec<_> = page.objects.iter().map(|o| o.uid.as_str()).collect();
    // age 3: u03 u07 u11 u15 u19 → offset 4 → u19, then age 2: u02 u06.
    assert_eq!(got, ["u19", "u02", "u06"]);
    assert_eq!(page.remaining, Some(23 - 7));
    for bad in ["password", "nosuch"] {
        let e = c
            .query(
                &a,
                None,
                &QueryOptions {
                    sort: vec![(bad.into(), true)],
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    }
    let e = c
        .query(
            &a,
            None,
            &QueryOptions {
                page_size: 2,
                cookie: Some("bm90IGEgY29va2ll".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
}

#[tokio::test]
async fn authenticate_plain_password() {
    let (_dir, _path, c) = setup(false);
    let a = account();
    assert_eq!(c.authenticate(&a, "alice", "pw-a").await.unwrap(), "alice");
    for (user, pw) in [
        ("alice", "wrong"),
        ("nobody", "x"),
        ("bob", ""),
        ("bob", "x"),
    ] {
        let e = c.authenticate(&a, user, pw).await.unwrap_err();
        assert!(
            matches!(e, ConnectorError::InvalidCredential(_)),
            "{user}: {e:?}"
        );
    }
}

#[tokio::test]
async fn integer_key_numbers_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
        .unwrap();
    let c = TableConnector::new(&provisioner_with(json!({
        "jdbcUrlTemplate": format!("jdbc:sqlite:{}", path.display()),
        "table": "items",
        "keyColumn": "id",
    })))
    .unwrap();
    let a = account();
    let id = c
        .create(&a, None, attrs(json!({"name": "one"})))
        .await
        .unwrap();
    assert_eq!(id, "1");
    let id = c
        .create(&a, Some("7"), attrs(json!({"name": "seven"})))
        .await
        .unwrap();
    assert_eq!(id, "7");
    let o = c.read(&a, "7", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["__NAME__"], 7);
    // NOT NULL is the table's rule.
    let e = c.create(&a, None, Map::new()).await.unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    let e = c.authenticate(&a, "7", "x").await.unwrap_err();
    assert!(matches!(e, ConnectorError::NotSupported(_)), "{e:?}");
    let s = c.schema().await.unwrap();
    assert_eq!(s["account"]["properties"]["id"]["nativeName"], NAME);
    assert_eq!(s["account"]["properties"]["id"]["type"], "integer");
    assert_eq!(s["account"]["properties"]["name"]["type"], "string");
}

#[tokio::test]
async fn schema_and_config_errors_at_run_time() {
    let (_dir, path, c) = setup(true);
    let s = c.schema().await.unwrap();
    let props = s["account"]["properties"].as_object().unwrap();
    assert_eq!(props["uid"]["nativeName"], NAME);
    assert_eq!(props["password"]["nativeName"], PASSWORD);
    assert_eq!(props["age"]["type"], "integer");
    assert_eq!(props["email"]["type"], "string");
    provisioner::parse(
        "db",
        &json!({"connectorRef": {"connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"},
                "objectTypes": s}),
    )
    .unwrap();

    let with = |table: &str, key: &str, db: &std::path::Path| {
        TableConnector::new(&provisioner_with(json!({
            "jdbcUrlTemplate": format!("jdbc:sqlite:{}", db.display()),
            "table": table,
            "keyColumn": key,
        })))
        .unwrap()
    };
    let e = with("nosuch", "uid", &path).test().await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::Config(ref m) if m.contains("does not exist")),
        "{e:?}"
    );
    let e = with(TABLE, "id", &path).test().await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::Config(ref m) if m.contains("keyColumn 'id'")),
        "{e:?}"
    );
    let e = with(TABLE, "uid", &path.with_file_name("missing.db"))
        .test()
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Unavailable(_)), "{e:?}");
    let junk = path.with_file_name("junk.db");
    std::fs::write(&junk, "this is not a database, it is text, long enough to have a header page....................................").unwrap();
    let e = with(TABLE, "uid", &junk).test().await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::Config(ref m) if m.contains("not a database")),
        "{e:?}"
    );
}

#[tokio::test]
async fn live_sync_by_change_column() {
    let (_dir, _path, c) = setup(true);
    let a = account();
    let t0 = c.latest_sync_token(&a).await.unwrap();
    assert_eq!(t0, json!(3));
    let b = c.sync(&a, &t0, 10).await.unwrap();
    assert!(b.deltas.is_empty());
    assert_eq!(b.token, t0);

    c.create(&a, Some("dave"), attrs(json!({"age": 1})))
        .await
        .unwrap();
    c.update(&a, "alice", attrs(json!({"email": "new@x"})))
        .await
        .unwrap();
    c.create(&a, Some("erin"), Map::new()).await.unwrap();
    let b = c.sync(&a, &t0, 10).await.unwrap();
    let got: Vec<_> = b
        .deltas
        .iter()
        .map(|d| match d {
            SyncDelta::CreateOrUpdate(o) => o.uid.clone(),
            SyncDelta::Delete(u) => format!("-{u}"),
        })
        .collect();
    assert_eq!(got, ["dave", "alice", "erin"]);
    match &b.deltas[1] {
        SyncDelta::CreateOrUpdate(o) => {
            assert_eq!(o.attributes["email"], "new@x");
            assert!(!o.attributes.contains_key("password"));
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(b.token, json!(6));
    assert!(c.sync(&a, &b.token, 10).await.unwrap().deltas.is_empty());

    // Batches of at most `max`, oldest first, nothing twice.
    let mut token = t0.clone();
    let mut all = Vec::new();
    loop {
        let b = c.sync(&a, &token, 2).await.unwrap();
        assert!(b.deltas.len() <= 2);
        token = b.token;
        if b.deltas.is_empty() {
            break;
        }
        all.extend(b.deltas);
    }
    assert_eq!(all.len(), 3);
    assert_eq!(token, json!(6));
    // A null token starts from now; a bad one is refused.
    let b = c.sync(&a, &Value::Null, 10).await.unwrap();
    assert!(b.deltas.is_empty());
    assert_eq!(b.token, json!(6));
    let e = c.sync(&a, &json!([1]), 10).await.unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
}

#[tokio::test]
async fn live_sync_splits_runs_of_equal_values_and_starts_on_empty_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, ts TEXT);")
        .unwrap();
    let c = TableConnector::new(&provisioner_with(json!({
        "jdbcUrlTemplate": format!("jdbc:sqlite:{}", path.display()),
        "table": "t",
        "keyColumn": "k",
        "changeLogColumn": "ts",
    })))
    .unwrap();
    let a = account();
    let t0 = c.latest_sync_token(&a).await.unwrap();
    assert_eq!(t0, json!({"changeLog": null}));
    // Timestamps, five rows sharing one.
    for (k, ts) in [
        ("a", "2024-01-01T00:00:00Z"),
        ("b", "2024-01-02T00:00:00Z"),
        ("c", "2024-01-02T00:00:00Z"),
        ("d", "2024-01-02T00:00:00Z"),
        ("e", "2024-01-02T00:00:00Z"),
        ("f", "2024-01-02T00:00:00Z"),
        ("g", "2024-01-03T00:00:00Z"),
    ] {
        conn.execute("INSERT INTO t VALUES (?1, ?2)", [k, ts])
            .unwrap();
    }
    conn.execute("INSERT INTO t VALUES ('nul', NULL)", [])
        .unwrap();
    let mut token = t0;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let b = c.sync(&a, &token, 2).await.unwrap();
        token = b.token;
        if b.deltas.is_empty() {
            break;
        }
        for d in b.deltas {
            match d {
                SyncDelta::CreateOrUpdate(o) => seen.push(o.uid),
                d => panic!("{d:?}"),
            }
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e", "f", "g"]);
    assert_eq!(token, json!("2024-01-03T00:00:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_through_the_pool() {
    let (_dir, _path, c) = setup(true);
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for t in 0..6 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                c.create(&account(), Some(&format!("t{t}-{i}")), Map::new())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let page = c
        .query(
            &account(),
            None,
            &QueryOptions {
                count: true,
                page_size: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, Some(123));
}
