//! Remotes that die: `failoverUrls`, passive and active health, the circuit that answers 503
//! while every URL is down, and pooled connections a remote closed.
//!
//! Failures are counted, never timed: waits are `eventually` polls or fixed pauses that
//! only give a remote time to do its part.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// An instance with `urls[0]` as `instanceUrl` and the rest as `failoverUrls`.
fn instance(urls: &[String], health: Value) -> Value {
    let mut doc = basic_instance(&urls[0], "svc", "remote-pw-9");
    doc["failoverUrls"] = json!(urls[1..]);
    doc["health"] = health;
    doc["connectTimeout"] = json!(2000);
    doc
}

/// A URL where nothing listens (yet).
fn closed_url() -> (u16, String) {
    let port = free_port();
    (port, format!("http://127.0.0.1:{port}/openidm/"))
}

async fn metrics(gw: &Gateway) -> String {
    gw.get("/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of `idm_gateway_remote_url_up{instance,url}`, if exported.
fn url_up(metrics: &str, instance: &str, url: &str) -> Option<i64> {
    let prefix = format!("idm_gateway_remote_url_up{{instance=\"{instance}\",url=\"{url}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

fn failovers(metrics: &str, instance: &str) -> u64 {
    let prefix = format!("idm_gateway_remote_failovers_total{{instance=\"{instance}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_first_url_fails_over_to_the_next_for_every_method() {
    let (_, dead) = closed_url();
    let b = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file(
            "external.idm-dc",
            instance(&[dead.clone(), b.url()], json!({"downForMs": 600000})),
        )
        .start()
        .await;

    let (status, body) = send(
        &gw,
        Method::GET,
        "/openidm/external/idm/dc/managed/user/1",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uri"], "/openidm/managed/user/1");
    // A failed connect sent nothing: a POST moves on too, and arrives once.
    let (status, body) = send(
        &gw,
        Method::POST,
        "/openidm/external/idm/dc/managed/user?_action=create",
        Some(json!({"userName": "once"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(b.count(), 2);
    assert_eq!(b.requests()[1].method, "POST");

    let m = metrics(&gw).await;
    assert_eq!(url_up(&m, "dc", &dead), Some(0), "{m}");
    assert_eq!(url_up(&m, "dc", &b.url()), Some(1), "{m}");
    assert_eq!(
        failovers(&m, "dc"),
        1,
        "only the first request met the dead URL: {m}"
    );
    assert!(!m.contains("remote-pw-9"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_url_down_is_a_503_without_connecting_and_a_url_recovers_after_down_for() {
    let (open_port, open_url) = closed_url();
    let (short_port, short_url) = closed_url();
    let gw = Gateway::builder()
        // Down for ten minutes: the circuit stays open for the whole test.
        .conf_file(
            "external.idm-open",
            instance(&[open_url], json!({"downForMs": 600000})),
        )
        // Down for 300 ms: then one request tries it again.
        .conf_file(
            "external.idm-short",
            instance(std::slice::from_ref(&short_url), json!({"downForMs": 300})),
        )
        .start()
        .await;
    let path = |name: &str| format!("/openidm/external/idm/{name}/managed/user/1");

    for name in ["open", "short"] {
        let (status, body) = send(&gw, Method::GET, &path(name), None).await;
        assert_eq!(status, 502, "{name}: {body}");
        assert_eq!(
            body["message"],
            format!("Remote instance '{name}' refused the connection")
        );
    }
    // The remotes come back; the gateway does not know yet.
    let open = RecordingUpstream::start_on(open_port);
    let short = RecordingUpstream::start_on(short_port);

    let (status, body) = send(&gw, Method::POST, &path("open"), Some(json!({}))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({"code": 503, "reason": "Service Unavailable",
               "message": "Remote instance 'open' is unavailable"})
    );
    assert_eq!(open.connections(), 0, "an open circuit never connects");

    assert!(
        eventually(WAIT, || async {
            send(&gw, Method::GET, &path("short"), None).await.0 == 200
        })
        .await,
        "the URL is tried again after downForMs"
    );
    assert!(short.count() >= 1);
    let m = metrics(&gw).await;
    assert_eq!(url_up(&m, "short", &short_url), Some(1), "{m}");
    assert!(
        m.contains(r#"idm_gateway_upstream_errors_total{instance="open",kind="unavailable"} 1"#),
        "{m}"
    );
    assert_eq!(open.connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn active_checks_mark_a_dead_url_down_before_any_request() {
    let (_, dead) = closed_url();
    let b = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file(
            "external.idm-dc",
            instance(
                &[dead.clone(), b.url()],
                json!({"downForMs": 600000, "checkIntervalMs": 200}),
            ),
        )
        .start()
        .await;

    assert!(
        eventually(WAIT, || async {
            url_up(&metrics(&gw).await, "dc", &dead) == Some(0)
        })
        .await,
        "the check finds the dead URL"
    );
    // The checks ping the live URL with the instance's credentials.
    assert!(eventually(WAIT, || async { b.count() >= 1 }).await);
    let ping = b.requests()[0].clone();
    assert_eq!(ping.uri, "/openidm/info/ping");
    assert_eq!(
        token::decode_basic(ping.header("authorization").unwrap()),
        Some(("svc".into(), "remote-pw-9".into()))
    );

    let (status, body) = send(
        &gw,
        Method::GET,
        "/openidm/external/idm/dc/managed/user/7",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let m = metrics(&gw).await;
    assert_eq!(
        failovers(&m, "dc"),
        0,
        "the request went to the live URL first: {m}"
    );
    assert_eq!(url_up(&m, "dc", &b.url()), Some(1), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_primary_under_load_fails_no_get_and_replays_no_post() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 60;
    let mut a = RecordingUpstream::start();
    // Answers take a moment, so some requests are in flight when the primary dies.
    a.set_delay(Duration::from_millis(5));
    let b = RecordingUpstream::start();
    let gw = Arc::new(
        Gateway::builder()
            .conf_file(
                "external.idm-dc",
                instance(&[a.url(), b.url()], json!({"downForMs": 600000})),
            )
            .start()
            .await,
    );

    let failed_gets = Arc::new(AtomicUsize::new(0));
    let failed_posts = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let gw = gw.clone();
        let (failed_gets, failed_posts) = (failed_gets.clone(), failed_posts.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..PER_CLIENT {
                if i % 2 == 0 {
                    let r = gw
                        .get("/openidm/external/idm/dc/managed/user/g")
                        .send()
                        .await;
                    if !r.is_ok_and(|r| r.status() == 200) {
                        failed_gets.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    let r = gw
                        .post("/openidm/external/idm/dc/managed/user?_action=create")
                        .header("content-type", "application/json")
                        .body(format!(r#"{{"userName":"c{c}-{i}"}}"#))
                        .send()
                        .await;
                    if !r.is_ok_and(|r| r.status() == 200) {
                        failed_posts.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // Kill the primary once a third of the load has reached it.
    assert!(a.wait_for_count(CLIENTS * PER_CLIENT / 3, WAIT).await);
    a.kill();
    for c in clients {
        c.await.unwrap();
    }

    let failed_gets = failed_gets.load(Ordering::SeqCst);
    let failed_posts = failed_posts.load(Ordering::SeqCst);
    // Each POST body is unique: none may have reached the remotes twice.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in a.requests().iter().chain(b.requests().iter()) {
        if r.method == "POST" && r.body_complete {
            *seen.entry(r.body_sha256.clone()).or_default() += 1;
        }
    }
    let replayed = seen.values().filter(|&&n| n > 1).count();
    eprintln!(
        "killed primary under load: {} requests, {} to the primary, {} to the secondary, \
         failed GETs {failed_gets}, failed POSTs {failed_posts}, replayed POSTs {replayed}",
        CLIENTS * PER_CLIENT,
        a.count(),
        b.count()
    );
    assert_eq!(failed_gets, 0, "a GET moves on to the next URL");
    assert_eq!(
        replayed, 0,
        "a POST the remote may have read is never sent again"
    );
    assert!(b.count() > 0);
    // A POST fails only when it was in flight on the primary: at most one per client.
    assert!(failed_posts <= CLIENTS, "{failed_posts} POSTs failed");
    let m = metrics(&gw).await;
    assert_eq!(url_up(&m, "dc", &a.url()), Some(0), "{m}");
    assert!(failovers(&m, "dc") >= 1, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_after_the_remote_closed_an_idle_connection_is_not_a_502() {
    // The remote drops connections idle for 100 ms; the gateway's pool keeps them 60 s.
    let remote = IdleClosingUpstream::start(Duration::from_millis(100));
    let gw = Gateway::builder()
        .conf_file(
            "external.idm-dc",
            basic_instance(&remote.url(), "svc", "pw"),
        )
        .start()
        .await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (status, body) = send(
            &gw,
            Method::POST,
            "/openidm/external/idm/dc/managed/user?_action=create",
            Some(json!({"userName": format!("u{i}")})),
        )
        .await;
        statuses.push((status, body));
        // Longer than the remote keeps an idle connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    let bodies = remote.bodies();
    assert_eq!(
        bodies.len(),
        6,
        "each POST arrives exactly once: {bodies:?}"
    );
    assert!(
        remote.connections() >= 2,
        "the remote did close idle connections (a new one per POST)"
    );
}
