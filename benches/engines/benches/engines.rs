//! Criterion benches of issue 12: rquickjs vs boa_engine.
//! a. one-line transform, compiled once vs parsed every call;
//! b. the correlation-query script;
//! c. runtime + context creation.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use engines_bench::{boa::Boa, qjs::Qjs, source, CORRELATION, TRANSFORM};

fn transform(c: &mut Criterion) {
    let src = source(42);
    let expected = serde_json::json!("GIVEN42 Surname42");
    let mut g = c.benchmark_group("transform");

    let q = Qjs::new();
    let qf = q.compile(TRANSFORM);
    assert_eq!(q.call(&qf, &src).unwrap(), expected);
    g.bench_function("rquickjs/compiled_once", |b| {
        b.iter(|| q.call(&qf, black_box(&src)).unwrap())
    });
    g.bench_function("rquickjs/parsed_every_call", |b| {
        b.iter(|| q.eval_each(TRANSFORM, black_box(&src)).unwrap())
    });

    let mut bo = Boa::new();
    let bf = bo.compile(TRANSFORM);
    assert_eq!(bo.call(&bf, &src).unwrap(), expected);
    g.bench_function("boa/compiled_once", |b| {
        b.iter(|| bo.call(&bf, black_box(&src)).unwrap())
    });
    g.bench_function("boa/parsed_every_call", |b| {
        b.iter(|| bo.eval_each(TRANSFORM, black_box(&src)).unwrap())
    });
    g.finish();
}

fn correlation(c: &mut Criterion) {
    let src = source(7);
    let expected = serde_json::json!({"_queryFilter": "userName eq \"user7\""});
    let mut g = c.benchmark_group("correlation");

    let q = Qjs::new();
    let qf = q.compile(CORRELATION);
    assert_eq!(q.call(&qf, &src).unwrap(), expected);
    g.bench_function("rquickjs/compiled_once", |b| {
        b.iter(|| q.call(&qf, black_box(&src)).unwrap())
    });
    g.bench_function("rquickjs/parsed_every_call", |b| {
        b.iter(|| q.eval_each(CORRELATION, black_box(&src)).unwrap())
    });

    let mut bo = Boa::new();
    let bf = bo.compile(CORRELATION);
    assert_eq!(bo.call(&bf, &src).unwrap(), expected);
    g.bench_function("boa/compiled_once", |b| {
        b.iter(|| bo.call(&bf, black_box(&src)).unwrap())
    });
    g.bench_function("boa/parsed_every_call", |b| {
        b.iter(|| bo.eval_each(CORRELATION, black_box(&src)).unwrap())
    });
    g.finish();
}

fn startup(c: &mut Criterion) {
    let mut g = c.benchmark_group("startup");
    g.bench_function("rquickjs/runtime+context", |b| b.iter(Qjs::new));
    g.bench_function("boa/context", |b| b.iter(Boa::new));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = transform, correlation, startup
}
criterion_main!(benches);
