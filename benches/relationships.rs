//! Relationship edges in the embedded store: creates per second (64 concurrent writers, each
//! create its own transaction with the duplicate checks, as a sub-collection create commits
//! it) and the latency of one user's roles query (both ends of the edges, 10 roles a user).
//!
//! `cargo bench --bench relationships` (`REL_BENCH_USERS`, default 100 000 users × 10 roles)
//!
//! Prints `relationships-bench:` lines; the store lives in a temporary directory on the
//! system temp filesystem (`TMPDIR` chooses it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::Map;
use tokio::runtime::Runtime;

use idm_gateway::managed::relationships::store::{
    edges_of, indexes, new_edge_id, Edge, End, EDGES,
};
use idm_gateway::managed::relationships::write::commit;
use idm_gateway::repo::sqlite::SqliteRepo;
use idm_gateway::repo::Repo;

const WRITERS: u64 = 64;
const ROLES_PER_USER: u64 = 10;
const ROLES: u64 = 1000;
const QUERIES: u64 = 5000;

fn users() -> u64 {
    std::env::var("REL_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// User `u`'s `k`-th role grant, half of them written from the role side.
fn grant(u: u64, k: u64) -> Edge {
    let user = End::new("managed/user", &format!("u{u:08}"), Some("roles"));
    let role = End::new(
        "managed/role",
        &format!("r{:05}", (u * 7 + k * 101) % ROLES),
        Some("members"),
    );
    let (first, second) = if u.is_multiple_of(2) {
        (user, role)
    } else {
        (role, user)
    };
    Edge {
        id: new_edge_id(),
        rev: String::new(),
        first,
        second,
        properties: Map::new(),
        first_single: false,
        second_single: false,
    }
}

fn main() {
    let rt = Runtime::new().expect("runtime");
    let n = users();
    let repo = SqliteRepo::open_temporary().expect("open");
    rt.block_on(repo.set_indexes(EDGES, &indexes()))
        .expect("indexes");
    let total = n * ROLES_PER_USER;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let repo = repo.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let edge = grant(i / ROLES_PER_USER, i % ROLES_PER_USER);
                    commit(&repo, vec![edge.create_op()])
                        .await
                        .expect("create edge");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "relationships-bench: {total} edges ({n} users x {ROLES_PER_USER} roles) created by {WRITERS} writers in {secs:.1}s: {:.0} creates/s",
        total as f64 / secs
    );

    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    rt.block_on(async {
        for q in 0..QUERIES {
            let u = (q * 104_729) % n;
            let me = End::new("managed/user", &format!("u{u:08}"), Some("roles"));
            let t = Instant::now();
            let edges = edges_of(&repo, &me).await.expect("query");
            hist.record(t.elapsed().as_micros() as u64).expect("record");
            assert_eq!(edges.len() as u64, ROLES_PER_USER, "user {u}");
        }
    });
    println!(
        "relationships-bench: a user's roles ({ROLES_PER_USER} edges of {total}), {QUERIES} queries: p50 {} us, p99 {} us, max {} us",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    let count = rt
        .block_on(repo.query(
            EDGES,
            idm_gateway::repo::RepoQuery {
                filter: &idm_gateway::crest::filter::QueryFilter::True,
                sort: &[],
                page_size: 1,
                cookie: None,
                offset: 0,
                count: idm_gateway::crest::query::CountPolicy::Exact,
                ids_only: true,
            },
        ))
        .expect("count")
        .total;
    println!("relationships-bench: stored edges {count:?}");
}
