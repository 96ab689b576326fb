//! Large queries on a real gateway: an unpaged query of 200 000 managed users is streamed
//! to the socket in bounded memory, and a query past `queryTimeLimitSeconds` is a 504
//! instead of holding a store reader.

mod common;

use common::fixtures::shipped;
use common::Gateway;
use idm_gateway::repo::sqlite::SqliteRepo;
use idm_gateway::repo::{Repo, WriteOp};
use serde_json::{json, Value};

const USERS: usize = 200_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A gateway whose store holds `USERS` managed users, written straight into its data dir
/// while it is stopped (200 000 HTTP creates would take minutes on this machine).
async fn gateway_with_users(gateway_json: Option<Value>) -> Gateway {
    let mut builder = Gateway::builder().conf_file("managed", shipped("managed"));
    if let Some(g) = gateway_json {
        builder = builder.conf_file("gateway", g);
    }
    let mut gw = builder.start().await;
    gw.stop();
    {
        let repo = SqliteRepo::open(&gw.data_dir()).unwrap();
        let ops: Vec<WriteOp> = (0..USERS)
            .map(|i| WriteOp::Create {
                resource: "managed/user".into(),
                id: format!("u{i:06}"),
                content: json!({"userName": format!("user{i}"), "givenName": "Given",
                                "sn": format!("Sn{i}"), "mail": format!("user{i}@example.com"),
                                "accountStatus": "active"})
                .as_object()
                .unwrap()
                .clone(),
                unique: Vec::new(),
            })
            .collect();
        for chunk in ops.chunks(5000) {
            for r in repo.batch(chunk.to_vec()).await {
                r.unwrap();
            }
        }
    }
    gw.restart().await;
    gw
}

#[tokio::test(flavor = "multi_thread")]
async fn unpaged_query_of_200k_objects_streams_in_bounded_memory() {
    let gw = gateway_with_users(None).await;
    // Warm up readers, runtime and allocator before the baseline.
    let r = gw
        .get("/openidm/managed/user?_queryFilter=true&_pageSize=1000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let before = rss_kib(gw.pid());

    let mut resp = gw
        .get("/openidm/managed/user?_queryFilter=true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none());
    let mut body = Vec::new();
    let mut peak = before;
    let mut chunks = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
        chunks += 1;
        if chunks.is_multiple_of(16) {
            peak = peak.max(rss_kib(gw.pid()));
        }
    }
    peak = peak.max(rss_kib(gw.pid()));
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 64,
        "gateway RSS grew by {growth_mib} MiB over a {} MiB answer",
        body.len() / (1024 * 1024)
    );

    let v: Value = serde_json::from_slice(&body).expect("the streamed body is valid JSON");
    let results = v["result"].as_array().unwrap();
    assert_eq!(results.len(), USERS);
    assert_eq!(v["resultCount"], USERS);
    assert_eq!(results[0]["_id"], "u000000");
    assert_eq!(results[USERS - 1]["_id"], format!("u{:06}", USERS - 1));
    assert_eq!(results[7]["userName"], "user7");
    for (k, want) in [
        ("pagedResultsCookie", json!(null)),
        ("totalPagedResultsPolicy", json!("NONE")),
        ("totalPagedResults", json!(-1)),
        ("remainingPagedResults", json!(-1)),
    ] {
        assert_eq!(v[k], want, "{k}");
    }
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys[0], "result");
    assert_eq!(keys[1], "resultCount");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_past_the_time_limit_is_a_504_and_frees_the_store() {
    let gw = gateway_with_users(Some(json!({"queryTimeLimitSeconds": 0.05}))).await;
    // A substring test on every object, sorted on an unindexed property: far beyond 50 ms.
    let (s, v) = common::json_of(
        gw.get("/openidm/managed/user?_queryFilter=mail+co+%22nowhere%22&_sortKeys=-mail")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["reason"], "Gateway Time-out");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("query time limit of 0.05s"),
        "{v}"
    );
    // Paged the same way, and the readers are free again: quick queries still answer.
    let (s, v) = common::json_of(
        gw.get(
            "/openidm/managed/user?_queryFilter=mail+co+%22nowhere%22&_sortKeys=-mail&_pageSize=10",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 504, "{v}");
    for _ in 0..8 {
        let (s, v) = common::json_of(
            gw.get("/openidm/managed/user?_queryFilter=_id+eq+%22u000042%22")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, &v["result"][0]["userName"]),
            (200, &json!("user42")),
            "{v}"
        );
    }
}
