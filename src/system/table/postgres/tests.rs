//! The table connector against a throwaway PostgreSQL server.

use super::*;
use crate::crest::filter::parse as parse_filter;
use crate::repo::postgres::testing;
use crate::system::provisioner::{self, ObjectType};
use crate::system::table::TableConnector;

#[test]
fn urls() {
    let (pg, loc) = parse_url("//db.example:6543/hr?user=u&password=p", None, None).unwrap();
    assert_eq!(loc, "postgresql://db.example:6543/hr");
    assert_eq!(pg.get_user(), Some("u"));
    assert_eq!(pg.get_dbname(), Some("hr"));
    assert_eq!(pg.get_password(), Some(&b"p"[..]));
    let (pg, loc) = parse_url("hr", Some("admin"), Some("pw")).unwrap();
    assert_eq!(loc, "postgresql://localhost:5432/hr");
    assert_eq!(pg.get_user(), Some("admin"));
    // Properties win over URL parameters.
    let (pg, _) = parse_url("//h/hr?user=u", Some("admin"), None).unwrap();
    assert_eq!(pg.get_user(), Some("admin"));
    assert!(parse_url("//h/", Some("u"), None)
        .unwrap_err()
        .contains("names no database"));
    assert!(parse_url("//h/db", None, None)
        .unwrap_err()
        .contains("needs a user"));
    assert!(parse_url("//h/db?sslmode=require", Some("u"), None)
        .unwrap_err()
        .contains("TLS"));
}

fn connector(port: u16, db: &str, props: Value) -> TableConnector {
    let mut cfg = json!({
        "jdbcUrlTemplate": "jdbc:postgresql://%h:%p/%d",
        "host": "127.0.0.1",
        "port": port,
        "database": db,
        "user": "postgres",
        "password": "unused",
    });
    for (k, v) in props.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let p = provisioner::parse(
        "pg",
        &json!({
            "connectorRef": {
                "connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"
            },
            "poolConfigOption": {"maxObjects": 3, "maxIdle": 2},
            "configurationProperties": cfg,
        }),
    )
    .unwrap();
    TableConnector::new(&p).unwrap()
}

fn account() -> ObjectType {
    ObjectType::new("account", "__ACCOUNT__", vec![])
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_postgresql() {
    // The store tests' throwaway server, a fresh database of it.
    let Some((port, db)) = testing::fresh_database().await else {
        panic!(
            "could not start a throwaway PostgreSQL: the table connector tests need the \
             `postgresql` package; run `make test` (it installs it) instead of plain `cargo test`"
        );
    };
    let (admin, conn) = testing::config(port, &db)
        .connect(NoTls)
        .await
        .expect("connecting to the test database");
    tokio::spawn(conn);
    admin
        .batch_execute(
            r#"
            CREATE TABLE "my ""users""" (
                uid TEXT PRIMARY KEY,
                firstname TEXT,
                lastname TEXT,
                email VARCHAR(255),
                age INTEGER,
                active BOOLEAN,
                "group" TEXT,
                password TEXT,
                changed BIGINT
            );
            CREATE SEQUENCE chg;
            CREATE FUNCTION bump() RETURNS trigger AS $$
            BEGIN NEW.changed := nextval('chg'); RETURN NEW; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER bump BEFORE INSERT OR UPDATE ON "my ""users"""
                FOR EACH ROW EXECUTE FUNCTION bump();
            INSERT INTO "my ""users""" (uid, firstname, lastname, email, age, active, "group", password) VALUES
                ('alice', 'Alice', 'Zed', 'alice@x.com', 30, true, 'a', 'pw-a'),
                ('bob', 'Bob', 'Young', NULL, 25, false, 'b', NULL),
                ('carol', 'Carol', 'Xu', 'carol@y.org', 41, NULL, 'a', 'pw-c');
            CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
            "#,
        )
        .await
        .unwrap();
    let c = connector(
        port,
        &db,
        json!({"table": "my \"users\"", "keyColumn": "uid", "passwordColumn": "password",
               "changeLogColumn": "changed"}),
    );
    let a = account();
    c.test().await.unwrap();

    // Read, types from the column types.
    let o = c.read(&a, "alice", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["__NAME__"], "alice");
    assert_eq!(o.attributes["age"], 30);
    assert_eq!(o.attributes["active"], true);
    assert!(!o.attributes.contains_key("password"));
    assert!(c.read(&a, "nobody", &[]).await.unwrap().is_none());

    // Every filter operator, pushed down.
    let cases: &[(&str, &[&str])] = &[
        ("true", &["alice", "bob", "carol"]),
        ("false", &[]),
        ("__UID__ eq 'bob'", &["bob"]),
        ("email co '@x'", &["alice"]),
        ("firstname sw 'Ca'", &["carol"]),
        ("lastname gt 'Xu'", &["alice", "bob"]),
        ("lastname ge 'Xu'", &["alice", "bob", "carol"]),
        ("lastname lt 'Young'", &["carol"]),
        ("lastname le 'Young'", &["bob", "carol"]),
        ("age gt 29", &["alice", "carol"]),
        ("age ge 30.5", &["carol"]),
        ("age le 25", &["bob"]),
        ("active eq true", &["alice"]),
        ("email pr", &["alice", "carol"]),
        ("!(email pr)", &["bob"]),
        ("!(active eq true)", &["bob", "carol"]),
        ("group eq 'a' and age gt 35", &["carol"]),
        ("group eq 'b' or age gt 35", &["bob", "carol"]),
        (r#"uid in '["bob","carol","nobody"]'"#, &["bob", "carol"]),
        ("firstname eq \"it's\" or lastname eq 'x\" OR 1=1 --'", &[]),
    ];
    for (filter, want) in cases {
        let f = parse_filter(filter).unwrap();
        let page = c
            .query(&a, Some(&f), &QueryOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        let got: Vec<_> = page.objects.into_iter().map(|o| o.uid).collect();
        assert_eq!(got, *want, "{filter}");
    }
    let f = parse_filter("nosuch eq 1").unwrap();
    let e = c
        .query(&a, Some(&f), &QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");

    let t0 = c.latest_sync_token(&a).await.unwrap();
    assert_eq!(t0, json!(3));

    // CRUD and errors.
    assert_eq!(
        c.create(
            &a,
            Some("dave"),
            attrs(json!({"age": "52", "active": false, "__PASSWORD__": "pw-d"}))
        )
        .await
        .unwrap(),
        "dave"
    );
    let e = c.create(&a, Some("dave"), Map::new()).await.unwrap_err();
    assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");
    let e = c
        .create(&a, Some("x"), attrs(json!({"age": "old"})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    let e = c
        .create(&a, Some("x"), attrs(json!({"nosuch": 1})))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ConnectorError::InvalidAttribute(ref m) if m.contains("'nosuch'")),
        "{e:?}"
    );
    let uid = c.create(&a, None, Map::new()).await.unwrap();
    assert!(uuid::Uuid::parse_str(&uid).is_ok(), "{uid}");
    c.delete(&a, &uid).await.unwrap();
    assert_eq!(
        c.update(&a, "bob", attrs(json!({"email": "bob@x.com", "age": null})))
            .await
            .unwrap(),
        "bob"
    );
    let o = c.read(&a, "bob", &[]).await.unwrap().unwrap();
    assert_eq!(o.attributes["email"], "bob@x.com");
    assert!(!o.attributes.contains_key("age"));
    assert_eq!(
        c.update(&a, "bob", attrs(json!({"__NAME__": "robert"})))
            .await
            .unwrap(),
        "robert"
    );
    let e = c
        .update(&a, "nobody", attrs(json!({"age": 1})))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
    let e = c.delete(&a, "nobody").await.unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");

    // Authenticate.
    assert_eq!(c.authenticate(&a, "dave", "pw-d").await.unwrap(), "dave");
    let e = c.authenticate(&a, "dave", "nope").await.unwrap_err();
    assert!(matches!(e, ConnectorError::InvalidCredential(_)), "{e:?}");

    // liveSync: dave created, robert renamed (an update), the uuid row deleted (unseen).
    let b = c.sync(&a, &t0, 100).await.unwrap();
    let got: Vec<_> = b
        .deltas
        .iter()
        .map(|d| match d {
            SyncDelta::CreateOrUpdate(o) => o.uid.clone(),
            SyncDelta::Delete(u) => format!("-{u}"),
        })
        .collect();
    assert_eq!(got, ["dave", "robert"]);
    let mut token = t0.clone();
    let mut n = 0;
    loop {
        let b = c.sync(&a, &token, 1).await.unwrap();
        token = b.token;
        if b.deltas.is_empty() {
            break;
        }
        n += b.deltas.len();
    }
    assert_eq!(n, 2);

    // Paging with sorts across calls: the same as one unpaged query.
    for i in 0..20 {
        c.create(
            &a,
            Some(&format!("u{i:02}")),
            attrs(json!({"age": i % 3, "lastname": if i % 4 == 0 { Value::Null } else { json!(format!("n{}", i % 5)) }})),
        )
        .await
        .unwrap();
    }
    for sort in [
        vec![],
        vec![("age".to_owned(), false)],
        vec![("lastname".to_owned(), true), ("age".to_owned(), false)],
        vec![("lastname".to_owned(), false)],
    ] {
        let all = c
            .query(
                &a,
                None,
                &QueryOptions {
                    sort: sort.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let want: Vec<_> = all.objects.into_iter().map(|o| o.uid).collect();
        let mut seen = Vec::new();
        let mut cookie = None;
        loop {
            let page = c
                .query(
                    &a,
                    None,
                    &QueryOptions {
                        page_size: 4,
                        cookie: cookie.clone(),
                        sort: sort.clone(),
                        count: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(page.total, Some(want.len() as i64));
            seen.extend(page.objects.into_iter().map(|o| o.uid));
            match page.cookie {
                Some(next) => cookie = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, want, "{sort:?}");
    }

    // A serial key numbers itself; schema types; unknown table.
    let items = connector(port, &db, json!({"table": "items", "keyColumn": "id"}));
    assert_eq!(
        items
            .create(&a, None, attrs(json!({"name": "one"})))
            .await
            .unwrap(),
        "1"
    );
    assert!(items.read(&a, "not-a-number", &[]).await.unwrap().is_none());
    let s = items.schema().await.unwrap();
    assert_eq!(s["account"]["properties"]["id"]["type"], "integer");
    assert!(matches!(
        items.latest_sync_token(&a).await.unwrap_err(),
        ConnectorError::NotSupported(_)
    ));
    let none = connector(port, &db, json!({"table": "nosuch", "keyColumn": "id"}));
    let e = none.test().await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::Config(ref m) if m.contains("does not exist")),
        "{e:?}"
    );
    // A server that is not there.
    let down = connector(1, &db, json!({"table": "items", "keyColumn": "id"}));
    let e = down.test().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Unavailable(_)), "{e:?}");
}
