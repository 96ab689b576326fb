//! Roles as IDM ships them (the gateway's `conf/managed.json`): `effectiveRoles` and
//! `effectiveAssignments` derived from the relationships and kept current by IDM's
//! notification settings, conditional roles, temporal constraints.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{send, Gateway};
use crate::helpers::{create, ok};

fn shipped_managed() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/managed.json"))
        .expect("conf/managed.json");
    serde_json::from_str(&text).expect("managed.json parses")
}

async fn shipped(check_seconds: f64) -> Gateway {
    Gateway::builder()
        .conf_file("managed", shipped_managed())
        .conf_file(
            "gateway",
            json!({"temporalConstraintsCheckSeconds": check_seconds}),
        )
        .start()
        .await
}

/// The `_refResourceId`s of a derived list, sorted.
fn refs(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|r| r["_refResourceId"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn user(gw: &Gateway, id: &str) -> Value {
    ok(
        gw,
        Method::GET,
        &format!("/openidm/managed/user/{id}"),
        None,
    )
    .await
}

fn person(name: &str, country: &str) -> Value {
    json!({"userName": format!("person-{name}"), "givenName": format!("Given-{name}"), "sn": "Test",
           "mail": format!("{name}@example.com"), "country": country, "password": "Zq9-Wx7-Kp"})
}

/// Polls `check` on user `id` until it holds (background notifications, the sweeper).
async fn eventually(gw: &Gateway, id: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let u = user(gw, id).await;
        if check(&u) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: user {id} is {u}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn effective_roles_and_assignments_follow_every_change() {
    let gw = shipped(30.0).await;
    let a1 = json!({"name": "ldap-staff", "description": "staff", "mapping": "managedUser_systemLdapAccounts",
        "attributes": [{"name": "employeeType", "value": "Staff",
                        "assignmentOperation": "mergeWithTarget", "unassignmentOperation": "removeFromTarget"}]});
    create(&gw, "/openidm/managed/assignment/a1", a1).await;
    create(
        &gw,
        "/openidm/managed/role/r1",
        json!({"name": "staff", "assignments": [{"_ref": "managed/assignment/a1"}]}),
    )
    .await;
    // The create's answer already shows what the roles derive.
    let mut body = person("alice", "FR");
    body["roles"] = json!([{"_ref": "managed/role/r1"}]);
    let created = create(&gw, "/openidm/managed/user/alice", body).await;
    assert_eq!(refs(&created["effectiveRoles"]), ["r1"], "{created}");
    assert_eq!(
        created["effectiveRoles"][0],
        json!({"_refResourceCollection": "managed/role", "_refResourceId": "r1", "_ref": "managed/role/r1"})
    );
    let ea = &created["effectiveAssignments"];
    assert_eq!(refs(ea), ["a1"], "{created}");
    assert_eq!(ea[0]["_id"], "a1");
    assert_eq!(ea[0]["mapping"], "managedUser_systemLdapAccounts");
    assert_eq!(ea[0]["attributes"][0]["value"], "Staff");
    assert_eq!(ea[0]["_ref"], "managed/assignment/a1");
    // Stored with the user: a read and a query see it.
    let alice = user(&gw, "alice").await;
    assert_eq!(alice["effectiveAssignments"], *ea);
    assert_eq!(alice["_rev"], created["_rev"]);

    // Clients never write them: a PUT's value is ignored, a PATCH refused.
    let mut put = alice.clone();
    put["effectiveRoles"] = json!([{"_ref": "managed/role/forged"}]);
    put["description"] = json!("changed");
    let after_put = ok(&gw, Method::PUT, "/openidm/managed/user/alice", Some(put)).await;
    assert_eq!(refs(&after_put["effectiveRoles"]), ["r1"], "{after_put}");
    let (status, _) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/alice",
        Some(json!([{"operation": "replace", "field": "/effectiveRoles", "value": []}])),
    )
    .await;
    assert_eq!(status, 400);

    // A new assignment on the role reaches its members (role `assignments` notifies
    // `members`).
    create(
        &gw,
        "/openidm/managed/assignment/a2",
        json!({"name": "mail", "description": "mail", "mapping": "managedUser_systemLdapAccounts",
               "attributes": [{"name": "mailHost", "value": "mx1"}]}),
    )
    .await;
    ok(
        &gw,
        Method::POST,
        "/openidm/managed/role/r1/assignments?_action=create",
        Some(json!({"_ref": "managed/assignment/a2"})),
    )
    .await;
    let alice = user(&gw, "alice").await;
    assert_eq!(
        refs(&alice["effectiveAssignments"]),
        ["a1", "a2"],
        "{alice}"
    );

    // An assignment's attributes changing reaches the users (assignment `attributes`
    // notifies `roles`, which notify `members`).
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/assignment/a2",
        Some(json!([{"operation": "replace", "field": "/attributes",
                      "value": [{"name": "mailHost", "value": "mx2"}]}])),
    )
    .await;
    let alice = user(&gw, "alice").await;
    let a2 = alice["effectiveAssignments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["_id"] == "a2")
        .cloned()
        .unwrap();
    assert_eq!(a2["attributes"][0]["value"], "mx2", "{alice}");

    // Membership added from the role's side (seed 002's members route).
    create(&gw, "/openidm/managed/user/bob", person("bob", "US")).await;
    ok(
        &gw,
        Method::POST,
        "/openidm/managed/role/r1/members?_action=create",
        Some(json!({"_ref": "managed/user/bob"})),
    )
    .await;
    assert_eq!(refs(&user(&gw, "bob").await["effectiveRoles"]), ["r1"]);
    // Stored, so queried like any property.
    for filter in [
        "/effectiveRoles/_refResourceId%20eq%20%22r1%22",
        "/effectiveAssignments/name%20eq%20%22mail%22",
    ] {
        let found = ok(
            &gw,
            Method::GET,
            &format!("/openidm/managed/user?_queryFilter={filter}&_fields=_id"),
            None,
        )
        .await;
        let mut ids: Vec<&str> = found["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["_id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, ["alice", "bob"], "{filter}: {found}");
    }

    // Removing the grant, deleting the assignment, deleting the role.
    let alice_roles = ok(
        &gw,
        Method::GET,
        "/openidm/managed/user/alice?_fields=roles",
        None,
    )
    .await;
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/alice",
        Some(json!([{"operation": "remove", "field": "/roles", "value": alice_roles["roles"][0]}])),
    )
    .await;
    let alice = user(&gw, "alice").await;
    assert_eq!(alice["effectiveRoles"], json!([]));
    assert_eq!(alice["effectiveAssignments"], json!([]));
    ok(&gw, Method::DELETE, "/openidm/managed/assignment/a1", None).await;
    assert_eq!(
        refs(&user(&gw, "bob").await["effectiveAssignments"]),
        ["a2"]
    );
    ok(&gw, Method::DELETE, "/openidm/managed/role/r1", None).await;
    let bob = user(&gw, "bob").await;
    assert_eq!(bob["effectiveRoles"], json!([]), "{bob}");
    assert_eq!(bob["effectiveAssignments"], json!([]), "{bob}");
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_roles_follow_users_and_conditions() {
    let gw = shipped(30.0).await;
    create(&gw, "/openidm/managed/user/a", person("a", "FR")).await;
    create(&gw, "/openidm/managed/user/b", person("b", "US")).await;
    // A bad condition is refused and nothing is written.
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/role/fr",
        Some(json!({"name": "france", "condition": "/country eq"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = send(&gw, Method::GET, "/openidm/managed/role/fr", None).await;
    assert_eq!(status, 404);

    // A role created with a condition grants the users it matches now.
    create(
        &gw,
        "/openidm/managed/role/fr",
        json!({"name": "france", "condition": "/country eq \"FR\""}),
    )
    .await;
    assert_eq!(refs(&user(&gw, "a").await["effectiveRoles"]), ["fr"]);
    assert_eq!(user(&gw, "b").await["effectiveRoles"], json!([]));
    let a_roles = ok(
        &gw,
        Method::GET,
        "/openidm/managed/user/a?_fields=roles",
        None,
    )
    .await;
    assert_eq!(
        a_roles["roles"][0]["_refProperties"]["_grantType"], "conditional",
        "{a_roles}"
    );
    // Users created or changed are evaluated as they are written.
    let c = create(&gw, "/openidm/managed/user/c", person("c", "FR")).await;
    assert_eq!(refs(&c["effectiveRoles"]), ["fr"], "{c}");
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/b",
        Some(json!([{"operation": "replace", "field": "/country", "value": "FR"}])),
    )
    .await;
    assert_eq!(refs(&user(&gw, "b").await["effectiveRoles"]), ["fr"]);
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/a",
        Some(json!([{"operation": "replace", "field": "/country", "value": "US"}])),
    )
    .await;
    assert_eq!(user(&gw, "a").await["effectiveRoles"], json!([]));

    // Conditional grants belong to the condition: a client neither removes them through
    // the user's roles nor makes one.
    let c_roles = ok(
        &gw,
        Method::GET,
        "/openidm/managed/user/c?_fields=roles",
        None,
    )
    .await;
    let edge = c_roles["roles"][0]["_refProperties"]["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = send(
        &gw,
        Method::DELETE,
        &format!("/openidm/managed/user/c/roles/{edge}"),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/c",
        Some(json!([{"operation": "replace", "field": "/roles", "value": []}])),
    )
    .await;
    assert_eq!(refs(&user(&gw, "c").await["effectiveRoles"]), ["fr"]);
    let (status, _) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user/a/roles?_action=create",
        Some(json!({"_ref": "managed/role/fr", "_refProperties": {"_grantType": "conditional"}})),
    )
    .await;
    assert_eq!(status, 400);
    // A manual grant beside the conditional one: the role counts once, and stays when the
    // condition stops matching.
    ok(
        &gw,
        Method::POST,
        "/openidm/managed/user/c/roles?_action=create",
        Some(json!({"_ref": "managed/role/fr"})),
    )
    .await;
    assert_eq!(refs(&user(&gw, "c").await["effectiveRoles"]), ["fr"]);

    // The condition changes: every user is re-evaluated.
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/role/fr",
        Some(
            json!([{"operation": "replace", "field": "/condition", "value": "/country eq \"US\""}]),
        ),
    )
    .await;
    assert_eq!(refs(&user(&gw, "a").await["effectiveRoles"]), ["fr"]);
    assert_eq!(user(&gw, "b").await["effectiveRoles"], json!([]));
    assert_eq!(
        refs(&user(&gw, "c").await["effectiveRoles"]),
        ["fr"],
        "manual grant kept"
    );
    let members = ok(
        &gw,
        Method::GET,
        "/openidm/managed/role/fr/members?_queryFilter=/_refProperties/_grantType%20eq%20%22conditional%22",
        None,
    )
    .await;
    let ids: Vec<&str> = members["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["_refResourceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a"], "{members}");
    // No condition: its grants are taken back.
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/role/fr",
        Some(json!([{"operation": "replace", "field": "/condition", "value": null}])),
    )
    .await;
    assert_eq!(user(&gw, "a").await["effectiveRoles"], json!([]));
}

fn window(from_now_s: i64, to_now_s: i64) -> Value {
    let now = chrono::Utc::now();
    let at = |s: i64| {
        (now + chrono::Duration::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    json!([{"duration": format!("{}/{}", at(from_now_s), at(to_now_s))}])
}

#[tokio::test(flavor = "multi_thread")]
async fn temporal_constraints_open_and_close_roles_and_grants() {
    let gw = shipped(0.2).await;
    // A role whose window opens in 2 s and closes in 5 s.
    create(
        &gw,
        "/openidm/managed/role/later",
        json!({"name": "later", "temporalConstraints": window(2, 5)}),
    )
    .await;
    create(
        &gw,
        "/openidm/managed/role/always",
        json!({"name": "always"}),
    )
    .await;
    let mut body = person("t", "FR");
    body["roles"] = json!([{"_ref": "managed/role/later"}, {"_ref": "managed/role/always"}]);
    let t = create(&gw, "/openidm/managed/user/t", body).await;
    assert_eq!(refs(&t["effectiveRoles"]), ["always"], "{t}");
    eventually(&gw, "t", "the role's window opened", |u| {
        refs(&u["effectiveRoles"]) == ["always", "later"]
    })
    .await;
    eventually(&gw, "t", "the role's window closed", |u| {
        refs(&u["effectiveRoles"]) == ["always"]
    })
    .await;

    // A grant with its own window (at most one).
    let (status, body) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user/t/roles?_action=create",
        Some(
            json!({"_ref": "managed/role/always", "_refProperties": {"temporalConstraints":
            [window(-10, 10)[0].clone(), window(20, 30)[0].clone()]}}),
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["message"],
        "Only 1 temporal constraint is supported per grant."
    );
    create(&gw, "/openidm/managed/user/g", person("g", "FR")).await;
    ok(
        &gw,
        Method::POST,
        "/openidm/managed/user/g/roles?_action=create",
        Some(json!({"_ref": "managed/role/always", "_refProperties": {"temporalConstraints": window(-10, 2)}})),
    )
    .await;
    assert_eq!(refs(&user(&gw, "g").await["effectiveRoles"]), ["always"]);
    eventually(&gw, "g", "the grant's window closed", |u| {
        u["effectiveRoles"] == json!([])
    })
    .await;

    // An unreadable window is refused.
    let (status, _) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/role/bad",
        Some(json!({"name": "bad", "temporalConstraints": [{"duration": "next week"}]})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_with_many_members_updates_them_all_in_the_background() {
    let gw = shipped(30.0).await;
    create(&gw, "/openidm/managed/role/big", json!({"name": "big"})).await;
    // More members than a write recomputes before it answers.
    let n = 300;
    let client = gw.client().clone();
    let mut tasks = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let chunk = chunk.to_vec();
        let (client, url, pw) = (
            client.clone(),
            gw.url("/openidm/managed/user/"),
            gw.admin_password().to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            for i in chunk {
                let mut body = person(&format!("m{i}"), "FR");
                body["roles"] = json!([{"_ref": "managed/role/big"}]);
                let r = client
                    .put(format!("{url}m{i}"))
                    .basic_auth("openidm-admin", Some(&pw))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    create(
        &gw,
        "/openidm/managed/assignment/ab",
        json!({"name": "ab", "description": "d", "mapping": "m", "attributes": []}),
    )
    .await;
    // The write is answered before every member is done; all are, eventually.
    ok(
        &gw,
        Method::POST,
        "/openidm/managed/role/big/assignments?_action=create",
        Some(json!({"_ref": "managed/assignment/ab"})),
    )
    .await;
    for i in [0, n / 2, n - 1] {
        eventually(
            &gw,
            &format!("m{i}"),
            "the assignment reached the member",
            |u| refs(&u["effectiveAssignments"]) == ["ab"],
        )
        .await;
    }
    let missing = ok(
        &gw,
        Method::GET,
        "/openidm/managed/user?_queryFilter=true&_fields=effectiveAssignments&_pageSize=1000",
        None,
    )
    .await;
    let without: Vec<&Value> = missing["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| refs(&u["effectiveAssignments"]) != ["ab"])
        .collect();
    // The last ones may still be in flight: poll until none is left.
    if !without.is_empty() {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let all = ok(
                &gw,
                Method::GET,
                "/openidm/managed/user?_queryFilter=true&_fields=effectiveAssignments&_pageSize=1000",
                None,
            )
            .await;
            let left = all["result"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| refs(&u["effectiveAssignments"]) != ["ab"])
                .count();
            if left == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{left} members never updated"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert!(gw
        .logs()
        .contains("relationship notifications continue in the background"));
}

#[tokio::test(flavor = "multi_thread")]
async fn flattened_values_over_a_one_way_relationship() {
    let managed = json!({"objects": [
        {"name": "person", "schema": {"properties": {
            "name": {"type": "string"},
            "likes": {"type": "array", "returnByDefault": false, "items": {
                "type": "relationship", "validate": true,
                "resourceCollection": [{"path": "managed/tag", "label": "Tag"}]}},
            "likedNames": {"type": "array", "isVirtual": true, "returnByDefault": true,
                "queryConfig": {"referencedRelationshipFields": ["likes"],
                                "referencedObjectFields": ["name", "aliases"],
                                "flattenProperties": true}},
        }}},
        {"name": "tag", "schema": {"properties": {
            "name": {"type": "string"}, "aliases": {"type": "array"}}}},
    ]});
    let gw = Gateway::builder()
        .conf_file("managed", managed)
        .start()
        .await;
    create(
        &gw,
        "/openidm/managed/tag/t1",
        json!({"name": "rust", "aliases": ["rs", "rust"]}),
    )
    .await;
    create(&gw, "/openidm/managed/tag/t2", json!({"name": "idm"})).await;
    let p = create(
        &gw,
        "/openidm/managed/person/p1",
        json!({"name": "p", "likes": [{"_ref": "managed/tag/t1"}, {"_ref": "managed/tag/t2"}]}),
    )
    .await;
    assert_eq!(p["likedNames"], json!(["rust", "rs", "idm"]), "{p}");
    ok(
        &gw,
        Method::PATCH,
        "/openidm/managed/person/p1",
        Some(json!([{"operation": "remove", "field": "/likes",
                      "value": {"_ref": "managed/tag/t1"}}])),
    )
    .await;
    let p = ok(&gw, Method::GET, "/openidm/managed/person/p1", None).await;
    assert_eq!(p["likedNames"], json!(["idm"]), "{p}");
    // A queryConfig through a field that is not a relationship rejects the file.
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/config/managed",
        Some(json!({"objects": [{"name": "x", "schema": {"properties": {
            "v": {"type": "array", "isVirtual": true,
                  "queryConfig": {"referencedRelationshipFields": ["nope"]}}}}}]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("'nope' is not a relationship"),
        "{body}"
    );
}
