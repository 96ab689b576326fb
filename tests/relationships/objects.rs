//! Relationship properties of objects: writing, reading, `_fields`, sub-collections.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

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
