use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::repo::sqlite::SqliteRepo;

struct Counting {
    calls: Mutex<Vec<String>>,
    fail: bool,
}

#[async_trait::async_trait]
impl NodeRecovery for Counting {
    fn what(&self) -> &'static str {
        "test work"
    }
    async fn recover_node(&self, node: &str) -> Result<usize, String> {
        self.calls.lock().unwrap().push(node.to_owned());
        if self.fail {
            Err("the store is down".into())
        } else {
            Ok(1)
        }
    }
}

fn config(id: &str) -> ClusterConfig {
    ClusterConfig {
        instance_timeout: Duration::from_millis(2_000),
        recovery_timeout: Duration::from_millis(2_000),
        check_in_interval: Duration::from_millis(100),
        ..ClusterConfig::defaults(id)
    }
}

/// Makes `id`'s record look `ago_ms` old, as if the node stopped checking in then (its
/// timestamp, which the REST view shows).
async fn backdate(repo: &Arc<dyn Repo>, id: &str, ago_ms: i64) {
    let rec = repo.read(STATES, id).await.unwrap().unwrap();
    let mut c = rec.content;
    c.insert("timestamp".into(), json!(now_ms() - ago_ms));
    repo.update(STATES, id, None, c, Default::default())
        .await
        .unwrap();
}

/// Makes `observer` have seen `id`'s record as it is now, unchanged for `ago_ms` by its own
/// clock: what detection goes by.
async fn seen_silent(observer: &Cluster, id: &str, ago_ms: u64) {
    let records = observer.records().await.unwrap();
    observer.unchanged_for(&records);
    let mut seen = observer.seen.lock().unwrap();
    let since = &mut seen.get_mut(id).unwrap().1;
    *since = since
        .checked_sub(Duration::from_millis(ago_ms))
        .expect("the machine is up longer than that");
}

/// Both: the node stopped checking in `ago_ms` ago.
async fn silence(observer: &Cluster, repo: &Arc<dyn Repo>, id: &str, ago_ms: u64) {
    backdate(repo, id, ago_ms as i64).await;
    seen_silent(observer, id, ago_ms).await;
}

#[tokio::test]
async fn a_silent_node_is_shown_down_and_recovered_once_by_one_survivor() {
    let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
    let a = Cluster::new(config("a"), repo.clone(), None);
    let b = Cluster::new(config("b"), repo.clone(), None);
    let c = Cluster::new(config("c"), repo.clone(), None);
    let seen_by_a = Arc::new(Counting {
        calls: Mutex::new(Vec::new()),
        fail: false,
    });
    let seen_by_c = Arc::new(Counting {
        calls: Mutex::new(Vec::new()),
        fail: false,
    });
    a.on_node_down(seen_by_a.clone());
    c.on_node_down(seen_by_c.clone());
    for n in [&a, &b, &c] {
        n.register().await.unwrap();
    }
    // Everybody checked in just now: nobody is dead.
    assert!(a.detect().await.unwrap().is_empty());
    assert_eq!(a.running().await.unwrap(), ["a", "b", "c"]);

    // Seen unchanged for a moment only: not silent yet.
    seen_silent(&a, "b", 500).await;
    assert!(a.detect().await.unwrap().is_empty());
    silence(&a, &repo, "b", 5_000).await;
    // Shown down at once, before anyone recovered it.
    let b_view = a.get("b").await.unwrap().unwrap();
    assert_eq!(b_view["state"], "down", "{b_view}");
    assert!(b_view.get("recovery").is_none(), "{b_view}");

    assert_eq!(a.detect().await.unwrap(), ["b"]);
    // The second survivor finds it recovered already.
    assert!(c.detect().await.unwrap().is_empty());
    assert_eq!(*seen_by_a.calls.lock().unwrap(), ["b"]);
    assert!(seen_by_c.calls.lock().unwrap().is_empty());
    let b_view = c.get("b").await.unwrap().unwrap();
    assert_eq!(b_view["state"], "down");
    assert_eq!(b_view["recovery"]["recoveredBy"], "a");
    assert_eq!(b_view["recovery"]["recoveryAttempts"], 1);
    assert!(
        b_view["recovery"]["recoveryFinished"].is_string(),
        "{b_view}"
    );
    assert!(b_view["recovery"].get("recoveryStartedMillis").is_none());

    // B comes back: it checks in and is running again, its old recovery gone.
    b.check_in().await.unwrap();
    let b_view = a.get("b").await.unwrap().unwrap();
    assert_eq!(b_view["state"], "running", "{b_view}");
    assert!(b_view.get("recovery").is_none());
    assert!(a.detect().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_recovery_is_taken_over_after_the_recovery_timeout() {
    let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
    let a = Cluster::new(config("a"), repo.clone(), None);
    let b = Cluster::new(config("b"), repo.clone(), None);
    let c = Cluster::new(config("c"), repo.clone(), None);
    let failing = Arc::new(Counting {
        calls: Mutex::new(Vec::new()),
        fail: true,
    });
    let working = Arc::new(Counting {
        calls: Mutex::new(Vec::new()),
        fail: false,
    });
    a.on_node_down(failing.clone());
    c.on_node_down(working.clone());
    for n in [&a, &b, &c] {
        n.register().await.unwrap();
    }
    silence(&a, &repo, "b", 5_000).await;
    assert!(a.detect().await.unwrap().is_empty(), "A's recovery failed");
    assert_eq!(
        a.get("b").await.unwrap().unwrap()["state"],
        "processing-down"
    );
    // Within the recovery timeout nobody else starts over.
    assert!(c.detect().await.unwrap().is_empty());
    assert!(working.calls.lock().unwrap().is_empty());
    // Past it (the record left as A's failed recovery wrote it), C does.
    seen_silent(&c, "b", 5_000).await;
    assert_eq!(c.detect().await.unwrap(), ["b"]);
    let b_view = c.get("b").await.unwrap().unwrap();
    assert_eq!(b_view["state"], "down");
    assert_eq!(b_view["recovery"]["recoveredBy"], "c");
    assert_eq!(b_view["recovery"]["recoveryAttempts"], 2);
}

#[tokio::test]
async fn a_clean_stop_is_down_with_a_shutdown_time_and_no_recovery() {
    let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
    let a = Cluster::new(config("a"), repo.clone(), None);
    let b = Cluster::new(config("b"), repo.clone(), None);
    let calls = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    #[async_trait::async_trait]
    impl NodeRecovery for Count {
        fn what(&self) -> &'static str {
            "count"
        }
        async fn recover_node(&self, _: &str) -> Result<usize, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(0)
        }
    }
    a.on_node_down(Arc::new(Count(calls.clone())));
    a.register().await.unwrap();
    b.register().await.unwrap();
    b.leave().await.unwrap();
    silence(&a, &repo, "b", 5_000).await;
    assert!(a.detect().await.unwrap().is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let v = a.get("b").await.unwrap().unwrap();
    assert_eq!(v["state"], "down");
    assert!(v["shutdown"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert!(v.get("recovery").is_none());
}

#[test]
fn cluster_json_is_idms_format() {
    let c = ClusterConfig::parse(
        &json!({"instanceId": "&{openidm.node.id}", "instanceTimeout": "30000",
                "instanceRecoveryTimeout": 20000, "instanceCheckInInterval": "5000",
                "instanceCheckInOffset": "0", "enabled": true}),
        "dc1-a",
    )
    .unwrap();
    assert_eq!(c.instance_id, "dc1-a");
    assert_eq!(c.instance_timeout, Duration::from_secs(30));
    assert_eq!(c.recovery_timeout, Duration::from_secs(20));
    assert_eq!(c.check_in_interval, Duration::from_secs(5));
    assert_eq!(
        ClusterConfig::parse(&json!({}), "n").unwrap(),
        ClusterConfig::defaults("n")
    );
    for (bad, says) in [
        (json!({"instanceTimeout": "soon"}), "instanceTimeout"),
        (
            json!({"instanceTimeout": 1000, "instanceCheckInInterval": 5000}),
            "longer than",
        ),
        (
            json!({"instanceTimeout": 9000, "instanceCheckInInterval": 5000}),
            "twice",
        ),
        (json!({"instanceCheckInInterval": 0}), "above 0"),
        (json!({"instanceId": ""}), "instanceId"),
        (json!({"enabled": "yes"}), "enabled"),
    ] {
        let e = ClusterConfig::parse(&bad, "n").unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_node_whose_clock_is_behind_is_not_taken_for_dead() {
    let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
    let a = Cluster::new(config("a"), repo.clone(), None);
    let b = Cluster::new(config("b"), repo.clone(), None);
    a.register().await.unwrap();
    b.register().await.unwrap();
    assert!(a.detect().await.unwrap().is_empty());
    // B's clock is a minute behind A's: its check-ins carry old timestamps, but they keep
    // coming, and that is what A goes by.
    for _ in 0..3 {
        backdate(&repo, "b", 60_000).await;
        assert!(a.detect().await.unwrap().is_empty());
    }
    assert_eq!(
        repo.read(STATES, "b").await.unwrap().unwrap().content["state"],
        json!(RUNNING)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_recovery_does_not_hold_up_the_recovering_nodes_heartbeat() {
    struct Slow;
    #[async_trait::async_trait]
    impl NodeRecovery for Slow {
        fn what(&self) -> &'static str {
            "slow work"
        }
        async fn recover_node(&self, _: &str) -> Result<usize, String> {
            tokio::time::sleep(Duration::from_millis(3_000)).await;
            Ok(1)
        }
    }
    let repo: Arc<dyn Repo> = Arc::new(SqliteRepo::open_temporary().unwrap());
    let a = Arc::new(Cluster::new(
        ClusterConfig {
            instance_timeout: Duration::from_millis(500),
            ..config("a")
        },
        repo.clone(),
        None,
    ));
    a.on_node_down(Arc::new(Slow));
    let b = Cluster::new(config("b"), repo.clone(), None);
    b.register().await.unwrap();
    // B never checks in: A takes it for dead after 500 ms and spends 3 s recovering it.
    let drain = crate::lifecycle::Drain::new();
    let running = tokio::spawn(a.clone().run(drain.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b_state = repo.read(STATES, "b").await.unwrap().unwrap().content["state"].clone();
        if b_state == json!(PROCESSING_DOWN) {
            break;
        }
        assert!(Instant::now() < deadline, "A never started recovering B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile A keeps checking in every 100 ms.
    let before = repo.read(STATES, "a").await.unwrap().unwrap().rev;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let during = repo.read(STATES, "b").await.unwrap().unwrap();
    assert_eq!(
        during.content["state"],
        json!(PROCESSING_DOWN),
        "still recovering"
    );
    assert_ne!(
        repo.read(STATES, "a").await.unwrap().unwrap().rev,
        before,
        "A's heartbeat stopped during its recovery of B"
    );
    drain.start();
    running.await.unwrap();
}
