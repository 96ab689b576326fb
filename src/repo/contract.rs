//! The contract every [`Repo`] keeps, as tests run on each backend (one matrix, not a copy
//! per backend): `sqlite::tests` and `postgres::tests` instantiate them with
//! [`repo_contract_tests!`], each with its own way of opening a fresh, empty store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::*;
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::query::{CountPolicy, SortKey};

/// A fresh, empty store under test, and how to set its query time limit.
pub(crate) struct Store {
    pub repo: Arc<dyn Repo>,
    pub set_limit: Box<dyn Fn(Duration) + Send + Sync>,
}

pub(crate) const USERS: &str = "managed/user";

pub(crate) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub(crate) fn ptr(s: &str) -> JsonPointer {
    JsonPointer::parse(s)
}

pub(crate) fn cmp(field: &str, op: CompareOp, value: FilterValue) -> QueryFilter {
    QueryFilter::Compare {
        field: ptr(field),
        op,
        value,
    }
}

pub(crate) fn s(v: &str) -> FilterValue {
    FilterValue::String(v.to_string())
}

pub(crate) fn query<'a>(filter: &'a QueryFilter, sort: &'a [SortKey]) -> RepoQuery<'a> {
    RepoQuery {
        filter,
        sort,
        page_size: 0,
        cookie: None,
        offset: 0,
        count: CountPolicy::None,
        ids_only: false,
    }
}

pub(crate) fn ids(page: &RepoPage) -> Vec<String> {
    page.results.iter().map(|o| o.id.clone()).collect()
}

async fn create(repo: &Arc<dyn Repo>, id: &str, v: Value) -> StoredObject {
    repo.create(USERS, id, obj(v), WriteOptions::default())
        .await
        .expect("create")
}

pub(crate) async fn crud_and_revisions(repo: Arc<dyn Repo>) {
    let created = repo
        .create(
            USERS,
            "u1",
            obj(json!({"_id": "ignored", "_rev": "9", "userName": "alice"})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(created.content, obj(json!({"userName": "alice"})));
    let read = repo.read(USERS, "u1").await.unwrap().unwrap();
    assert_eq!(read, created);
    assert_eq!(repo.read(USERS, "nope").await.unwrap(), None);
    assert_eq!(repo.read("managed/none", "u1").await.unwrap(), None);

    let dup = repo
        .create(USERS, "u1", obj(json!({})), WriteOptions::default())
        .await;
    assert!(
        matches!(dup, Err(RepoError::AlreadyExists { .. })),
        "{dup:?}"
    );

    let updated = repo
        .update(
            USERS,
            "u1",
            None,
            obj(json!({"userName": "alice2"})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_ne!(updated.rev, created.rev);
    let again = repo
        .update(
            USERS,
            "u1",
            Some(&updated.rev),
            obj(json!({"userName": "a3"})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_ne!(again.rev, updated.rev);
    assert_eq!(repo.read(USERS, "u1").await.unwrap().unwrap(), again);

    let missing = repo
        .update(USERS, "u9", None, obj(json!({})), WriteOptions::default())
        .await;
    assert!(
        matches!(missing, Err(RepoError::NotFound { .. })),
        "{missing:?}"
    );
    let missing = repo
        .update(
            "managed/none",
            "u9",
            None,
            obj(json!({})),
            WriteOptions::default(),
        )
        .await;
    assert!(
        matches!(missing, Err(RepoError::NotFound { .. })),
        "{missing:?}"
    );

    let deleted = repo.delete(USERS, "u1", None).await.unwrap();
    assert_eq!(deleted, again);
    assert_eq!(repo.read(USERS, "u1").await.unwrap(), None);
    assert!(matches!(
        repo.delete(USERS, "u1", None).await,
        Err(RepoError::NotFound { .. })
    ));
}

pub(crate) async fn conditional_writes_check_the_revision(repo: Arc<dyn Repo>) {
    let o = create(&repo, "u1", json!({"a": 1})).await;
    let stale = o.rev.clone();
    let o2 = repo
        .update(
            USERS,
            "u1",
            Some(&stale),
            obj(json!({"a": 2})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    let bad = repo
        .update(
            USERS,
            "u1",
            Some(&stale),
            obj(json!({"a": 3})),
            WriteOptions::default(),
        )
        .await;
    assert_eq!(
        bad,
        Err(RepoError::RevisionMismatch {
            resource: USERS.into(),
            id: "u1".into(),
            expected: stale.clone()
        })
    );
    assert!(matches!(
        repo.delete(USERS, "u1", Some(&stale)).await,
        Err(RepoError::RevisionMismatch { .. })
    ));
    assert_eq!(repo.read(USERS, "u1").await.unwrap().unwrap(), o2);
    repo.delete(USERS, "u1", Some(&o2.rev)).await.unwrap();
}

pub(crate) async fn concurrent_conditional_updates_exactly_one_wins(repo: Arc<dyn Repo>) {
    let o = create(&repo, "u1", json!({"n": 0})).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let repo = repo.clone();
        let rev = o.rev.clone();
        tasks.push(tokio::spawn(async move {
            repo.update(
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
}

pub(crate) async fn a_failing_write_does_not_undo_its_batch(repo: Arc<dyn Repo>) {
    let mut tasks = Vec::new();
    for i in 0..200 {
        let repo = repo.clone();
        // Every id twice: exactly one create of each pair fails.
        let id = format!("u{}", i / 2);
        tasks.push(tokio::spawn(async move {
            repo.create(USERS, &id, obj(json!({"i": i})), WriteOptions::default())
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(RepoError::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 100);
    let mut q = query(&QueryFilter::True, &[]);
    q.count = CountPolicy::Exact;
    assert_eq!(repo.query(USERS, q).await.unwrap().total, Some(100));
}

/// `batch`: each write's own result, in order; a failing write fails alone; later writes
/// of the batch see the earlier ones.
pub(crate) async fn batch_results_are_per_write_and_in_order(repo: Arc<dyn Repo>) {
    repo.create(USERS, "b", obj(json!({"n": 0})), WriteOptions::default())
        .await
        .unwrap();
    let create = |id: &str, n: i64| WriteOp::Create {
        resource: USERS.into(),
        id: id.into(),
        content: obj(json!({"n": n})),
        unique: Vec::new(),
    };
    let put = |id: &str, n: i64| WriteOp::Put {
        resource: USERS.into(),
        id: id.into(),
        content: obj(json!({"n": n})),
    };
    // All succeed (the pipelined path of a store that has one).
    let all = repo
        .batch(vec![create("p", 1), put("q", 2), put("p", 3)])
        .await;
    assert!(all.iter().all(Result::is_ok), "{all:?}");
    assert_eq!(all[2].as_ref().unwrap().content["n"], 3);
    assert_eq!(
        repo.read(USERS, "p").await.unwrap().unwrap().content["n"],
        3
    );
    // Some fail: each result on its own, the others written.
    let mixed = repo
        .batch(vec![
            create("a", 1),
            create("b", 2),
            create("c", 3),
            WriteOp::Delete {
                resource: USERS.into(),
                id: "missing".into(),
                rev: None,
            },
            put("d", 4),
        ])
        .await;
    assert!(mixed[0].is_ok(), "{mixed:?}");
    assert!(
        matches!(mixed[1], Err(RepoError::AlreadyExists { .. })),
        "{mixed:?}"
    );
    assert!(mixed[2].is_ok(), "{mixed:?}");
    assert!(
        matches!(mixed[3], Err(RepoError::NotFound { .. })),
        "{mixed:?}"
    );
    assert_eq!(mixed[4].as_ref().unwrap().content["n"], 4);
    for (id, n) in [("a", 1), ("b", 0), ("c", 3), ("d", 4)] {
        assert_eq!(
            repo.read(USERS, id).await.unwrap().unwrap().content["n"],
            n,
            "{id}"
        );
    }
}

pub(crate) async fn unique_properties(repo: Arc<dyn Repo>) {
    let unique = [ptr("userName"), ptr("/mail/primary")];
    let opts = WriteOptions {
        unique: &unique,
        ..Default::default()
    };
    repo.create(
        USERS,
        "u1",
        obj(json!({"userName": "a", "mail": {"primary": "x@y"}})),
        opts,
    )
    .await
    .unwrap();
    let clash = repo
        .create(USERS, "u2", obj(json!({"userName": "a"})), opts)
        .await;
    assert_eq!(
        clash,
        Err(RepoError::Unique {
            resource: USERS.into(),
            property: "/userName".into()
        })
    );
    let clash = repo
        .create(
            USERS,
            "u2",
            obj(json!({"userName": "b", "mail": {"primary": "x@y"}})),
            opts,
        )
        .await;
    assert!(
        matches!(clash, Err(RepoError::Unique { ref property, .. }) if property == "/mail/primary")
    );
    // Case matters, absent and null never conflict, other types are other values.
    for (id, v) in [
        ("u2", json!({"userName": "A"})),
        ("u3", json!({})),
        ("u4", json!({})),
        ("u5", json!({"userName": null})),
        ("u6", json!({"userName": null})),
        ("u7", json!({"userName": 1})),
    ] {
        repo.create(USERS, id, obj(v), opts).await.unwrap();
    }
    // Updating an object with its own value is not a clash; taking another's is.
    repo.update(USERS, "u1", None, obj(json!({"userName": "a"})), opts)
        .await
        .unwrap();
    assert!(matches!(
        repo.update(USERS, "u2", None, obj(json!({"userName": "a"})), opts)
            .await,
        Err(RepoError::Unique { .. })
    ));
    // Concurrent creates of one value: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            let unique = [ptr("userName")];
            repo.create(
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
        if t.await.unwrap().is_ok() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

/// The objects every filter test runs against.
fn dataset() -> Vec<(&'static str, Value)> {
    vec![
        (
            "a",
            json!({"userName": "alice", "age": 30, "active": true, "tags": ["x", "y"], "name": {"given": "Alice"}, "a.b": 1}),
        ),
        (
            "b",
            json!({"userName": "Bob", "age": 25.5, "active": false, "tags": ["y"], "nums": [1, 2, 3]}),
        ),
        (
            "c",
            json!({"userName": "carol", "age": 30.0, "tags": [], "name": {"given": "Carol"}, "we\"i'rd key": "v"}),
        ),
        (
            "d",
            json!({"userName": "dave", "age": "30", "active": "true", "nums": [10, 2.5]}),
        ),
        ("e", json!({"userName": null, "age": null, "name": null})),
        (
            "f",
            json!({"userName": "éloïse", "age": -1, "active": true, "tags": "x"}),
        ),
        (
            "g",
            json!({"userName": "al", "age": 9007199254740993_i64, "name": {"given": "al"}}),
        ),
        ("h", json!({"userName": ["alice", "zed"], "age": [31, 40]})),
        (
            "i",
            json!({"userName": "alice\u{10FFFF}x", "obj": {"k": 1}}),
        ),
        ("j", json!({})),
        (
            "k",
            json!({"userName": "ALICE", "age": 0, "active": false, "flags": [true, false]}),
        ),
    ]
}

fn filters() -> Vec<QueryFilter> {
    use CompareOp::*;
    use FilterValue::{Bool, Float, Integer};
    let mut out = vec![QueryFilter::True, QueryFilter::False];
    for op in [Eq, Co, Sw, Lt, Le, Gt, Ge] {
        for (field, value) in [
            ("userName", s("alice")),
            ("userName", s("al")),
            ("userName", s("ALICE")),
            ("userName", s("")),
            ("userName", s("lic")),
            ("userName", s("é")),
            ("userName", s("alice\u{10FFFF}")),
            ("age", Integer(30)),
            ("age", Float(30.0)),
            ("age", Float(25.5)),
            ("age", s("30")),
            ("age", Integer(9007199254740992)),
            ("age", Integer(35)),
            ("active", Bool(true)),
            ("active", Bool(false)),
            ("active", s("true")),
            ("tags", s("x")),
            ("tags", s("y")),
            ("nums", Integer(2)),
            ("nums", Float(2.5)),
            ("flags", Bool(true)),
            ("/name/given", s("Alice")),
            ("/name/given", s("al")),
            ("/a.b", Integer(1)),
            ("/we\"i'rd key", s("v")),
            ("_id", s("c")),
            ("_id", Integer(1)),
            ("_rev", s("1")),
            ("/nums/1", Integer(2)),
            ("/tags/0", s("x")),
            ("/age/0", Integer(31)),
            ("obj", s("{\"k\":1}")),
            ("missing", s("x")),
        ] {
            out.push(cmp(field, op, value));
        }
    }
    for field in [
        "userName",
        "age",
        "name",
        "/name/given",
        "tags",
        "missing",
        "_id",
        "/we\"i'rd key",
        "/",
        "/tags/0",
        "/nums/2",
    ] {
        out.push(QueryFilter::Present(ptr(field)));
        out.push(QueryFilter::Not(Box::new(QueryFilter::Present(ptr(field)))));
    }
    out.push(QueryFilter::In {
        field: ptr("userName"),
        values: vec!["alice".into(), "Bob".into(), "zed".into()],
    });
    out.push(QueryFilter::In {
        field: ptr("_id"),
        values: vec!["a".into(), "k".into()],
    });
    out.push(QueryFilter::In {
        field: ptr("userName"),
        values: vec![],
    });
    let a30 = cmp("age", Eq, Integer(30));
    let act = cmp("active", Eq, Bool(true));
    out.push(QueryFilter::And(vec![a30.clone(), act.clone()]));
    out.push(QueryFilter::Or(vec![a30.clone(), act.clone()]));
    out.push(QueryFilter::Not(Box::new(a30.clone())));
    out.push(QueryFilter::Not(Box::new(QueryFilter::And(vec![
        a30.clone(),
        act.clone(),
    ]))));
    out.push(QueryFilter::Not(Box::new(QueryFilter::Or(vec![
        a30.clone(),
        act.clone(),
    ]))));
    out.push(QueryFilter::Not(Box::new(QueryFilter::Not(Box::new(a30)))));
    out.push(QueryFilter::Not(Box::new(cmp("userName", Sw, s("al")))));
    out.push(QueryFilter::And(vec![]));
    out.push(QueryFilter::Or(vec![]));
    out
}

/// The stored objects as the in-memory evaluator sees them: content with `_id` and `_rev`.
async fn stored_documents(repo: &Arc<dyn Repo>, resource: &str) -> Vec<(String, Value)> {
    let all = repo
        .query(resource, query(&QueryFilter::True, &[]))
        .await
        .unwrap();
    all.results
        .into_iter()
        .map(|o| {
            let mut doc = o.content;
            doc.insert("_id".into(), json!(o.id));
            doc.insert("_rev".into(), json!(o.rev));
            (o.id, Value::Object(doc))
        })
        .collect()
}

/// Every filter of [`filters`] selects in SQL exactly what `QueryFilter::matches` selects
/// in memory.
async fn check_filters(repo: &Arc<dyn Repo>) {
    let docs = stored_documents(repo, USERS).await;
    let mut failures = Vec::new();
    for f in filters() {
        let page = repo.query(USERS, query(&f, &[])).await.unwrap();
        let want: Vec<String> = docs
            .iter()
            .filter(|(_, doc)| f.matches(doc))
            .map(|(id, _)| id.clone())
            .collect();
        if ids(&page) != want {
            failures.push(format!("{f:?}: sql {:?}, eval {want:?}", ids(&page)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

pub(crate) async fn every_operator_matches_the_reference(repo: Arc<dyn Repo>) {
    for (id, v) in dataset() {
        create(&repo, id, v).await;
    }
    check_filters(&repo).await;
    // Same answers once the properties are indexed.
    let fields: Vec<JsonPointer> = [
        "userName",
        "age",
        "active",
        "tags",
        "nums",
        "/name/given",
        "/a.b",
        "/we\"i'rd key",
    ]
    .into_iter()
    .map(ptr)
    .collect();
    repo.set_indexes(USERS, &fields).await.unwrap();
    check_filters(&repo).await;
}

pub(crate) async fn hand_checked_filters(repo: Arc<dyn Repo>) {
    use CompareOp::*;
    for (id, v) in dataset() {
        create(&repo, id, v).await;
    }
    let run = |f: QueryFilter| {
        let repo = repo.clone();
        async move { ids(&repo.query(USERS, query(&f, &[])).await.unwrap()) }
    };
    // Case-sensitive, arrays match on any element.
    assert_eq!(run(cmp("userName", Eq, s("alice"))).await, ["a", "h"]);
    // Integer 30 equals 30.0 but not the string "30".
    assert_eq!(
        run(cmp("age", Eq, FilterValue::Integer(30))).await,
        ["a", "c"]
    );
    // JSON true is not the number 1.
    assert_eq!(
        run(cmp("active", Eq, FilterValue::Integer(1))).await,
        Vec::<String>::new()
    );
    assert_eq!(
        run(cmp("active", Eq, FilterValue::Bool(true))).await,
        ["a", "f"]
    );
    // co is case-sensitive; sw is exact at the top of the code space.
    assert_eq!(run(cmp("userName", Co, s("LIC"))).await, ["k"]);
    assert_eq!(run(cmp("userName", Sw, s("alice\u{10FFFF}"))).await, ["i"]);
    // !(a eq 1) matches objects without a.
    let not = QueryFilter::Not(Box::new(cmp("/a.b", Eq, FilterValue::Integer(1))));
    assert_eq!(run(not).await.len(), dataset().len() - 1);
    assert_eq!(run(cmp("/we\"i'rd key", Eq, s("v"))).await, ["c"]);
}

pub(crate) async fn sorting_with_missing_values(repo: Arc<dyn Repo>) {
    for (id, v) in [
        ("1", json!({"n": "b", "x": 2})),
        ("2", json!({"n": "a", "x": 10})),
        ("3", json!({"x": 1.5})),
        ("4", json!({"n": "B", "x": null})),
        ("5", json!({"n": "a"})),
    ] {
        create(&repo, id, v).await;
    }
    let by = |field: &str, ascending: bool| {
        vec![SortKey {
            field: ptr(field),
            ascending,
        }]
    };
    let t = QueryFilter::True;
    let run = |sort: Vec<SortKey>| {
        let repo = repo.clone();
        let t = t.clone();
        async move { ids(&repo.query(USERS, query(&t, &sort)).await.unwrap()) }
    };
    // Missing first ascending, code point order ("B" < "a"), ties by id.
    assert_eq!(run(by("n", true)).await, ["3", "4", "2", "5", "1"]);
    assert_eq!(run(by("n", false)).await, ["1", "2", "5", "4", "3"]);
    assert_eq!(run(by("x", true)).await, ["4", "5", "3", "1", "2"]);
    assert_eq!(run(by("x", false)).await, ["2", "1", "3", "4", "5"]);
    assert_eq!(run(by("_id", false)).await, ["5", "4", "3", "2", "1"]);
    let two = vec![
        SortKey {
            field: ptr("n"),
            ascending: true,
        },
        SortKey {
            field: ptr("x"),
            ascending: false,
        },
    ];
    assert_eq!(run(two).await, ["3", "4", "2", "5", "1"]);
}

/// Reads every page of `sort` with `page_size`, following cookies.
async fn all_pages(
    repo: &Arc<dyn Repo>,
    sort: &[SortKey],
    page_size: usize,
    during: impl Fn(usize),
) -> Vec<String> {
    let t = QueryFilter::True;
    let mut out = Vec::new();
    let mut cookie: Option<String> = None;
    for page_no in 0.. {
        let page = repo
            .query(
                USERS,
                RepoQuery {
                    filter: &t,
                    sort,
                    page_size,
                    cookie: cookie.as_deref(),
                    offset: 0,
                    count: CountPolicy::None,
                    ids_only: false,
                },
            )
            .await
            .unwrap();
        assert!(page.results.len() <= page_size);
        out.extend(ids(&page));
        during(page_no);
        match page.next_cookie {
            Some(c) => cookie = Some(c),
            None => break,
        }
    }
    out
}

pub(crate) async fn cookie_paging_is_stable_under_concurrent_inserts(repo: Arc<dyn Repo>) {
    let mut before = HashSet::new();
    for i in 0..200 {
        let id = format!("p{i:04}");
        let v = if i % 7 == 0 {
            json!({})
        } else {
            json!({"score": i % 13, "name": format!("n{}", i % 17)})
        };
        create(&repo, &id, v).await;
        before.insert(id);
    }
    let sorts: Vec<Vec<SortKey>> = vec![
        vec![],
        vec![SortKey {
            field: ptr("score"),
            ascending: true,
        }],
        vec![SortKey {
            field: ptr("score"),
            ascending: false,
        }],
        vec![
            SortKey {
                field: ptr("name"),
                ascending: false,
            },
            SortKey {
                field: ptr("score"),
                ascending: true,
            },
        ],
    ];
    for (n, sort) in sorts.iter().enumerate() {
        let writer_repo = repo.clone();
        let inserter = tokio::spawn(async move {
            for i in 0..100 {
                let id = format!("q{n}-{i:03}");
                let v = json!({"score": i % 5, "name": format!("n{}", i % 3)});
                writer_repo
                    .create(USERS, &id, obj(v), WriteOptions::default())
                    .await
                    .unwrap();
            }
        });
        let seen = all_pages(&repo, sort, 7, |_| std::thread::yield_now()).await;
        inserter.await.unwrap();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates with sort {sort:?}");
        for id in &before {
            assert!(unique.contains(id), "missed {id} with sort {sort:?}");
        }
        // Without concurrent writes, paging gives exactly the unpaged order.
        let paged = all_pages(&repo, sort, 9, |_| {}).await;
        let t = QueryFilter::True;
        let whole = ids(&repo.query(USERS, query(&t, sort)).await.unwrap());
        assert_eq!(paged, whole, "sort {sort:?}");
    }
}

pub(crate) async fn offset_count_and_last_page(repo: Arc<dyn Repo>) {
    for i in 0..25 {
        create(&repo, &format!("o{i:02}"), json!({"even": i % 2 == 0})).await;
    }
    let f = cmp("even", CompareOp::Eq, FilterValue::Bool(true));
    let page = repo
        .query(
            USERS,
            RepoQuery {
                filter: &f,
                sort: &[],
                page_size: 5,
                cookie: None,
                offset: 10,
                count: CountPolicy::Exact,
                ids_only: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), ["o20", "o22", "o24"]);
    assert_eq!(page.total, Some(13));
    assert_eq!(page.next_cookie, None);
    let page = repo
        .query(
            USERS,
            RepoQuery {
                filter: &f,
                sort: &[],
                page_size: 4,
                cookie: None,
                offset: 0,
                count: CountPolicy::None,
                ids_only: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), ["o00", "o02", "o04", "o06"]);
    assert_eq!(page.total, None);
    assert!(page.next_cookie.is_some());
    // Exactly page_size left: the page is full and is the last one.
    let page = repo
        .query(
            USERS,
            RepoQuery {
                filter: &f,
                sort: &[],
                page_size: 3,
                cookie: None,
                offset: 10,
                count: CountPolicy::None,
                ids_only: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), ["o20", "o22", "o24"]);
    assert_eq!(page.next_cookie, None);
    // Offset without a page size.
    let mut q = query(&f, &[]);
    q.offset = 12;
    assert_eq!(ids(&repo.query(USERS, q).await.unwrap()), ["o24"]);
    // Unknown resource: empty, counted.
    let mut q = query(&f, &[]);
    q.count = CountPolicy::Exact;
    let page = repo.query("managed/none", q).await.unwrap();
    assert_eq!((page.results.len(), page.total), (0, Some(0)));
}

pub(crate) async fn bad_cookies_are_rejected(repo: Arc<dyn Repo>) {
    for i in 0..5 {
        create(&repo, &format!("c{i}"), json!({"n": i})).await;
    }
    let t = QueryFilter::True;
    let sort = [SortKey {
        field: ptr("n"),
        ascending: true,
    }];
    let first = repo
        .query(
            USERS,
            RepoQuery {
                filter: &t,
                sort: &sort,
                page_size: 2,
                cookie: None,
                offset: 0,
                count: CountPolicy::None,
                ids_only: false,
            },
        )
        .await
        .unwrap();
    let good = first.next_cookie.unwrap();
    for (cookie, sort) in [
        ("not base64!", &sort[..]),
        ("eyJ9", &sort[..]),
        ("", &sort[..]),
        // A cookie of another query (other sort).
        (good.as_str(), &[][..]),
    ] {
        let r = repo
            .query(
                USERS,
                RepoQuery {
                    filter: &t,
                    sort,
                    page_size: 2,
                    cookie: Some(cookie),
                    offset: 0,
                    count: CountPolicy::None,
                    ids_only: false,
                },
            )
            .await;
        assert_eq!(r, Err(RepoError::BadCookie), "cookie {cookie:?}");
    }
    let r = repo
        .query(
            "managed/none",
            RepoQuery {
                filter: &t,
                sort: &sort,
                page_size: 2,
                cookie: Some("garbage"),
                offset: 0,
                count: CountPolicy::None,
                ids_only: false,
            },
        )
        .await;
    assert_eq!(r, Err(RepoError::BadCookie));
}

pub(crate) async fn too_deep_filters_are_bad_queries(repo: Arc<dyn Repo>) {
    create(&repo, "x", json!({})).await;
    let mut f = QueryFilter::True;
    // Deeper than either store translates (128 levels).
    for _ in 0..130 {
        f = QueryFilter::Not(Box::new(f));
    }
    let r = repo.query(USERS, query(&f, &[])).await;
    assert!(matches!(r, Err(RepoError::BadQuery(_))), "{r:?}");
    // Wide, not deep: SQLite's expression depth limit becomes a bad query too.
    let wide = QueryFilter::Or(
        (0..3000)
            .map(|i| cmp("n", CompareOp::Eq, FilterValue::Integer(i)))
            .collect(),
    );
    let r = repo.query(USERS, query(&wide, &[])).await;
    assert!(matches!(r, Ok(_) | Err(RepoError::BadQuery(_))), "{r:?}");
}

/// `ids_only`: the same rows, revisions and cookies as a full query, with no content.
pub(crate) async fn ids_only_queries_skip_bodies_but_page_the_same(repo: Arc<dyn Repo>) {
    for i in 0..7 {
        create(
            &repo,
            &format!("u{i}"),
            json!({"userName": format!("n{i}"), "n": i}),
        )
        .await;
    }
    let filter = cmp("n", CompareOp::Ge, FilterValue::Integer(2));
    let sort = [SortKey::parse("-userName").unwrap()];
    let (mut a, mut b) = (None::<String>, None::<String>);
    let (mut seen_full, mut seen_bare) = (Vec::new(), Vec::new());
    loop {
        let mut full = query(&filter, &sort);
        full.page_size = 2;
        full.cookie = a.as_deref();
        let mut bare = query(&filter, &sort);
        bare.page_size = 2;
        bare.ids_only = true;
        bare.cookie = b.as_deref();
        let pf = repo.query(USERS, full).await.unwrap();
        let pb = repo.query(USERS, bare).await.unwrap();
        assert!(pb.results.iter().all(|o| o.content.is_empty()));
        assert!(pf.results.iter().all(|o| !o.content.is_empty()));
        let revs = |p: &RepoPage| {
            p.results
                .iter()
                .map(|o| (o.id.clone(), o.rev.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(revs(&pf), revs(&pb));
        seen_full.extend(ids(&pf));
        seen_bare.extend(ids(&pb));
        match (pf.next_cookie, pb.next_cookie) {
            (Some(x), Some(y)) => (a, b) = (Some(x), Some(y)),
            (None, None) => break,
            other => panic!("paging differs: {other:?}"),
        }
    }
    assert_eq!(seen_full, vec!["u6", "u5", "u4", "u3", "u2"]);
    assert_eq!(seen_full, seen_bare);
}

/// `WriteOptions::also` and `delete_with`: the other writes commit with the write, and a
/// failing one leaves nothing written (neither the write nor the others).
pub(crate) async fn other_writes_commit_with_the_write_or_not_at_all(repo: Arc<dyn Repo>) {
    let put = |id: &str, n: i64| WriteOp::Put {
        resource: "sync/queue".into(),
        id: id.into(),
        content: obj(json!({"n": n})),
    };
    let also = [put("q1", 1)];
    let opts = WriteOptions {
        also: &also,
        ..Default::default()
    };
    repo.create(USERS, "a", obj(json!({"x": 1})), opts)
        .await
        .unwrap();
    assert_eq!(
        repo.read("sync/queue", "q1")
            .await
            .unwrap()
            .unwrap()
            .content["n"],
        1
    );

    // A Put replaces whatever the revision; a Create of an existing id fails the write.
    let taken = [
        put("q1", 2),
        WriteOp::Create {
            resource: "sync/queue".into(),
            id: "q1".into(),
            content: obj(json!({})),
            unique: Vec::new(),
        },
    ];
    let opts = WriteOptions {
        also: &taken,
        ..Default::default()
    };
    let err = repo
        .update(USERS, "a", None, obj(json!({"x": 2})), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        repo.read(USERS, "a").await.unwrap().unwrap().content["x"],
        1
    );
    assert_eq!(
        repo.read("sync/queue", "q1")
            .await
            .unwrap()
            .unwrap()
            .content["n"],
        1
    );
    let err = repo
        .delete_with(USERS, "a", None, &taken)
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::AlreadyExists { .. }), "{err:?}");
    assert!(repo.read(USERS, "a").await.unwrap().is_some());

    // And succeed together.
    let deleted = repo
        .delete_with(USERS, "a", None, &[put("q2", 3)])
        .await
        .unwrap();
    assert_eq!(deleted.content["x"], 1);
    assert!(repo.read(USERS, "a").await.unwrap().is_none());
    assert_eq!(
        repo.read("sync/queue", "q2")
            .await
            .unwrap()
            .unwrap()
            .content["n"],
        3
    );
    let q1 = repo.read("sync/queue", "q1").await.unwrap().unwrap();
    let results = repo.batch(vec![put("q1", 4)]).await;
    assert_ne!(results[0].as_ref().unwrap().rev, q1.rev);
}

/// The shared conformance table, answered by SQL: the store selects exactly what the
/// in-memory evaluator selects (`crest::filter::eval` runs the same table), without indexes
/// and with every property indexed.
pub(crate) async fn filter_conformance_table(repo: Arc<dyn Repo>) {
    use crate::crest::filter::{conformance, parse};
    for (id, doc) in conformance::documents() {
        create(&repo, id, doc).await;
    }
    async fn answers(repo: &Arc<dyn Repo>) -> std::collections::HashMap<&'static str, Vec<String>> {
        let mut out = std::collections::HashMap::new();
        for (text, _) in conformance::CASES {
            let filter = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let page = repo
                .query(USERS, query(&filter, &[]))
                .await
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            out.insert(*text, ids(&page));
        }
        out
    }
    let unindexed = answers(&repo).await;
    conformance::check(|text| unindexed[text].clone());
    let fields: Vec<JsonPointer> = [
        "userName", "age", "active", "tags", "mail", "nums", "/mail/0", "/obj/0",
    ]
    .iter()
    .map(|f| ptr(f))
    .collect();
    repo.set_indexes(USERS, &fields).await.unwrap();
    let indexed = answers(&repo).await;
    conformance::check(|text| indexed[text].clone());
}

async fn seed_bulk(repo: &Arc<dyn Repo>, n: usize) {
    let ops: Vec<WriteOp> = (0..n)
        .map(|i| WriteOp::Create {
            resource: USERS.into(),
            id: format!("u{i:06}"),
            content: obj(json!({"userName": format!("user{i}"), "n": i, "tags": ["a", "b"]})),
            unique: Vec::new(),
        })
        .collect();
    for chunk in ops.chunks(2000) {
        for r in repo.batch(chunk.to_vec()).await {
            r.unwrap();
        }
    }
}

/// A streamed query yields every match in order, the same objects a whole-page query does.
pub(crate) async fn streamed_query_yields_every_match_in_order(repo: Arc<dyn Repo>) {
    use futures_util::StreamExt;
    seed_bulk(&repo, 3000).await;
    let f = cmp("n", CompareOp::Ge, FilterValue::Integer(1000));
    let page = repo.query(USERS, query(&f, &[])).await.unwrap();
    let streamed: Vec<StoredObject> = repo
        .query_stream(USERS, query(&f, &[]))
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(streamed.len(), 2000);
    assert_eq!(streamed, page.results);
    // Paging and counts are refused, a missing resource streams nothing.
    let mut paged = query(&f, &[]);
    paged.page_size = 10;
    assert!(matches!(
        repo.query_stream(USERS, paged).await,
        Err(RepoError::BadQuery(_))
    ));
    let none: Vec<_> = repo
        .query_stream("managed/none", query(&f, &[]))
        .await
        .unwrap()
        .collect()
        .await;
    assert!(none.is_empty());
}

/// A query past the time limit is cancelled with `TimeLimit`, whole-page or streamed; a
/// streamed query whose consumer stops taking objects ends at the limit too (its reader
/// is freed), and the next query runs normally.
pub(crate) async fn queries_past_the_time_limit_are_cancelled(
    repo: Arc<dyn Repo>,
    set_limit: impl Fn(Duration),
) {
    use futures_util::StreamExt;
    seed_bulk(&repo, 20_000).await;
    // Slow on purpose: a substring test on every array element of every object, sorted.
    let slow = QueryFilter::Or(vec![
        cmp("tags", CompareOp::Co, s("zz")),
        cmp("userName", CompareOp::Co, s("zz")),
    ]);
    let sort = [SortKey::parse("-userName").unwrap()];
    set_limit(Duration::from_millis(1));
    let r = repo.query(USERS, query(&slow, &sort)).await;
    assert_eq!(r, Err(RepoError::TimeLimit(Duration::from_millis(1))));
    let mut stream = repo.query_stream(USERS, query(&slow, &sort)).await.unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Err(RepoError::TimeLimit(_)))
    ));

    set_limit(Duration::from_millis(300));
    let mut stream = repo
        .query_stream(USERS, query(&QueryFilter::True, &[]))
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rest: Vec<_> = stream.collect().await;
    assert!(rest.len() < 20_000, "the stalled stream was not cut");
    assert!(
        matches!(rest.last(), Some(Err(RepoError::TimeLimit(_)))),
        "{:?}",
        rest.last().map(|r| r.as_ref().err())
    );

    set_limit(Duration::from_secs(30));
    let all = repo
        .query(USERS, query(&QueryFilter::True, &[]))
        .await
        .unwrap();
    assert_eq!(all.results.len(), 20_000);
}

/// A relationship field of a user: `prop`'s edge, its `part` (`ResourceId`, `_id`...).
pub(crate) fn rel(prop: &str, part: &str) -> JsonPointer {
    JsonPointer(vec![
        RELATIONSHIP_FIELD.into(),
        USERS.into(),
        prop.into(),
        part.into(),
    ])
}

pub(crate) fn eq(field: JsonPointer, v: &str) -> QueryFilter {
    QueryFilter::Compare {
        field,
        op: CompareOp::Eq,
        value: FilterValue::String(v.into()),
    }
}

/// Users a, b, c and boss: a and b hold r1 (one edge written from each side), c holds r2,
/// boss manages a; e1 has a `_grantType` of `conditional`.
pub(crate) async fn seed_relationships(repo: &dyn Repo, users: &[&str]) {
    for u in users {
        repo.create(USERS, u, obj(json!({"userName": u})), Default::default())
            .await
            .unwrap();
    }
    let (role, user) = ("managed/role", USERS);
    for (id, first, second) in [
        ("e1", (user, "a", "roles"), (role, "r1", "members")),
        ("e2", (role, "r1", "members"), (user, "b", "roles")),
        ("e3", (user, "c", "roles"), (role, "r2", "members")),
        ("e4", (user, "a", "manager"), (user, "boss", "reports")),
    ] {
        let content = json!({
            "firstResourceCollection": first.0, "firstResourceId": first.1, "firstPropertyName": first.2,
            "secondResourceCollection": second.0, "secondResourceId": second.1, "secondPropertyName": second.2,
            "properties": {"_grantType": if id == "e1" {"conditional"} else {""}},
        });
        repo.create(RELATIONSHIPS, id, obj(content), Default::default())
            .await
            .unwrap();
    }
}

/// Filters on relationship fields ([`RELATIONSHIP_FIELD`]) are answered from the edges
/// (resource [`RELATIONSHIPS`]), the object being either end.
pub(crate) async fn relationship_fields_are_answered_from_the_edges(repo: Arc<dyn Repo>) {
    // No edge was ever stored: nothing matches, nothing fails.
    create(&repo, "a", json!({"userName": "a"})).await;
    let none = repo
        .query(USERS, query(&eq(rel("roles", "ResourceId"), "r1"), &[]))
        .await
        .unwrap();
    assert!(none.results.is_empty());
    seed_relationships(repo.as_ref(), &["b", "c", "boss"]).await;
    let run = |f: QueryFilter| {
        let repo = repo.clone();
        async move {
            let mut ids = ids(&repo.query(USERS, query(&f, &[])).await.unwrap());
            ids.sort();
            ids
        }
    };
    assert_eq!(run(eq(rel("roles", "ResourceId"), "r1")).await, ["a", "b"]);
    assert_eq!(run(eq(rel("manager", "ResourceId"), "boss")).await, ["a"]);
    assert_eq!(run(eq(rel("reports", "ResourceId"), "a")).await, ["boss"]);
    assert_eq!(run(eq(rel("roles", "_id"), "e3")).await, ["c"]);
    let grant = JsonPointer(vec![
        RELATIONSHIP_FIELD.into(),
        USERS.into(),
        "roles".into(),
        "properties".into(),
        "_grantType".into(),
    ]);
    assert_eq!(run(eq(grant, "conditional")).await, ["a"]);
    assert_eq!(
        run(QueryFilter::Present(rel("manager", "ResourceId"))).await,
        ["a"]
    );
    assert_eq!(
        run(QueryFilter::Not(Box::new(eq(
            rel("roles", "ResourceId"),
            "r1"
        ))))
        .await,
        ["boss", "c"]
    );
    assert_eq!(
        run(QueryFilter::And(vec![
            eq(rel("roles", "ResourceId"), "r1"),
            cmp("userName", CompareOp::Eq, s("b")),
        ]))
        .await,
        ["b"]
    );
}

/// One `#[tokio::test]` per contract test, on the stores `$open().await` gives (`None`
/// skips the test: only when the backend cannot run on this machine, said by `$open`).
macro_rules! repo_contract_tests {
    ($open:path) => {
        mod contract {
            #[allow(unused_imports)]
            use super::*;
            $crate::repo::contract::repo_contract_tests!(@each $open;
                #[tokio::test] crud_and_revisions,
                #[tokio::test] conditional_writes_check_the_revision,
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                concurrent_conditional_updates_exactly_one_wins,
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                a_failing_write_does_not_undo_its_batch,
                #[tokio::test] batch_results_are_per_write_and_in_order,
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                unique_properties,
                #[tokio::test] every_operator_matches_the_reference,
                #[tokio::test] hand_checked_filters,
                #[tokio::test] sorting_with_missing_values,
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                cookie_paging_is_stable_under_concurrent_inserts,
                #[tokio::test] offset_count_and_last_page,
                #[tokio::test] bad_cookies_are_rejected,
                #[tokio::test] too_deep_filters_are_bad_queries,
                #[tokio::test] ids_only_queries_skip_bodies_but_page_the_same,
                #[tokio::test] other_writes_commit_with_the_write_or_not_at_all,
                #[tokio::test] filter_conformance_table,
                #[tokio::test] streamed_query_yields_every_match_in_order,
                #[tokio::test] relationship_fields_are_answered_from_the_edges,
            );
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn queries_past_the_time_limit_are_cancelled() {
                if let Some(store) = $open().await {
                    $crate::repo::contract::queries_past_the_time_limit_are_cancelled(
                        store.repo,
                        store.set_limit,
                    )
                    .await;
                }
            }
        }
    };
    (@each $open:path; $(#[$test:meta] $name:ident,)*) => {
        $(
            #[$test]
            async fn $name() {
                if let Some(store) = $open().await {
                    $crate::repo::contract::$name(store.repo).await;
                }
            }
        )*
    };
}
pub(crate) use repo_contract_tests;
