//! Reverse sides, integrity, concurrency, queries by relationship, internal roles, sync.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{json_of, Gateway};
use crate::helpers::*;

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
