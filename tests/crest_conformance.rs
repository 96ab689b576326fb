//! Conformance table: request/response examples of the seeds and crest-wire.md, replayed
//! over HTTP against a real gateway with the shipped `managed.json`. Each row is one
//! request; expected bodies are matched structurally, `"<any>"` matching any value and
//! objects matching when every expected key matches (extra keys are listed where the
//! exact key set matters).

mod common;

use common::fixtures::shipped;

use common::Gateway;
use reqwest::Method;
use serde_json::{json, Value};

/// `expected` ⊆ `actual`, `"<any>"` matching anything present.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == "<any>" => true,
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, y))
        }
        _ => expected == actual,
    }
}

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Option<Value>,
    status: u16,
    expect: Option<Value>,
    /// Exact top-level key order of the body, when it matters.
    keys: Option<&'static [&'static str]>,
}

fn case(what: &'static str, method: Method, path: &'static str, status: u16) -> Case {
    Case {
        what,
        method,
        path,
        headers: &[],
        body: None,
        status,
        expect: None,
        keys: None,
    }
}

impl Case {
    fn headers(mut self, h: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = h;
        self
    }
    fn body(mut self, b: Value) -> Self {
        self.body = Some(b);
        self
    }
    fn expect(mut self, e: Value) -> Self {
        self.expect = Some(e);
        self
    }
    fn keys(mut self, k: &'static [&'static str]) -> Self {
        self.keys = Some(k);
        self
    }
}

#[tokio::test]
async fn seed_and_wire_examples() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let psmith = json!({"userName": "psmith", "sn": "Smith", "givenName": "Patricia",
        "mail": "psmith@example.com", "telephoneNumber": "082082082", "password": "Passw0rd!"});
    let cases = vec![
        // crest-wire §6: ping, anonymous.
        case("ping", Method::GET, "/openidm/info/ping", 200)
            .expect(json!({"_id": "", "state": "ACTIVE_READY", "shortDesc": "OpenIDM ready"}))
            .keys(&["_id", "state", "shortDesc"]),
        // §11: PUT with If-None-Match: * creates with the client's id; server defaults.
        case("create psmith", Method::PUT, "/openidm/managed/user/psmith", 201)
            .headers(&[("If-None-Match", "*")])
            .body(psmith.clone())
            .expect(json!({"_id": "psmith", "_rev": "<any>", "userName": "psmith", "sn": "Smith",
                "givenName": "Patricia", "mail": "psmith@example.com", "telephoneNumber": "082082082",
                "accountStatus": "active", "effectiveRoles": [], "effectiveAssignments": []})),
        case("create again", Method::PUT, "/openidm/managed/user/psmith", 412)
            .headers(&[("If-None-Match", "*")])
            .body(psmith.clone())
            .expect(json!({"code": 412, "reason": "Precondition Failed", "message": "<any>"}))
            .keys(&["code", "reason", "message"]),
        // Password never returned.
        case("read psmith", Method::GET, "/openidm/managed/user/psmith", 200)
            .expect(json!({"_id": "psmith", "userName": "psmith"})),
        case("query-all-ids", Method::GET, "/openidm/managed/user?_queryId=query-all-ids", 200)
            .expect(json!({"result": [{"_id": "psmith", "_rev": "<any>"}], "resultCount": 1,
                "pagedResultsCookie": null, "totalPagedResultsPolicy": "NONE",
                "totalPagedResults": -1, "remainingPagedResults": -1}))
            .keys(&["result", "resultCount", "pagedResultsCookie", "totalPagedResultsPolicy",
                "totalPagedResults", "remainingPagedResults"]),
        case("filter double quotes", Method::GET, "/openidm/managed/user?_queryFilter=userName+eq+%22psmith%22&_fields=_id,userName", 200)
            .expect(json!({"result": [{"_id": "psmith", "_rev": "<any>", "userName": "psmith"}], "resultCount": 1})),
        case("filter single quotes with pointer", Method::GET, "/openidm/managed/user?_queryFilter=/userName%20eq%20'psmith'", 200)
            .expect(json!({"resultCount": 1})),
        case("filter true exact count", Method::GET, "/openidm/managed/user?_queryFilter=true&_totalPagedResultsPolicy=EXACT", 200)
            .expect(json!({"resultCount": 1, "totalPagedResultsPolicy": "EXACT", "totalPagedResults": 1})),
        case("bad filter", Method::GET, "/openidm/managed/user?_queryFilter=userName+eq", 400)
            .expect(json!({"code": 400, "reason": "Bad Request",
                "message": "The value 'userName eq' for parameter '_queryFilter' could not be parsed as a valid query filter"})),
        case("query on password refused", Method::GET, "/openidm/managed/user?_queryFilter=password+pr", 400),
        case("exclusive params", Method::GET, "/openidm/managed/user?_queryId=query-all-ids&_queryFilter=true", 400)
            .expect(json!({"message": "The parameters _queryId and _queryFilter are mutually exclusive"})),
        // §0 Conditional ops table.
        case("If-Match wrong rev", Method::PUT, "/openidm/managed/user/psmith", 412)
            .headers(&[("If-Match", "\"not-the-rev\"")])
            .body(psmith.clone()),
        case("If-Match *", Method::PUT, "/openidm/managed/user/psmith", 200)
            .headers(&[("If-Match", "*")])
            .body(json!({"userName": "psmith", "sn": "Smith", "givenName": "Pat", "mail": "psmith@example.com"}))
            .expect(json!({"givenName": "Pat"})),
        case("upsert creates", Method::PUT, "/openidm/managed/user/bjensen", 201)
            .body(json!({"userName": "bjensen", "sn": "Jensen", "givenName": "Barbara", "mail": "bjensen@example.com",
                "phoneNumber": ["202-555-0185", "202-555-0100", "202-555-0185"]}))
            .expect(json!({"_id": "bjensen", "phoneNumber": "<any>"})),
        case("upsert updates", Method::PUT, "/openidm/managed/user/bjensen", 200)
            .body(json!({"userName": "bjensen", "sn": "Jensen", "givenName": "Babs", "mail": "bjensen@example.com",
                "phoneNumber": ["202-555-0185", "202-555-0100", "202-555-0185"]}))
            .expect(json!({"givenName": "Babs"})),
        // seed002: remove by value removes every equal element; /- appends.
        case("patch remove by value", Method::PATCH, "/openidm/managed/user/bjensen", 200)
            .body(json!([{"operation": "remove", "field": "/phoneNumber/", "value": "202-555-0185"},
                         {"operation": "add", "field": "/phoneNumber/-", "value": "202-555-0199"},
                         {"operation": "replace", "field": "/sn", "value": "Jensen-Smith"}]))
            .expect(json!({"phoneNumber": ["202-555-0100", "202-555-0199"], "sn": "Jensen-Smith"})),
        case("patch by index refused", Method::PATCH, "/openidm/managed/user/bjensen", 400)
            .body(json!([{"operation": "add", "field": "/phoneNumber/0", "value": "x"}])),
        case("patch transform refused outside config", Method::PATCH, "/openidm/managed/user/bjensen", 400)
            .body(json!([{"operation": "transform", "field": "/sn", "value": {"type": "text/javascript", "source": "x"}}])),
        case("patch If-None-Match", Method::PATCH, "/openidm/managed/user/bjensen", 412)
            .headers(&[("If-None-Match", "\"1\"")])
            .body(json!([]))
            .expect(json!({"message": "Use of If-None-Match not supported for PATCH requests"})),
        // seed002: patch by query.
        case("patch by query", Method::POST, "/openidm/managed/user?_action=patch&_queryId=for-userName&uid=bjensen", 200)
            .body(json!([{"operation": "replace", "field": "/description", "value": "patched"}]))
            .expect(json!([{"_id": "bjensen", "description": "patched"}])),
        // Policy validation.
        case("required missing", Method::POST, "/openidm/managed/user?_action=create", 403)
            .body(json!({"userName": "nomail", "sn": "x", "givenName": "y"}))
            .expect(json!({"code": 403, "reason": "Forbidden", "message": "Policy validation failed",
                "detail": {"result": false, "failedPolicyRequirements": [
                    {"property": "mail", "policyRequirements": [{"policyRequirement": "REQUIRED"}]}]}})),
        case("unique userName", Method::POST, "/openidm/managed/user?_action=create", 403)
            .body(json!({"userName": "psmith", "sn": "x", "givenName": "y", "mail": "z@example.com"}))
            .expect(json!({"detail": {"failedPolicyRequirements": [
                {"property": "userName", "policyRequirements": [{"policyRequirement": "VALID_USERNAME"}]}]}})),
        case("wrong type", Method::POST, "/openidm/managed/user?_action=create", 403)
            .body(json!({"userName": 7, "sn": "x", "givenName": "y", "mail": "z@example.com"}))
            .expect(json!({"detail": {"failedPolicyRequirements": [
                {"property": "userName", "policyRequirements": [{"policyRequirement": "VALID_TYPE", "params": {"invalidType": "number", "validTypes": ["string"]}}]}]}})),
        case("server-assigned id", Method::POST, "/openidm/managed/role?_action=create", 201)
            .body(json!({"name": "testManagedRole", "description": "a managed role for test"}))
            .expect(json!({"_id": "<any>", "_rev": "<any>", "name": "testManagedRole"})),
        // Errors.
        case("unknown type", Method::GET, "/openidm/managed/nosuch/x", 404)
            .expect(json!({"code": 404, "reason": "Not Found", "message": "<any>"})),
        case("unknown object", Method::GET, "/openidm/managed/user/nosuch", 404)
            .expect(json!({"code": 404, "reason": "Not Found", "message": "Object nosuch not found in managed/user"})),
        case("wrong content type", Method::POST, "/openidm/managed/user?_action=create", 400)
            .headers(&[("Content-Type", "text/plain")])
            .body(json!({})),
        case("unsupported method", Method::OPTIONS, "/openidm/managed/user", 501)
            .expect(json!({"code": 501, "reason": "Not Implemented"})),
        case("If-Modified-Since", Method::GET, "/openidm/managed/user/psmith", 409)
            .headers(&[("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT")]),
        case("queryExpression not supported", Method::GET, "/openidm/managed/user?_queryExpression=select", 501),
        // Config list and config/managed read (seed001/002).
        case("config list", Method::GET, "/openidm/config", 200)
            .expect(json!({"_id": "", "configurations": [{"_id": "managed", "pid": "managed", "factoryPid": null}]})),
        case("config query", Method::GET, "/openidm/config?_queryFilter=_id+eq+%22managed%22", 200)
            .expect(json!({"resultCount": 1})),
        case("info login", Method::GET, "/openidm/info/login", 200)
            .expect(json!({"_id": "login", "authenticationId": "openidm-admin",
                "authorization": {"id": "openidm-admin", "component": "internal/user",
                    "roles": ["internal/role/openidm-admin", "internal/role/openidm-authorized"]}})),
        // Delete returns the last state.
        case("delete", Method::DELETE, "/openidm/managed/user/bjensen", 200)
            .expect(json!({"_id": "bjensen", "givenName": "Babs"})),
        case("deleted", Method::GET, "/openidm/managed/user/bjensen", 404),
    ];
    for c in cases {
        let mut rb = gw.request(c.method.clone(), c.path);
        for (k, v) in c.headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = &c.body {
            if !c
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                rb = rb.header("Content-Type", "application/json");
            }
            rb = rb.body(b.to_string());
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(
            status, c.status,
            "{}: {} {} -> {text}",
            c.what, c.method, c.path
        );
        if let Some(expect) = &c.expect {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", c.what));
            assert!(
                matches(expect, &body),
                "{}: expected ⊆ {expect}\n got {body}",
                c.what
            );
            assert!(
                !text.contains("$crypto") && !text.contains("Passw0rd"),
                "{}: secret leaked: {text}",
                c.what
            );
        }
        if let Some(keys) = c.keys {
            let body: Value = serde_json::from_str(&text).unwrap();
            let actual: Vec<&str> = body
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(actual, keys, "{}: key order", c.what);
        }
    }
}

#[tokio::test]
async fn http_semantics_etag_location_304_and_paging() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let resp = gw
        .post("/openidm/managed/user?_action=create")
        .json(&json!({"userName": "u0", "sn": "s", "givenName": "g", "mail": "m@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = resp.json().await.unwrap();
    let id = created["_id"].as_str().unwrap();
    assert_eq!(etag, format!("\"{}\"", created["_rev"].as_str().unwrap()));
    assert_eq!(location, gw.url(&format!("/openidm/managed/user/{id}")));
    assert!(uuid_like(id), "{id}");

    // Read with the current revision in If-None-Match: 304, no body.
    let resp = gw
        .get(&format!("/openidm/managed/user/{id}"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert!(resp.text().await.unwrap().is_empty());

    // Pretty print.
    let text = gw
        .get(&format!("/openidm/managed/user/{id}?_prettyPrint=true"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\n  \"_id\""), "{text}");

    for i in 1..25 {
        let resp = gw
            .post("/openidm/managed/user?_action=create")
            .json(&json!({"userName": format!("u{i}"), "sn": "s", "givenName": "g", "mail": "m@example.com", "n": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    // Keyset paging sorted by a property, descending; all 25 seen exactly once.
    let mut seen = Vec::new();
    let mut cookie: Option<String> = None;
    loop {
        let mut path = "/openidm/managed/user?_queryFilter=true&_pageSize=7&_sortKeys=-userName&_fields=userName".to_string();
        if let Some(c) = &cookie {
            path.push_str(&format!("&_pagedResultsCookie={}", urlencode(c)));
        }
        let page: Value = gw.get(&path).send().await.unwrap().json().await.unwrap();
        for r in page["result"].as_array().unwrap() {
            seen.push(r["userName"].as_str().unwrap().to_owned());
        }
        match page["pagedResultsCookie"].as_str() {
            Some(c) => cookie = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..25).map(|i| format!("u{i}")).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(seen, expected);

    // Offset paging and numbers.
    let page: Value = gw
        .get("/openidm/managed/user?_queryFilter=n+ge+20&_sortKeys=n&_pageSize=2&_pagedResultsOffset=1&_fields=n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ns: Vec<i64> = page["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![21, 22]);

    // A garbage cookie is a 400, not a crash.
    let resp = gw
        .get("/openidm/managed/user?_queryFilter=true&_pageSize=2&_pagedResultsCookie=garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Seed 002's conditional table for `PUT`, on every store-backed resource: `If-Match` (a
/// revision or `*`) only updates, so on a missing object it is a 404 and nothing is created;
/// `If-None-Match: *` only creates (412 when the object exists); only a `PUT` with neither
/// header creates when absent.
#[tokio::test]
async fn put_conditional_headers_follow_the_seed_table() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let bodies = [
        (
            "managed/user",
            json!({"userName": "c1", "sn": "s", "givenName": "g", "mail": "m@example.com"}),
        ),
        (
            "internal/user",
            json!({"password": "Passw0rd-long-enough", "authzRoles": []}),
        ),
        ("internal/role", json!({"name": "c1", "description": "d"})),
    ];
    for (resource, body) in bodies {
        let path = format!("/openidm/{resource}/cond-1");
        for if_match in ["*", "\"0\"", "3"] {
            let (s, v) = common::json_of(
                gw.put(&path)
                    .header("If-Match", if_match)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(s, 404, "{resource} If-Match {if_match}: {v}");
            assert_eq!(v["reason"], "Not Found", "{v}");
            let s = gw.get(&path).send().await.unwrap().status();
            assert_eq!(s, 404, "{resource}: If-Match {if_match} created the object");
        }
        // Create-only: creates once, then 412 and the object is unchanged.
        let r = gw
            .put(&path)
            .header("If-None-Match", "*")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{resource}");
        let (s, before) = common::json_of(gw.get(&path).send().await.unwrap()).await;
        assert_eq!(s, 200);
        let (s, v) = common::json_of(
            gw.put(&path)
                .header("If-None-Match", "*")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 412, "{resource}: {v}");
        let (_, after) = common::json_of(gw.get(&path).send().await.unwrap()).await;
        assert_eq!(
            before["_rev"], after["_rev"],
            "{resource}: a refused create wrote"
        );
        // If-Match: * now updates; neither header upserts a new id.
        let r = gw
            .put(&path)
            .header("If-Match", "*")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{resource}");
        // Unique properties (userName, name) need a value of their own.
        let mut other = body.clone();
        for unique in ["userName", "name"] {
            if other.get(unique).is_some() {
                other[unique] = json!("c2");
            }
        }
        let r = gw
            .put(&format!("/openidm/{resource}/cond-2"))
            .json(&other)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{resource}: {}", r.status());
        assert_eq!(
            gw.get(&format!("/openidm/{resource}/cond-2"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

/// A client that read an object before it was deleted and created again must not overwrite
/// the new object with its old `_rev`: revisions never repeat for an id.
#[tokio::test]
async fn stale_rev_of_a_deleted_object_is_412_on_the_recreated_one() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let body = json!({"userName": "again", "sn": "s", "givenName": "g", "mail": "m@example.com"});
    let path = "/openidm/managed/user/again";
    let mut old_revs = Vec::new();
    for _ in 0..2 {
        let (s, v) = common::json_of(
            gw.put(path)
                .header("If-None-Match", "*")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        old_revs.push(v["_rev"].as_str().unwrap().to_owned());
        let r = gw.delete(path).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = gw
        .put(path)
        .header("If-None-Match", "*")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for rev in &old_revs {
        let (s, v) = common::json_of(
            gw.put(path)
                .header("If-Match", format!("\"{rev}\""))
                .json(&json!({"userName": "again", "sn": "overwritten", "givenName": "g", "mail": "m@example.com"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 412, "old _rev {rev}: {v}");
        let r = gw
            .delete(path)
            .header("If-Match", format!("\"{rev}\""))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 412, "old _rev {rev}");
    }
    let (_, v) = common::json_of(gw.get(path).send().await.unwrap()).await;
    assert_eq!(v["sn"], "s");
}

/// Streamed (unpaged) queries with no match, one match and an error before the first result
/// answer the full envelope over a connection that stays usable.
#[tokio::test]
async fn unpaged_queries_answer_the_whole_envelope() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let r = gw
        .put("/openidm/managed/user/one")
        .json(&json!({"userName": "one", "sn": "s", "givenName": "g", "mail": "m@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for (filter, count) in [
        ("userName+eq+%22none%22", 0),
        ("userName+eq+%22one%22", 1),
        ("true", 1),
    ] {
        for _ in 0..2 {
            let (s, v) = common::json_of(
                gw.get(&format!("/openidm/managed/user?_queryFilter={filter}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(s, 200, "{filter}: {v}");
            assert_eq!(v["resultCount"], count, "{filter}: {v}");
            assert_eq!(v["result"].as_array().unwrap().len(), count);
            assert_eq!(v["totalPagedResults"], -1);
        }
    }
}
