//! Filters on relationship fields ([`crate::repo::RELATIONSHIP_FIELD`]): answered by a
//! subquery on the edges, through the edges' indexes.

use serde_json::{json, Map, Value};

use super::*;
use crate::crest::filter::{CompareOp, FilterValue, QueryFilter};
use crate::repo::{RELATIONSHIPS, RELATIONSHIP_FIELD};

const USERS: &str = "managed/user";

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn rel(prop: &str, part: &str) -> JsonPointer {
    JsonPointer(vec![
        RELATIONSHIP_FIELD.into(),
        USERS.into(),
        prop.into(),
        part.into(),
    ])
}

fn eq(field: JsonPointer, v: &str) -> QueryFilter {
    QueryFilter::Compare {
        field,
        op: CompareOp::Eq,
        value: FilterValue::String(v.into()),
    }
}

fn query(filter: &QueryFilter) -> RepoQuery<'_> {
    RepoQuery {
        filter,
        sort: &[],
        page_size: 0,
        cookie: None,
        offset: 0,
        count: CountPolicy::None,
        ids_only: false,
    }
}

async fn edge(repo: &SqliteRepo, id: &str, first: (&str, &str, &str), second: (&str, &str, &str)) {
    let content = json!({
        "firstResourceCollection": first.0, "firstResourceId": first.1, "firstPropertyName": first.2,
        "secondResourceCollection": second.0, "secondResourceId": second.1, "secondPropertyName": second.2,
        "properties": {"_grantType": if id == "e1" {"conditional"} else {""}},
    });
    repo.create(RELATIONSHIPS, id, obj(content), Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn relationship_fields_are_answered_from_the_edges_by_index() {
    let repo = SqliteRepo::open_temporary().unwrap();
    let indexes: Vec<JsonPointer> = ["firstResourceId", "secondResourceId"]
        .iter()
        .map(|f| JsonPointer(vec![(*f).into()]))
        .collect();
    repo.set_indexes(RELATIONSHIPS, &indexes).await.unwrap();
    for u in ["a", "b", "c", "boss"] {
        repo.create(USERS, u, obj(json!({"userName": u})), Default::default())
            .await
            .unwrap();
    }
    let (role, user) = ("managed/role", USERS);
    // a and b hold r1 (one written from each side), c holds r2; boss manages a.
    edge(&repo, "e1", (user, "a", "roles"), (role, "r1", "members")).await;
    edge(&repo, "e2", (role, "r1", "members"), (user, "b", "roles")).await;
    edge(&repo, "e3", (user, "c", "roles"), (role, "r2", "members")).await;
    edge(
        &repo,
        "e4",
        (user, "a", "manager"),
        (user, "boss", "reports"),
    )
    .await;
    let run = |f: QueryFilter| {
        let repo = repo.clone();
        async move {
            let mut ids: Vec<String> = repo
                .query(USERS, query(&f))
                .await
                .unwrap()
                .results
                .into_iter()
                .map(|o| o.id)
                .collect();
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

    // The plan probes the edges by their indexes, never scans them.
    let f = eq(rel("roles", "ResourceId"), "r1");
    let tbl = repo.inner.table(USERS).unwrap();
    let edges = repo.inner.table(RELATIONSHIPS);
    let plan = plan_with(&tbl, USERS, &query(&f), edges.clone()).unwrap();
    let conn = Connection::open(repo.path()).unwrap();
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", plan.select.text))
        .unwrap();
    let text = stmt
        .query_map(rusqlite::params_from_iter(plan.select.params.iter()), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let edges = edges.unwrap();
    assert!(!text.contains(&format!("SCAN {edges}")), "{text}");
    assert!(text.contains(&format!("SEARCH {edges}")), "{text}");

    // Reading one object's relationships: each side's query searches by index.
    let end = crate::managed::relationships::store::End::new(USERS, "a", Some("roles"));
    for f in crate::managed::relationships::store::filters_of(&end) {
        let plan = plan_with(&edges, RELATIONSHIPS, &query(&f), None).unwrap();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", plan.select.text))
            .unwrap();
        let text = stmt
            .query_map(rusqlite::params_from_iter(plan.select.params.iter()), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!text.contains(&format!("SCAN {edges}")), "{text}");
        assert!(text.contains(&format!("SEARCH {edges}")), "{text}");
    }
}
