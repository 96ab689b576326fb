use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::crest::filter::{CompareOp, QueryFilter};
use crate::repo::contract::{cmp, eq, ids, obj, ptr, query, rel, s, seed_relationships, USERS};
use crate::repo::RELATIONSHIPS;

async fn create(repo: &SqliteRepo, id: &str, v: Value) -> StoredObject {
    repo.create(USERS, id, obj(v), WriteOptions::default())
        .await
        .expect("create")
}

/// A fresh store in a temporary directory, for the shared contract tests.
async fn open_store() -> Option<crate::repo::contract::Store> {
    let repo = SqliteRepo::open_temporary().unwrap();
    let limits = repo.clone();
    Some(crate::repo::contract::Store {
        repo: Arc::new(repo),
        set_limit: Box::new(move |d| limits.set_query_time_limit(d)),
    })
}

crate::repo::contract::repo_contract_tests!(open_store);

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let repo = SqliteRepo::open(dir.path()).unwrap();
        create(&repo, "u1", json!({"userName": "kept"})).await;
        repo.set_indexes(USERS, &[ptr("userName")]).await.unwrap();
    }
    let repo = SqliteRepo::open(dir.path()).unwrap();
    let o = repo.read(USERS, "u1").await.unwrap().unwrap();
    assert_eq!(o.content, obj(json!({"userName": "kept"})));
    let f = cmp("userName", CompareOp::Eq, s("kept"));
    assert_eq!(
        ids(&repo.query(USERS, query(&f, &[])).await.unwrap()),
        ["u1"]
    );
    assert!(dir.path().join(DB_FILE).exists());
}

#[tokio::test]
async fn old_schema_is_migrated_and_newer_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        // A version-1 store holding one object.
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(schema::migrate_to(&mut conn, 1).unwrap(), 1);
        let tx = conn.transaction().unwrap();
        let tbl = schema::create_table(&tx, USERS).unwrap();
        tx.execute(
            &format!(
                "INSERT INTO \"{tbl}\" (id, rev, body) VALUES ('old', '4', jsonb('{{\"a\":1}}'))"
            ),
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    {
        let repo = SqliteRepo::open(dir.path()).unwrap();
        let o = repo.read(USERS, "old").await.unwrap().unwrap();
        assert_eq!((o.rev.as_str(), o.content), ("4", obj(json!({"a": 1}))));
        let o = repo
            .update(
                USERS,
                "old",
                Some("4"),
                obj(json!({"a": 2})),
                WriteOptions::default(),
            )
            .await
            .unwrap();
        // The store-wide revision sequence starts above every per-object counter an old
        // store can hold, so no revision it ever issued (even to a deleted object) returns.
        assert_eq!(o.rev, (1u64 << 32).to_string());
    }
    let conn = Connection::open(&path).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version as usize, schema::MIGRATIONS.len());
    let layout: String = conn
        .query_row(
            "SELECT value FROM repo_meta WHERE key = 'layout'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(layout.contains("table-per-resource"));
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteRepo::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

/// EXPLAIN QUERY PLAN of a plan's select.
fn explain_plan(repo: &SqliteRepo, plan: &Plan) -> String {
    let conn = Connection::open(repo.path()).unwrap();
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", plan.select.text))
        .unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(plan.select.params.iter()), |r| {
            r.get::<_, String>(3)
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
}

/// EXPLAIN QUERY PLAN of the select a query runs.
fn explain(repo: &SqliteRepo, q: &RepoQuery<'_>) -> String {
    let tbl = repo.inner.table(USERS).unwrap();
    explain_plan(repo, &plan(&tbl, USERS, q).unwrap())
}

#[tokio::test]
async fn indexed_queries_use_the_index() {
    let repo = SqliteRepo::open_temporary().unwrap();
    repo.set_indexes(USERS, &[ptr("userName"), ptr("/we\"i'rd.key")])
        .await
        .unwrap();
    for i in 0..50 {
        create(
            &repo,
            &format!("u{i}"),
            json!({"userName": format!("user{i}")}),
        )
        .await;
    }
    let f = cmp("userName", CompareOp::Eq, s("user7"));
    let p = explain(&repo, &query(&f, &[]));
    assert!(p.contains("_x_") && !p.contains("SCAN obj_"), "{p}");
    assert!(
        p.contains("_a_"),
        "the array branch uses its partial index: {p}"
    );
    let f = cmp("userName", CompareOp::Sw, s("user1"));
    let p = explain(&repo, &query(&f, &[]));
    assert!(p.contains("_x_") && !p.contains("SCAN obj_"), "{p}");
    let f = cmp("/we\"i'rd.key", CompareOp::Eq, s("v"));
    let p = explain(&repo, &query(&f, &[]));
    assert!(p.contains("_x_") && !p.contains("SCAN obj_"), "{p}");
    let f = cmp("userName", CompareOp::Eq, s("user7"));
    assert_eq!(
        ids(&repo.query(USERS, query(&f, &[])).await.unwrap()),
        ["u7"]
    );

    // Undeclared properties lose their indexes.
    repo.set_indexes(USERS, &[ptr("mail")]).await.unwrap();
    let p = explain(&repo, &query(&f, &[]));
    assert!(p.contains("SCAN obj_"), "{p}");
    let conn = Connection::open(repo.path()).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'obj\\_%' ESCAPE '\\'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 2);
}

/// `_id in [...]` (the reconciliation engine's batched read) is answered from the primary
/// key, one lookup per id, with the whole list in one bound parameter however long it is.
#[tokio::test]
async fn id_in_queries_use_the_primary_key() {
    let repo = SqliteRepo::open_temporary().unwrap();
    for i in 0..200 {
        create(&repo, &format!("u{i:03}"), json!({"n": i})).await;
    }
    let values: Vec<String> = (0..5000).map(|i| format!("u{i:03}")).rev().collect();
    let f = QueryFilter::In {
        field: ptr("_id"),
        values,
    };
    let p = explain(&repo, &query(&f, &[]));
    assert!(
        p.contains("SEARCH obj_") && p.contains("(id=?)") && !p.contains("SCAN obj_"),
        "{p}"
    );
    let tbl = repo.inner.table(USERS).unwrap();
    assert_eq!(
        plan(&tbl, USERS, &query(&f, &[]))
            .unwrap()
            .select
            .params
            .len(),
        1
    );
    let page = repo.query(USERS, query(&f, &[])).await.unwrap();
    let expected: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    assert_eq!(ids(&page), expected);
    assert_eq!(page.results[7].content["n"], json!(7));
    // Ids only, as the target phase asks for its sources.
    let mut q = query(&f, &[]);
    q.ids_only = true;
    let p = explain(&repo, &q);
    assert!(p.contains("SEARCH obj_") && !p.contains("SCAN obj_"), "{p}");

    // Other ids bind the same statement without re-preparing it (an `or` of many `id = ?`
    // terms is re-planned at every new binding: a fifth of a reconciliation's time).
    let plan = plan(&tbl, USERS, &query(&f, &[])).unwrap();
    let conn = Connection::open(repo.path()).unwrap();
    let mut stmt = conn.prepare(&plan.select.text).unwrap();
    for list in [
        r#"["u001","u002"]"#,
        r#"["u003"]"#,
        r#"["u150","u007","nope"]"#,
    ] {
        let n = stmt.query_map([list], |_| Ok(())).unwrap().count();
        assert!(n > 0);
    }
    assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repos_are_shared_across_tasks() {
    let repo = Arc::new(SqliteRepo::open_temporary().unwrap());
    let dir = repo.path().parent().unwrap().to_path_buf();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("t{i}");
            repo.create(USERS, &id, obj(json!({"i": i})), WriteOptions::default())
                .await
                .unwrap();
            repo.read(USERS, &id).await.unwrap().unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(repo);
    assert!(!dir.exists(), "a temporary store removes its directory");
}

/// A client holding a revision of a deleted object must not match the object created again
/// under the same id, not even after the store is reopened: revisions never repeat for an id.
#[tokio::test]
async fn revisions_never_repeat_across_delete_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = HashSet::new();
    {
        let repo = SqliteRepo::open(dir.path()).unwrap();
        for round in 0..3 {
            let o = create(&repo, "u1", json!({"round": round})).await;
            assert!(seen.insert(o.rev.clone()), "{} repeated", o.rev);
            let o = repo
                .update(
                    USERS,
                    "u1",
                    Some(&o.rev),
                    obj(json!({"n": 1})),
                    WriteOptions::default(),
                )
                .await
                .unwrap();
            assert!(seen.insert(o.rev.clone()), "{} repeated", o.rev);
            repo.delete(USERS, "u1", Some(&o.rev)).await.unwrap();
        }
    }
    let repo = SqliteRepo::open(dir.path()).unwrap();
    let o = create(&repo, "u1", json!({"round": "reopened"})).await;
    assert!(
        seen.insert(o.rev.clone()),
        "{} repeated after reopening",
        o.rev
    );
    for old in &seen {
        if *old == o.rev {
            continue;
        }
        let stale = repo
            .update(
                USERS,
                "u1",
                Some(old),
                obj(json!({})),
                WriteOptions::default(),
            )
            .await;
        assert!(
            matches!(stale, Err(RepoError::RevisionMismatch { .. })),
            "old revision {old}: {stale:?}"
        );
        assert!(matches!(
            repo.delete(USERS, "u1", Some(old)).await,
            Err(RepoError::RevisionMismatch { .. })
        ));
    }
    // Batched writes draw from the same sequence.
    repo.delete(USERS, "u1", None).await.unwrap();
    let out = repo
        .batch(vec![WriteOp::Create {
            resource: USERS.into(),
            id: "u1".into(),
            content: obj(json!({})),
            unique: Vec::new(),
        }])
        .await;
    let rev = out[0].as_ref().unwrap().rev.clone();
    assert!(seen.insert(rev.clone()), "{rev} repeated by a batch");
}

/// Filters on relationship fields (answered by a subquery on the edges, as the contract
/// checks) probe the edges through the edges' indexes, never scan them.
#[tokio::test]
async fn relationship_filters_search_the_edges_by_index() {
    let repo = SqliteRepo::open_temporary().unwrap();
    repo.set_indexes(
        RELATIONSHIPS,
        &[ptr("firstResourceId"), ptr("secondResourceId")],
    )
    .await
    .unwrap();
    seed_relationships(&repo, &["a", "b", "c", "boss"]).await;
    let f = eq(rel("roles", "ResourceId"), "r1");
    let tbl = repo.inner.table(USERS).unwrap();
    let edges = repo.inner.table(RELATIONSHIPS);
    let text = explain_plan(
        &repo,
        &plan_with(&tbl, USERS, &query(&f, &[]), edges.clone()).unwrap(),
    );
    let edges = edges.unwrap();
    assert!(!text.contains(&format!("SCAN {edges}")), "{text}");
    assert!(text.contains(&format!("SEARCH {edges}")), "{text}");

    // Reading one object's relationships: each side's query searches by index.
    let end = crate::managed::relationships::store::End::new(USERS, "a", Some("roles"));
    for f in crate::managed::relationships::store::filters_of(&end) {
        let plan = plan_with(&edges, RELATIONSHIPS, &query(&f, &[]), None).unwrap();
        let text = explain_plan(&repo, &plan);
        assert!(!text.contains(&format!("SCAN {edges}")), "{text}");
        assert!(text.contains(&format!("SEARCH {edges}")), "{text}");
    }
}
