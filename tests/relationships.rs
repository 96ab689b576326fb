//! IDM's relationship model on a running gateway: relationship properties stored as edges,
//! both sides of reverse relationships, `_fields` forms, sub-collections (seed 002's group
//! routes verbatim), integrity on delete, `validate`, and concurrent writers.

mod common;

use std::collections::BTreeSet;

use common::{json_of, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

/// A relationship property as IDM's `managed.json` declares one.
fn rel(array: bool, reverse: Option<&str>, path: &str, extra: Value) -> Value {
    let mut items = json!({
        "type": "relationship", "validate": true,
        "properties": {"_ref": {"type": "string"}, "_refProperties": {"type": "object",
            "properties": {"_id": {"type": "string"}, "_grantType": {"type": "string"}}}},
        "resourceCollection": [{"path": path, "label": "x",
            "query": {"queryFilter": "true", "fields": ["name"]}}]
    });
    if let Some(r) = reverse {
        items["reverseRelationship"] = json!(true);
        items["reversePropertyName"] = json!(r);
    }
    for (k, v) in extra.as_object().unwrap() {
        items[k] = v.clone();
    }
    if array {
        json!({"type": "array", "returnByDefault": false, "items": items})
    } else {
        items["returnByDefault"] = json!(false);
        items
    }
}

fn managed() -> Value {
    json!({"objects": [
        {"name": "alpha_user", "schema": {"properties": {
            "userName": {"type": "string", "searchable": true},
            "roles": rel(true, Some("members"), "managed/alpha_role", json!({})),
            "groups": rel(true, Some("members"), "managed/alpha_group", json!({})),
            "manager": rel(false, Some("reports"), "managed/alpha_user", json!({})),
            "reports": rel(true, Some("manager"), "managed/alpha_user", json!({})),
            "favourite": rel(false, None, "managed/alpha_role", json!({"validate": false})),
        }}},
        {"name": "alpha_role", "schema": {"properties": {
            "name": {"type": "string", "searchable": true},
            "members": rel(true, Some("roles"), "managed/alpha_user", json!({})),
        }}},
        {"name": "alpha_group", "schema": {"properties": {
            "name": {"type": "string", "searchable": true},
            "members": rel(true, Some("groups"), "managed/alpha_user", json!({})),
        }}},
    ]})
}

async fn gateway() -> Gateway {
    Gateway::builder()
        .conf_file("managed", managed())
        .start()
        .await
}

async fn send(gw: &Gateway, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = gw.request(method, path);
    if let Some(body) = body {
        r = r.json(&body);
    }
    json_of(r.send().await.unwrap()).await
}

async fn ok(gw: &Gateway, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, body) = send(gw, method.clone(), path, body).await;
    assert!(
        status == 200 || status == 201,
        "{method} {path}: {status} {body}"
    );
    body
}

async fn create(gw: &Gateway, path: &str, body: Value) -> Value {
    ok(gw, Method::PUT, path, Some(body)).await
}

/// The `_refResourceId`s of a relationship value (array or single).
fn ids(v: &Value) -> BTreeSet<String> {
    let list = match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        v => vec![v.clone()],
    };
    list.iter()
        .map(|r| r["_refResourceId"].as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_and_members_are_one_edge_seen_from_both_sides() {
    let gw = gateway().await;
    for r in ["r1", "r2", "r3"] {
        create(
            &gw,
            &format!("/openidm/managed/alpha_role/{r}"),
            json!({"name": r}),
        )
        .await;
    }
    let created = create(
        &gw,
        "/openidm/managed/alpha_user/bjensen?_fields=*,roles",
        json!({"userName": "bjensen", "roles": [
            {"_ref": "managed/alpha_role/r1", "_refProperties": {"_grantType": ""}},
            {"_ref": "managed/alpha_role/r2"}]}),
    )
    .await;
    assert_eq!(ids(&created["roles"]), set(&["r1", "r2"]), "{created}");
    let r1 = created["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["_refResourceId"] == "r1")
        .unwrap()
        .clone();
    assert_eq!(r1["_ref"], "managed/alpha_role/r1");
    assert_eq!(r1["_refResourceCollection"], "managed/alpha_role");
    assert_eq!(r1["_refProperties"]["_grantType"], "");
    assert!(r1["_refProperties"]["_id"].is_string() && r1["_refProperties"]["_rev"].is_string());

    // Not returned unless asked; never stored in the object.
    let plain = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/bjensen",
        None,
    )
    .await;
    assert!(plain.get("roles").is_none(), "{plain}");
    let raw = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/bjensen?_fields=*_ref",
        None,
    )
    .await;
    assert_eq!(ids(&raw["roles"]), set(&["r1", "r2"]));
    assert!(raw["manager"].is_null(), "{raw}");
    assert!(raw.get("userName").is_none(), "*_ref: relationships only");

    // The reverse side is the same edge.
    let role = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_role/r1?_fields=*,members",
        None,
    )
    .await;
    assert_eq!(role["name"], "r1");
    assert_eq!(ids(&role["members"]), set(&["bjensen"]));
    assert_eq!(
        role["members"][0]["_refProperties"]["_id"], r1["_refProperties"]["_id"],
        "one edge from both sides"
    );

    // Expansion of the referenced objects.
    let names = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/bjensen?_fields=roles/name",
        None,
    )
    .await;
    let mut got: Vec<&str> = names["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["r1", "r2"], "{names}");
    let all = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/bjensen?_fields=roles/*",
        None,
    )
    .await;
    assert!(all["roles"][0]["name"].is_string() && all["roles"][0]["_ref"].is_string());

    // PATCH: add, remove by value, replace.
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen",
        Some(json!([{"operation": "add", "field": "/roles/-",
                      "value": {"_ref": "managed/alpha_role/r3"}}])),
    )
    .await;
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen",
        Some(json!([{"operation": "add", "field": "/roles/-",
                      "value": {"_ref": "managed/alpha_role/r3"}}])),
    )
    .await;
    assert_eq!(status, 412, "the same relationship twice: {body}");
    let after = ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen?_fields=roles",
        Some(json!([{"operation": "remove", "field": "/roles",
                      "value": {"_ref": "managed/alpha_role/r1"}}])),
    )
    .await;
    assert_eq!(ids(&after["roles"]), set(&["r2", "r3"]), "{after}");
    let members = |r: &'static str| {
        let gw = &gw;
        async move {
            ids(&ok(
                gw,
                Method::GET,
                &format!("/openidm/managed/alpha_role/{r}?_fields=members"),
                None,
            )
            .await["members"])
        }
    };
    assert!(members("r1").await.is_empty());
    assert_eq!(members("r3").await, set(&["bjensen"]));
    let replaced = ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen?_fields=roles",
        Some(json!([{"operation": "replace", "field": "/roles",
                      "value": [{"_ref": "managed/alpha_role/r1"}]}])),
    )
    .await;
    assert_eq!(ids(&replaced["roles"]), set(&["r1"]));

    // PUT replaces the set when it names the property, keeps it when it does not.
    let put = ok(
        &gw,
        Method::PUT,
        "/openidm/managed/alpha_user/bjensen?_fields=*,roles",
        Some(json!({"userName": "bjensen", "roles": [
            {"_ref": "managed/alpha_role/r2"}, {"_ref": "managed/alpha_role/r3"}]})),
    )
    .await;
    assert_eq!(ids(&put["roles"]), set(&["r2", "r3"]));
    let put = ok(
        &gw,
        Method::PUT,
        "/openidm/managed/alpha_user/bjensen?_fields=*,roles",
        Some(json!({"userName": "bjensen", "mail": "b@example.com"})),
    )
    .await;
    assert_eq!(ids(&put["roles"]), set(&["r2", "r3"]));
    assert_eq!(members("r1").await, set(&[]));
    assert_eq!(members("r2").await, set(&["bjensen"]));
    // Changing a relationship's properties through the object keeps its edge id.
    let before = put["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["_refResourceId"] == "r2")
        .unwrap()["_refProperties"]["_id"]
        .clone();
    let changed = ok(
        &gw,
        Method::PUT,
        "/openidm/managed/alpha_user/bjensen?_fields=roles",
        Some(
            json!({"userName": "bjensen", "mail": "b@example.com", "roles": [
            {"_ref": "managed/alpha_role/r2", "_refProperties": {"_grantType": "x"}},
            {"_ref": "managed/alpha_role/r3"}]}),
        ),
    )
    .await;
    let r2 = changed["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["_refResourceId"] == "r2")
        .unwrap()
        .clone();
    assert_eq!(r2["_refProperties"]["_id"], before);
    assert_eq!(r2["_refProperties"]["_grantType"], "x");
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen",
        Some(json!([{"operation": "add", "field": "/roles/-",
                      "value": {"_ref": "managed/alpha_role/r1", "_refProperties": {"_grantType": 5}}}])),
    )
    .await;
    assert_eq!(
        status, 400,
        "declared _refProperties types are checked: {body}"
    );

    // Adding from the role side shows on the user.
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_role/r1",
        Some(json!([{"operation": "add", "field": "/members/-",
                      "value": {"_ref": "managed/alpha_user/bjensen"}}])),
    )
    .await;
    let user = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/bjensen?_fields=roles",
        None,
    )
    .await;
    assert_eq!(ids(&user["roles"]), set(&["r1", "r2", "r3"]));

    // Bad references are refused with the reference named.
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen",
        Some(json!([{"operation": "add", "field": "/roles/-",
                      "value": {"_ref": "managed/alpha_role/nope"}}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["message"],
        "The referenced relationship 'managed/alpha_role/nope', does not exist"
    );
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen",
        Some(json!([{"operation": "add", "field": "/roles/-",
                      "value": {"_ref": "managed/alpha_group/g1"}}])),
    )
    .await;
    assert_eq!(status, 400, "not in resourceCollection: {body}");
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen",
        Some(json!([{"operation": "add", "field": "/roles/-", "value": "r1"}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("is invalid as a relationship reference"));
    // Without validate, a dangling reference is kept as given.
    let fav = ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/bjensen?_fields=favourite",
        Some(json!([{"operation": "replace", "field": "/favourite",
                      "value": {"_ref": "managed/alpha_role/ghost"}}])),
    )
    .await;
    assert_eq!(fav["favourite"]["_refResourceId"], "ghost");
}

#[tokio::test(flavor = "multi_thread")]
async fn group_members_sub_collection_as_seed_002_uses_it() {
    let gw = gateway().await;
    create(
        &gw,
        "/openidm/managed/alpha_group/g1",
        json!({"name": "g1"}),
    )
    .await;
    for u in ["u1", "u2", "u3"] {
        create(
            &gw,
            &format!("/openidm/managed/alpha_user/{u}"),
            json!({"userName": u}),
        )
        .await;
    }
    let mut edge_ids = Vec::new();
    for u in ["u3", "u1", "u2"] {
        let (status, created) = send(
            &gw,
            Method::POST,
            "/openidm/managed/alpha_group/g1/members?_action=create",
            Some(json!({"_ref": format!("managed/alpha_user/{u}"),
                        "_refProperties": {"_grantType": "manual"}})),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["_refResourceId"], u);
        assert_eq!(created["_id"], created["_refProperties"]["_id"]);
        edge_ids.push(created["_id"].as_str().unwrap().to_owned());
    }
    let (status, body) = send(
        &gw,
        Method::POST,
        "/openidm/managed/alpha_group/g1/members?_action=create",
        Some(json!({"_ref": "managed/alpha_user/u1"})),
    )
    .await;
    assert_eq!(status, 412, "already a member: {body}");

    let group = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_group/g1?_fields=name,members",
        None,
    )
    .await;
    assert_eq!(group["name"], "g1");
    assert_eq!(ids(&group["members"]), set(&["u1", "u2", "u3"]));
    let user = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/u2?_fields=groups",
        None,
    )
    .await;
    assert_eq!(ids(&user["groups"]), set(&["g1"]));

    let q = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_group/g1/members?_queryFilter=true&_sortKeys=_refResourceId&_fields=_ref,_refProperties,userName",
        None,
    )
    .await;
    let order: Vec<&str> = q["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["u1", "u2", "u3"], "{q}");
    let q = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_group/g1/members?_queryFilter=_refResourceId%20eq%20%22u2%22",
        None,
    )
    .await;
    assert_eq!(q["resultCount"], 1, "{q}");
    let q = ok(
        &gw,
        Method::GET,
        &format!(
            "/openidm/managed/alpha_group/g1/members?_queryFilter=_refProperties/_id%20eq%20%22{}%22",
            edge_ids[0]
        ),
        None,
    )
    .await;
    assert_eq!(q["result"][0]["_refResourceId"], "u3", "{q}");
    let page = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_group/g1/members?_queryFilter=_refProperties/_grantType%20eq%20%22manual%22&_sortKeys=-_refResourceId&_pageSize=2&_totalPagedResultsPolicy=EXACT",
        None,
    )
    .await;
    assert_eq!(page["totalPagedResults"], 3, "{page}");
    assert_eq!(ids(&page["result"]), set(&["u3", "u2"]));
    let cookie = page["pagedResultsCookie"].as_str().unwrap();
    let next = ok(
        &gw,
        Method::GET,
        &format!("/openidm/managed/alpha_group/g1/members?_queryFilter=true&_sortKeys=-_refResourceId&_pageSize=2&_pagedResultsCookie={cookie}"),
        None,
    )
    .await;
    assert_eq!(ids(&next["result"]), set(&["u1"]));

    // One relationship by its edge id: read, update, patch, delete.
    let one = format!("/openidm/managed/alpha_group/g1/members/{}", edge_ids[1]);
    let read = ok(&gw, Method::GET, &one, None).await;
    assert_eq!(read["_refResourceId"], "u1");
    let updated = ok(
        &gw,
        Method::PUT,
        &one,
        Some(json!({"_ref": "managed/alpha_user/u1", "_refProperties": {"_grantType": "x"}})),
    )
    .await;
    assert_eq!(updated["_refProperties"]["_grantType"], "x");
    let patched = ok(
        &gw,
        Method::PATCH,
        &one,
        Some(
            json!([{"operation": "replace", "field": "/_refProperties/_grantType", "value": "y"}]),
        ),
    )
    .await;
    assert_eq!(patched["_refProperties"]["_grantType"], "y");
    let user = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/u1?_fields=groups",
        None,
    )
    .await;
    assert_eq!(user["groups"][0]["_refProperties"]["_grantType"], "y");
    let deleted = ok(&gw, Method::DELETE, &one, None).await;
    assert_eq!(deleted["_refResourceId"], "u1");
    let (status, _) = send(&gw, Method::GET, &one, None).await;
    assert_eq!(status, 404);
    let user = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/u1?_fields=groups",
        None,
    )
    .await;
    assert_eq!(user["groups"], json!([]));
    let (status, _) = send(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_group/g1/nosuch?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn manager_and_reports_and_delete_integrity() {
    let gw = gateway().await;
    for u in ["boss", "a", "b", "other"] {
        create(
            &gw,
            &format!("/openidm/managed/alpha_user/{u}"),
            json!({"userName": u}),
        )
        .await;
    }
    for u in ["a", "b"] {
        ok(
            &gw,
            Method::PATCH,
            &format!("/openidm/managed/alpha_user/{u}"),
            Some(json!([{"operation": "replace", "field": "/manager",
                          "value": {"_ref": "managed/alpha_user/boss"}}])),
        )
        .await;
    }
    let boss = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/boss?_fields=reports/userName",
        None,
    )
    .await;
    assert_eq!(ids(&boss["reports"]), set(&["a", "b"]));
    assert!(boss["reports"][0]["userName"].is_string(), "{boss}");
    let a = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/a?_fields=manager",
        None,
    )
    .await;
    assert_eq!(a["manager"]["_refResourceId"], "boss", "{a}");
    // `a` has a manager: another one cannot take it as a report.
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/other",
        Some(json!([{"operation": "add", "field": "/reports/-",
                      "value": {"_ref": "managed/alpha_user/a"}}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("'manager'"),
        "{body}"
    );
    // Changing the manager moves the report.
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/a",
        Some(json!([{"operation": "replace", "field": "/manager",
                      "value": {"_ref": "managed/alpha_user/other"}}])),
    )
    .await;
    let boss = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/boss?_fields=reports",
        None,
    )
    .await;
    assert_eq!(ids(&boss["reports"]), set(&["b"]));

    // Deleting an object deletes its edges, on both sides.
    ok(
        &gw,
        Method::DELETE,
        "/openidm/managed/alpha_user/boss",
        None,
    )
    .await;
    let b = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/b?_fields=manager",
        None,
    )
    .await;
    assert!(b["manager"].is_null(), "{b}");
    create(
        &gw,
        "/openidm/managed/alpha_user/boss",
        json!({"userName": "boss"}),
    )
    .await;
    let boss = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/boss?_fields=reports",
        None,
    )
    .await;
    assert_eq!(boss["reports"], json!([]), "a new object inherits nothing");
    // Removing the manager with a remove without value.
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/alpha_user/a",
        Some(json!([{"operation": "remove", "field": "/manager"}])),
    )
    .await;
    let other = ok(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user/other?_fields=reports",
        None,
    )
    .await;
    assert_eq!(other["reports"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_adds_from_both_sides_agree() {
    let gw = gateway().await;
    let roles = ["c1", "c2", "c3"];
    for r in roles {
        create(
            &gw,
            &format!("/openidm/managed/alpha_role/{r}"),
            json!({"name": r}),
        )
        .await;
    }
    let users: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
    for u in &users {
        create(
            &gw,
            &format!("/openidm/managed/alpha_user/{u}"),
            json!({"userName": u}),
        )
        .await;
    }
    // Every pair is added twice at once: from the user (PATCH) and from the role
    // (sub-collection create). Exactly one of the two wins.
    let mut tasks = Vec::new();
    for u in &users {
        for r in roles {
            let gw = &gw;
            tasks.push(Box::pin(async move {
                gw.request(Method::PATCH, &format!("/openidm/managed/alpha_user/{u}"))
                    .json(&json!([{"operation": "add", "field": "/roles/-",
                                   "value": {"_ref": format!("managed/alpha_role/{r}")}}]))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
                as std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send>>);
            tasks.push(Box::pin(async move {
                gw.request(
                    Method::POST,
                    &format!("/openidm/managed/alpha_role/{r}/members?_action=create"),
                )
                .json(&json!({"_ref": format!("managed/alpha_user/{u}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
            }));
        }
    }
    let mut won = 0;
    for status in futures_util::future::join_all(tasks).await {
        match status {
            200 | 201 => won += 1,
            412 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(won, users.len() * roles.len(), "one add per pair wins");
    for r in roles {
        let role = ok(
            &gw,
            Method::GET,
            &format!("/openidm/managed/alpha_role/{r}?_fields=members"),
            None,
        )
        .await;
        let members = role["members"].as_array().unwrap();
        assert_eq!(members.len(), users.len(), "no duplicate edge: {role}");
        assert_eq!(ids(&role["members"]).len(), users.len());
    }
    for u in &users {
        let user = ok(
            &gw,
            Method::GET,
            &format!("/openidm/managed/alpha_user/{u}?_fields=roles"),
            None,
        )
        .await;
        assert_eq!(ids(&user["roles"]), set(&roles));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_are_queried_by_their_relationships() {
    let gw = gateway().await;
    for r in ["r1", "r2"] {
        create(
            &gw,
            &format!("/openidm/managed/alpha_role/{r}"),
            json!({"name": r}),
        )
        .await;
    }
    create(
        &gw,
        "/openidm/managed/alpha_user/bjensen",
        json!({"userName": "bjensen"}),
    )
    .await;
    create(
        &gw,
        "/openidm/managed/alpha_user/a",
        json!({"userName": "a", "manager": {"_ref": "managed/alpha_user/bjensen"},
               "roles": [{"_ref": "managed/alpha_role/r1", "_refProperties": {"_grantType": "conditional"}}]}),
    )
    .await;
    create(
        &gw,
        "/openidm/managed/alpha_user/b",
        json!({"userName": "b", "roles": [{"_ref": "managed/alpha_role/r2"}]}),
    )
    .await;
    ok(
        &gw,
        Method::POST,
        "/openidm/managed/alpha_role/r1/members?_action=create",
        Some(json!({"_ref": "managed/alpha_user/b"})),
    )
    .await;
    let query = |filter: &'static str| {
        let gw = &gw;
        async move {
            let body = ok(
                gw,
                Method::GET,
                &format!(
                    "/openidm/managed/alpha_user?_queryFilter={}&_fields=_id",
                    filter.replace(' ', "%20").replace('"', "%22")
                ),
                None,
            )
            .await;
            body["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["_id"].as_str().unwrap().to_owned())
                .collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(
        query(r#"/manager/_refResourceId eq "bjensen""#).await,
        set(&["a"])
    );
    assert_eq!(
        query(r#"/roles/_refResourceId eq "r1""#).await,
        set(&["a", "b"])
    );
    assert_eq!(
        query(r#"/roles/_ref eq "managed/alpha_role/r2""#).await,
        set(&["b"])
    );
    assert_eq!(
        query(r#"/reports/_refResourceId eq "a""#).await,
        set(&["bjensen"])
    );
    assert_eq!(
        query(r#"/roles/_refProperties/_grantType eq "conditional""#).await,
        set(&["a"])
    );
    assert_eq!(
        query(r#"userName eq "b" and /roles/_refResourceId eq "r1""#).await,
        set(&["b"])
    );
    assert_eq!(query(r#"!(/roles pr)"#).await, set(&["bjensen"]));
    let (status, body) = send(
        &gw,
        Method::GET,
        "/openidm/managed/alpha_user?_queryFilter=/roles/name%20eq%20%22x%22",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_roles_list_their_authz_members() {
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/managed.json"))
            .unwrap(),
    )
    .unwrap();
    let gw = Gateway::builder()
        .conf_file("managed", shipped)
        .start()
        .await;
    // Seeded: openidm-admin holds openidm-admin through an edge.
    let role = ok(
        &gw,
        Method::GET,
        "/openidm/internal/role/openidm-admin?_fields=*,authzMembers",
        None,
    )
    .await;
    assert_eq!(role["name"], "openidm-admin");
    assert_eq!(
        ids(&role["authzMembers"]),
        set(&["openidm-admin"]),
        "{role}"
    );
    // A managed user granted an internal role shows among its members, and an internal
    // user granted one logs in with it.
    create(
        &gw,
        "/openidm/managed/user/bjensen",
        json!({"userName": "bjensen", "givenName": "B", "sn": "J", "mail": "b@example.com",
               "authzRoles": [{"_ref": "internal/role/openidm-authorized"}]}),
    )
    .await;
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/user/auditor",
        Some(json!({"password": "Aud1tor!-long", "authzRoles": [
            {"_ref": "internal/role/openidm-authorized"}]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let role = ok(
        &gw,
        Method::GET,
        "/openidm/internal/role/openidm-authorized?_fields=*,authzMembers",
        None,
    )
    .await;
    let members: BTreeSet<String> = role["authzMembers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_ref"].as_str().unwrap().to_owned())
        .collect();
    assert!(members.contains("managed/user/bjensen"), "{role}");
    assert!(members.contains("internal/user/auditor"), "{role}");
    assert!(members.contains("internal/user/openidm-admin"), "{role}");
    let login = gw
        .as_user(
            Method::GET,
            "/openidm/info/login",
            "auditor",
            "Aud1tor!-long",
        )
        .send()
        .await
        .unwrap();
    let (status, login) = json_of(login).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(
        login["authorization"]["roles"],
        json!(["internal/role/openidm-authorized"])
    );
    // The sub-collection of an internal role.
    let q = ok(
        &gw,
        Method::GET,
        "/openidm/internal/role/openidm-authorized/authzMembers?_queryFilter=_refResourceCollection%20eq%20%22managed/user%22",
        None,
    )
    .await;
    assert_eq!(ids(&q["result"]), set(&["bjensen"]), "{q}");
    // Deleting the managed user removes it from the role.
    ok(&gw, Method::DELETE, "/openidm/managed/user/bjensen", None).await;
    let q = ok(
        &gw,
        Method::GET,
        "/openidm/internal/role/openidm-authorized/authzMembers?_queryFilter=_refResourceCollection%20eq%20%22managed/user%22",
        None,
    )
    .await;
    assert_eq!(q["resultCount"], 0, "{q}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mapping_maps_a_relationship_property() {
    // `roles` returned by default: sync reads it as reference objects.
    let mut conf = managed();
    conf["objects"][0]["schema"]["properties"]["roles"]["returnByDefault"] = json!(true);
    conf["objects"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "copy", "schema": {"properties": {
            "userName": {"type": "string", "searchable": true}}}}));
    let gw = Gateway::builder()
        .conf_file("managed", conf)
        .conf_file(
            "sync",
            json!({"mappings": [{"name": "u2c", "source": "managed/alpha_user",
                "target": "managed/copy",
                "properties": [
                    {"source": "userName", "target": "userName"},
                    {"source": "roles", "target": "roleIds", "transform": {
                        "type": "text/javascript",
                        "source": "source.map(function (r) { return r._refResourceId; }).sort()"}}],
                "policies": [{"situation": "ABSENT", "action": "CREATE"}]}]}),
        )
        .start()
        .await;
    for r in ["r1", "r2"] {
        create(
            &gw,
            &format!("/openidm/managed/alpha_role/{r}"),
            json!({"name": r}),
        )
        .await;
    }
    create(
        &gw,
        "/openidm/managed/alpha_user/bjensen",
        json!({"userName": "bjensen", "roles": [
            {"_ref": "managed/alpha_role/r2"}, {"_ref": "managed/alpha_role/r1"}]}),
    )
    .await;
    ok(
        &gw,
        Method::POST,
        "/openidm/recon?_action=recon&mapping=u2c&waitForCompletion=true",
        None,
    )
    .await;
    let copies = ok(
        &gw,
        Method::GET,
        "/openidm/managed/copy?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!(copies["resultCount"], 1, "{copies}");
    assert_eq!(
        copies["result"][0]["roleIds"],
        json!(["r1", "r2"]),
        "{copies}"
    );
}
