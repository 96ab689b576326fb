//! The store under load: concurrent creates (group commit, fsync per commit), read by id, an
//! indexed `userName eq` query and a full keyset-paged scan, over `REPO_BENCH_OBJECTS` objects
//! (default 100 000). The embedded store (`SqliteRepo`) unless `REPO_BENCH_STORE` is a
//! `postgres://…` URL of an empty database: then the PostgreSQL store (`PgRepo`).
//!
//! `cargo bench --bench repo -- --warm-up-time 1 --measurement-time 5`
//! `REPO_BENCH_OBJECTS=1000000 cargo bench --bench repo -- --warm-up-time 1 --measurement-time 5`
//! `REPO_BENCH_STORE=postgres://user:pw@127.0.0.1:5432/bench cargo bench --bench repo -- …`
//!
//! Besides criterion's figures it prints one `repo-bench:` line per measurement that
//! criterion does not make: load throughput, query latency percentiles and the resident
//! memory of a paged scan. The store lives in a temporary directory on the system temp
//! filesystem (`TMPDIR` chooses it).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::runtime::Runtime;

use idm_gateway::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use idm_gateway::crest::query::CountPolicy;
use idm_gateway::repo::postgres::PgRepo;
use idm_gateway::repo::sqlite::SqliteRepo;
use idm_gateway::repo::{Repo, RepoQuery, WriteOptions};

const USERS: &str = "managed/user";
/// Concurrent writers, as many request handlers would be.
const WRITERS: u64 = 64;

fn objects() -> u64 {
    std::env::var("REPO_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn user(i: u64) -> Map<String, Value> {
    let v = json!({
        "userName": format!("user{i:08}"),
        "givenName": format!("Given{}", i % 977),
        "sn": format!("Surname{}", i % 1999),
        "mail": format!("user{i:08}@example.com"),
        "telephoneNumber": format!("+1 555 {:07}", i % 10_000_000),
        "accountStatus": if i.is_multiple_of(10) { "inactive" } else { "active" },
        "effectiveRoles": [],
        "preferences": {"updates": i.is_multiple_of(2), "marketing": false},
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Creates objects `from..to` with `WRITERS` concurrent tasks; returns creates per second.
async fn load(repo: &Arc<dyn Repo>, prefix: &str, from: u64, to: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(from));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let repo = repo.clone();
        let next = next.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    break;
                }
                repo.create(
                    USERS,
                    &format!("{prefix}{i:08}"),
                    user(i),
                    WriteOptions::default(),
                )
                .await
                .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    (to - from) as f64 / started.elapsed().as_secs_f64()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn name_eq(i: u64) -> QueryFilter {
    QueryFilter::Compare {
        field: JsonPointer::parse("userName"),
        op: CompareOp::Eq,
        value: FilterValue::String(format!("user{i:08}")),
    }
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let n = objects();
    let repo: Arc<dyn Repo> = match std::env::var("REPO_BENCH_STORE") {
        Ok(url) if url.starts_with("postgres") => {
            Arc::new(rt.block_on(PgRepo::connect(&url)).expect("connect"))
        }
        _ => Arc::new(SqliteRepo::open_temporary().expect("open")),
    };
    rt.block_on(repo.set_indexes(USERS, &[JsonPointer::parse("userName")]))
        .expect("indexes");
    let rate = rt.block_on(load(&repo, "u", 0, n));
    println!("repo-bench: loaded {n} objects with {WRITERS} writers: {rate:.0} creates/s");

    let mut g = c.benchmark_group("repo");
    g.throughput(Throughput::Elements(1));
    // Fresh objects continue the numbering, so every userName stays unique.
    let fresh = AtomicU64::new(n);
    g.bench_function("create_64_writers", |b| {
        b.iter_custom(|iters| {
            let from = fresh.fetch_add(iters, Ordering::Relaxed);
            let started = Instant::now();
            rt.block_on(load(&repo, "c", from, from + iters));
            started.elapsed()
        })
    });
    let mut i = 0u64;
    g.bench_function("read_by_id", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            let o = rt
                .block_on(repo.read(USERS, &format!("u{i:08}")))
                .expect("read");
            black_box(o.expect("present"));
        })
    });
    let filters: Vec<QueryFilter> = (0..1024).map(|k| name_eq((k * 104_729) % n)).collect();
    let mut k = 0usize;
    g.bench_function("query_userName_eq_indexed", |b| {
        b.iter(|| {
            k = (k + 1) % filters.len();
            let page = rt
                .block_on(repo.query(USERS, query_ref(&filters[k])))
                .expect("query");
            assert_eq!(page.results.len(), 1);
        })
    });
    g.finish();

    // Latency percentiles of the indexed query, one at a time.
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for q in 0..10_000u64 {
        let f = &filters[(q as usize) % filters.len()];
        let started = Instant::now();
        let page = rt.block_on(repo.query(USERS, query_ref(f))).expect("query");
        let _ = hist.record(started.elapsed().as_micros() as u64);
        assert_eq!(page.results.len(), 1);
    }
    println!(
        "repo-bench: userName eq (indexed, {n} objects): p50 {} us, p99 {} us, max {} us",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );

    // A keyset-paged scan of everything, 1 000 per page.
    let before = rss_kib();
    let mut peak = before;
    let started = Instant::now();
    let t = QueryFilter::True;
    let mut cookie: Option<String> = None;
    let mut rows = 0usize;
    loop {
        let page = rt
            .block_on(repo.query(
                USERS,
                RepoQuery {
                    filter: &t,
                    sort: &[],
                    page_size: 1000,
                    cookie: cookie.as_deref(),
                    offset: 0,
                    count: CountPolicy::None,
                    ids_only: false,
                },
            ))
            .expect("page");
        rows += page.results.len();
        peak = peak.max(rss_kib());
        match page.next_cookie {
            Some(c) => cookie = Some(c),
            None => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "repo-bench: paged scan of {rows} objects (1000/page): {secs:.2} s, {:.0} objects/s, RSS {} MiB before, peak {} MiB",
        rows as f64 / secs,
        before / 1024,
        peak / 1024
    );
}

/// A query by reference to a filter the caller keeps.
fn query_ref(filter: &QueryFilter) -> RepoQuery<'_> {
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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(20);
    targets = bench
}
criterion_main!(benches);
