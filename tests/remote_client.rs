//! The internal router's `external/idm/<name>/…` resource (the CREST client of the sync hub),
//! in-process: gateway A is built from `build_gateway` on temp dirs and called through its
//! router; gateway B (the real binary) is the remote IDM holding managed users.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::token::decode_basic;
use common::*;
use idm_gateway::config::{LogFormat, Secret};
use idm_gateway::crest::query::{CountPolicy, SortKey};
use idm_gateway::crest::{
    Caller, Operation, Params, QueryParams, Request, ResourceError, ResourceResponse, Response,
};
use idm_gateway::remote::{query_pages, QueryPager};
use idm_gateway::server::{build_gateway, Built};
use idm_gateway::settings::Settings;
use serde_json::{json, Value};

/// B's admin password: must never show up in an answer of A.
const B_PASSWORD: &str = "b-Secret-913";

/// Gateway A, built in-process (no listener) with its own temp dirs.
struct Local {
    built: Built,
    root: tempfile::TempDir,
}

impl Local {
    /// Builds A with `external.idm-<name>.json` for each instance. `build_gateway` runs a
    /// runtime of its own, so it is called on a plain thread.
    fn build(instances: &[(&str, Value)]) -> Local {
        let root = tempfile::Builder::new()
            .prefix("idm-gateway-client-")
            .tempdir()
            .unwrap();
        for sub in ["conf", "data", "certs"] {
            std::fs::create_dir(root.path().join(sub)).unwrap();
        }
        for (name, doc) in instances {
            write_conf(root.path(), name, doc);
        }
        let settings = Settings {
            conf_dir: root.path().join("conf"),
            data_dir: root.path().join("data"),
            certs_dir: root.path().join("certs"),
            listen: "127.0.0.1:0".into(),
            tls: None,
            log_format: LogFormat::default(),
            threads: 1,
            admin_password: Secret::new("a-admin-pw"),
            admin_password_is_default: false,
            query_time_limit: std::time::Duration::from_secs(30),
            scripting: Default::default(),
            temporal_check: std::time::Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            rate_limit: Default::default(),
            login_throttle: Default::default(),
            max_proxy_body_bytes: 1 << 20,
            max_upload_bytes: idm_gateway::csv_import::DEFAULT_MAX_UPLOAD_BYTES,
            upgrade: false,
            upgrade_sock: root.path().join("data/upgrade.sock"),
            shutdown_grace_seconds: idm_gateway::config::DEFAULT_SHUTDOWN_GRACE_SECONDS,
            server: Default::default(),
            store: Default::default(),
            node_id: "client-test".into(),
        };
        let built = std::thread::spawn(move || build_gateway(&settings))
            .join()
            .expect("build thread")
            .expect("build gateway A");
        Local { built, root }
    }

    /// Rewrites an instance file and reloads at once (no waiting for the watcher).
    fn set_instance(&self, name: &str, doc: &Value) {
        write_conf(self.root.path(), name, doc);
        self.built.gw.reload();
    }

    async fn call(&self, req: Request) -> Result<Response, ResourceError> {
        self.built.router.handle(&req).await
    }

    fn metrics(&self) -> String {
        String::from_utf8(self.built.gw.metrics.render()).unwrap()
    }
}

fn write_conf(root: &Path, name: &str, doc: &Value) {
    let tmp = root.join(format!(".external.idm-{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    std::fs::rename(
        &tmp,
        root.join("conf").join(format!("external.idm-{name}.json")),
    )
    .unwrap();
}

fn system() -> Arc<Caller> {
    Arc::new(Caller::system())
}

fn read(path: &str) -> Request {
    Request::new(
        Operation::Read {
            if_none_match: None,
        },
        path,
        system(),
    )
}

fn query(path: &str, filter: &str, page_size: usize) -> Request {
    let mut q = QueryParams::filter(filter);
    q.page_size = page_size;
    Request::new(Operation::Query(Box::new(q)), path, system())
}

fn user(name: &str) -> Value {
    json!({
        "userName": name,
        "givenName": format!("Given {name}"),
        "sn": format!("Sn {name}"),
        "mail": format!("{name}@example.com"),
    })
}

fn resource(r: Response) -> ResourceResponse {
    match r {
        Response::Resource(r) | Response::Created(r) => r,
        other => panic!("not a resource: {other:?}"),
    }
}

/// Gateway B with the shipped managed.json.
async fn remote_b() -> Gateway {
    let managed: Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/managed.json")).unwrap(),
    )
    .unwrap();
    Gateway::builder()
        .admin_password(B_PASSWORD)
        .conf_file("managed", managed)
        .start()
        .await
}

fn b_instance(b: &Gateway) -> Value {
    basic_instance(&b.url("/openidm/"), ADMIN_USER, b.admin_password())
}

/// B's own answer to `GET /openidm/<path>` (body as JSON, status).
async fn direct(b: &Gateway, path_and_query: &str) -> (u16, Value) {
    let resp = b
        .get(&format!("/openidm/{path_and_query}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_no_secret(e: &ResourceError) {
    let text = String::from_utf8(e.to_body()).unwrap();
    assert!(!text.contains(B_PASSWORD), "{text}");
    assert!(!text.contains("gw-secret"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn crud_through_the_router_matches_the_remote() {
    let b = remote_b().await;
    let a = Local::build(&[("b", b_instance(&b))]);
    let base = "external/idm/b/managed/user";

    // Create with a server-chosen id (POST ?_action=create) and with a client id (PUT).
    let created = a
        .call(
            Request::new(Operation::Create { new_id: None }, base, system())
                .with_body(user("ajones")),
        )
        .await
        .unwrap();
    assert!(matches!(created, Response::Created(_)), "{created:?}");
    let aj = resource(created);
    assert!(!aj.id.is_empty());
    assert_eq!(aj.content["userName"], "ajones");
    let ps = a
        .call(
            Request::new(
                Operation::Create {
                    new_id: Some("p smith".into()),
                },
                base,
                system(),
            )
            .with_body(user("psmith")),
        )
        .await
        .unwrap();
    assert!(matches!(ps, Response::Created(_)), "{ps:?}");
    let ps = resource(ps);
    assert_eq!(ps.id, "p smith");
    let rev1 = ps.rev.clone().expect("rev");

    // Creating it again: the remote's 412, passed through and naming the instance.
    let e = a
        .call(
            Request::new(
                Operation::Create {
                    new_id: Some("p smith".into()),
                },
                base,
                system(),
            )
            .with_body(user("psmith")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 412, "{e:?}");
    assert!(
        e.message.starts_with("Remote instance 'b': "),
        "{}",
        e.message
    );

    // Read: exactly what B answers itself.
    let got = resource(a.call(read(&format!("{base}/p smith"))).await.unwrap());
    let (status, direct_body) = direct(&b, "managed/user/p%20smith").await;
    assert_eq!(status, 200);
    assert_eq!(got.to_json(), direct_body);
    assert_eq!(got.rev.as_deref(), Some(rev1.as_str()));

    // Conditional read.
    let r = a
        .call(Request::new(
            Operation::Read {
                if_none_match: Some(rev1.clone()),
            },
            &format!("{base}/p smith"),
            system(),
        ))
        .await
        .unwrap();
    assert_eq!(r, Response::NotModified { rev: rev1.clone() });

    // _fields is passed on.
    let mut r = read(&format!("{base}/p smith"));
    r.fields = vec!["userName".into()];
    let got = resource(a.call(r).await.unwrap());
    assert_eq!(got.content.keys().collect::<Vec<_>>(), vec!["userName"]);

    // Update with If-Match: the current revision wins, a stale one is 412.
    let mut changed = user("psmith");
    changed["description"] = json!("updated");
    let updated = resource(
        a.call(
            Request::new(
                Operation::Update {
                    rev: Some(rev1.clone()),
                    upsert: false,
                },
                &format!("{base}/p smith"),
                system(),
            )
            .with_body(changed.clone()),
        )
        .await
        .unwrap(),
    );
    assert_eq!(updated.content["description"], "updated");
    let rev2 = updated.rev.clone().unwrap();
    assert_ne!(rev1, rev2);
    let stale = a
        .call(
            Request::new(
                Operation::Update {
                    rev: Some(rev1.clone()),
                    upsert: false,
                },
                &format!("{base}/p smith"),
                system(),
            )
            .with_body(changed),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code, 412, "{stale:?}");
    assert!(stale.message.starts_with("Remote instance 'b': "));
    assert_no_secret(&stale);

    // Patch with If-Match.
    let patched = resource(
        a.call(
            Request::new(
                Operation::Patch {
                    rev: Some(rev2.clone()),
                },
                &format!("{base}/p smith"),
                system(),
            )
            .with_body(json!([{"operation": "replace", "field": "/sn", "value": "Smith"}])),
        )
        .await
        .unwrap(),
    );
    assert_eq!(patched.content["sn"], "Smith");
    let rev3 = patched.rev.clone().unwrap();
    let e = a
        .call(
            Request::new(
                Operation::Patch { rev: Some(rev2) },
                &format!("{base}/p smith"),
                system(),
            )
            .with_body(json!([{"operation": "replace", "field": "/sn", "value": "X"}])),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 412);

    // An action the remote does not know: its error, same code as B answers directly.
    let e = a
        .call(
            Request::new(
                Operation::Action {
                    name: "bogus".into(),
                },
                base,
                system(),
            )
            .with_body(json!({})),
        )
        .await
        .unwrap_err();
    let direct_action = b
        .post("/openidm/managed/user?_action=bogus")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(e.code, direct_action.status().as_u16());
    let direct_action: Value = direct_action.json().await.unwrap();
    assert_eq!(
        e.message,
        format!(
            "Remote instance 'b': {}",
            direct_action["message"].as_str().unwrap()
        )
    );

    // Delete: stale revision 412, current one deletes; then 404 passes through.
    let e = a
        .call(Request::new(
            Operation::Delete { rev: Some(rev1) },
            &format!("{base}/p smith"),
            system(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code, 412);
    let deleted = resource(
        a.call(Request::new(
            Operation::Delete { rev: Some(rev3) },
            &format!("{base}/p smith"),
            system(),
        ))
        .await
        .unwrap(),
    );
    assert_eq!(deleted.id, "p smith");
    let e = a.call(read(&format!("{base}/p smith"))).await.unwrap_err();
    let (status, body) = direct(&b, "managed/user/p%20smith").await;
    assert_eq!((e.code, status), (404, 404));
    assert_eq!(
        e.message,
        format!("Remote instance 'b': {}", body["message"].as_str().unwrap())
    );
    assert_no_secret(&e);

    // Unknown instance, and a non-admin caller (same rule as the proxy).
    let e = a
        .call(read("external/idm/zz/managed/user/x"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "Remote instance 'zz' is not configured")
    );
    let mut r = read(&format!("{base}/{}", aj.id));
    r.caller = Arc::new(Caller::new("bob", "managed/user", vec![]));
    assert_eq!(a.call(r).await.unwrap_err().code, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_pages_follow_cookies() {
    let b = remote_b().await;
    let a = Local::build(&[("b", b_instance(&b))]);
    for i in 0..7 {
        let resp = b
            .post("/openidm/managed/user?_action=create")
            .json(&user(&format!("user{i:02}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let path = "external/idm/b/managed/user";

    // One page, compared with B's own answer.
    let mut q = QueryParams::filter("userName sw \"user\"");
    q.page_size = 3;
    q.sort_keys = vec![SortKey::parse("-userName").unwrap()];
    q.count_policy = CountPolicy::Exact;
    let r = a
        .call(Request::new(Operation::Query(Box::new(q)), path, system()))
        .await
        .unwrap();
    let Response::Query(page) = r else {
        panic!("{r:?}")
    };
    let (_, direct_page) = direct(
        &b,
        "managed/user?_queryFilter=userName%20sw%20%22user%22&_pageSize=3&_sortKeys=-userName&_totalPagedResultsPolicy=EXACT",
    )
    .await;
    assert_eq!(page.to_json()["result"], direct_page["result"]);
    assert_eq!(page.total, Some(7));
    assert_eq!(page.policy, CountPolicy::Exact);
    assert!(page.cookie.is_some());

    // Every page through the pager: 3 + 3 + 1, in order, nothing twice.
    let mut req = query(path, "true", 3);
    if let Operation::Query(q) = &mut req.op {
        q.sort_keys = vec![SortKey::parse("userName").unwrap()];
    }
    req.fields = vec!["userName".into()];
    let mut pager = QueryPager::new(req.clone()).unwrap();
    let mut names = Vec::new();
    while let Some(page) = pager.next_page(&a.built.router).await.unwrap() {
        assert!(page.results.len() <= 3);
        names.extend(
            page.results
                .iter()
                .map(|u| u["userName"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(pager.pages(), 3);
    let expected: Vec<String> = (0..7).map(|i| format!("user{i:02}")).collect();
    assert_eq!(names, expected);

    // The same with the callback form, stopping after two pages.
    let mut pages = 0;
    let seen = query_pages(&a.built.router, req, |_| {
        pages += 1;
        async move { Ok(pages < 2) }
    })
    .await
    .unwrap();
    assert_eq!((seen, pages), (6, 2));

    // A bad filter: the remote's 400.
    let e = a.call(query(path, "userName eq", 0)).await.unwrap_err();
    assert_eq!(e.code, 400);
    assert!(
        e.message.starts_with("Remote instance 'b': "),
        "{}",
        e.message
    );

    let metrics = a.metrics();
    assert!(
        metrics.contains("idm_gateway_remote_query_page_seconds_count{instance=\"b\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_on_the_wire_and_reload() {
    let up = RecordingUpstream::start();
    let a = Local::build(&[("rec", basic_instance(&up.url(), "svc", "svc-pw"))]);

    let r = a
        .call(
            Request::new(
                Operation::Action {
                    name: "do it".into(),
                },
                "external/idm/rec/managed/user/a b%",
                system(),
            )
            .with_params(Params::new().with("uid", "x&y"))
            .with_body(json!({"k": 1})),
        )
        .await
        .unwrap();
    assert!(matches!(r, Response::Action(Some(_))), "{r:?}");
    let rec = up.last().unwrap();
    assert_eq!(rec.method, "POST");
    assert_eq!(
        rec.uri,
        "/openidm/managed/user/a%20b%25?_action=do%20it&uid=x%26y"
    );
    assert_eq!(rec.header("x-requested-with"), Some("RemoteIDMProxy"));
    assert_eq!(
        rec.header("accept-api-version"),
        Some("protocol=2.1,resource=1.0")
    );
    assert_eq!(rec.header("content-type"), Some("application/json"));
    assert!(rec.header("x-forgerock-transactionid").is_some());
    assert_eq!(
        decode_basic(rec.header("authorization").unwrap()),
        Some(("svc".into(), "svc-pw".into()))
    );
    assert_eq!(rec.body_len, br#"{"k":1}"#.len() as u64);

    // Connections are pooled: sequential requests reuse them (a connection may still be on
    // its way back to the pool when the next request starts, hence not exactly one).
    for _ in 0..20 {
        a.call(read("external/idm/rec/x")).await.unwrap();
    }
    assert!(up.connections() <= 5, "{} connections", up.connections());

    // A body that is not JSON, and an error status without a CREST body.
    let e = a
        .call(read("external/idm/rec/big").with_params(Params::new().with("n", "10")))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            502,
            "Remote instance 'rec' sent a response that is not JSON"
        )
    );
    let e = a
        .call(read("external/idm/rec/status/503"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            503,
            "Remote instance 'rec': status 503 from recording upstream"
        )
    );

    // Dot segments never reach the remote.
    let before = up.count();
    let e = a
        .call(Request {
            path: vec![
                "external".into(),
                "idm".into(),
                "rec".into(),
                "..".into(),
                "config".into(),
            ],
            ..read("x")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, 400);
    assert_eq!(up.count(), before);

    // A reload applies at the next request: disabled, then another remote.
    let mut off = basic_instance(&up.url(), "svc", "svc-pw");
    off["enabled"] = json!(false);
    a.set_instance("rec", &off);
    let e = a.call(read("external/idm/rec/x")).await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "Remote instance 'rec' is disabled")
    );
    let up2 = RecordingUpstream::start();
    a.set_instance("rec", &basic_instance(&up2.url(), "svc2", "pw2"));
    a.call(read("external/idm/rec/x")).await.unwrap();
    assert_eq!(up2.count(), 1);
    assert_eq!(
        decode_basic(up2.last().unwrap().header("authorization").unwrap()),
        Some(("svc2".into(), "pw2".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_down_is_502_and_hanging_is_504() {
    let hang = HangingUpstream::start();
    let garbage = GarbageUpstream::start();
    let down_url = format!("http://127.0.0.1:{}/openidm/", free_port());
    let with_timeouts = |url: &str| {
        let mut doc = basic_instance(url, "svc", "down-pw-77");
        doc["connectTimeout"] = json!(1000);
        doc["readTimeout"] = json!(500);
        doc
    };
    let a = Local::build(&[
        ("down", with_timeouts(&down_url)),
        ("hang", with_timeouts(&hang.url())),
        ("garbage", with_timeouts(&garbage.url())),
    ]);

    let e = a
        .call(query("external/idm/down/managed/user", "true", 10))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (502, "Remote instance 'down' refused the connection")
    );

    let started = Instant::now();
    let e = a
        .call(query("external/idm/hang/managed/user", "true", 10))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        (e.code, e.message.as_str()),
        (504, "Remote instance 'hang' did not answer within 500 ms")
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );

    let e = a.call(read("external/idm/garbage/x")).await.unwrap_err();
    // The proxy's message for the same failure (tests/proxy.rs).
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            502,
            "Remote instance 'garbage' sent an invalid HTTP response"
        )
    );

    assert!(!e.message.contains("down-pw-77"));
    let metrics = a.metrics();
    assert!(metrics.contains("kind=\"connect_refused\""), "{metrics}");
    assert!(metrics.contains("kind=\"read_timeout\""), "{metrics}");
    assert!(metrics.contains("kind=\"protocol\""), "{metrics}");
    assert!(!metrics.contains("down-pw-77"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_is_cached_refreshed_on_401_and_retried_once() {
    let up = RecordingUpstream::start();
    let ep = FakeTokenEndpoint::start();
    let a = Local::build(&[(
        "x",
        bearer_instance(
            &up.url(),
            "gw-client",
            "gw-secret-Zq81",
            &ep.token_endpoint(),
            &["fr:idm:*"],
        ),
    )]);
    let action = || {
        Request::new(
            Operation::Action {
                name: "echo".into(),
            },
            "external/idm/x/managed/user",
            system(),
        )
        .with_body(json!({"n": 1}))
    };
    let sent_token = |up: &RecordingUpstream, i: usize| -> String {
        up.requests()[i]
            .header("authorization")
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned()
    };

    // The token is fetched once and reused.
    a.call(action()).await.unwrap();
    a.call(action()).await.unwrap();
    assert_eq!(ep.count(), 1);
    assert_eq!(sent_token(&up, 0), "tok-1");
    assert_eq!(sent_token(&up, 1), "tok-1");

    // The remote rejects it: dropped, a new one fetched, the request retried once with
    // the same body and transaction id.
    up.reject_bearer("tok-1");
    let r = a.call(action()).await.unwrap();
    assert!(matches!(r, Response::Action(Some(_))));
    assert_eq!(up.count(), 4);
    assert_eq!(ep.count(), 2);
    let reqs = up.requests();
    assert_eq!(sent_token(&up, 2), "tok-1");
    assert_eq!(sent_token(&up, 3), "tok-2");
    assert_eq!(reqs[2].uri, reqs[3].uri);
    assert_eq!(reqs[2].body_sha256, reqs[3].body_sha256);
    assert_eq!(
        reqs[2].header("x-forgerock-transactionid"),
        reqs[3].header("x-forgerock-transactionid")
    );

    // A remote that refuses the fresh token too: one retry only, the caller gets its 401.
    up.reject_bearer("tok-2");
    up.reject_bearer("tok-3");
    let e = a.call(action()).await.unwrap_err();
    assert_eq!(e.code, 401);
    assert_eq!(e.message, "Remote instance 'x': Access Denied");
    assert_eq!(up.count(), 6);
    assert_eq!(ep.count(), 3);
    assert_no_secret(&e);

    // A token endpoint that fails: 502 naming the instance, no secret.
    up.clear_rejections();
    ep.set_mode(TokenMode::Status(500));
    // tok-3 was invalidated: the next request needs a new token.
    let e = a.call(action()).await.unwrap_err();
    assert_eq!(e.code, 502, "{e:?}");
    assert!(e.message.contains("'x'"), "{}", e.message);
    assert_no_secret(&e);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_shares_the_proxys_url_choice_failover_and_circuit() {
    let live = ScriptedCrest::start(|_| json!({"_id": "1", "_rev": "3", "userName": "one"}));
    let dead = format!("http://127.0.0.1:{}/openidm/", free_port());
    let with = |urls: Vec<String>| {
        let mut doc = basic_instance(&urls[0], "svc", "pw-fo-5");
        doc["failoverUrls"] = json!(urls[1..]);
        doc["health"] = json!({"downForMs": 600000});
        doc
    };
    let a = Local::build(&[
        ("dc", with(vec![dead.clone(), live.url()])),
        ("gone", with(vec![dead.clone()])),
    ]);

    // The first URL refuses: the read goes to the next one.
    let r = resource(
        a.call(read("external/idm/dc/managed/user/1"))
            .await
            .unwrap(),
    );
    assert_eq!(r.id, "1");
    assert_eq!(live.asked(), ["/openidm/managed/user/1"]);
    let m = a.metrics();
    assert!(
        m.contains(&format!(
            "idm_gateway_remote_url_up{{instance=\"dc\",url=\"{dead}\"}} 0"
        )),
        "{m}"
    );
    assert!(
        m.contains("idm_gateway_remote_failovers_total{instance=\"dc\"} 1"),
        "{m}"
    );

    // Its only URL refuses: 502 once, then 503 at once while it is down.
    let e = a
        .call(read("external/idm/gone/managed/user/1"))
        .await
        .unwrap_err();
    assert_eq!(e.code, 502, "{e:?}");
    let e = a
        .call(read("external/idm/gone/managed/user/1"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (503, "Remote instance 'gone' is unavailable")
    );
    assert!(!format!("{e:?}").contains("pw-fo-5"));
}
