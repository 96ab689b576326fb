use super::*;
use crate::config::ConfSnapshot;
use crate::crest::query::SortKey;
use crate::crest::{Caller, Params, QueryParams};
use serde_json::json;

fn req(op: Operation, path: &str) -> Request {
    Request::new(op, path, Arc::new(Caller::system()))
}

fn call(r: &Request) -> Call {
    build_call(r, &r.path).unwrap()
}

fn header<'a>(c: &'a Call, name: &str) -> Option<&'a str> {
    c.headers.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn read_and_query_are_get() {
    let c = call(&req(
        Operation::Read {
            if_none_match: Some("3".into()),
        },
        "managed/user/a b",
    ));
    assert_eq!(c.method, Method::GET);
    assert_eq!(c.path_and_query, "managed/user/a%20b");
    assert_eq!(header(&c, "if-none-match"), Some("\"3\""));
    assert_eq!(header(&c, "accept-api-version"), Some(API_VERSION));
    assert_eq!(header(&c, "x-requested-with"), Some("RemoteIDMProxy"));
    assert_eq!(header(&c, "content-type"), Some("application/json"));
    assert!(c.body.is_none());

    let mut q = QueryParams::filter("userName eq \"a&b\"");
    q.page_size = 2;
    q.cookie = Some("c/1=".into());
    q.offset = 4;
    q.count_policy = CountPolicy::Exact;
    q.sort_keys = vec![
        SortKey::parse("-sn").unwrap(),
        SortKey::parse("givenName").unwrap(),
    ];
    let mut r = req(Operation::Query(Box::new(q)), "managed/user");
    r.fields = vec!["_id,userName".into(), "mail".into()];
    r.params = Params::new()
        .with("_queryFilter", "ignored")
        .with("uid", "x y");
    let c = call(&r);
    assert_eq!(
        c.path_and_query,
        "managed/user?_queryFilter=userName%20eq%20%22a%26b%22&_pageSize=2&_pagedResultsCookie=c%2F1%3D&_pagedResultsOffset=4&_totalPagedResultsPolicy=EXACT&_sortKeys=-sn%2CgivenName&_fields=_id%2CuserName%2Cmail&uid=x%20y"
    );
    let q = QueryParams {
        kind: QueryKind::Id("query-all-ids".into()),
        ..QueryParams::filter("")
    };
    let c = call(&req(Operation::Query(Box::new(q)), "managed/user"));
    assert_eq!(c.path_and_query, "managed/user?_queryId=query-all-ids");
}

#[test]
fn writes_map_to_crest_http() {
    let body = json!({"userName": "a"});
    let c = call(&req(Operation::Create { new_id: None }, "managed/user").with_body(body.clone()));
    assert_eq!(
        (c.method.clone(), c.path_and_query.as_str()),
        (Method::POST, "managed/user?_action=create")
    );
    assert_eq!(c.body.as_deref(), Some(br#"{"userName":"a"}"#.as_slice()));

    let e = build_call(
        &req(
            Operation::Create {
                new_id: Some("id/1".into()),
            },
            "managed/user",
        ),
        &["managed".into(), "user".into()],
    )
    .unwrap_err();
    assert_eq!(e.code, 400);
    let c = call(&req(
        Operation::Create {
            new_id: Some("p smith".into()),
        },
        "managed/user",
    ));
    assert_eq!(c.method, Method::PUT);
    assert_eq!(c.path_and_query, "managed/user/p%20smith");
    assert_eq!(header(&c, "if-none-match"), Some("*"));

    for (rev, upsert, expected) in [
        (Some("7"), true, Some("\"7\"")),
        (None, false, Some("*")),
        (None, true, None),
    ] {
        let c = call(&req(
            Operation::Update {
                rev: rev.map(str::to_owned),
                upsert,
            },
            "managed/user/a",
        ));
        assert_eq!(c.method, Method::PUT);
        assert_eq!(header(&c, "if-match"), expected);
    }
    let c = call(&req(
        Operation::Patch {
            rev: Some("2".into()),
        },
        "managed/user/a",
    ));
    assert_eq!(
        (c.method.clone(), header(&c, "if-match")),
        (Method::PATCH, Some("\"2\""))
    );
    let c = call(&req(
        Operation::Delete {
            rev: Some("2".into()),
        },
        "managed/user/a",
    ));
    assert_eq!(
        (c.method.clone(), header(&c, "if-match")),
        (Method::DELETE, Some("\"2\""))
    );
    assert!(c.body.is_none());
    let r = req(
        Operation::Action {
            name: "reset pw".into(),
        },
        "managed/user",
    )
    .with_params(Params::new().with("_action", "x").with("uid", "1"));
    let c = call(&r);
    assert_eq!(c.method, Method::POST);
    assert_eq!(c.path_and_query, "managed/user?_action=reset%20pw&uid=1");
}

#[test]
fn dot_segments_and_bad_revisions_are_400() {
    for path in [
        vec!["managed", ".."],
        vec!["."],
        vec!["a", "..;x"],
        vec!["a", "b/c"],
        vec!["a", "b\\c"],
    ] {
        let path: Vec<String> = path.into_iter().map(String::from).collect();
        let r = req(
            Operation::Read {
                if_none_match: None,
            },
            "x",
        );
        assert_eq!(build_call(&r, &path).unwrap_err().code, 400, "{path:?}");
    }
    let r = req(
        Operation::Delete {
            rev: Some("a\nb".into()),
        },
        "a",
    );
    assert_eq!(build_call(&r, &r.path).unwrap_err().code, 400);
}

#[test]
fn responses_map_back() {
    let read = Operation::Read {
        if_none_match: None,
    };
    let r = map_response(&read, "dc2", 200, None, br#"{"_id":"a","_rev":"1","x":1}"#).unwrap();
    let mut content = Map::new();
    content.insert("x".into(), json!(1));
    assert_eq!(
        r,
        Response::Resource(ResourceResponse::new(
            "a",
            Some("1".into()),
            content.clone()
        ))
    );
    let r = map_response(
        &Operation::Create { new_id: None },
        "dc2",
        201,
        Some("9".into()),
        br#"{"_id":"a","x":1}"#,
    )
    .unwrap();
    assert_eq!(
        r,
        Response::Created(ResourceResponse::new("a", Some("9".into()), content))
    );
    assert_eq!(
        map_response(&read, "dc2", 200, None, br#"{"state":"x"}"#).unwrap(),
        Response::Json(200, json!({"state": "x"}))
    );
    assert_eq!(
        map_response(
            &Operation::Read {
                if_none_match: Some("4".into())
            },
            "dc2",
            304,
            None,
            b""
        )
        .unwrap(),
        Response::NotModified { rev: "4".into() }
    );
    let action = Operation::Action { name: "x".into() };
    assert_eq!(
        map_response(&action, "dc2", 204, None, b"").unwrap(),
        Response::Action(None)
    );
    assert_eq!(
        map_response(&action, "dc2", 200, None, b"[1]").unwrap(),
        Response::Action(Some(json!([1])))
    );
    let query = Operation::Query(Box::new(QueryParams::filter("true")));
    let q = map_response(
        &query,
        "dc2",
        200,
        None,
        br#"{"result":[{"_id":"a"}],"resultCount":1,"pagedResultsCookie":"c","totalPagedResultsPolicy":"EXACT","totalPagedResults":5,"remainingPagedResults":-1}"#,
    )
    .unwrap();
    assert_eq!(
        q,
        Response::Query(QueryResponse {
            results: vec![json!({"_id": "a"})],
            cookie: Some("c".into()),
            policy: CountPolicy::Exact,
            total: Some(5),
        })
    );
    let q = map_response(
        &query,
        "dc2",
        200,
        None,
        br#"{"result":[],"pagedResultsCookie":null,"totalPagedResults":-1}"#,
    )
    .unwrap();
    assert_eq!(q, Response::Query(QueryResponse::default()));
    let e = map_response(&query, "dc2", 200, None, br#"{"results":[]}"#).unwrap_err();
    assert_eq!(e.code, 502);
    // A page cut short by the remote's own failure is an error, not a shorter page.
    let e = map_response(
        &query,
        "dc2",
        200,
        None,
        br#"{"result":[{"_id":"a"}],"resultCount":1,"error":{"code":500,"reason":"Internal Server Error","message":"backend gone"}}"#,
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            500,
            "Remote instance 'dc2' failed part-way through a query page: backend gone"
        )
    );
    let e = map_response(&query, "dc2", 200, None, br#"{"result":[],"error":{}}"#).unwrap_err();
    assert_eq!(e.code, 502);
    assert!(map_response(&query, "dc2", 200, None, br#"{"result":[],"error":null}"#).is_ok());
    let e = map_response(&read, "dc2", 200, None, b"<html>").unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            502,
            "Remote instance 'dc2' sent a response that is not JSON"
        )
    );
    let e = map_response(&read, "dc2", 302, None, b"").unwrap_err();
    assert_eq!(e.code, 502);
}

#[test]
fn remote_errors_pass_through_prefixed() {
    let read = Operation::Read {
        if_none_match: None,
    };
    let e = map_response(
        &read,
        "dc2",
        412,
        None,
        br#"{"code":412,"reason":"Precondition Failed","message":"Revision mismatch","detail":{"a":1}}"#,
    )
    .unwrap_err();
    assert_eq!(e.code, 412);
    assert_eq!(e.message, "Remote instance 'dc2': Revision mismatch");
    assert_eq!(e.detail, Some(json!({"a": 1})));
    let e = map_response(&read, "dc2", 503, None, b"down").unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str(), e.detail.is_none()),
        (
            503,
            "Remote instance 'dc2' answered 503 Service Unavailable",
            true
        )
    );
}

fn registry(instances: &[(&str, Value)]) -> Arc<Registry> {
    let mut conf = ConfSnapshot::default();
    for (name, doc) in instances {
        let cfg = crate::config::lower_instance(name, doc).expect("valid instance");
        conf.instances.insert((*name).to_owned(), Arc::new(cfg));
    }
    Arc::new(Registry::build(
        &conf,
        &Registry::default(),
        &Arc::new(Metrics::new()),
    ))
}

fn basic(url: &str) -> Value {
    json!({"authType": "basic", "instanceUrl": url, "userName": "u", "password": "s3cret-pw",
           "connectTimeout": 500, "readTimeout": 500})
}

#[test]
fn in_filters_only_where_the_instance_says_so() {
    let mut with_in = basic("http://127.0.0.1:9/openidm/");
    with_in["queryFilterIn"] = json!(true);
    let reg = registry(&[
        ("plain", basic("http://127.0.0.1:9/openidm/")),
        ("gw", with_in),
    ]);
    let handler = RemoteHandler::with_registry(move || reg.clone(), Arc::new(Metrics::new()));
    let mut router = Router::new(|_| Ok(()));
    router.mount("external/idm", Arc::new(handler));
    assert!(!router.supports("external/idm/plain/managed/user", Capability::InFilter));
    assert!(router.supports("external/idm/gw/managed/user", Capability::InFilter));
    assert!(!router.supports("external/idm/nope/managed/user", Capability::InFilter));
    assert!(!router.supports("external/idm", Capability::InFilter));
}

#[tokio::test]
async fn unknown_disabled_and_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/openidm/");
    let mut disabled = basic(&url);
    disabled["enabled"] = json!(false);
    let reg = registry(&[("down", basic(&url)), ("off", disabled)]);
    let metrics = Arc::new(Metrics::new());
    let handler = RemoteHandler::with_registry(move || reg.clone(), metrics.clone());
    let mut router = Router::new(|_| Ok(()));
    router.mount("external/idm", Arc::new(handler));
    let read = |path: &str| {
        req(
            Operation::Read {
                if_none_match: None,
            },
            path,
        )
    };
    let e = router
        .handle(&read("external/idm/nope/managed/user/a"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "Remote instance 'nope' is not configured")
    );
    let e = router
        .handle(&read("external/idm/off/managed/user/a"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "Remote instance 'off' is disabled")
    );
    let e = router.handle(&read("external/idm")).await.unwrap_err();
    assert_eq!(e.code, 404);
    let q = req(
        Operation::Query(Box::new(QueryParams::filter("true"))),
        "external/idm/down/managed/user",
    );
    let e = router.handle(&q).await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (502, "Remote instance 'down' refused the connection")
    );
    assert!(!e.to_string().contains("s3cret"));
    let text = String::from_utf8(metrics.render()).unwrap();
    assert!(
        text.contains("idm_gateway_remote_query_page_seconds_count{instance=\"down\"} 1"),
        "{text}"
    );
    assert!(text.contains("kind=\"connect_refused\""), "{text}");
}

/// Answers query pages from a fixed list, 2 per page, cookie = next offset.
struct Pages(Vec<Value>, bool);

#[async_trait::async_trait]
impl RequestHandler for Pages {
    async fn handle(&self, req: &Request, _rest: &[String]) -> Result<Response, ResourceError> {
        let Operation::Query(q) = &req.op else {
            return Err(req.not_supported());
        };
        if self.1 {
            // A broken server: always the same cookie.
            return Ok(Response::Query(QueryResponse {
                results: vec![json!(1)],
                cookie: Some("same".into()),
                ..Default::default()
            }));
        }
        let start: usize = q.cookie.as_deref().map_or(0, |c| c.parse().unwrap());
        let end = (start + q.page_size).min(self.0.len());
        Ok(Response::Query(QueryResponse {
            results: self.0[start..end].to_vec(),
            cookie: (end < self.0.len()).then(|| end.to_string()),
            ..Default::default()
        }))
    }
}

#[tokio::test]
async fn pager_follows_cookies_and_stops_on_a_loop() {
    let mut router = Router::new(|_| Ok(()));
    router.mount(
        "ok",
        Arc::new(Pages((0..5).map(|i| json!(i)).collect(), false)),
    );
    router.mount("loop", Arc::new(Pages(Vec::new(), true)));
    let query = |path: &str| {
        let mut q = QueryParams::filter("true");
        q.page_size = 2;
        req(Operation::Query(Box::new(q)), path)
    };
    let mut pager = QueryPager::new(query("ok")).unwrap();
    let mut all = Vec::new();
    while let Some(page) = pager.next_page(&router).await.unwrap() {
        assert!(page.results.len() <= 2);
        all.extend(page.results);
    }
    assert_eq!(all, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    assert_eq!(pager.pages(), 3);

    let mut pages = 0;
    let seen = query_pages(&router, query("ok"), |_| {
        pages += 1;
        async move { Ok(pages < 2) }
    })
    .await
    .unwrap();
    assert_eq!((seen, pages), (4, 2));

    let mut pager = QueryPager::new(query("loop")).unwrap();
    assert!(pager.next_page(&router).await.unwrap().is_some());
    assert_eq!(pager.next_page(&router).await.unwrap_err().code, 500);
    assert!(pager.next_page(&router).await.unwrap().is_none());

    let read = req(
        Operation::Read {
            if_none_match: None,
        },
        "ok",
    );
    assert_eq!(QueryPager::new(read).err().unwrap().code, 400);
}

/// A CA and a certificate for `localhost` signed by it, as DER, with the leaf's key.
fn localhost_pki() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut ca = rcgen::CertificateParams::new(vec!["test ca".to_owned()]).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    (
        ca.der().to_vec(),
        leaf.der().to_vec(),
        leaf_key.serialize_der(),
    )
}

/// An HTTPS server for `localhost` answering every request 204, on a free port.
async fn tls_server(leaf: Vec<u8>, key: Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.into()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// A plain TCP server that reads the request and then closes the connection (`close`) or
/// holds it open without a word.
async fn silent_server(close: bool) -> u16 {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            if !close {
                held.push(tcp);
            }
        }
    });
    port
}

/// A TCP server that reads the request and answers bytes that are not HTTP.
async fn garbage_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(b"\x00\x01 this is not HTTP\r\n\r\n").await;
            let _ = tcp.shutdown().await;
        }
    });
    port
}

fn gateway_client(trust: &crate::config::Trust) -> reqwest::Client {
    crate::tls::http_client_builder(trust)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

/// Real failures of the gateway's reqwest client map to the shared failure classes.
#[tokio::test]
async fn reqwest_errors_map_to_failure_classes() {
    let plain = crate::config::Trust::default();
    let err = |url: String, trust: crate::config::Trust| async move {
        gateway_client(&trust).get(url).send().await.unwrap_err()
    };

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let e = err(format!("http://127.0.0.1:{port}/"), plain.clone()).await;
    assert_eq!(classify_transport(&e), UpstreamFailure::Refused, "{e:?}");

    let port = silent_server(true).await;
    let e = err(format!("http://127.0.0.1:{port}/"), plain.clone()).await;
    assert_eq!(classify_transport(&e), UpstreamFailure::Broken, "{e:?}");

    let port = garbage_server().await;
    let e = err(format!("http://127.0.0.1:{port}/"), plain.clone()).await;
    assert_eq!(classify_transport(&e), UpstreamFailure::Protocol, "{e:?}");

    let port = silent_server(false).await;
    let e = err(format!("http://127.0.0.1:{port}/"), plain.clone()).await;
    assert_eq!(
        classify_transport(&e),
        UpstreamFailure::ReadTimeout,
        "{e:?}"
    );

    // A certificate of a CA the gateway does not trust; trusted once the CA is in certs/.
    let (ca, leaf, key) = localhost_pki();
    let port = tls_server(leaf, key).await;
    let url = format!("https://localhost:{port}/");
    let e = err(url.clone(), plain.clone()).await;
    assert_eq!(classify_transport(&e), UpstreamFailure::Tls, "{e:?}");
    let trusted = crate::config::Trust {
        fingerprint: crate::config::fingerprint_of(std::slice::from_ref(&ca), &[]),
        certificates: vec![ca],
        ..Default::default()
    };
    let ok = gateway_client(&trusted).get(url).send().await.unwrap();
    assert_eq!(ok.status(), 204);
}
