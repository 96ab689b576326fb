//! Hot reload of conf files and certs, and the /openidm/config endpoint that writes them.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Changes are live within 1 s; tests allow 3 s so a busy machine does not fail them.
const LIVE: Duration = Duration::from_secs(3);

async fn status(gw: &Gateway, path: &str) -> u16 {
    gw.get(path)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
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

#[tokio::test(flavor = "multi_thread")]
async fn add_change_rename_and_delete_are_live() {
    let one = RecordingUpstream::start();
    let two = RecordingUpstream::start();
    let gw = Gateway::builder().start().await;
    let path = "/openidm/external/idm/a/managed/user";
    assert_eq!(status(&gw, path).await, 404);

    let t = Instant::now();
    gw.write_conf("external.idm-a", &basic_instance(&one.url(), "u", "p"));
    assert!(eventually(LIVE, || async { status(&gw, path).await == 200 }).await);
    eprintln!("add live after {:?}", t.elapsed());
    assert_eq!(one.count(), 1);

    // Change: same name, other remote.
    gw.write_conf("external.idm-a", &basic_instance(&two.url(), "u", "p"));
    assert!(
        eventually(LIVE, || async {
            status(&gw, path).await == 200 && two.count() > 0
        })
        .await
    );

    // Rename: the old name disappears, the new one appears.
    std::fs::rename(
        gw.conf_dir().join("external.idm-a.json"),
        gw.conf_dir().join("external.idm-b.json"),
    )
    .unwrap();
    assert!(
        eventually(LIVE, || async {
            status(&gw, path).await == 404
                && status(&gw, "/openidm/external/idm/b/managed/user").await == 200
        })
        .await
    );

    // Delete.
    gw.remove_conf("external.idm-b");
    assert!(
        eventually(LIVE, || async {
            status(&gw, "/openidm/external/idm/b/managed/user").await == 404
        })
        .await
    );
    // Editor-style replace: write a temp file, then rename over the target.
    let tmp = gw.conf_dir().join(".external.idm-c.json.swp");
    std::fs::write(&tmp, basic_instance(&one.url(), "u", "p").to_string()).unwrap();
    std::fs::rename(&tmp, gw.conf_dir().join("external.idm-c.json")).unwrap();
    assert!(
        eventually(LIVE, || async {
            status(&gw, "/openidm/external/idm/c/managed/user").await == 200
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_keeps_the_last_good_version() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.idm-a", basic_instance(&up.url(), "u", "p"))
        .start()
        .await;
    let path = "/openidm/external/idm/a/managed/user";
    assert_eq!(status(&gw, path).await, 200);

    gw.write_conf_bytes(
        "external.idm-a.json",
        br#"{"authType": "basic", "instanceUrl": "#,
    );
    assert!(
        gw.wait_for_log("config rejected", LIVE).await,
        "{}",
        gw.logs()
    );
    assert_eq!(status(&gw, path).await, 200, "last good version stays live");

    // Valid JSON, invalid content: every problem is reported.
    gw.write_conf(
        "external.idm-a",
        &json!({"authType": "digest", "instanceUrl": "ftp://x"}),
    );
    assert!(
        eventually(LIVE, || async {
            let list: Value = gw
                .get("/openidm/config")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            list["configurations"].as_array().unwrap().iter().any(|c| {
                c["_id"] == "external.idm/a"
                    && c["problems"].as_array().is_some_and(|p| p.len() == 2)
            })
        })
        .await
    );
    assert_eq!(status(&gw, path).await, 200);
    let logs = gw.logs();
    assert!(
        logs.contains("authType: 'digest' is not supported"),
        "{logs}"
    );
    assert!(
        logs.contains("instanceUrl: must be an http or https URL"),
        "{logs}"
    );
    let m = metrics(&gw).await;
    assert!(
        m.contains(r#"idm_gateway_config_reloads_total{outcome="rejected"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"idm_gateway_instances{state="invalid"} 1"#),
        "{m}"
    );

    // A new file that is broken from the start defines nothing.
    gw.write_conf_bytes("external.idm-new.json", b"not json");
    assert!(gw.wait_for_log("external.idm/new", LIVE).await);
    assert_eq!(status(&gw, "/openidm/external/idm/new/x").await, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_fails_no_request() {
    let one = RecordingUpstream::start();
    let two = RecordingUpstream::start();
    let gw = Arc::new(
        Gateway::builder()
            .conf_file("external.idm-a", basic_instance(&one.url(), "u", "p"))
            .start()
            .await,
    );
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (gw, failures, done) = (gw.clone(), failures.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let s = status(&gw, "/openidm/external/idm/a/managed/user").await;
                if s != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let mut rewrites = 0;
    while Instant::now() < deadline {
        let url = if rewrites % 2 == 0 {
            two.url()
        } else {
            one.url()
        };
        gw.write_conf(
            "external.idm-a",
            &basic_instance(&url, "u", &format!("p{rewrites}")),
        );
        rewrites += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    let done = done.load(Ordering::SeqCst);
    eprintln!("{done} requests during {rewrites} rewrites");
    assert!(done > 100, "only {done} requests");
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert!(
        one.count() > 0 && two.count() > 0,
        "both configs served traffic"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_changes_are_live_and_pooled_connections_are_not_reused() {
    let pki = TestPki::new();
    let up = RecordingUpstream::start_tls(pki.server_config());
    let gw = Gateway::builder()
        .conf_file(
            "external.idm-tls",
            basic_instance(
                &format!("https://127.0.0.1:{}/openidm/", up.port()),
                "u",
                "p",
            ),
        )
        .start()
        .await;
    let path = "/openidm/external/idm/tls/managed/user";
    assert_eq!(status(&gw, path).await, 502, "CA not trusted yet");

    gw.write_cert("test-ca", &pki.ca_pem());
    assert!(eventually(LIVE, || async { status(&gw, path).await == 200 }).await);

    // Trust withdrawn: the pooled connection made under the old trust must not be reused.
    std::fs::remove_file(gw.certs_dir().join("test-ca.pem")).unwrap();
    assert!(eventually(LIVE, || async { status(&gw, path).await == 502 }).await);
    let served = up.count();
    for _ in 0..5 {
        assert_eq!(status(&gw, path).await, 502);
    }
    assert_eq!(
        up.count(),
        served,
        "no request may reach the remote without trust"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_endpoint_lists_reads_writes_and_deletes() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder().start().await;

    // PUT creates the file and makes it live at once.
    let doc = basic_instance(&up.url(), "u", "&{IDM_GW_TEST_UNSET|from-default}");
    let resp = gw
        .put("/openidm/config/external.idm/new")
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["_id"], "external.idm/new");
    assert_eq!(
        status(&gw, "/openidm/external/idm/new/managed/user").await,
        200
    );
    let r = up.last().unwrap();
    assert_eq!(
        r.header("authorization"),
        Some("Basic dTpmcm9tLWRlZmF1bHQ="),
        "&{{…}} substitution with default"
    );
    // The stored file keeps the reference, not the value.
    let stored = std::fs::read_to_string(gw.conf_dir().join("external.idm-new.json")).unwrap();
    assert!(stored.contains("&{IDM_GW_TEST_UNSET|from-default}"));

    let list: Value = gw
        .get("/openidm/config")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["_id"], "");
    let entry = list["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["_id"] == "external.idm/new")
        .cloned()
        .unwrap();
    assert_eq!(entry["factoryPid"], "external.idm");
    assert!(entry["pid"].as_str().unwrap().starts_with("external.idm."));

    let read: Value = gw
        .get("/openidm/config/external.idm/new")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["_id"], "external.idm/new");
    assert_eq!(read["instanceUrl"], up.url());

    // An invalid PUT is refused with every problem, and nothing is written.
    let resp = gw
        .put("/openidm/config/external.idm/new")
        .json(&json!({"authType": "basic", "instanceUrl": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(
        err["detail"]["problems"].as_array().unwrap().len(),
        3,
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(gw.conf_dir().join("external.idm-new.json")).unwrap(),
        stored
    );
    for (body, ct) in [
        ("not json", "application/json"),
        ("{}", "text/plain"),
        ("[1]", "application/json"),
    ] {
        let resp = gw
            .put("/openidm/config/external.idm/new")
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body} {ct}");
    }
    let resp = gw
        .put("/openidm/config/a/b/c")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Callers other than an admin get nothing; anonymous callers are not authenticated.
    let resp = gw
        .anon(reqwest::Method::GET, "/openidm/config")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let resp = gw
        .delete("/openidm/config/external.idm/new")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        status(&gw, "/openidm/external/idm/new/managed/user").await,
        404
    );
    let resp = gw
        .delete("/openidm/config/external.idm/new")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = gw
        .get("/openidm/config/external.idm/new")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn info_and_metrics() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.idm-a", basic_instance(&up.url(), "u", "p"))
        .start()
        .await;
    assert_eq!(status(&gw, "/openidm/external/idm/a/x").await, 200);
    let version: Value = gw
        .get("/openidm/info/version")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["_id"], "version");
    assert!(version["productVersion"].is_string());
    assert_eq!(status(&gw, "/openidm/nothing").await, 404);
    assert_eq!(status(&gw, "/elsewhere").await, 404);

    let resp = gw
        .anon(reqwest::Method::GET, "/openidm/metrics/prometheus")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let m = metrics(&gw).await;
    for needle in [
        r#"idm_gateway_requests_total{instance="a",method="GET",status="200"} 1"#,
        r#"idm_gateway_request_duration_seconds_bucket{instance="a""#,
        r#"idm_gateway_instances{state="enabled"} 1"#,
        r#"idm_gateway_config_reloads_total{outcome="applied"}"#,
        "process_resident_memory_bytes",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    assert!(!m.contains("Basic dTpw"));
    // One access-log line per request, without the query string.
    let _ = gw
        .get("/openidm/external/idm/a/x?password=hunter2")
        .send()
        .await
        .unwrap();
    assert!(gw.wait_for_log("/openidm/external/idm/a/x", LIVE).await);
    assert!(!gw.logs().contains("hunter2"));
}

/// A Kubernetes ConfigMap/Secret volume in `dir`, laid out as the kubelet's atomic writer
/// does: the files in `..<timestamp>/`, `..data -> ..<timestamp>`, and each visible file a
/// symlink `name -> ..data/name`. Each [`KubeVolume::update`] writes a new timestamped
/// directory, points `..data_tmp` at it, renames `..data_tmp` over `..data` (the atomic
/// swap) and removes the old directory: the visible symlinks never change.
struct KubeVolume {
    dir: std::path::PathBuf,
    current: Option<String>,
    generation: usize,
}

impl KubeVolume {
    fn create(dir: &std::path::Path, files: &[(&str, Vec<u8>)]) -> Self {
        let mut v = KubeVolume {
            dir: dir.to_owned(),
            current: None,
            generation: 0,
        };
        v.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        v
    }

    fn update(&mut self, files: &[(&str, Vec<u8>)]) {
        self.generation += 1;
        let ts = format!(
            "..2026_12_03_08_30_{:02}.{}",
            self.generation,
            100_000 + self.generation
        );
        std::fs::create_dir(self.dir.join(&ts)).unwrap();
        for (name, bytes) in files {
            std::fs::write(self.dir.join(&ts).join(name), bytes).unwrap();
        }
        std::os::unix::fs::symlink(&ts, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        if let Some(old) = self.current.replace(ts) {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn conf_files_in_a_kubernetes_configmap_volume_are_read_and_watched() {
    let one = RecordingUpstream::start();
    let two = RecordingUpstream::start();
    let mut gw = Gateway::start().await;
    let path = "/openidm/external/idm/a/managed/user";
    assert_eq!(status(&gw, path).await, 404);

    let mut volume = KubeVolume::create(
        &gw.conf_dir(),
        &[(
            "external.idm-a.json",
            json_bytes(&basic_instance(&one.url(), "u", "p")),
        )],
    );
    assert!(eventually(LIVE, || async { status(&gw, path).await == 200 }).await);
    assert_eq!(one.count(), 1);
    let (code, read) = json_of(
        gw.get("/openidm/config/external.idm/a")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{read}");
    assert_eq!(read["instanceUrl"], one.url());

    // The ConfigMap changes: only `..data` is swapped; `external.idm-a.json` itself (the
    // symlink) is untouched.
    volume.update(&[(
        "external.idm-a.json",
        json_bytes(&basic_instance(&two.url(), "u", "p")),
    )]);
    assert!(
        eventually(LIVE, || async {
            status(&gw, path).await == 200 && two.count() > 0
        })
        .await,
        "{}",
        gw.logs()
    );

    // A start reads the symlinked files too.
    gw.restart().await;
    assert_eq!(status(&gw, path).await, 200);
    assert_eq!(two.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn certs_in_a_kubernetes_secret_volume_are_read_and_watched() {
    let pki = TestPki::new();
    let up = RecordingUpstream::start_tls(pki.server_config());
    let gw = Gateway::builder()
        .conf_file(
            "external.idm-tls",
            basic_instance(
                &format!("https://127.0.0.1:{}/openidm/", up.port()),
                "u",
                "p",
            ),
        )
        .start()
        .await;
    let path = "/openidm/external/idm/tls/managed/user";
    assert_eq!(status(&gw, path).await, 502, "CA not trusted yet");

    let mut volume = KubeVolume::create(&gw.certs_dir(), &[("ca.pem", pki.ca_pem().into_bytes())]);
    assert!(
        eventually(LIVE, || async { status(&gw, path).await == 200 }).await,
        "{}",
        gw.logs()
    );

    // The Secret is rotated to another CA by swapping `..data`: the old trust is gone.
    volume.update(&[("ca.pem", pki.other_ca_pem().into_bytes())]);
    assert!(
        eventually(LIVE, || async { status(&gw, path).await == 502 }).await,
        "{}",
        gw.logs()
    );
    // And back.
    volume.update(&[("ca.pem", pki.ca_pem().into_bytes())]);
    assert!(
        eventually(LIVE, || async { status(&gw, path).await == 200 }).await,
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_cert_file_is_reported_and_the_last_good_trust_stays_live() {
    let pki = TestPki::new();
    let up = RecordingUpstream::start_tls(pki.server_config());
    let gw = Gateway::builder()
        .conf_file(
            "external.idm-tls",
            basic_instance(
                &format!("https://127.0.0.1:{}/openidm/", up.port()),
                "u",
                "p",
            ),
        )
        .cert("test-ca", &pki.ca_pem())
        .start()
        .await;
    let path = "/openidm/external/idm/tls/managed/user";
    assert_eq!(status(&gw, path).await, 200);

    // Half-written, then garbage: each is reported, and the CA stays trusted.
    let pem = pki.ca_pem();
    gw.write_cert("test-ca", &pem[..pem.len() / 2]);
    assert!(
        eventually(LIVE, || async {
            metrics(&gw)
                .await
                .contains(r#"idm_gateway_config_reloads_total{outcome="rejected"} 1"#)
        })
        .await,
        "{}",
        gw.logs()
    );
    assert!(
        gw.logs().contains("test-ca.pem: unreadable PEM"),
        "{}",
        gw.logs()
    );
    assert_eq!(
        status(&gw, path).await,
        200,
        "the last good trust stays live"
    );
    gw.write_cert("test-ca", "not a certificate");
    assert!(gw.wait_for_log("no certificate in the file", LIVE).await);
    assert_eq!(status(&gw, path).await, 200);

    // A good change is applied.
    gw.write_cert("test-ca", &pki.other_ca_pem());
    assert!(eventually(LIVE, || async { status(&gw, path).await == 502 }).await);
}
