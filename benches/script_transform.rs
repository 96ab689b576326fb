//! The gateway's own `ScriptEngine` (its thread pool, QuickJS runtimes and `serde_json` ↔ JS
//! conversion) on the scripts a mapping runs per object:
//!
//! * `transform/eval_per_object`: one `engine.eval` per object through the pool — a
//!   property transform `source.givenName + ' ' + source.sn` with a 10-field `source`;
//! * `transform/batch_1000_in_one_run`: 1000 objects in one `engine.run`, one `w.eval` each
//!   (criterion's throughput line gives the per-object cost);
//! * `correlation/eval_per_object`: a correlation query script answering a `_queryFilter`.
//!
//! `cargo bench --bench script_transform -- --warm-up-time 1 --measurement-time 5`
//! (issue 12's target: at most 20 µs per object).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

use idm_gateway::script::{parse_script, vars, EngineConfig, Script, ScriptEngine};

const BATCH: usize = 1000;

/// A managed user as a recon source: ten fields.
fn source(i: usize) -> Value {
    json!({
        "_id": format!("u{i}"), "_rev": i.to_string(), "userName": format!("user{i}"),
        "givenName": format!("Given{i}"), "sn": format!("Sn{i}"),
        "mail": format!("user{i}@example.com"), "telephoneNumber": "+1 555 0100",
        "city": "Paris", "accountStatus": "active", "description": "a bench user",
    })
}

fn script(source: &str) -> Script {
    parse_script(
        &json!({"type": "text/javascript", "source": source}),
        "bench",
    )
    .expect("the bench scripts compile")
}

fn engine() -> Arc<ScriptEngine> {
    ScriptEngine::start(
        EngineConfig::default(),
        std::env::temp_dir(),
        Box::new(|_, _| {}),
    )
    .expect("the engine starts")
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("a tokio runtime");
    let engine = engine();
    let objects: Arc<Vec<Value>> = Arc::new((0..BATCH).map(source).collect());
    let transform = script("source.givenName + ' ' + source.sn");
    let correlation = script("({_queryFilter: 'mail eq \"' + source.mail + '\"'})");

    // The scripts give what a mapping expects before anything is measured.
    let out = rt
        .block_on(engine.eval(&transform, vars([("source", objects[7].clone())]), &[]))
        .unwrap();
    assert_eq!(out.value, json!("Given7 Sn7"));
    let out = rt
        .block_on(engine.eval(&correlation, vars([("source", objects[7].clone())]), &[]))
        .unwrap();
    assert_eq!(
        out.value,
        json!({"_queryFilter": "mail eq \"user7@example.com\""})
    );

    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("eval_per_object", |b| {
        b.iter(|| {
            i = (i + 1) % BATCH;
            let out = rt
                .block_on(engine.eval(&transform, vars([("source", objects[i].clone())]), &[]))
                .unwrap();
            black_box(out.value)
        })
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_1000_in_one_run", |b| {
        b.iter(|| {
            let (objects, transform) = (objects.clone(), transform.clone());
            let values = rt
                .block_on(engine.run(move |w| {
                    objects
                        .iter()
                        .map(|o| w.eval(&transform, &[("source", o)], &[]).unwrap().value)
                        .collect::<Vec<Value>>()
                }))
                .unwrap();
            assert_eq!(values.len(), BATCH);
            black_box(values)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("correlation");
    group.throughput(Throughput::Elements(1));
    group.bench_function("eval_per_object", |b| {
        b.iter(|| {
            i = (i + 1) % BATCH;
            let out = rt
                .block_on(engine.eval(&correlation, vars([("source", objects[i].clone())]), &[]))
                .unwrap();
            black_box(out.value)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
