//! Recomputing `effectiveAssignments` for a role with many members: an assignment is added
//! to the role through the managed handler (as `POST managed/role/big/assignments?_action=create`),
//! which answers once [`INLINE`] members are done and continues in the background. Measured:
//! the answer's latency, the time until every member's stored `effectiveAssignments` holds
//! the assignment, and the latency of unrelated user updates made meanwhile (they must not
//! wait for the recomputation).
//!
//! `cargo bench --bench effective_roles` (`ROLE_BENCH_MEMBERS`, default 100 000). The shipped
//! `conf/managed.json` is the schema; the store lives in a temporary directory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use idm_gateway::crest::filter;
use idm_gateway::crest::{Caller, Operation, Request, RequestHandler};
use idm_gateway::managed::relationships::notify::INLINE;
use idm_gateway::managed::relationships::store::{indexes, new_edge_id, Edge, End, EDGES};
use idm_gateway::managed::relationships::write::commit;
use idm_gateway::managed::{parse_managed, ManagedHandler};
use idm_gateway::repo::sqlite::SqliteRepo;
use idm_gateway::repo::{Repo, RepoQuery, WriteOptions};

/// Edges per transaction while the members are loaded.
const LOAD_BATCH: usize = 1000;
/// Users outside the role, updated while the members are recomputed.
const OTHERS: usize = 200;

fn members() -> usize {
    std::env::var("ROLE_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn admin() -> Arc<Caller> {
    Arc::new(Caller::new(
        "openidm-admin",
        "internal/user",
        vec!["internal/role/openidm-admin".into()],
    ))
}

fn request(op: Operation, path: &str, body: Value) -> Request {
    let mut req = Request::new(op, path, admin());
    req.body = body;
    req
}

fn rest(path: &str) -> Vec<String> {
    path.split('/')
        .skip(1)
        .map(str::to_owned)
        .collect::<Vec<_>>()
}

fn user(i: usize) -> Map<String, Value> {
    let v = json!({"userName": format!("member{i:06}"), "givenName": "Member", "sn": "Bench",
        "mail": format!("member{i}@example.com"), "accountStatus": "active",
        "effectiveRoles": [{"_refResourceCollection": "managed/role", "_refResourceId": "big",
                            "_ref": "managed/role/big"}],
        "effectiveAssignments": []});
    v.as_object().cloned().unwrap_or_default()
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let n = members();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/managed.json"))
        .expect("conf/managed.json");
    let schema =
        Arc::new(parse_managed(&serde_json::from_str(&text).expect("json")).expect("schema"));
    let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().expect("store"));
    let handler = Arc::new(ManagedHandler::new(
        repo.clone(),
        Arc::new(move || schema.clone()),
    ));
    rt.block_on(handler.index_all());
    rt.block_on(repo.set_indexes(EDGES, &indexes()))
        .expect("edge indexes");

    // The role, its members (loaded directly: users with their stored derived values),
    // other users, and an assignment not yet on the role.
    let started = Instant::now();
    rt.block_on(async {
        let h = handler.as_ref();
        for (path, body) in [
            ("managed/role/big", json!({"name": "big"})),
            (
                "managed/assignment/a",
                json!({"name": "a", "description": "d", "mapping": "managedUser_systemLdapAccounts",
                       "attributes": [{"name": "employeeType", "value": "Staff"}]}),
            ),
        ] {
            let req = request(Operation::Create { new_id: None }, path, body);
            let mut r = rest(path);
            let id = r.pop().unwrap_or_default();
            let mut req = req;
            req.op = Operation::Create { new_id: Some(id) };
            h.handle(&req, &r).await.expect("create");
        }
        let mut ops = Vec::with_capacity(LOAD_BATCH);
        for i in 0..n {
            let id = format!("m{i:06}");
            repo.create("managed/user", &id, user(i), WriteOptions::default())
                .await
                .expect("user");
            let e = Edge {
                id: new_edge_id(),
                rev: String::new(),
                first: End::new("managed/user", &id, Some("roles")),
                second: End::new("managed/role", "big", Some("members")),
                properties: Map::new(),
                first_single: false,
                second_single: false,
            };
            ops.push(e.create_op());
            if ops.len() == LOAD_BATCH {
                commit(repo.as_ref(), std::mem::take(&mut ops))
                    .await
                    .expect("edges");
            }
        }
        commit(repo.as_ref(), ops).await.expect("edges");
        for i in 0..OTHERS {
            let path = format!("managed/user/o{i}");
            let mut req = request(
                Operation::Create {
                    new_id: Some(format!("o{i}")),
                },
                "managed/user",
                Value::Object(user(i)),
            );
            req.body["userName"] = json!(format!("other{i:04}"));
            h.handle(&req, &rest(&path)[..1]).await.expect("other");
        }
    });
    println!(
        "effective-roles-bench: {n} members loaded in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let done = Arc::new(AtomicBool::new(false));
    // Unrelated updates while the recomputation runs.
    let writer = {
        let (handler, done) = (handler.clone(), done.clone());
        rt.spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) {
                let path = format!("managed/user/o{}", i % OTHERS);
                let req = request(
                    Operation::Patch { rev: None },
                    &path,
                    json!([{"operation": "replace", "field": "/description", "value": format!("v{i}")}]),
                );
                let t = Instant::now();
                handler.handle(&req, &rest(&path)).await.expect("update");
                hist.record(t.elapsed().as_micros() as u64).expect("record");
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            hist
        })
    };
    let holds = filter::parse("/effectiveAssignments/_refResourceId eq \"a\"").expect("filter");
    let t = Instant::now();
    rt.block_on(async {
        let path = "managed/role/big/assignments";
        let req = request(
            Operation::Create { new_id: None },
            path,
            json!({"_ref": "managed/assignment/a"}),
        );
        handler
            .handle(&req, &rest(path))
            .await
            .expect("add assignment");
    });
    let answered = t.elapsed();
    let mut peak_rss = 0u64;
    let finished = rt.block_on(async {
        loop {
            let page = repo
                .query(
                    "managed/user",
                    RepoQuery {
                        ids_only: true,
                        count: idm_gateway::crest::query::CountPolicy::Exact,
                        page_size: 1,
                        ..RepoQuery::all(&holds, &[])
                    },
                )
                .await
                .expect("count");
            peak_rss = peak_rss.max(rss_kb());
            if page.total.unwrap_or(0) as usize >= n {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    done.store(true, Ordering::Relaxed);
    let hist = rt.block_on(writer).expect("writer");
    println!(
        "effective-roles-bench: assignment added to a role of {n} members: answered in {} ms ({INLINE} members inline), all members recomputed in {:.1}s ({:.0} members/s), peak RSS {} MB",
        answered.as_millis(),
        finished.as_secs_f64(),
        n as f64 / finished.as_secs_f64(),
        peak_rss / 1024
    );
    println!(
        "effective-roles-bench: {} unrelated user updates meanwhile: p50 {} us, p99 {} us, max {} us",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
}

/// The process's peak resident set (VmHWM), in KiB.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
