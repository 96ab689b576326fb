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
    // protected one (password, no re-authentication here): no.
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
