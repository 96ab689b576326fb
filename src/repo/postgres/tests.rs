//! The store on a real PostgreSQL: the shared contract tests, and what only a shared
//! database has (several nodes on one database, migrations, indexes, connection errors).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::testing::{self, config, fresh_database};
use super::*;
use crate::crest::filter::{CompareOp, FilterValue, QueryFilter};
use crate::repo::contract::{obj, USERS};

crate::repo::contract::repo_contract_tests!(testing::open);

/// Two stores on one database: as two gateway nodes.
async fn two_nodes() -> Option<(PgRepo, PgRepo, u16, String)> {
    let (port, db) = fresh_database().await?;
    let a = PgRepo::with_config(config(port, &db)).await.unwrap();
    let b = PgRepo::with_config(config(port, &db)).await.unwrap();
    Some((a, b, port, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_writes_and_unique_values_hold_across_nodes() {
    let Some((a, b, ..)) = two_nodes().await else {
        return;
    };
    let o = a
        .create(USERS, "u1", obj(json!({"n": 0})), WriteOptions::default())
        .await
        .unwrap();
    // b learns of the table a created, and sees the object.
    assert_eq!(b.read(USERS, "u1").await.unwrap().unwrap(), o);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        let rev = o.rev.clone();
        tasks.push(tokio::spawn(async move {
            node.update(
                USERS,
                "u1",
                Some(&rev),
                obj(json!({"n": i})),
                WriteOptions::default(),
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(RepoError::RevisionMismatch { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);

    let mut tasks = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let unique = [JsonPointer::parse("userName")];
            node.create(
                USERS,
                &format!("c{i}"),
                obj(json!({"userName": "same"})),
                WriteOptions {
                    unique: &unique,
                    ..Default::default()
                },
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(RepoError::Unique { property, .. }) => assert_eq!(property, "/userName"),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// Existing objects already sharing a value: no unique index can be built, the policy is
/// still kept for new writes (checked in the write's transaction).
#[tokio::test]
async fn unique_values_are_checked_where_the_data_breaks_the_index() {
    let Some((a, ..)) = two_nodes().await else {
        return;
    };
    for id in ["d1", "d2"] {
        a.create(
            USERS,
            id,
            obj(json!({"mail": "dup"})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    }
    let unique = [JsonPointer::parse("mail")];
    let opts = WriteOptions {
        unique: &unique,
        ..Default::default()
    };
    let clash = a
        .create(USERS, "d3", obj(json!({"mail": "dup"})), opts)
        .await;
    assert!(matches!(clash, Err(RepoError::Unique { .. })), "{clash:?}");
    a.create(USERS, "d3", obj(json!({"mail": "new"})), opts)
        .await
        .unwrap();
    let clash = a
        .update(USERS, "d1", None, obj(json!({"mail": "new"})), opts)
        .await;
    assert!(matches!(clash, Err(RepoError::Unique { .. })), "{clash:?}");
}

/// A revision is never reused: not across delete and re-create, nor by another node or a
/// restarted one (one database sequence).
#[tokio::test]
async fn revisions_never_repeat_across_nodes_and_restarts() {
    let Some((a, b, port, db)) = two_nodes().await else {
        return;
    };
    let mut seen = HashSet::new();
    for round in 0..3 {
        let node = if round % 2 == 0 { &a } else { &b };
        let o = node
            .create(
                USERS,
                "u1",
                obj(json!({"round": round})),
                WriteOptions::default(),
            )
            .await
            .unwrap();
        assert!(seen.insert(o.rev.clone()));
        let o = node
            .update(
                USERS,
                "u1",
                Some(&o.rev),
                obj(json!({})),
                WriteOptions::default(),
            )
            .await
            .unwrap();
        assert!(seen.insert(o.rev.clone()));
        node.delete(USERS, "u1", Some(&o.rev)).await.unwrap();
    }
    drop((a, b));
    let c = PgRepo::with_config(config(port, &db)).await.unwrap();
    let o = c
        .create(USERS, "u1", obj(json!({})), WriteOptions::default())
        .await
        .unwrap();
    assert!(
        seen.insert(o.rev.clone()),
        "{} repeated after a restart",
        o.rev
    );
    for old in &seen {
        if *old != o.rev {
            assert!(matches!(
                c.delete(USERS, "u1", Some(old)).await,
                Err(RepoError::RevisionMismatch { .. })
            ));
        }
    }
}

/// Nodes starting together migrate once; a schema newer than this build is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_run_once_and_newer_schemas_are_refused() {
    let Some((port, db)) = fresh_database().await else {
        return;
    };
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let cfg = config(port, &db);
            tokio::spawn(async move { PgRepo::with_config(cfg).await })
        })
        .collect();
    let mut nodes = Vec::new();
    for s in starts {
        nodes.push(s.await.unwrap().unwrap());
    }
    let (client, conn) = config(port, &db).connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query("SELECT version FROM repo_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    client
        .execute(
            "INSERT INTO repo_schema (version) VALUES ($1)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let err = PgRepo::with_config(config(port, &db)).await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

/// Declared properties get expression indexes that queries use; undeclared ones lose
/// them.
#[tokio::test]
async fn indexed_queries_use_the_index() {
    let Some((a, _, port, db)) = two_nodes().await else {
        return;
    };
    let ops = (0..500)
        .map(|i| WriteOp::Create {
            resource: USERS.into(),
            id: format!("u{i:03}"),
            content: obj(json!({"userName": format!("user{i}"), "n": i, "b": i == 7})),
            unique: Vec::new(),
        })
        .collect();
    for r in a.batch(ops).await {
        r.unwrap();
    }
    let fields = [
        JsonPointer::parse("userName"),
        JsonPointer::parse("n"),
        JsonPointer::parse("b"),
    ];
    a.set_indexes(USERS, &fields).await.unwrap();
    a.set_indexes(USERS, &fields).await.unwrap();
    let (client, conn) = config(port, &db).connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("ANALYZE; SET enable_seqscan = off")
        .await
        .unwrap();
    let explain = |f: QueryFilter| {
        let client = &client;
        async move {
            let p = plan(&table_name(USERS), USERS, &RepoQuery::all(&f, &[]), None).unwrap();
            let refs = params(&p.select.params);
            client
                .query(format!("EXPLAIN {}", p.select.text).as_str(), &refs)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let eq = QueryFilter::Compare {
        field: JsonPointer::parse("userName"),
        op: CompareOp::Eq,
        value: FilterValue::String("user7".into()),
    };
    let sw = QueryFilter::Compare {
        field: JsonPointer::parse("userName"),
        op: CompareOp::Sw,
        value: FilterValue::String("user4".into()),
    };
    let gt = QueryFilter::Compare {
        field: JsonPointer::parse("n"),
        op: CompareOp::Gt,
        value: FilterValue::Integer(490),
    };
    let b = QueryFilter::Compare {
        field: JsonPointer::parse("b"),
        op: CompareOp::Eq,
        value: FilterValue::Bool(true),
    };
    for f in [eq.clone(), sw, gt, b] {
        let p = explain(f.clone()).await;
        assert!(p.contains("Index") && p.contains("ix_"), "{f:?}:\n{p}");
    }
    let page = a.query(USERS, RepoQuery::all(&eq, &[])).await.unwrap();
    assert_eq!(page.results.len(), 1);
    assert_eq!(page.results[0].id, "u007");
    a.set_indexes(USERS, &[JsonPointer::parse("n")])
        .await
        .unwrap();
    let p = explain(eq).await;
    assert!(!p.contains("ix_"), "{p}");
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'ix\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
}

/// A bad URL or an unreachable server fails with a message naming the server, never the
/// password.
#[tokio::test]
async fn bad_urls_and_unreachable_servers_fail_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PgRepo::connect(&format!(
        "postgres://gw:s3cret-pw@127.0.0.1:{port}/idm?connect_timeout=2"
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("postgres://gw@127.0.0.1:{port}/idm")) && err.contains("unreachable"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
    let err = PgRepo::connect("postgres://gw:s3cret-pw@[bad/idm")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a valid PostgreSQL URL") && !err.contains("s3cret-pw"),
        "{err}"
    );
    let err = PgRepo::connect("postgres://gw@127.0.0.1/idm?sslmode=require")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS"), "{err}");
    let err = PgRepo::connect("postgres://127.0.0.1/idm")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no user"), "{err}");
}

/// Objects written in a batch share one transaction yet fail one by one.
#[tokio::test]
async fn batches_fail_op_by_op() {
    let Some((a, ..)) = two_nodes().await else {
        return;
    };
    let unique = vec![JsonPointer::parse("k")];
    let create = |id: &str, k: &str| WriteOp::Create {
        resource: USERS.into(),
        id: id.into(),
        content: obj(json!({"k": k})),
        unique: unique.clone(),
    };
    let out = a
        .batch(vec![
            create("a", "1"),
            create("a", "2"),
            create("b", "1"),
            create("c", "3"),
            WriteOp::Delete {
                resource: "managed/none".into(),
                id: "x".into(),
                rev: None,
            },
        ])
        .await;
    assert!(out[0].is_ok());
    assert!(matches!(out[1], Err(RepoError::AlreadyExists { .. })));
    assert!(matches!(out[2], Err(RepoError::Unique { .. })));
    assert!(out[3].is_ok());
    assert!(matches!(out[4], Err(RepoError::NotFound { .. })));
    let mut q = RepoQuery::all(&QueryFilter::True, &[]);
    q.count = CountPolicy::Exact;
    assert_eq!(a.query(USERS, q).await.unwrap().total, Some(2));
}

/// Concurrent single writes share transactions (group commit), and a failing one fails
/// alone: every caller gets the answer it would have had on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits_and_fail_alone() {
    let Some((a, _b, port, db)) = two_nodes().await else {
        return;
    };
    let unique = [JsonPointer::parse("k")];
    let opts = WriteOptions {
        unique: &unique,
        ..Default::default()
    };
    a.create(USERS, "taken", obj(json!({"k": "taken"})), opts)
        .await
        .unwrap();
    let upd = a
        .create(USERS, "upd", obj(json!({"k": "upd", "n": 0})), opts)
        .await
        .unwrap();
    let n = 400;
    let mut tasks = Vec::new();
    for i in 0..n {
        let a = a.clone();
        let rev = upd.rev.clone();
        tasks.push(tokio::spawn(async move {
            let unique = [JsonPointer::parse("k")];
            let opts = WriteOptions {
                unique: &unique,
                ..Default::default()
            };
            match i % 8 {
                // An id that exists.
                1 => {
                    a.create(USERS, "taken", obj(json!({"k": format!("x{i}")})), opts)
                        .await
                }
                // A unique value that exists.
                2 => {
                    a.create(USERS, &format!("o{i}"), obj(json!({"k": "taken"})), opts)
                        .await
                }
                // Conditional updates of one object with the same revision: one wins.
                3 => {
                    a.update(
                        USERS,
                        "upd",
                        Some(&rev),
                        obj(json!({"k": "upd", "n": i})),
                        opts,
                    )
                    .await
                }
                _ => {
                    a.create(
                        USERS,
                        &format!("o{i}"),
                        obj(json!({"k": format!("k{i}")})),
                        opts,
                    )
                    .await
                }
            }
        }));
    }
    let mut created = 0;
    let mut updates = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        match (i % 8, r) {
            (1, Err(RepoError::AlreadyExists { .. })) => {}
            (2, Err(RepoError::Unique { .. })) => {}
            (3, Ok(_)) => updates += 1,
            (3, Err(RepoError::RevisionMismatch { .. })) => {}
            (0 | 4..=7, Ok(o)) => {
                assert_eq!(o.content["k"], json!(format!("k{i}")));
                created += 1;
            }
            (k, r) => panic!("write {i} (kind {k}): unexpected {r:?}"),
        }
    }
    assert_eq!(updates, 1, "exactly one conditional update wins");
    assert_eq!(created, n - 3 * n / 8);
    let mut q = RepoQuery::all(&QueryFilter::True, &[]);
    q.count = CountPolicy::Exact;
    assert_eq!(a.query(USERS, q).await.unwrap().total, Some(created + 2));
    // Writes that all succeed share transactions: rows written by one transaction share its
    // xmin (a group with a failing write reruns with savepoints, whose rows each get a
    // subtransaction's xmin, so only the clean writes are counted here).
    let mut tasks = Vec::new();
    for i in 0..n {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            a.create(
                USERS,
                &format!("g{i}"),
                obj(json!({"k": format!("g{i}")})),
                WriteOptions::default(),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (client, conn) = config(port, &db)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            &format!(
                "SELECT count(DISTINCT xmin::text)::bigint FROM \"{}\" WHERE id LIKE 'g%'",
                table_name(USERS)
            ),
            &[],
        )
        .await
        .unwrap();
    let transactions: i64 = row.get(0);
    assert!(
        (transactions as u64) < n / 4,
        "{n} creates in {transactions} transactions: not grouped"
    );
}

fn client_config(roots: &[Vec<u8>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth(),
    )
}

/// `sslmode=require`: the store talks TLS to a server its trust verifies, and refuses one
/// it does not trust (no fallback to plain).
#[tokio::test]
async fn tls_connections_verify_the_server() {
    let Some((port, db)) = fresh_database().await else {
        return;
    };
    let ca = testing::server_ca().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/{db}?sslmode=require");
    let repo = PgRepo::connect_with(&url, Some(client_config(&[ca])))
        .await
        .unwrap();
    repo.create(
        USERS,
        "t1",
        obj(json!({"over": "tls"})),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        repo.read(USERS, "t1").await.unwrap().unwrap().content["over"],
        "tls"
    );
    let (client, conn) = config(port, &db).connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    let tls_sessions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tls_sessions > 0);

    // A server the trust does not know is refused, and not retried in plain.
    let err = PgRepo::connect_with(&url, Some(client_config(&[])))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unreachable") && err.contains("certificate"),
        "{err}"
    );
}

/// A string with U+0000 cannot be kept by jsonb: a clear 400-class error, nothing written,
/// and the connection stays usable.
#[tokio::test]
async fn a_string_with_u0000_is_refused_and_nothing_is_written() {
    let Some(store) = testing::open().await else {
        return;
    };
    let repo = store.repo;
    let r = repo
        .create(
            USERS,
            "nul",
            obj(json!({"n": "a\u{0}b"})),
            WriteOptions::default(),
        )
        .await;
    assert!(matches!(r, Err(RepoError::Unstorable(_))), "{r:?}");
    let e = crate::crest::ResourceError::from(r.unwrap_err());
    assert_eq!(e.code, 400, "{e:?}");
    assert!(repo.read(USERS, "nul").await.unwrap().is_none());
    let ok = repo
        .create(
            USERS,
            "ok",
            obj(json!({"n": "ab"})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    let r = repo
        .update(
            USERS,
            "ok",
            None,
            obj(json!({"n": "\u{0}"})),
            WriteOptions::default(),
        )
        .await;
    assert!(matches!(r, Err(RepoError::Unstorable(_))), "{r:?}");
    assert_eq!(repo.read(USERS, "ok").await.unwrap().unwrap(), ok);
}
