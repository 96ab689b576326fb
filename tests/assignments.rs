//! Assignments reaching a real `slapd` through a mapping (IDM's role-based provisioning):
//! the `effectiveAssignments` of a managed user whose `mapping` is
//! `managedUser_systemLdapAccounts` set attributes of the user's LDAP entry, by implicit sync
//! and by reconciliation; when they leave the user, `removeFromTarget` takes their values out
//! again and `noOp` leaves them.
//!
//! The first test writes `effectiveAssignments` itself (a plain array property in its
//! managed.json); the others go through `managed/assignment` and `managed/role` as an IDM
//! user would, and need the managed side that computes `effectiveAssignments` from roles.

mod common;

use std::time::Duration;

use common::fixtures::{recon, shipped};
use common::slapd::{ldap_provisioner, PEOPLE, ROOT_PW, SUFFIX};
use common::{eventually, json_of, Gateway, Slapd};
use serde_json::{json, Value};

const MAPPING: &str = "managedUser_systemLdapAccounts";
const WAIT: Duration = Duration::from_secs(20);

/// The LDAP provisioner with multi-valued `employeeType` and single-valued `title`.
fn provisioner(slapd: &Slapd) -> Value {
    let mut p = ldap_provisioner(slapd.port());
    let props = &mut p["objectTypes"]["account"]["properties"];
    props["employeeType"] = json!({"type": "array", "items": {"type": "string"},
                                   "nativeName": "employeeType", "nativeType": "string"});
    props["title"] = json!({"type": "string", "nativeName": "title", "nativeType": "string"});
    p
}

/// managed/user → LDAP; `enableSync` as given; `on_create` a JavaScript onCreate hook.
fn mapping(enable_sync: bool, on_create: Option<&str>) -> Value {
    let js = |s: &str| json!({"type": "text/javascript", "source": s});
    let mut doc = json!({"mappings": [{
        "name": MAPPING,
        "source": "managed/user",
        "target": "system/ldap/account",
        "properties": [
            {"source": "userName", "target": "dn",
             "transform": js(&format!("'uid=' + source + ',{PEOPLE}'"))},
            {"source": "userName", "target": "uid"},
            {"target": "cn", "transform": js("source.givenName + ' ' + source.sn")},
            {"source": "sn", "target": "sn"}
        ],
        "correlationQuery": js("({_queryFilter: 'uid eq \"' + source.userName + '\"'})"),
        "enableSync": enable_sync
    }]});
    if let Some(script) = on_create {
        doc["mappings"][0]["onCreate"] = js(script);
    }
    doc
}

fn object_mut<'a>(doc: &'a mut Value, name: &str) -> &'a mut Value {
    doc["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["name"] == name)
        .unwrap()
}

/// The shipped managed.json with the user's `effectiveAssignments` a plain array the test
/// writes itself.
fn managed_with_plain_assignments() -> Value {
    let mut doc = shipped("managed");
    object_mut(&mut doc, "user")["schema"]["properties"]["effectiveAssignments"] =
        json!({"type": "array", "returnByDefault": true, "items": {"type": "object"}});
    doc
}

/// The shipped managed.json with IDM's `assignment` type, role `assignments` and the user's
/// computed `effectiveAssignments` (each added only where the shipped file lacks it).
fn managed_with_roles() -> Value {
    let mut doc = shipped("managed");
    let has_assignment = doc["objects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "assignment");
    let relationship = |path: &str, reverse: &str| {
        json!({"type": "array", "returnByDefault": false, "items": {
            "type": "relationship", "reverseRelationship": true,
            "reversePropertyName": reverse, "validate": true,
            "resourceCollection": [{"path": path, "label": path,
                                    "query": {"queryFilter": "true", "fields": ["name"]}}]}})
    };
    if !has_assignment {
        let roles = relationship("managed/role", "assignments");
        doc["objects"].as_array_mut().unwrap().push(json!({
            "name": "assignment",
            "schema": {"$schema": "http://forgerock.org/json-schema#", "type": "object",
                "title": "Assignment", "required": ["name", "description", "mapping"],
                "properties": {
                    "name": {"type": "string", "searchable": true},
                    "description": {"type": "string"},
                    "mapping": {"type": "string", "searchable": true},
                    "attributes": {"type": "array", "items": {"type": "object"}},
                    "linkQualifiers": {"type": "array", "items": {"type": "string"}},
                    "roles": roles}}}));
    }
    let role = &mut object_mut(&mut doc, "role")["schema"]["properties"];
    if role.get("assignments").is_none() {
        role["assignments"] = relationship("managed/assignment", "roles");
    }
    let effective =
        &mut object_mut(&mut doc, "user")["schema"]["properties"]["effectiveAssignments"];
    if effective.get("queryConfig").is_none() {
        *effective = json!({"type": "array", "isVirtual": true, "returnByDefault": true,
            "queryConfig": {"referencedRelationshipFields": ["roles", "assignments"],
                            "referencedObjectFields": ["*"]},
            "items": {"type": "object"}});
    }
    doc
}

async fn gateway(slapd: &Slapd, managed: Value, sync: Value) -> Gateway {
    Gateway::builder()
        .env("LDAP_BIND_PASSWORD", ROOT_PW)
        .conf_file("managed", managed)
        .conf_file("provisioner.openicf-ldap", provisioner(slapd))
        .conf_file("sync", sync)
        .start()
        .await
}

/// The values of `attr` in the entry of `uid`, sorted (none when there is no entry).
fn ldap_values(slapd: &Slapd, uid: &str, attr: &str) -> Vec<String> {
    let prefix = format!("{attr}: ");
    let mut out: Vec<String> = slapd
        .ldapsearch(SUFFIX, &format!("(uid={uid})"), &[attr])
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    out.sort();
    out
}

fn entry_exists(slapd: &Slapd, uid: &str) -> bool {
    slapd
        .ldapsearch(SUFFIX, &format!("(uid={uid})"), &["uid"])
        .contains(&format!("uid={uid},"))
}

/// Waits until `attr` of `uid` has exactly `want` (sorted), failing with what it has.
async fn wait_values(gw: &Gateway, slapd: &Slapd, uid: &str, attr: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let ok = eventually(WAIT, || async { ldap_values(slapd, uid, attr) == want }).await;
    assert!(
        ok,
        "{attr} of {uid}: {:?}, expected {want:?}\n{}",
        ldap_values(slapd, uid, attr),
        gw.logs()
    );
}

fn attr(name: &str, value: Value, assign: &str, unassign: &str) -> Value {
    json!({"name": name, "value": value, "assignmentOperation": assign,
           "unassignmentOperation": unassign})
}

/// An `effectiveAssignments` item as the managed side computes it.
fn effective(id: &str, mapping: &str, attributes: Vec<Value>) -> Value {
    json!({"_id": id, "_rev": "1", "name": id, "description": id, "mapping": mapping,
           "attributes": attributes, "_refResourceCollection": "managed/assignment",
           "_refResourceId": id, "_ref": format!("managed/assignment/{id}")})
}

fn user(user_name: &str, effective_assignments: Vec<Value>) -> Value {
    json!({"userName": user_name, "givenName": "Ada", "sn": "Lovelace",
           "mail": format!("{user_name}@example.com"),
           "effectiveAssignments": effective_assignments})
}

async fn put(gw: &Gateway, path: &str, body: &Value) -> Value {
    let (status, v) = json_of(gw.put(path).json(body).send().await.unwrap()).await;
    assert!((200..300).contains(&status), "PUT {path}: {status} {v}");
    v
}

#[tokio::test]
async fn effective_assignments_reach_slapd_follow_changes_and_leave_with_their_values() {
    let slapd = Slapd::builder().start();
    let gw = gateway(
        &slapd,
        managed_with_plain_assignments(),
        mapping(true, None),
    )
    .await;
    let staff = |value: &str| {
        effective(
            "staff",
            MAPPING,
            vec![attr(
                "description",
                json!(value),
                "replaceTarget",
                "removeFromTarget",
            )],
        )
    };
    let apps = |values: Value| {
        effective(
            "apps",
            MAPPING,
            vec![attr(
                "employeeType",
                values,
                "mergeWithTarget",
                "removeFromTarget",
            )],
        )
    };
    let badge = effective(
        "badge",
        MAPPING,
        vec![attr(
            "title",
            json!("Badge holder"),
            "replaceTarget",
            "noOp",
        )],
    );
    let elsewhere = effective(
        "csv",
        "managedUser_systemCsvAccounts",
        vec![attr(
            "telephoneNumber",
            json!("123"),
            "replaceTarget",
            "removeFromTarget",
        )],
    );
    let all = |staff_value: &str, app_values: Value| {
        vec![
            staff(staff_value),
            apps(app_values),
            badge.clone(),
            elsewhere.clone(),
        ]
    };

    // Created by implicit sync with the attributes of this mapping's assignments only.
    put(
        &gw,
        "/openidm/managed/user/u1",
        &user("ada", all("Staff", json!(["vpn", "wiki"]))),
    )
    .await;
    wait_values(&gw, &slapd, "ada", "employeeType", &["vpn", "wiki"]).await;
    assert_eq!(ldap_values(&slapd, "ada", "description"), ["Staff"]);
    assert_eq!(ldap_values(&slapd, "ada", "title"), ["Badge holder"]);
    assert!(ldap_values(&slapd, "ada", "telephoneNumber").is_empty());

    // A value added in the directory is kept by mergeWithTarget; a changed assignment value
    // takes the old value out and puts the new one in.
    slapd.ldapmodify(&format!(
        "dn: uid=ada,{PEOPLE}\nchangetype: modify\nadd: employeeType\nemployeeType: manual\n"
    ));
    put(
        &gw,
        "/openidm/managed/user/u1",
        &user("ada", all("Staff member", json!(["vpn", "mail"]))),
    )
    .await;
    wait_values(
        &gw,
        &slapd,
        "ada",
        "employeeType",
        &["mail", "manual", "vpn"],
    )
    .await;
    wait_values(&gw, &slapd, "ada", "description", &["Staff member"]).await;

    // Reconciliation applies them too: a directory change to an assigned attribute only
    // (no mapped property differs) is an update; a second run changes nothing.
    slapd.ldapmodify(&format!(
        "dn: uid=ada,{PEOPLE}\nchangetype: modify\ndelete: description\n"
    ));
    let run = recon(&gw, MAPPING).await;
    assert_eq!(run["state"], "SUCCESS", "{run}\n{}", gw.logs());
    assert_eq!(run["progress"]["target"]["updated"], 1, "{run}");
    assert_eq!(ldap_values(&slapd, "ada", "description"), ["Staff member"]);
    let run = recon(&gw, MAPPING).await;
    assert_eq!(run["progress"]["target"]["updated"], 0, "{run}");
    assert_eq!(run["situationSummary"]["CONFIRMED"], 1, "{run}");

    // The assignments leave: removeFromTarget takes their values out (the directory's own
    // value stays), noOp leaves the title.
    put(
        &gw,
        "/openidm/managed/user/u1",
        &user("ada", vec![elsewhere.clone()]),
    )
    .await;
    wait_values(&gw, &slapd, "ada", "employeeType", &["manual"]).await;
    wait_values(&gw, &slapd, "ada", "description", &[]).await;
    assert_eq!(ldap_values(&slapd, "ada", "title"), ["Badge holder"]);
    assert_eq!(ldap_values(&slapd, "ada", "sn"), ["Lovelace"]);
    let run = recon(&gw, MAPPING).await;
    assert_eq!(run["progress"]["target"]["updated"], 0, "{run}");
}

/// A reverse mapping (LDAP → managed/user) shares the links: its syncs keep the forward
/// mapping's record of what it applied, so the forward mapping still takes the values out.
#[tokio::test]
async fn a_reverse_mapping_sharing_the_links_leaves_the_applied_record_alone() {
    let slapd = Slapd::builder().start();
    let mut sync = mapping(true, None);
    sync["mappings"].as_array_mut().unwrap().push(json!({
        "name": "systemLdapAccounts_managedUser",
        "source": "system/ldap/account",
        "target": "managed/user",
        "links": MAPPING,
        "properties": [{"source": "sn", "target": "sn"}],
        "enableSync": false
    }));
    let gw = gateway(&slapd, managed_with_plain_assignments(), sync).await;
    let staff = effective(
        "staff",
        MAPPING,
        vec![attr(
            "description",
            json!("Staff"),
            "replaceTarget",
            "removeFromTarget",
        )],
    );
    let mut ada = user("ada", vec![staff]);
    ada["description"] = json!("Staff");
    put(&gw, "/openidm/managed/user/u1", &ada).await;
    wait_values(&gw, &slapd, "ada", "description", &["Staff"]).await;

    let run = recon(&gw, "systemLdapAccounts_managedUser").await;
    assert_eq!(run["state"], "SUCCESS", "{run}\n{}", gw.logs());
    assert_eq!(run["situationSummary"]["CONFIRMED"], 1, "{run}");
    let (_, u1) = json_of(gw.get("/openidm/managed/user/u1").send().await.unwrap()).await;
    assert_eq!(u1["description"], "Staff", "{u1}");

    ada["effectiveAssignments"] = json!([]);
    put(&gw, "/openidm/managed/user/u1", &ada).await;
    wait_values(&gw, &slapd, "ada", "description", &[]).await;
}

/// A bad assignment fails its user only; onCreate sees the assigned attributes in `target`.
#[tokio::test]
async fn an_unsupported_assignment_fails_its_user_with_the_reason() {
    let slapd = Slapd::builder().start();
    let on_create = "target.title = 'seen ' + target.description;";
    let sync = mapping(false, Some(on_create));
    let gw = gateway(&slapd, managed_with_plain_assignments(), sync).await;
    let bad = effective(
        "bad",
        MAPPING,
        vec![attr(
            "description",
            json!("x"),
            "appendToTarget",
            "removeFromTarget",
        )],
    );
    put(&gw, "/openidm/managed/user/u1", &user("ada", vec![bad])).await;
    let good = effective(
        "good",
        MAPPING,
        vec![attr(
            "description",
            json!("Staff"),
            "replaceTarget",
            "removeFromTarget",
        )],
    );
    put(&gw, "/openidm/managed/user/u2", &user("grace", vec![good])).await;
    let run = recon(&gw, MAPPING).await;
    assert_eq!(run["statusSummary"]["FAILURE"], 1, "{run}");
    assert_eq!(run["progress"]["target"]["created"], 1, "{run}");
    assert!(!entry_exists(&slapd, "ada"));
    assert_eq!(ldap_values(&slapd, "grace", "title"), ["seen Staff"]);
    assert!(
        gw.logs()
            .contains("unsupported assignmentOperation 'appendToTarget'"),
        "{}",
        gw.logs()
    );
}

/// `POST managed/<type>?_action=create`, returning the new id.
async fn create(gw: &Gateway, resource: &str, body: &Value) -> String {
    let (status, v) = json_of(
        gw.post(&format!("/openidm/managed/{resource}?_action=create"))
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "create {resource}: {v}");
    v["_id"].as_str().unwrap().to_owned()
}

async fn patch(gw: &Gateway, path: &str, ops: Value) {
    let (status, v) = json_of(
        gw.request(reqwest::Method::PATCH, path)
            .json(&ops)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "PATCH {path}: {v}");
}

/// An assignment `staff` (employeeType, description) and one `badge` (title, noOp) on a
/// role `staff`; returns (staff assignment id, role id).
async fn staff_role(gw: &Gateway) -> (String, String) {
    let staff = create(
        gw,
        "assignment",
        &json!({"name": "staff", "description": "Staff access", "mapping": MAPPING,
                "attributes": [
                    attr("employeeType", json!(["vpn", "wiki"]), "mergeWithTarget",
                         "removeFromTarget"),
                    attr("description", json!("Staff"), "replaceTarget", "removeFromTarget")]}),
    )
    .await;
    let badge = create(
        gw,
        "assignment",
        &json!({"name": "badge", "description": "Badge", "mapping": MAPPING,
                "attributes": [attr("title", json!("Badge holder"), "replaceTarget", "noOp")]}),
    )
    .await;
    let role = create(
        gw,
        "role",
        &json!({"name": "staff", "assignments": [
            {"_ref": format!("managed/assignment/{staff}")},
            {"_ref": format!("managed/assignment/{badge}")}]}),
    )
    .await;
    (staff, role)
}

fn user_with_roles(user_name: &str, roles: &[&str]) -> Value {
    let roles: Vec<Value> = roles
        .iter()
        .map(|r| json!({"_ref": format!("managed/role/{r}")}))
        .collect();
    json!({"userName": user_name, "givenName": "Ada", "sn": "Lovelace",
           "mail": format!("{user_name}@example.com"), "roles": roles})
}

#[tokio::test]
async fn a_role_s_assignments_reach_slapd_and_leave_with_the_role() {
    let slapd = Slapd::builder().start();
    let gw = gateway(&slapd, managed_with_roles(), mapping(true, None)).await;
    let (staff, role) = staff_role(&gw).await;
    put(
        &gw,
        "/openidm/managed/user/u1",
        &user_with_roles("ada", &[&role]),
    )
    .await;
    wait_values(&gw, &slapd, "ada", "employeeType", &["vpn", "wiki"]).await;
    assert_eq!(ldap_values(&slapd, "ada", "description"), ["Staff"]);
    assert_eq!(ldap_values(&slapd, "ada", "title"), ["Badge holder"]);

    // The assignment changes: the directory follows.
    patch(
        &gw,
        &format!("/openidm/managed/assignment/{staff}"),
        json!([{"operation": "replace", "field": "/attributes", "value": [
            attr("employeeType", json!(["vpn", "mail"]), "mergeWithTarget", "removeFromTarget"),
            attr("description", json!("Staff member"), "replaceTarget", "removeFromTarget")]}]),
    )
    .await;
    wait_values(&gw, &slapd, "ada", "employeeType", &["mail", "vpn"]).await;
    wait_values(&gw, &slapd, "ada", "description", &["Staff member"]).await;

    // The role leaves the user: removeFromTarget values go, the noOp title stays.
    put(
        &gw,
        "/openidm/managed/user/u1",
        &user_with_roles("ada", &[]),
    )
    .await;
    wait_values(&gw, &slapd, "ada", "employeeType", &[]).await;
    wait_values(&gw, &slapd, "ada", "description", &[]).await;
    assert_eq!(ldap_values(&slapd, "ada", "title"), ["Badge holder"]);
}

#[tokio::test]
async fn reconciliation_applies_a_role_s_assignments() {
    let slapd = Slapd::builder().start();
    let gw = gateway(&slapd, managed_with_roles(), mapping(false, None)).await;
    let (_, role) = staff_role(&gw).await;
    put(
        &gw,
        "/openidm/managed/user/u1",
        &user_with_roles("ada", &[&role]),
    )
    .await;
    put(
        &gw,
        "/openidm/managed/user/u2",
        &user_with_roles("grace", &[]),
    )
    .await;
    let run = recon(&gw, MAPPING).await;
    assert_eq!(run["state"], "SUCCESS", "{run}\n{}", gw.logs());
    assert_eq!(run["progress"]["target"]["created"], 2, "{run}");
    assert_eq!(ldap_values(&slapd, "ada", "employeeType"), ["vpn", "wiki"]);
    assert_eq!(ldap_values(&slapd, "ada", "description"), ["Staff"]);
    assert!(ldap_values(&slapd, "grace", "employeeType").is_empty());

    // The role goes to grace and leaves ada; the next run moves the values.
    put(
        &gw,
        "/openidm/managed/user/u1",
        &user_with_roles("ada", &[]),
    )
    .await;
    put(
        &gw,
        "/openidm/managed/user/u2",
        &user_with_roles("grace", &[&role]),
    )
    .await;
    let run = recon(&gw, MAPPING).await;
    assert_eq!(run["progress"]["target"]["updated"], 2, "{run}");
    assert!(ldap_values(&slapd, "ada", "employeeType").is_empty());
    assert!(ldap_values(&slapd, "ada", "description").is_empty());
    assert_eq!(ldap_values(&slapd, "ada", "title"), ["Badge holder"]);
    assert_eq!(
        ldap_values(&slapd, "grace", "employeeType"),
        ["vpn", "wiki"]
    );
    let run = recon(&gw, MAPPING).await;
    assert_eq!(run["progress"]["target"]["updated"], 0, "{run}");
}
