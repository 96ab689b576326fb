//! What the caller may do (issue 14): IDM's `access.json` for local resources and for the
//! federation proxy, with the real gateway binary.

mod common;

use common::fixtures::shipped;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn as_user(
    gw: &Gateway,
    method: Method,
    path: &str,
    user: &str,
    password: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = gw.as_user(method, path, user, password);
    if let Some(b) = body {
        r = r.json(&b);
    }
    json_of(r.send().await.unwrap()).await
}

async fn create_user(gw: &Gateway, id: &str, user_name: &str) {
    let (code, body) = send(
        gw,
        Method::PUT,
        &format!("/openidm/managed/user/{id}"),
        Some(json!({"userName": user_name, "givenName": "G", "sn": "S",
            "mail": format!("{user_name}@example.com"), "password": "Passw0rd-1",
            "accountStatus": "active"})),
    )
    .await;
    assert!(code == 201 || code == 200, "{code} {body}");
}

#[tokio::test]
async fn authorized_users_reach_their_own_object_only() {
    let gw = Gateway::builder()
        .conf_file("authentication", shipped("authentication"))
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    create_user(&gw, "b1", "bjensen").await;
    create_user(&gw, "s1", "scarter").await;
    let me = |m: Method, p: &str, b: Option<Value>| {
        let gw = &gw;
        let p = p.to_owned();
        async move { as_user(gw, m, &p, "bjensen", "Passw0rd-1", b).await }
    };

    let (code, body) = me(Method::GET, "/openidm/managed/user/b1", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["userName"], "bjensen");
    for (method, path) in [
        (Method::GET, "/openidm/managed/user/s1"),
        (Method::GET, "/openidm/managed/user?_queryFilter=true"),
        (Method::DELETE, "/openidm/managed/user/b1"),
        (Method::GET, "/openidm/config/managed"),
        (Method::GET, "/openidm/internal/user/openidm-admin"),
    ] {
        let (code, body) = me(method.clone(), path, None).await;
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert_eq!(body["message"], "Access denied");
    }

    // userEditable properties of one's own object: yes; others (accountStatus), or a
    // protected one (password) without re-authenticating (see tests/reauth.rs): no.
    let patch = |field: &str, value: &str| {
        Some(json!([{"operation": "replace", "field": field, "value": value}]))
    };
    let (code, body) = me(
        Method::PATCH,
        "/openidm/managed/user/b1",
        patch("givenName", "Babs"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["givenName"], "Babs");
    let (code, _) = me(
        Method::PATCH,
        "/openidm/managed/user/s1",
        patch("givenName", "X"),
    )
    .await;
    assert_eq!(code, 403);
    let (code, _) = me(
        Method::PATCH,
        "/openidm/managed/user/b1",
        patch("accountStatus", "inactive"),
    )
    .await;
    assert_eq!(code, 403);
    let (code, _) = me(
        Method::PATCH,
        "/openidm/managed/user/b1",
        patch("password", "Passw0rd-2"),
    )
    .await;
    assert_eq!(code, 403);
    // Nothing was changed by the refused requests.
    let (_, s1) = send(&gw, Method::GET, "/openidm/managed/user/s1", None).await;
    assert_eq!(s1["givenName"], "G");
    let (_, b1) = send(&gw, Method::GET, "/openidm/managed/user/b1", None).await;
    assert_eq!(b1["accountStatus"], "active");

    // Reads IDM allows every authenticated user.
    for path in ["/openidm/info/login", "/openidm/schema/managed/user"] {
        let (code, body) = me(Method::GET, path, None).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn the_proxy_is_a_resource_of_the_access_rules() {
    let dc2 = RecordingUpstream::start();
    let dc3 = RecordingUpstream::start();
    let mut access = shipped("access");
    access["configs"].as_array_mut().unwrap().push(json!({
        "pattern": "external/idm/dc2/*",
        "roles": "internal/role/federation",
        "methods": "read,query",
        "actions": "",
        "excludePatterns": "external/idm/dc2/internal/*"
    }));
    let gw = Gateway::builder()
        .conf_file("external.idm-dc2", basic_instance(&dc2.url(), "u", "p"))
        .conf_file("external.idm-dc3", basic_instance(&dc3.url(), "u", "p"))
        .conf_file("access", access)
        .start()
        .await;
    // An internal user holding the federation role.
    let (code, body) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/role/federation",
        Some(json!({"name": "federation"})),
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let (code, body) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/user/fed",
        Some(json!({"password": "Fed-passw0rd",
            "authzRoles": [{"_ref": "internal/role/federation"}]})),
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let fed = |m: Method, p: &str| {
        let gw = &gw;
        let p = p.to_owned();
        async move { as_user(gw, m, &p, "fed", "Fed-passw0rd", None).await.0 }
    };

    assert_eq!(
        fed(
            Method::GET,
            "/openidm/external/idm/dc2/managed/user?_queryFilter=true"
        )
        .await,
        200
    );
    assert_eq!(
        fed(Method::GET, "/openidm/external/idm/dc2/managed/user/1").await,
        200
    );
    assert_eq!(dc2.count(), 2);
    // Not this instance, not these methods, not the excluded part: never forwarded.
    assert_eq!(
        fed(
            Method::GET,
            "/openidm/external/idm/dc3/managed/user?_queryFilter=true"
        )
        .await,
        403
    );
    assert_eq!(
        fed(Method::DELETE, "/openidm/external/idm/dc2/managed/user/1").await,
        403
    );
    assert_eq!(
        fed(
            Method::POST,
            "/openidm/external/idm/dc2/managed/user?_action=create"
        )
        .await,
        403
    );
    assert_eq!(
        fed(Method::GET, "/openidm/external/idm/dc2/internal/user/x").await,
        403
    );
    // Nor local resources.
    assert_eq!(fed(Method::GET, "/openidm/config/managed").await, 403);
    assert_eq!(dc2.count(), 2);
    assert_eq!(dc3.count(), 0);
    // Administrators keep everything.
    let r = gw
        .get("/openidm/external/idm/dc3/managed/user/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A rule removed (the file rewritten) applies at once.
    gw.remove_conf("access");
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            fed(Method::GET, "/openidm/external/idm/dc2/managed/user/1").await == 403
        })
        .await
    );
}

#[tokio::test]
async fn a_bad_access_file_is_refused_and_the_rules_stay() {
    let gw = Gateway::builder().start().await;
    let (code, body) = send(
        &gw,
        Method::PUT,
        "/openidm/config/access",
        Some(
            json!({"configs": [{"pattern": "*", "roles": "*", "methods": "*",
            "customAuthz": "ownDataOnly("}]}),
        ),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("customAuthz"),
        "{body}"
    );
    // Anonymous still reaches nothing but ping.
    let (code, _) = as_user(
        &gw,
        Method::GET,
        "/openidm/info/login",
        "anonymous",
        "anonymous",
        None,
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn privileges_of_internal_roles_delegate_administration() {
    let gw = Gateway::builder()
        .conf_file("authentication", shipped("authentication"))
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let (code, body) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/role/support",
        Some(json!({
            "name": "support",
            "privileges": [{
                "name": "support", "description": "Washington help desk",
                "path": "managed/user", "permissions": ["VIEW", "UPDATE"], "actions": [],
                "filter": "stateProvince eq \"WA\"",
                "accessFlags": [
                    {"attribute": "userName", "readOnly": false},
                    {"attribute": "givenName", "readOnly": false},
                    {"attribute": "stateProvince", "readOnly": true},
                    {"attribute": "accountStatus", "readOnly": true}
                ]
            }]
        })),
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    for (id, name, state) in [
        ("w1", "wuser", "WA"),
        ("o1", "ouser", "OR"),
        ("h1", "helpdesk", "HQ"),
    ] {
        let (code, body) = send(&gw, Method::PUT, &format!("/openidm/managed/user/{id}"), Some(json!({
            "userName": name, "givenName": "G", "sn": "S", "mail": format!("{name}@example.com"),
            "password": "Passw0rd-1", "accountStatus": "active", "stateProvince": state
        }))).await;
        assert!(code == 200 || code == 201, "{code} {body}");
    }
    let (code, body) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user/h1/authzRoles?_action=create",
        Some(json!({"_ref": "internal/role/support"})),
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let helper = |m: Method, p: &str, b: Option<Value>| {
        let gw = &gw;
        let p = p.to_owned();
        async move { as_user(gw, m, &p, "helpdesk", "Passw0rd-1", b).await }
    };

    // Queries are narrowed to the filter; only the accessFlags attributes come back.
    let (code, body) = helper(Method::GET, "/openidm/managed/user?_queryFilter=true", None).await;
    assert_eq!(code, 200, "{body}");
    let results = body["result"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{body}");
    assert_eq!(results[0]["_id"], "w1");
    assert_eq!(results[0]["userName"], "wuser");
    assert!(
        results[0].get("mail").is_none() && results[0].get("sn").is_none(),
        "{body}"
    );

    let (code, body) = helper(Method::GET, "/openidm/managed/user/w1", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.get("mail").is_none());
    assert_eq!(
        helper(Method::GET, "/openidm/managed/user/o1", None)
            .await
            .0,
        403
    );

    let patch = |field: &str, value: &str| {
        Some(json!([{"operation": "replace", "field": field, "value": value}]))
    };
    let (code, body) = helper(
        Method::PATCH,
        "/openidm/managed/user/w1",
        patch("givenName", "Walt"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["givenName"], "Walt");
    for (path, field) in [
        ("/openidm/managed/user/w1", "accountStatus"),
        ("/openidm/managed/user/w1", "mail"),
        ("/openidm/managed/user/o1", "givenName"),
    ] {
        assert_eq!(
            helper(Method::PATCH, path, patch(field, "x")).await.0,
            403,
            "{path} {field}"
        );
    }
    assert_eq!(
        helper(Method::DELETE, "/openidm/managed/user/w1", None)
            .await
            .0,
        403
    );
    let (_, o1) = send(&gw, Method::GET, "/openidm/managed/user/o1", None).await;
    assert_eq!(o1["givenName"], "G");

    // What the privilege service tells the delegated administrator.
    let (code, body) = helper(Method::GET, "/openidm/privilege/managed/user", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["VIEW"]["allowed"], true);
    assert_eq!(
        body["UPDATE"]["properties"],
        json!(["givenName", "userName"])
    );
    assert_eq!(body["DELETE"]["allowed"], false);
    let (code, body) = helper(Method::GET, "/openidm/privilege/managed/user/o1", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["VIEW"]["allowed"], false);
    let (code, body) = helper(
        Method::POST,
        "/openidm/privilege?_action=listPrivileges",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body[0]["privilegePath"], "managed/user");

    // The role loses its privileges: the next request is refused.
    let (code, _) = send(
        &gw,
        Method::PATCH,
        "/openidm/internal/role/support",
        Some(json!([{"operation": "remove", "field": "privileges"}])),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        helper(Method::GET, "/openidm/managed/user/w1", None)
            .await
            .0,
        403
    );
}

/// Issue 14: a privilege whose filter is templated from the caller's own object
/// (`stateProvince eq "{{stateProvince}}"`) reaches the users of the caller's state only,
/// cannot move a user out of it, grants nothing to a caller without the field, and cannot
/// be widened by what the caller's field holds.
#[tokio::test]
async fn templated_privilege_filters_follow_the_callers_own_object() {
    let gw = Gateway::builder()
        .conf_file("authentication", shipped("authentication"))
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let template = "stateProvince eq \"{{stateProvince}}\"";
    let (code, body) = send(
        &gw,
        Method::PUT,
        "/openidm/internal/role/state-admin",
        Some(json!({
            "name": "state-admin",
            "privileges": [{
                "name": "state-admin", "description": "Users of my state",
                "path": "managed/user", "permissions": ["VIEW", "UPDATE", "CREATE"],
                "actions": [], "filter": template,
                "accessFlags": [
                    {"attribute": "userName", "readOnly": false},
                    {"attribute": "givenName", "readOnly": false},
                    {"attribute": "sn", "readOnly": false},
                    {"attribute": "mail", "readOnly": false},
                    {"attribute": "stateProvince", "readOnly": false},
                    {"attribute": "accountStatus", "readOnly": true}
                ]
            }]
        })),
    )
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let injected = "x\" or true or \"";
    for (id, name, state) in [
        ("w1", "wuser1", Some("WA")),
        ("w2", "wuser2", Some("WA")),
        ("o1", "ouser", Some("OR")),
        ("wadmin", "wadmin", Some("WA")),
        ("nostate", "nostate", None),
        ("evil", "evil", Some(injected)),
    ] {
        let mut user = json!({
            "userName": name, "givenName": "G", "sn": "S", "mail": format!("{name}@example.com"),
            "password": "Passw0rd-1", "accountStatus": "active"
        });
        if let Some(state) = state {
            user["stateProvince"] = json!(state);
        }
        let (code, body) = send(
            &gw,
            Method::PUT,
            &format!("/openidm/managed/user/{id}"),
            Some(user),
        )
        .await;
        assert!(code == 200 || code == 201, "{code} {body}");
    }
    for admin in ["wadmin", "nostate", "evil"] {
        let (code, body) = send(
            &gw,
            Method::POST,
            &format!("/openidm/managed/user/{admin}/authzRoles?_action=create"),
            Some(json!({"_ref": "internal/role/state-admin"})),
        )
        .await;
        assert!(code == 200 || code == 201, "{code} {body}");
    }
    let as_admin = |who: &'static str, m: Method, p: &str, b: Option<Value>| {
        let gw = &gw;
        let p = p.to_owned();
        async move { as_user(gw, m, &p, who, "Passw0rd-1", b).await }
    };
    let ids = |body: &Value| -> Vec<String> {
        let mut ids: Vec<String> = body["result"]
            .as_array()
            .unwrap_or_else(|| panic!("not a query answer: {body}"))
            .iter()
            .map(|r| r["_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };

    // The Washington administrator sees and queries Washington only.
    let (code, body) = as_admin(
        "wadmin",
        Method::GET,
        "/openidm/managed/user?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ids(&body), ["w1", "w2", "wadmin"], "{body}");
    let (code, body) = as_admin(
        "wadmin",
        Method::GET,
        "/openidm/managed/user?_queryFilter=userName%20sw%20%22ou%22",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ids(&body), Vec::<String>::new(), "{body}");
    let (code, body) = as_admin("wadmin", Method::GET, "/openidm/managed/user/w1", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["stateProvince"], "WA");
    let (code, body) = as_admin("wadmin", Method::GET, "/openidm/managed/user/o1", None).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["code"], 403, "CREST error: {body}");

    // Updates inside the state pass; outside it, or out of it, are 403 and write nothing.
    let replace = |field: &str, value: &str| {
        Some(json!([{"operation": "replace", "field": field, "value": value}]))
    };
    let (code, body) = as_admin(
        "wadmin",
        Method::PATCH,
        "/openidm/managed/user/w1",
        replace("givenName", "Walt"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["givenName"], "Walt");
    let (code, body) = as_admin(
        "wadmin",
        Method::PATCH,
        "/openidm/managed/user/o1",
        replace("givenName", "Otto"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let (_, before) = send(&gw, Method::GET, "/openidm/managed/user/w2", None).await;
    let (code, body) = as_admin(
        "wadmin",
        Method::PATCH,
        "/openidm/managed/user/w2",
        Some(json!([
            {"operation": "replace", "field": "givenName", "value": "Gone"},
            {"operation": "replace", "field": "stateProvince", "value": "OR"}
        ])),
    )
    .await;
    assert_eq!(code, 403, "moving a user out of the state: {body}");
    assert_eq!(body["code"], 403, "CREST error: {body}");
    let (code, body) = as_admin(
        "wadmin",
        Method::PUT,
        "/openidm/managed/user/w2",
        Some(json!({"userName": "wuser2", "givenName": "Gone", "sn": "S",
            "mail": "wuser2@example.com", "stateProvince": "OR"})),
    )
    .await;
    assert_eq!(code, 403, "moving a user out of the state by PUT: {body}");
    let (_, after) = send(&gw, Method::GET, "/openidm/managed/user/w2", None).await;
    assert_eq!(after, before, "a refused edit wrote nothing");
    let (_, o1) = send(&gw, Method::GET, "/openidm/managed/user/o1", None).await;
    assert_eq!(o1["givenName"], "G");
    // Rewriting the state to the same one is no move.
    let (code, body) = as_admin(
        "wadmin",
        Method::PATCH,
        "/openidm/managed/user/w2",
        replace("stateProvince", "WA"),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // A create must land in the state too.
    let new_user = |id: &str, state: &str| {
        Some(
            json!({"_id": id, "userName": id, "givenName": "N", "sn": "S",
            "mail": format!("{id}@example.com"), "stateProvince": state}),
        )
    };
    let (code, body) = as_admin(
        "wadmin",
        Method::POST,
        "/openidm/managed/user?_action=create",
        new_user("o2", "OR"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        send(&gw, Method::GET, "/openidm/managed/user/o2", None)
            .await
            .0,
        404
    );
    let (code, body) = as_admin(
        "wadmin",
        Method::POST,
        "/openidm/managed/user?_action=create",
        new_user("w3", "WA"),
    )
    .await;
    assert_eq!(code, 201, "{body}");

    // The privilege service renders the template too.
    let (code, body) = as_admin(
        "wadmin",
        Method::GET,
        "/openidm/privilege/managed/user/w1",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["VIEW"]["allowed"], true, "{body}");
    assert_eq!(body["UPDATE"]["allowed"], true, "{body}");
    let (code, body) = as_admin(
        "wadmin",
        Method::GET,
        "/openidm/privilege/managed/user/o1",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["VIEW"]["allowed"], false, "{body}");
    let (code, body) = as_admin(
        "wadmin",
        Method::POST,
        "/openidm/privilege?_action=listPrivileges",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body[0]["filter"], template, "{body}");

    // A caller whose own object lacks the field gets nothing: no privilege applies.
    for (m, p) in [
        (Method::GET, "/openidm/managed/user?_queryFilter=true"),
        (Method::GET, "/openidm/managed/user/w1"),
        (Method::GET, "/openidm/managed/user/o1"),
    ] {
        let (code, body) = as_admin("nostate", m, p, None).await;
        assert_eq!(code, 403, "{p}: {body}");
    }
    let (code, body) = as_admin(
        "nostate",
        Method::PATCH,
        "/openidm/managed/user/o1",
        replace("givenName", "Nope"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = as_admin(
        "nostate",
        Method::GET,
        "/openidm/privilege/managed/user",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["VIEW"]["allowed"], false, "{body}");
    let (code, body) = as_admin(
        "nostate",
        Method::POST,
        "/openidm/privilege?_action=listPrivileges",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, json!([]));

    // A state that tries to close the string and add `or true` stays one string: the
    // caller reaches the users holding exactly that state (itself), nobody else.
    let (code, body) = as_admin(
        "evil",
        Method::GET,
        "/openidm/managed/user?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ids(&body), ["evil"], "{body}");
    for id in ["w1", "o1", "nostate"] {
        let (code, body) = as_admin(
            "evil",
            Method::GET,
            &format!("/openidm/managed/user/{id}"),
            None,
        )
        .await;
        assert_eq!(code, 403, "{id}: {body}");
    }

    // The caller's own object is read for each request: after a move to Oregon, the
    // administrator's next request reaches Oregon and no longer Washington.
    let (code, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/wadmin",
        replace("stateProvince", "OR"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = as_admin("wadmin", Method::GET, "/openidm/managed/user/o1", None).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = as_admin("wadmin", Method::GET, "/openidm/managed/user/w1", None).await;
    assert_eq!(code, 403, "{body}");
}
