//! Restarting without dropping anything: zero-downtime upgrades (`--upgrade` + SIGQUIT of
//! the old process) under load, and the SIGTERM drain of in-flight requests.
//!
//! Nothing here is timed: the upgrade test counts failed requests, the drain test checks
//! that a slow request still gets its answer and that the process exits by itself.

mod common;

use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::signal;
use common::{basic_instance, Gateway, RecordingUpstream, ADMIN_USER};
use serde_json::json;

const UPGRADES: usize = 20;
/// How long one step of an upgrade (the new process waiting on the socket, the handover)
/// may take before the test gives up: generous, the machine is shared.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the load generator saw.
#[derive(Default)]
struct Tally {
    total: AtomicUsize,
    failed: AtomicUsize,
    /// Idempotent requests sent again once after their kept-alive connection was closed
    /// while idle (counted once in `total`; a second failure is a failure).
    retried: AtomicUsize,
    /// POSTs answered 2xx: the remote must have seen exactly these.
    posts_ok: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(what);
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// GET on a pooled keep-alive connection; retried once on a connection-level error
    /// (the old process closed the idle connection as the request went out).
    KeepAliveGet,
    /// GET on a new connection each time: no retry, any error counts.
    NewConnectionGet,
    /// POST on a new connection each time: no retry (not idempotent), any error counts.
    NewConnectionPost,
}

fn client(keep_alive: bool) -> reqwest::Client {
    let mut builder = common::client_builder().timeout(Duration::from_secs(20));
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}

/// One load client: sends requests back to back until `stop`.
async fn load(kind: Kind, url: String, password: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let client = client(matches!(kind, Kind::KeepAliveGet));
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let send = || {
            let request = match kind {
                Kind::NewConnectionPost => client
                    .post(&url)
                    .json(&json!({"userName": format!("load-{n}"), "n": n})),
                _ => client.get(&url),
            };
            request
                .header("X-OpenIDM-Username", ADMIN_USER)
                .header("X-OpenIDM-Password", &password)
                .send()
        };
        let mut result = send().await;
        if let (Kind::KeepAliveGet, Err(e)) = (kind, &result) {
            if e.is_request() && !e.is_timeout() {
                tally.retried.fetch_add(1, Ordering::SeqCst);
                result = send().await;
            }
        }
        tally.total.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(_) => {
                    if matches!(kind, Kind::NewConnectionPost) {
                        tally.posts_ok.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(e) => tally.fail(format!("{url}: body: {e:?}")),
            },
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tally.fail(format!("{url}: {status} {body}"));
            }
            Err(e) => tally.fail(format!("{url}: {e:?}")),
        }
    }
}

async fn wait_until(what: &str, gw: &mut Gateway, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !done() {
        if let Some(status) = gw.try_wait() {
            panic!(
                "the new gateway exited ({status}) while {what}; log:\n{}",
                gw.logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out while {what}; log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_upgrades_under_load_fail_no_request() {
    let remote = RecordingUpstream::start();
    let mut gw = Gateway::builder()
        .conf_file(
            "external.idm-remote",
            basic_instance(&remote.url(), "admin", "secret"),
        )
        .arg("--shutdown-grace-seconds")
        .arg("1")
        .arg("--threads")
        .arg("2")
        .start()
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let local = gw.url("/openidm/info/ping");
    let proxied = gw.url("/openidm/external/idm/remote/managed/user/bjensen");
    let post = gw.url("/openidm/external/idm/remote/managed/user?_action=create");
    let clients = [
        (Kind::KeepAliveGet, &local),
        (Kind::KeepAliveGet, &local),
        (Kind::KeepAliveGet, &proxied),
        (Kind::KeepAliveGet, &proxied),
        (Kind::NewConnectionGet, &local),
        (Kind::NewConnectionGet, &proxied),
        (Kind::NewConnectionPost, &post),
        (Kind::NewConnectionPost, &post),
    ];
    let mut tasks = Vec::new();
    for (kind, url) in clients {
        tasks.push(tokio::spawn(load(
            kind,
            url.clone(),
            gw.admin_password().to_string(),
            stop.clone(),
            tally.clone(),
        )));
    }

    let sock = gw.upgrade_sock();
    let log = gw.log_path();
    let mut draining: Vec<Child> = Vec::new();
    for i in 0..UPGRADES {
        // Some traffic on each process before it is replaced.
        let seen = tally.total.load(Ordering::SeqCst);
        wait_until("the load generator ran", &mut gw, || {
            tally.total.load(Ordering::SeqCst) >= seen + 20
        })
        .await;
        let mut old = gw.spawn_upgrade();
        // The new process built itself and waits for the listeners...
        wait_until(
            "the new process waits on the upgrade socket",
            &mut gw,
            || sock.exists(),
        )
        .await;
        if let Some(status) = old.try_wait().unwrap() {
            panic!("the serving process exited ({status}); log:\n{}", gw.logs());
        }
        // ...the old one hands them over on SIGQUIT; the new one serves with them.
        signal(old.id(), "QUIT");
        let serving = format!("idm-gateway serving pid={}", gw.pid());
        wait_until("the listeners are handed over", &mut gw, || {
            !sock.exists()
                && std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(&serving)
        })
        .await;
        draining.push(old);
        eprintln!("upgrade {}: handed over", i + 1);
    }

    // Every old process drains and exits by itself, cleanly.
    for mut old in draining {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let status = loop {
            if let Some(status) = old.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = old.kill();
                panic!("an old process did not exit; log:\n{}", gw.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            status.success(),
            "an old process exited {status}; log:\n{}",
            gw.logs()
        );
    }
    // More load on the last process alone, then stop.
    let seen = tally.total.load(Ordering::SeqCst);
    wait_until("the last process served", &mut gw, || {
        tally.total.load(Ordering::SeqCst) >= seen + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let total = tally.total.load(Ordering::SeqCst);
    let failed = tally.failed.load(Ordering::SeqCst);
    let retried = tally.retried.load(Ordering::SeqCst);
    eprintln!(
        "upgrade under load: {failed}/{total} requests failed across {UPGRADES} upgrades \
         ({retried} idempotent GETs retried after their idle connection was closed)"
    );
    assert_eq!(
        failed,
        0,
        "failed requests: {:#?}\nlog:\n{}",
        tally.errors.lock().unwrap(),
        gw.logs()
    );
    // Not one POST lost or sent twice on the way to the remote.
    let posts_seen = remote
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts_seen, tally.posts_ok.load(Ordering::SeqCst));
    // The last process serves, and it is the only one left.
    assert!(gw.is_running());
    let ping = gw.get("/openidm/info/ping").send().await.unwrap();
    assert_eq!(ping.status(), 200);
    let logs = gw.logs();
    assert!(
        logs.matches("handing the listeners over").count() >= UPGRADES,
        "each old process drained"
    );
    // The first process owned the data directory: its scheduler stopped at the handover
    // (the ones in between never started theirs: replaced before their predecessor exited).
    assert!(logs.contains("scheduler stopped: the process is draining"));
    // Its predecessors gone, the last process owns the data directory (recovery, scheduler).
    let owner = format!(
        "the previous process exited: this one owns the data directory pid={}",
        gw.pid()
    );
    assert!(gw.wait_for_log(&owner, STEP_TIMEOUT).await, "{owner}");
}

/// The data directory's owner: a second gateway on it is refused, and `--upgrade` without a
/// gateway to take over from is refused too (instead of waiting for one).
#[tokio::test]
async fn one_gateway_per_data_directory() {
    let gw = Gateway::start().await;
    let second = |upgrade: bool, data: &std::path::Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_idm-gateway"));
        cmd.arg("--conf")
            .arg(gw.conf_dir())
            .arg("--data")
            .arg(data)
            .arg("--certs")
            .arg(gw.certs_dir())
            .args(["--listen", &format!("127.0.0.1:{}", common::free_port())]);
        if upgrade {
            cmd.arg("--upgrade");
        }
        let out = cmd.output().expect("run a second gateway");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, log) = second(false, &gw.data_dir());
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("another idm-gateway runs on the data directory") && log.contains("--upgrade"),
        "{log}"
    );
    let empty = tempfile::tempdir().unwrap();
    let (status, log) = second(true, empty.path());
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("no idm-gateway runs on the data directory"),
        "{log}"
    );
    // The first one was not disturbed.
    let ping = gw.get("/openidm/info/ping").send().await.unwrap();
    assert_eq!(ping.status(), 200);
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_and_refuses_new_connections() {
    let remote = RecordingUpstream::start();
    let mut gw = Gateway::builder()
        .conf_file(
            "external.idm-remote",
            basic_instance(&remote.url(), "admin", "secret"),
        )
        .arg("--shutdown-grace-seconds")
        .arg("4")
        .start()
        .await;
    remote.set_delay(Duration::from_millis(1500));

    let slow = tokio::spawn(
        gw.get("/openidm/external/idm/remote/managed/user/slow")
            .timeout(Duration::from_secs(20))
            .send(),
    );
    assert!(remote.wait_for_count(1, Duration::from_secs(10)).await);
    let addr = gw.addr;
    let pid = gw.pid();
    signal(pid, "TERM");

    let answer = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close"),
        "a draining process does not keep the connection"
    );
    // The listeners are closed: a new connection is refused (the process may still be
    // in its grace period here, or gone).
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a new connection was accepted after SIGTERM"
    );
    // The process exits by itself within the grace (plus a margin for a shared machine).
    let status = gw
        .terminate(Duration::from_secs(4 + 10))
        .await
        .expect("the gateway exits by itself after its grace");
    assert!(status.success(), "{status}");
    assert!(gw.logs().contains("stopping; draining"));
}
