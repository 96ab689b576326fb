//! Feature enablement (`/openidm/feature`) on running gateways: IDM's `groups` and
//! `password/timestamps`, listed, validated and installed into `managed.json` (live at
//! once) for self-hosted IDM's `user` and for realm types; and `info/features` queries.

mod common;

use common::fixtures::{put_user, shipped, user};
use common::{json_of, send, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

/// The shipped managed.json without groups (no `group` type, no user `groups`).
fn managed_without_groups() -> Value {
    let mut doc = shipped("managed");
    let objects = doc["objects"].as_array_mut().unwrap();
    objects.retain(|o| o["name"] != "group");
    let user = objects.iter_mut().find(|o| o["name"] == "user").unwrap();
    user["schema"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("groups");
    user["schema"]["order"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n != "groups");
    doc
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    send(gw, Method::GET, path, None).await
}

async fn action(gw: &Gateway, feature: &str, action: &str) -> (u16, Value) {
    send(
        gw,
        Method::POST,
        &format!("/openidm/feature/{feature}?_action={action}"),
        Some(json!({})),
    )
    .await
}

#[tokio::test]
async fn groups_installs_on_self_hosted_user_and_only_once() {
    let gw = Gateway::builder()
        .conf_file("managed", managed_without_groups())
        .start()
        .await;
    let (s, list) = get(&gw, "/openidm/feature?_queryFilter=true").await;
    assert_eq!(s, 200, "{list}");
    let mut ids: Vec<&str> = list["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["installedVersion"], Value::Null, "{f}");
            assert_eq!(f["availableVersions"], json!(["1"]), "{f}");
            f["_id"].as_str().unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["groups", "password/timestamps"]);
    let (s, groups) = get(&gw, "/openidm/feature/groups").await;
    assert_eq!(
        (s, &groups["installedVersion"]),
        (200, &Value::Null),
        "{groups}"
    );
    assert_eq!(get(&gw, "/openidm/feature/nosuch").await.0, 404);

    let (s, valid) = action(&gw, "groups", "validate").await;
    assert_eq!(
        (s, valid),
        (
            200,
            json!({"status": 200, "success": true, "message": "Validate complete."})
        )
    );
    let (s, done) = action(&gw, "groups", "install").await;
    assert_eq!(
        (s, done),
        (200, json!({"status": 200, "message": "Install complete."}))
    );

    // The schema has changed, and it is live: a group with a member.
    let (s, group) = get(&gw, "/openidm/schema/managed/group").await;
    assert_eq!(s, 200, "{group}");
    assert_eq!(
        group["properties"]["members"]["items"]["reversePropertyName"],
        "groups"
    );
    let (_, user_schema) = get(&gw, "/openidm/schema/managed/user").await;
    assert_eq!(
        user_schema["properties"]["groups"]["items"]["resourceCollection"][0]["path"],
        "managed/group"
    );
    assert_eq!(
        user_schema["properties"]["effectiveGroups"]["isVirtual"],
        true
    );
    put_user(&gw, "u1", &user(1)).await;
    let (s, g) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/group/employees",
        Some(json!({"name": "employees", "description": "Everyone"})),
    )
    .await;
    assert_eq!(s, 201, "{g}");
    let (s, m) = send(
        &gw,
        Method::POST,
        "/openidm/managed/group/employees/members?_action=create",
        Some(json!({"_ref": "managed/user/u1"})),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    let (_, u1) = get(&gw, "/openidm/managed/user/u1?_fields=groups").await;
    assert_eq!(u1["groups"][0]["_ref"], "managed/group/employees", "{u1}");
    // The installed effectiveGroups is derived from the groups (its queryConfig).
    let (_, u1) = get(&gw, "/openidm/managed/user/u1?_fields=effectiveGroups").await;
    assert_eq!(
        u1["effectiveGroups"][0]["_ref"], "managed/group/employees",
        "{u1}"
    );

    // Installed: listed so, not installable again, and validate says why.
    let (_, groups) = get(&gw, "/openidm/feature/groups").await;
    assert_eq!(groups["installedVersion"], "1");
    let (s, again) = action(&gw, "groups", "install").await;
    assert_eq!(s, 409, "{again}");
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already installed"),
        "{again}"
    );
    let (s, valid) = action(&gw, "groups", "validate").await;
    assert_eq!((s, &valid["success"]), (200, &json!(false)), "{valid}");
    let message = valid["message"].as_str().unwrap();
    assert!(message.starts_with("Validate complete."), "{message}");
    assert!(
        message.contains("managed/user groups must not already exist")
            && message.contains("managed/group must not already exist"),
        "{message}"
    );
    assert_eq!(action(&gw, "groups", "nosuch").await.0, 400);

    // Administrators only.
    let (s, _) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/user/plain",
        Some(json!({"password": "Plain-Pass-1",
                    "authzRoles": [{"_ref": "internal/role/openidm-authorized"}]})),
    )
    .await;
    assert!(s == 201 || s == 200);
    for (method, path) in [
        (Method::GET, "/openidm/feature?_queryFilter=true"),
        (
            Method::POST,
            "/openidm/feature/password/timestamps?_action=install",
        ),
    ] {
        let r = gw
            .as_user(method, path, "plain", "Plain-Pass-1")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
}

/// Two realms, each with a user type whose password is hashed, and one realm's group
/// type (declared only to leave objects behind once it is removed).
fn realms(with_alpha_group: bool) -> Value {
    let user = json!({"schema": {"required": ["userName"], "properties": {
        "userName": {"type": "string", "searchable": true},
        "givenName": {"type": "string"},
        "password": {"type": "string", "scope": "private",
                     "secureHash": {"algorithm": "ARGON2"}}}}});
    let mut objects = Vec::new();
    for realm in ["alpha", "bravo"] {
        let mut u = user.clone();
        u["name"] = json!(format!("{realm}_user"));
        objects.push(u);
    }
    if with_alpha_group {
        objects.push(json!({"name": "alpha_group", "schema": {"properties": {
            "name": {"type": "string"}}}}));
    }
    json!({ "objects": objects })
}

#[tokio::test]
async fn features_apply_to_every_realm_and_timestamps_follow_password_changes() {
    let gw = Gateway::builder()
        .conf_file("managed", realms(true))
        .start()
        .await;
    // Objects left in the store by a type since removed block the groups install.
    let (s, _) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/alpha_group/old",
        Some(json!({"name": "old"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = send(
        &gw,
        Method::PUT,
        "/openidm/config/managed",
        Some(realms(false)),
    )
    .await;
    assert_eq!(s, 200);
    let (_, valid) = action(&gw, "groups", "validate").await;
    assert_eq!(valid["success"], false, "{valid}");
    assert!(
        valid["message"]
            .as_str()
            .unwrap()
            .contains("objects of managed/alpha_group must not already exist"),
        "{valid}"
    );
    let (s, refused) = action(&gw, "groups", "install").await;
    assert_eq!(s, 400, "{refused}");
    let (_, schema) = get(&gw, "/openidm/schema/managed/bravo_user").await;
    assert!(
        schema["properties"].get("groups").is_none(),
        "nothing installed"
    );

    let (_, valid) = action(&gw, "password/timestamps", "validate").await;
    assert_eq!(valid["success"], true, "{valid}");
    let (s, done) = action(&gw, "password/timestamps", "install").await;
    assert_eq!(s, 200, "{done}");
    for realm in ["alpha", "bravo"] {
        let (_, schema) = get(&gw, &format!("/openidm/schema/managed/{realm}_user")).await;
        for p in ["passwordLastChangedTime", "passwordExpirationTime"] {
            assert_eq!(schema["properties"][p]["searchable"], true, "{realm} {p}");
        }
    }
    let (_, f) = get(&gw, "/openidm/feature/password/timestamps").await;
    assert_eq!(f["installedVersion"], "1");
    assert_eq!(action(&gw, "password/timestamps", "install").await.0, 409);

    // Set with the password; kept by other writes; stamped again when it changes.
    let (s, created) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/alpha_user/bjensen",
        Some(json!({"userName": "bjensen", "password": "Secr3t-Pass"})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let stamped = created["passwordLastChangedTime"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        stamped.len() == 24 && stamped.ends_with('Z') && stamped.as_bytes()[10] == b'T',
        "{stamped}"
    );
    let patch = |ops: Value| {
        send(
            &gw,
            Method::PATCH,
            "/openidm/managed/alpha_user/bjensen",
            Some(ops),
        )
    };
    let old = "2000-01-01T00:00:00.000Z";
    let (s, kept) = patch(json!([
        {"operation": "replace", "field": "/givenName", "value": "Barbara"},
        {"operation": "replace", "field": "/passwordLastChangedTime", "value": old}
    ]))
    .await;
    assert_eq!(
        (s, &kept["passwordLastChangedTime"]),
        (200, &json!(old)),
        "{kept}"
    );
    let (s, _) =
        patch(json!([{"operation": "replace", "field": "/givenName", "value": "Babs"}])).await;
    assert_eq!(s, 200);
    let (_, read) = get(&gw, "/openidm/managed/alpha_user/bjensen").await;
    assert_eq!(read["passwordLastChangedTime"], old, "{read}");
    let (s, changed) = patch(json!([
        {"operation": "replace", "field": "/password", "value": "N3w-Secr3t-Pass"}
    ]))
    .await;
    assert_eq!(s, 200, "{changed}");
    let now = changed["passwordLastChangedTime"].as_str().unwrap();
    assert!(now > old && now.len() == 24, "{now}");
    // Indexed: queryable.
    let (s, found) = get(
        &gw,
        "/openidm/managed/alpha_user?_queryFilter=passwordLastChangedTime%20gt%20%222001%22&_fields=userName",
    )
    .await;
    assert_eq!(
        (s, found["resultCount"].as_u64()),
        (200, Some(1)),
        "{found}"
    );
}

#[tokio::test]
async fn groups_install_on_every_realm() {
    let gw = Gateway::builder()
        .conf_file("managed", realms(false))
        .start()
        .await;
    let (s, done) = action(&gw, "groups", "install").await;
    assert_eq!(s, 200, "{done}");
    for realm in ["alpha", "bravo"] {
        let (s, group) = get(&gw, &format!("/openidm/schema/managed/{realm}_group")).await;
        assert_eq!(s, 200, "{group}");
        assert_eq!(
            group["properties"]["members"]["items"]["resourceCollection"][0]["path"],
            format!("managed/{realm}_user")
        );
    }
    let (s, _) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/bravo_user/b1",
        Some(json!({"userName": "b1"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, g) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/bravo_group/staff",
        Some(json!({"name": "staff", "members": [{"_ref": "managed/bravo_user/b1"}]})),
    )
    .await;
    assert_eq!(s, 201, "{g}");
    let (s, b1) = get(&gw, "/openidm/managed/bravo_user/b1?_fields=*,groups").await;
    assert_eq!(s, 200, "{b1}");
    assert_eq!(b1["groups"][0]["_ref"], "managed/bravo_group/staff", "{b1}");
    // A realm's group holds its own realm's users only.
    let (s, _) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/alpha_group/x",
        Some(json!({"name": "x", "members": [{"_ref": "managed/bravo_user/b1"}]})),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn info_features_answers_a_query() {
    let gw = Gateway::builder()
        .conf_file("endpoint-hello", common::fixtures::js("({hello: true})"))
        .start()
        .await;
    let (s, all) = get(&gw, "/openidm/info/features?_queryFilter=true").await;
    assert_eq!(s, 200, "{all}");
    let by_id = |id: &str| {
        all["result"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {all}"))
    };
    assert_eq!(
        by_id("endpoint"),
        json!({"_id": "endpoint", "name": "endpoint", "enabled": true,
               "endpoints": ["endpoint/hello"]})
    );
    assert_eq!(by_id("workflow")["enabled"], false);
    assert_eq!(by_id("email")["enabled"], false);
    let (s, on) = get(
        &gw,
        "/openidm/info/features?_queryFilter=enabled%20eq%20false",
    )
    .await;
    assert_eq!(s, 200);
    assert!(on["result"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["enabled"] == false && f["_id"] != "endpoint"));
    let (s, _) = get(&gw, "/openidm/info/features?_queryFilter=bad%20filter").await;
    assert_eq!(s, 400);

    // Any authenticated caller.
    let (s, _) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/user/plain",
        Some(json!({"password": "Plain-Pass-1",
                    "authzRoles": [{"_ref": "internal/role/openidm-authorized"}]})),
    )
    .await;
    assert!(s == 201 || s == 200);
    let (s, plain) = json_of(
        gw.as_user(
            Method::GET,
            "/openidm/info/features?_queryFilter=true",
            "plain",
            "Plain-Pass-1",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, plain["resultCount"].as_u64()),
        (200, Some(12)),
        "{plain}"
    );
    let r = gw
        .anon(Method::GET, "/openidm/info/features?_queryFilter=true")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);
}
