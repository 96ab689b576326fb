//! IDM's policies on a running gateway with the shipped `managed.json` (IDM's default user
//! policies): enforcement on every kind of write with IDM's requirement names, and the
//! policy service (`/openidm/policy/…`: read, `validateObject`, `validateProperty`).

mod common;

use common::fixtures::shipped;
use common::{json_of, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

const GOOD_PASSWORD: &str = "Secr3t-Pass";

fn bjensen(password: &str) -> Value {
    json!({"userName": "bjensen", "givenName": "Barbara", "sn": "Jensen",
           "mail": "bjensen@example.com", "password": password})
}

async fn send(gw: &Gateway, method: Method, path: &str, body: Value) -> (u16, Value) {
    common::send(gw, method, path, Some(body)).await
}

/// The `failedPolicyRequirements` of a 403 (asserting it is IDM's policy failure).
fn failed(status: u16, body: &Value) -> Vec<(String, Value)> {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], "Policy validation failed", "{body}");
    assert_eq!(body["detail"]["result"], false, "{body}");
    failures(&body["detail"])
}

fn failures(detail: &Value) -> Vec<(String, Value)> {
    detail["failedPolicyRequirements"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            let property = f["property"].as_str().unwrap().to_owned();
            f["policyRequirements"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| (property.clone(), r.clone()))
        })
        .collect()
}

fn req(property: &str, requirement: Value) -> (String, Value) {
    (property.to_owned(), requirement)
}

#[tokio::test]
async fn every_write_checks_idm_policies_and_never_echoes_a_password() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let weak = "xbjensenx-weak";
    let (s, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/bjensen",
        bjensen(weak),
    )
    .await;
    assert_eq!(
        failed(s, &body),
        vec![
            req(
                "password",
                json!({"policyRequirement": "AT_LEAST_X_CAPITAL_LETTERS", "params": {"numCaps": 1}})
            ),
            req(
                "password",
                json!({"policyRequirement": "AT_LEAST_X_NUMBERS", "params": {"numNums": 1}})
            ),
            req(
                "password",
                json!({"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": ["userName"]}})
            ),
        ]
    );
    assert!(!body.to_string().contains(weak) && !gw.logs().contains(weak));

    // Formats, characters and the type, on create.
    let mut bad = bjensen(GOOD_PASSWORD);
    bad["userName"] = json!("b/jensen");
    bad["mail"] = json!("not-an-address");
    bad["telephoneNumber"] = json!("call me");
    let (s, body) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user?_action=create",
        bad,
    )
    .await;
    assert_eq!(
        failed(s, &body),
        vec![
            req(
                "userName",
                json!({"policyRequirement": "CANNOT_CONTAIN_CHARACTERS", "params": {"forbiddenChars": "/"}})
            ),
            req(
                "mail",
                json!({"policyRequirement": "VALID_EMAIL_ADDRESS_FORMAT"})
            ),
            req(
                "telephoneNumber",
                json!({"policyRequirement": "MATCH_REGEXP", "regexp": "^\\+?([0-9\\- \\(\\)])*$",
                 "params": {"regexp": "^\\+?([0-9\\- \\(\\)])*$"}})
            ),
        ]
    );

    let (s, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/bjensen",
        bjensen(GOOD_PASSWORD),
    )
    .await;
    assert_eq!(s, 201, "{body}");

    // PATCH: the new password is checked in clear against the object's other fields; an
    // unrelated change does not re-check the stored hash.
    let (s, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/bjensen",
        json!([{"operation": "replace", "field": "/password", "value": "Jensen-2024"}]),
    )
    .await;
    assert_eq!(
        failed(s, &body),
        vec![req(
            "password",
            json!({"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": ["sn"]}})
        )]
    );
    let (s, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/bjensen",
        json!([{"operation": "replace", "field": "/description", "value": "ok"}]),
    )
    .await;
    assert_eq!(s, 200, "{body}");

    // PUT without the password keeps the stored one; its other fields are still checked.
    let mut replaced = bjensen(GOOD_PASSWORD);
    replaced.as_object_mut().unwrap().remove("password");
    replaced["mail"] = json!(7);
    let (s, body) = send(&gw, Method::PUT, "/openidm/managed/user/bjensen", replaced).await;
    assert_eq!(
        failed(s, &body),
        vec![req(
            "mail",
            json!({"policyRequirement": "VALID_TYPE", "params": {"invalidType": "number", "validTypes": ["string"]}})
        )]
    );

    // Patch by query.
    let (s, body) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user?_action=patch&_queryFilter=userName%20eq%20%22bjensen%22",
        json!([{"operation": "replace", "field": "/mail", "value": "nowhere"}]),
    )
    .await;
    assert_eq!(
        failed(s, &body),
        vec![req(
            "mail",
            json!({"policyRequirement": "VALID_EMAIL_ADDRESS_FORMAT"})
        )]
    );

    // valid-username: taken by another user, or by an internal user.
    for name in ["bjensen", "openidm-admin"] {
        let mut other = bjensen(GOOD_PASSWORD);
        other["userName"] = json!(name);
        let (s, body) = send(&gw, Method::PUT, "/openidm/managed/user/other", other).await;
        assert_eq!(
            failed(s, &body),
            vec![req(
                "userName",
                json!({"policyRequirement": "VALID_USERNAME"})
            )],
            "{name}"
        );
    }

    // Nothing of the refused writes was stored.
    let (s, stored) = json_of(
        gw.get("/openidm/managed/user/bjensen")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, &stored["mail"], &stored["description"]),
        (200, &json!("bjensen@example.com"), &json!("ok"))
    );
    let (s, _) = json_of(gw.get("/openidm/managed/user/other").send().await.unwrap()).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn the_policy_service_lists_and_validates_like_idm() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let (s, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/bjensen",
        bjensen(GOOD_PASSWORD),
    )
    .await;
    assert_eq!(s, 201, "{body}");

    // The type's policies: declared and implicit, with their requirement names.
    let (s, user) = json_of(gw.get("/openidm/policy/managed/user").send().await.unwrap()).await;
    assert_eq!(
        (s, &user["_id"], &user["resource"]),
        (200, &json!("*"), &json!("managed/user/*")),
        "{user}"
    );
    let prop = |name: &str| {
        user["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    };
    let password = prop("password");
    let ids: Vec<&str> = password["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policyId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "valid-type",
            "minimum-length",
            "at-least-X-capitals",
            "at-least-X-numbers",
            "cannot-contain-others"
        ]
    );
    assert_eq!(
        password["policies"][1],
        json!({"policyId": "minimum-length", "params": {"minLength": 8}, "policyRequirements": ["MIN_LENGTH"]})
    );
    assert_eq!(
        prop("userName")["policyRequirements"],
        json!([
            "REQUIRED",
            "VALID_TYPE",
            "VALID_USERNAME",
            "CANNOT_CONTAIN_CHARACTERS",
            "MIN_LENGTH",
            "MAX_LENGTH"
        ])
    );
    let (s, same) = json_of(
        gw.get("/openidm/policy/managed/user/*")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &same["properties"]), (200, &user["properties"]));
    let (s, all) = json_of(gw.get("/openidm/policy").send().await.unwrap()).await;
    assert_eq!(s, 200, "{all}");
    let resources: Vec<&str> = all["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    assert!(
        resources.contains(&"managed/user/*") && resources.contains(&"internal/user/*"),
        "{resources:?}"
    );

    // validateProperty: only the named properties; 200 either way.
    let (s, v) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/user/*?_action=validateProperty",
        json!({"password": "abc"}),
    )
    .await;
    assert_eq!((s, &v["result"]), (200, &json!(false)), "{v}");
    assert_eq!(
        failures(&v),
        vec![
            req(
                "password",
                json!({"policyRequirement": "MIN_LENGTH", "params": {"minLength": 8}})
            ),
            req(
                "password",
                json!({"policyRequirement": "AT_LEAST_X_CAPITAL_LETTERS", "params": {"numCaps": 1}})
            ),
            req(
                "password",
                json!({"policyRequirement": "AT_LEAST_X_NUMBERS", "params": {"numNums": 1}})
            ),
        ]
    );
    let (s, v) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/user/*?_action=validateProperty",
        json!({"password": GOOD_PASSWORD}),
    )
    .await;
    assert_eq!(
        (s, v),
        (200, json!({"result": true, "failedPolicyRequirements": []}))
    );
    // cannot-contain-others reads the stored object's other fields.
    let (s, v) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/user/bjensen?_action=validateProperty",
        json!({"password": "Barbara-99"}),
    )
    .await;
    assert_eq!(
        (s, failures(&v)),
        (
            200,
            vec![req(
                "password",
                json!({"policyRequirement": "CANNOT_CONTAIN_OTHERS", "params": {"disallowedFields": ["givenName"]}})
            )]
        )
    );

    // validateObject: the whole object; an object does not conflict with itself.
    let (s, v) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/user/bjensen?_action=validateObject",
        bjensen(GOOD_PASSWORD),
    )
    .await;
    assert_eq!(
        (s, v),
        (200, json!({"result": true, "failedPolicyRequirements": []}))
    );
    let (s, v) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/user/other?_action=validateObject",
        bjensen(GOOD_PASSWORD),
    )
    .await;
    assert_eq!(
        (s, failures(&v)),
        (
            200,
            vec![req(
                "userName",
                json!({"policyRequirement": "VALID_USERNAME"})
            )]
        )
    );
    let mut missing = bjensen(GOOD_PASSWORD);
    missing.as_object_mut().unwrap().remove("mail");
    missing["userName"] = json!("newbie");
    let (s, v) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/user/*?_action=validateObject",
        missing,
    )
    .await;
    assert_eq!(
        (s, failures(&v)),
        (
            200,
            vec![req("mail", json!({"policyRequirement": "REQUIRED"}))]
        )
    );

    // Unknown types and actions.
    let (s, _) = json_of(
        gw.get("/openidm/policy/managed/nosuch")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/nosuch/*?_action=validateObject",
        json!({}),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/user/*?_action=nosuch",
        json!({}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, internal) = json_of(
        gw.get("/openidm/policy/internal/user")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, &internal["resource"]),
        (200, &json!("internal/user/*")),
        "{internal}"
    );

    // Authenticated users may read and validate (IDM's openidm-authorized), nothing else.
    let (s, body) = send(&gw, Method::PUT, "/openidm/internal/user/plain",
        json!({"password": "Plain-Pass-1", "authzRoles": [{"_ref": "internal/role/openidm-authorized"}]})).await;
    assert!(s == 201 || s == 200, "{s} {body}");
    let (s, v) = json_of(
        gw.as_user(
            Method::POST,
            "/openidm/policy/managed/user/*?_action=validateProperty",
            "plain",
            "Plain-Pass-1",
        )
        .json(&json!({"mail": "x"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((s, &v["result"]), (200, &json!(false)), "{v}");
    let (s, _) = json_of(
        gw.as_user(
            Method::PUT,
            "/openidm/policy/managed/user",
            "plain",
            "Plain-Pass-1",
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_managed_json_naming_an_unknown_policy_is_refused_with_its_name() {
    let gw = Gateway::builder()
        .conf_file("managed", shipped("managed"))
        .start()
        .await;
    let mut doc = shipped("managed");
    doc["objects"][0]["schema"]["properties"]["mail"]["policies"] = json!([{"policyId": "valid-emial"}, {"policyId": "minimum-length", "params": {"minLength": -1}}]);
    let (s, body) = send(&gw, Method::PUT, "/openidm/config/managed", doc).await;
    assert_eq!(s, 400, "{body}");
    let problems = body["detail"]["problems"].to_string();
    assert!(
        problems.contains("unknown policyId 'valid-emial'"),
        "{problems}"
    );
    assert!(problems.contains("params.minLength"), "{problems}");
    // The shipped policies stay live.
    let (s, v) = send(
        &gw,
        Method::POST,
        "/openidm/policy/managed/user/*?_action=validateProperty",
        json!({"mail": "x"}),
    )
    .await;
    assert_eq!((s, &v["result"]), (200, &json!(false)), "{v}");
}
