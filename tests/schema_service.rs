//! IDM's schema service on a running gateway with the shipped `managed.json`: reading the
//! types' schemas, and (API version 2) creating, changing and deleting properties, which
//! `managed.json` holds at once and the managed objects obey at once — including seed
//! 002's relationship example, whose reverse side is created on its target.

mod common;

use common::fixtures::{put_user, shipped, user};
use common::{json_of, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

async fn gateway() -> Gateway {
    Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await
}

/// `method path` as the administrator with `Accept-API-Version: resource=2.0`.
async fn v2(gw: &Gateway, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = gw
        .request(method, path)
        .header("Accept-API-Version", "protocol=2.1,resource=2.0");
    if let Some(body) = body {
        r = r.json(&body);
    }
    json_of(r.send().await.unwrap()).await
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    common::send(gw, Method::GET, path, None).await
}

fn managed_json(gw: &Gateway) -> Vec<u8> {
    std::fs::read(gw.conf_dir().join("managed.json")).unwrap()
}

const PROP: &str = "/openidm/schema/managed/user/properties";

#[tokio::test]
async fn shipped_schemas_are_read_and_a_property_put_applies_at_once() {
    let gw = gateway().await;
    let (s, user_schema) = get(&gw, "/openidm/schema/managed/user").await;
    assert_eq!(s, 200, "{user_schema}");
    assert_eq!(user_schema["_id"], "managed/user");
    assert_eq!(user_schema["resourceCollection"], "managed/user");
    assert_eq!(user_schema["properties"]["userName"]["type"], "string");
    assert!(user_schema["required"]
        .as_array()
        .unwrap()
        .contains(&json!("userName")));
    let (s, all) = get(&gw, "/openidm/schema/managed?_queryFilter=true").await;
    assert_eq!(s, 200, "{all}");
    let ids: Vec<&str> = all["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_id"].as_str().unwrap())
        .collect();
    let shipped_types = shipped("managed")["objects"].as_array().unwrap().len();
    assert_eq!(ids.len(), shipped_types, "{ids:?}");
    assert!(ids.contains(&"managed/role") && ids.contains(&"managed/group"));
    let (s, one) = get(
        &gw,
        "/openidm/schema/managed?_queryFilter=_id%20eq%20%22managed/role%22",
    )
    .await;
    assert_eq!((s, one["resultCount"].as_u64()), (200, Some(1)), "{one}");
    assert_eq!(get(&gw, "/openidm/schema/managed/nosuch").await.0, 404);
    let (s, user_name) = v2(&gw, Method::GET, &format!("{PROP}/userName"), None).await;
    assert_eq!(
        (s, &user_name["_id"]),
        (200, &json!("userName")),
        "{user_name}"
    );
    assert_eq!(user_name["searchable"], true);

    // An undeclared property takes any value…
    let mut u1 = user(1);
    u1["custom_level"] = json!("high");
    put_user(&gw, "u1", &u1).await;
    // …until the schema service declares it: from the next request on, it is an integer.
    let (s, created) = v2(
        &gw,
        Method::PUT,
        &format!("{PROP}/custom_level"),
        Some(json!({"type": "integer", "title": "Level", "searchable": true})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["_id"], "custom_level");
    let rev = created["_rev"].as_str().unwrap().to_owned();
    let on_disk: Value = serde_json::from_slice(&managed_json(&gw)).unwrap();
    let user_obj = on_disk["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "user")
        .unwrap();
    assert_eq!(
        user_obj["schema"]["properties"]["custom_level"]["type"],
        "integer"
    );
    let (s, refused) = common::send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/u2",
        Some(json!({"userName": "user2", "givenName": "G", "sn": "S",
                    "mail": "u2@example.com", "custom_level": "high"})),
    )
    .await;
    assert_eq!(s, 403, "{refused}");
    let mut u2 = user(2);
    u2["custom_level"] = json!(3);
    put_user(&gw, "u2", &u2).await;
    let (s, found) = get(
        &gw,
        "/openidm/managed/user?_queryFilter=custom_level%20eq%203&_fields=userName",
    )
    .await;
    assert_eq!(
        (s, found["resultCount"].as_u64()),
        (200, Some(1)),
        "{found}"
    );

    // Changed (at its revision): a string again.
    let (s, changed) = v2(
        &gw,
        Method::PUT,
        &format!("{PROP}/custom_level"),
        Some(json!({"type": "string", "title": "Level"})),
    )
    .await;
    assert_eq!(s, 200, "{changed}");
    let (s, stale) = json_of(
        gw.request(Method::PUT, &format!("{PROP}/custom_level"))
            .header("Accept-API-Version", "resource=2.0")
            .header("If-Match", format!("\"{rev}\""))
            .json(&json!({"type": "boolean"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 412, "{stale}");
    let mut u3 = user(3);
    u3["custom_level"] = json!("low");
    put_user(&gw, "u3", &u3).await;

    // Deleted: gone from the schema; stored values stay, as IDM keeps them.
    let (s, deleted) = v2(&gw, Method::DELETE, &format!("{PROP}/custom_level"), None).await;
    assert_eq!((s, &deleted["type"]), (200, &json!("string")), "{deleted}");
    assert_eq!(
        v2(&gw, Method::GET, &format!("{PROP}/custom_level"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        v2(&gw, Method::DELETE, &format!("{PROP}/custom_level"), None)
            .await
            .0,
        404
    );
    let (_, u3) = get(&gw, "/openidm/managed/user/u3").await;
    assert_eq!(u3["custom_level"], "low");
}

/// Seed 002's example body, on self-hosted IDM's `managed/user`.
fn custom_children() -> Value {
    json!({
      "description": "A user as a child of another user.",
      "title": "Custom children",
      "viewable": true,
      "type": "array",
      "required": false,
      "items": {
        "type": "relationship",
        "title": "Custom Parent",
        "reverseRelationship": true,
        "reversePropertyName": "custom_Parents",
        "notifySelf": false,
        "validate": true,
        "properties": {
          "_ref": {"description": "References a relationship from a managed object", "type": "string"},
          "_refProperties": {
            "description": "Supports metadata within the relationship",
            "type": "object",
            "title": "Custom Provisioning Children Parents _refProperties",
            "properties": {"_id": {"description": "_refProperties object ID", "type": "string"}}
          }
        },
        "resourceCollection": [{
          "path": "managed/user",
          "label": "User",
          "query": {"queryFilter": "true", "fields": ["userName"]},
          "notify": false,
          "reverseProperty": {
            "type": "array",
            "validate": true,
            "resourceCollection": {"notify": false,
              "query": {"queryFilter": "true", "fields": ["userName"]}}
          }
        }]
      }
    })
}

async fn refs(gw: &Gateway, path: &str) -> Vec<String> {
    let (s, page) = get(gw, &format!("{path}?_queryFilter=true")).await;
    assert_eq!(s, 200, "{path}: {page}");
    page["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_refResourceId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_seed_relationship_gets_its_reverse_side_and_takes_its_edges_when_deleted() {
    let gw = gateway().await;
    let (s, created) = v2(
        &gw,
        Method::PUT,
        &format!("{PROP}/custom_Children"),
        Some(custom_children()),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let (s, parents) = v2(&gw, Method::GET, &format!("{PROP}/custom_Parents"), None).await;
    assert_eq!(s, 200, "{parents}");
    assert_eq!(parents["type"], "array");
    assert_eq!(parents["items"]["reversePropertyName"], "custom_Children");
    assert_eq!(
        parents["items"]["resourceCollection"][0]["path"],
        "managed/user"
    );

    for (i, id) in ["parent", "child"].into_iter().enumerate() {
        let mut u = user(i);
        u["userName"] = json!(id);
        put_user(&gw, id, &u).await;
    }
    let (s, edge) = common::send(
        &gw,
        Method::POST,
        "/openidm/managed/user/parent/custom_Children?_action=create",
        Some(json!({"_ref": "managed/user/child"})),
    )
    .await;
    assert_eq!(s, 201, "{edge}");
    assert_eq!(
        refs(&gw, "/openidm/managed/user/child/custom_Parents").await,
        ["parent"]
    );
    let (_, child) = get(&gw, "/openidm/managed/user/child?_fields=custom_Parents").await;
    assert_eq!(child["custom_Parents"][0]["_ref"], "managed/user/parent");
    // `validate: true` on the new property: a missing target is refused.
    let (s, _) = common::send(
        &gw,
        Method::POST,
        "/openidm/managed/user/parent/custom_Children?_action=create",
        Some(json!({"_ref": "managed/user/nobody"})),
    )
    .await;
    assert_eq!(s, 400);

    // Retitled, the relationship keeps its edges.
    let mut retitled = custom_children();
    retitled["title"] = json!("Kids");
    let (s, _) = v2(
        &gw,
        Method::PUT,
        &format!("{PROP}/custom_Children"),
        Some(retitled),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        refs(&gw, "/openidm/managed/user/parent/custom_Children").await,
        ["child"]
    );

    // Deleting the reverse side deletes both sides and their edges: declared again, the
    // relationship starts empty (nothing was left behind to reappear).
    let (s, deleted) = v2(&gw, Method::DELETE, &format!("{PROP}/custom_Parents"), None).await;
    assert_eq!(s, 200, "{deleted}");
    let (_, schema) = get(&gw, "/openidm/schema/managed/user").await;
    assert!(schema["properties"].get("custom_Children").is_none());
    assert!(schema["properties"].get("custom_Parents").is_none());
    let (s, _) = v2(
        &gw,
        Method::PUT,
        &format!("{PROP}/custom_Children"),
        Some(custom_children()),
    )
    .await;
    assert_eq!(s, 201);
    assert!(refs(&gw, "/openidm/managed/user/parent/custom_Children")
        .await
        .is_empty());
    assert!(refs(&gw, "/openidm/managed/user/child/custom_Parents")
        .await
        .is_empty());
}

#[tokio::test]
async fn refused_writes_leave_managed_json_as_it_was() {
    let gw = gateway().await;
    let before = managed_json(&gw);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "custom_x",
            json!(["not", "an", "object"]),
            400,
            "JSON object",
        ),
        (
            "custom_x",
            json!({"type": "strng"}),
            400,
            "unknown type 'strng'",
        ),
        (
            "custom_x",
            json!({"type": "relationship", "resourceCollection": [{"path": "managed/nosuch"}]}),
            400,
            "managed/nosuch",
        ),
        (
            "custom_x",
            json!({"type": "relationship", "resourceCollection": [{"path": "managed/role",
                "reverseProperty": {"type": "array"}}]}),
            400,
            "reverseRelationship",
        ),
        ("_meta", json!({"type": "string"}), 400, "reserved"),
        (
            "userName",
            json!({"type": "string", "searchable": "yes"}),
            400,
            "true or false",
        ),
    ];
    for (name, body, status, needle) in cases {
        let (s, e) = v2(&gw, Method::PUT, &format!("{PROP}/{name}"), Some(body)).await;
        assert_eq!(s, status, "{name}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{needle}: {e}"
        );
        assert_eq!(e["code"], status);
    }
    let (s, _) = v2(
        &gw,
        Method::PUT,
        "/openidm/schema/managed/nosuch/properties/x",
        Some(json!({"type": "string"})),
    )
    .await;
    assert_eq!(s, 404);
    // Create-only on an existing property.
    let (s, _) = json_of(
        gw.request(Method::PUT, &format!("{PROP}/userName"))
            .header("Accept-API-Version", "resource=2.0")
            .header("If-None-Match", "*")
            .json(&json!({"type": "string"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 412);

    // Version 2 of the resource only.
    for version in [None, Some("resource=1.0")] {
        for method in [Method::PUT, Method::DELETE, Method::GET] {
            let mut r = gw.request(method.clone(), &format!("{PROP}/mail"));
            if let Some(v) = version {
                r = r.header("Accept-API-Version", v);
            }
            let (s, e) = json_of(r.json(&json!({"type": "string"})).send().await.unwrap()).await;
            assert_eq!(s, 400, "{method} {version:?}: {e}");
            assert!(
                e["message"].as_str().unwrap().contains("resource=2.0"),
                "{e}"
            );
        }
    }

    // Administrators only, except reading (IDM's `schema/*` read for openidm-authorized).
    let (s, _) = common::send(
        &gw,
        Method::PUT,
        "/openidm/internal/user/plain",
        Some(json!({"password": "Plain-Pass-1",
                    "authzRoles": [{"_ref": "internal/role/openidm-authorized"}]})),
    )
    .await;
    assert!(s == 201 || s == 200);
    let as_plain = |method: Method, path: &str| {
        gw.as_user(method, path, "plain", "Plain-Pass-1")
            .header("Accept-API-Version", "resource=2.0")
    };
    let r = as_plain(Method::PUT, &format!("{PROP}/custom_y"))
        .json(&json!({"type": "string"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = as_plain(Method::DELETE, &format!("{PROP}/mail"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = as_plain(Method::GET, "/openidm/schema/managed/user")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .anon(Method::GET, "/openidm/schema/managed/user")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);

    assert_eq!(
        managed_json(&gw),
        before,
        "a refused write changed managed.json"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_property_writes_lose_no_update() {
    let gw = gateway().await;
    let names: Vec<String> = (0..8).map(|i| format!("custom_p{i}")).collect();
    let gw = &gw;
    let writes = names.iter().map(|name| async move {
        v2(
            gw,
            Method::PUT,
            &format!("{PROP}/{name}"),
            Some(json!({"type": "string", "title": name})),
        )
        .await
    });
    for (s, body) in futures_util::future::join_all(writes).await {
        assert_eq!(s, 201, "{body}");
    }
    let (_, schema) = get(gw, "/openidm/schema/managed/user").await;
    for name in &names {
        assert_eq!(schema["properties"][name]["title"], json!(name), "{name}");
    }
}
