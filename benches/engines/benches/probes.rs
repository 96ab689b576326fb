//! Probes that criterion cannot express: memory per runtime, a 100 000-object recon, and the
//! sandbox (interrupting `while(true){}`, memory limits). Each probe runs in its own child process
//! (this binary re-executed with ENGINE_PROBE=<name>) so its RSS figures are its own.

use engines_bench::{boa::Boa, peak_rss_bytes, qjs::Qjs, rss_bytes, source, CORRELATION, TRANSFORM, TRANSFORM2};
use std::time::{Duration, Instant};

const PROBES: &[&str] = &[
    "mem-rquickjs",
    "mem-boa",
    "recon-rquickjs",
    "recon-boa",
    "sandbox-rquickjs",
    "sandbox-boa",
];
const RECON_OBJECTS: u64 = 100_000;
const DEADLINE: Duration = Duration::from_millis(100);
const MB: f64 = 1024.0 * 1024.0;

fn main() {
    if let Ok(p) = std::env::var("ENGINE_PROBE") {
        run(&p);
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    for p in PROBES {
        let out = std::process::Command::new(&exe)
            .env("ENGINE_PROBE", p)
            .output()
            .expect("spawn probe");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            println!(
                "{p}: child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn run(p: &str) {
    match p {
        "mem-rquickjs" => mem(p, || {
            let q = Qjs::new();
            let f = q.compile(TRANSFORM);
            q.call(&f, &source(1)).unwrap();
            (q, f)
        }),
        "mem-boa" => mem(p, || {
            let mut b = Boa::new();
            let f = b.compile(TRANSFORM);
            b.call(&f, &source(1)).unwrap();
            (b, f)
        }),
        "recon-rquickjs" => {
            let q = Qjs::new();
            let fs = [TRANSFORM, TRANSFORM2, CORRELATION].map(|s| q.compile(s));
            recon(p, |s| q.call_many(&fs, s).unwrap())
        }
        "recon-boa" => {
            let mut b = Boa::new();
            let fs = [TRANSFORM, TRANSFORM2, CORRELATION].map(|s| b.compile(s));
            recon(p, |s| b.call_many(&fs, s).unwrap())
        }
        "sandbox-rquickjs" => sandbox_qjs(),
        "sandbox-boa" => sandbox_boa(),
        _ => panic!("unknown probe {p}"),
    }
}

/// RSS delta of 16 live runtimes, each with a context, a compiled transform and one call.
fn mem<T>(name: &str, make: impl Fn() -> T) {
    let _warm = make();
    let before = rss_bytes();
    let t = Instant::now();
    let all: Vec<T> = (0..16).map(|_| make()).collect();
    let took = t.elapsed();
    let after = rss_bytes();
    println!(
        "{name}: 16 runtimes: RSS +{:.2} MB, {:.0} KB per runtime (creation+compile+call {:.2} ms each)",
        (after - before) as f64 / MB,
        (after - before) as f64 / 16.0 / 1024.0,
        took.as_secs_f64() * 1000.0 / 16.0
    );
    drop(all);
}

/// 100 000 objects, each through two transforms and a correlation query (source converted once
/// per object, three calls, three results back to serde_json). Object generation is included.
fn recon(name: &str, mut each: impl FnMut(&serde_json::Value) -> Vec<serde_json::Value>) {
    let t = Instant::now();
    for i in 0..RECON_OBJECTS {
        let out = each(&source(i));
        if i % 9973 == 0 {
            assert_eq!(out[0], format!("GIVEN{i} Surname{i}"));
            assert_eq!(out[1], format!("user{i}@example.com"));
            assert_eq!(out[2]["_queryFilter"], format!("userName eq \"user{i}\""));
        }
    }
    let took = t.elapsed();
    println!(
        "{name}: {RECON_OBJECTS} objects in {:.2} s = {:.0} objects/s; peak RSS {:.1} MB",
        took.as_secs_f64(),
        RECON_OBJECTS as f64 / took.as_secs_f64(),
        peak_rss_bytes() as f64 / MB
    );
}

fn sandbox_qjs() {
    // Interrupt handler: `while(true){}` stopped once a deadline passes.
    let q = Qjs::new();
    let mut overshoot = Vec::new();
    let mut message = String::new();
    for _ in 0..5 {
        let start = Instant::now();
        let deadline = start + DEADLINE;
        q.rt
            .set_interrupt_handler(Some(Box::new(move || Instant::now() >= deadline)));
        let r = q.run("while(true){}");
        let took = start.elapsed();
        q.rt.set_interrupt_handler(None);
        message = format!("{:?}", r.expect_err("interrupted"));
        overshoot.push(took.saturating_sub(DEADLINE));
    }
    let usable = q.run("1+1");
    println!(
        "sandbox-rquickjs: while(true){{}} interrupted {} ms deadline, overshoot max {:?} (5 runs), error {message}; runtime after: {usable:?}",
        DEADLINE.as_millis(),
        overshoot.iter().max().unwrap()
    );

    // Memory limit: a growing array under a 32 MB limit.
    let q = Qjs::new();
    q.rt.set_memory_limit(32 << 20);
    let before = rss_bytes();
    let t = Instant::now();
    let r = q.run("let a = []; for (;;) a.push('x'.repeat(1024) + a.length);");
    let took = t.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    q.rt.run_gc();
    let usable = q.run("1+1");
    println!(
        "sandbox-rquickjs: memory limit 32 MB: {r:?} after {:.1} ms, RSS +{:.1} MB; runtime after: {usable:?}",
        took.as_secs_f64() * 1000.0,
        grown as f64 / MB
    );
}

fn sandbox_boa() {
    use boa_engine::{Script, Source};
    use std::future::Future;
    use std::task::{Context as TaskCx, Poll, Waker};

    // RuntimeLimits: loop-iteration limit (a count, not a clock).
    for limit in [1_000_000u64, 10_000_000] {
        let mut b = Boa::new();
        b.ctx.runtime_limits_mut().set_loop_iteration_limit(limit);
        let t = Instant::now();
        let r = b.run("while(true){}");
        println!(
            "sandbox-boa: loop_iteration_limit {limit}: stopped after {:.1} ms: {r:?}; context after: {:?}",
            t.elapsed().as_secs_f64() * 1000.0,
            b.run("1+1")
        );
    }

    // Deadline: Script::evaluate_async_with_budget polled by hand, dropped after the deadline.
    let mut b = Boa::new();
    let mut overshoot = Vec::new();
    for _ in 0..5 {
        let script = Script::parse(Source::from_bytes("while(true){}"), None, &mut b.ctx).unwrap();
        let start = Instant::now();
        let deadline = start + DEADLINE;
        let mut cx = TaskCx::from_waker(Waker::noop());
        {
            let mut fut = std::pin::pin!(script.evaluate_async_with_budget(&mut b.ctx, 10_000));
            loop {
                match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(r) => panic!("while(true) ended: {r:?}"),
                    Poll::Pending if Instant::now() >= deadline => break,
                    Poll::Pending => {}
                }
            }
        }
        overshoot.push(start.elapsed().saturating_sub(DEADLINE));
    }
    let usable = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.run("1+1")));
    println!(
        "sandbox-boa: evaluate_async_with_budget(10 000) dropped at a {} ms deadline: overshoot max {:?} (5 runs); context after: {:?}",
        DEADLINE.as_millis(),
        overshoot.iter().max().unwrap(),
        usable.map_err(|_| "panicked")
    );
}
