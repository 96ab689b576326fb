//! `managed.json` triggers on a running gateway, written as IDM's samples write them:
//! object-level `onCreate`/`onUpdate`/`onDelete`/`onRead`/`onRetrieve`/`onValidate`/
//! `onStore`/`post*`, property-level `onValidate`/`onStore`/`onRetrieve`, and a virtual
//! property computed when the object is read.

mod common;

use std::time::Duration;

use common::fixtures::js;
use common::{send, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

fn managed() -> Value {
    json!({"objects": [
        {
            "name": "user",
            "onCreate": js("object.createdBy = context.security.authenticationId;\n\
                            if (object.userName === 'forbidden') {\n\
                              throw {code: 403, message: 'userName ' + object.userName + ' is reserved'};\n\
                            }\n\
                            if (object.userName === 'runaway') { while (true) {} }"),
            "onUpdate": js("object.updates = (oldObject.updates || 0) + 1;"),
            "onDelete": js("if (object.protected) { throw {code: 409, message: object._id + ' is protected'}; }"),
            "onRead": js("object.readBy = 'onRead';"),
            "onStore": js("object.storedName = object.userName.toLowerCase();"),
            "postCreate": js("openidm.create('managed/event', null, {kind: 'created', who: newObject._id, cn: newObject.cn});"),
            "postUpdate": js("openidm.create('managed/event', null, {kind: 'updated', who: newObject._id, from: oldObject.updates || 0});"),
            "postDelete": js("openidm.create('managed/event', null, {kind: 'deleted', who: oldObject._id});"),
            "schema": {"properties": {
                "userName": {"type": "string", "searchable": true},
                "givenName": {"type": "string"},
                "sn": {"type": "string"},
                "mail": {"type": "string",
                         "onValidate": js("if (property !== null && String(property).indexOf('@') < 0) {\n\
                                             throw {code: 400, message: 'mail ' + property + ' has no @'};\n\
                                           }")},
                "cn": {"type": "string", "searchable": true,
                       "onStore": js("object.cn || (object.givenName + ' ' + object.sn)")},
                "displayName": {"type": "string", "isVirtual": true, "returnByDefault": true,
                                "onRetrieve": js("object.givenName + ' ' + object.sn.toUpperCase()")}
            }}
        },
        {"name": "event", "schema": {"properties": {"kind": {"type": "string", "searchable": true}}}}
    ]})
}

async fn gateway() -> Gateway {
    Gateway::builder()
        .conf_file("managed", managed())
        .conf_file("gateway", json!({"scripting": {"timeLimitMs": 500}}))
        .start()
        .await
}

async fn events(gw: &Gateway, kind: &str) -> Vec<Value> {
    let (status, body) = send(
        gw,
        Method::GET,
        &format!("/openidm/managed/event?_queryFilter=kind%20eq%20%22{kind}%22"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_read_update_delete_run_the_triggers_in_order() {
    let gw = gateway().await;
    let ada = json!({"userName": "Ada", "givenName": "Ada", "sn": "Lovelace",
                     "mail": "ada@example.com", "displayName": "written by a client"});
    let (status, created) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/ada",
        Some(ada.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    // onCreate saw the caller; property onStore computed cn; object onStore ran last.
    assert_eq!(created["createdBy"], "openidm-admin");
    assert_eq!(created["cn"], "Ada Lovelace");
    assert_eq!(created["storedName"], "ada");
    // The virtual property is computed on the way out (the client's value was dropped).
    assert_eq!(created["displayName"], "Ada LOVELACE");
    // onRead runs for reads, not for write answers.
    assert!(created.get("readBy").is_none(), "{created}");

    let (status, read) = send(&gw, Method::GET, "/openidm/managed/user/ada", None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["readBy"], "onRead");
    assert_eq!(read["displayName"], "Ada LOVELACE");

    // Stored values are queryable; the virtual one is not stored, and a query shows it
    // only with executeOnRetrieve=true (as IDM).
    let (_, q) = send(
        &gw,
        Method::GET,
        "/openidm/managed/user?_queryFilter=cn%20eq%20%22Ada%20Lovelace%22",
        None,
    )
    .await;
    assert_eq!(q["resultCount"], 1, "{q}");
    assert!(q["result"][0].get("displayName").is_none(), "{q}");
    let (_, q) = send(
        &gw,
        Method::GET,
        "/openidm/managed/user?_queryFilter=true&executeOnRetrieve=true",
        None,
    )
    .await;
    assert_eq!(q["result"][0]["displayName"], "Ada LOVELACE", "{q}");
    assert!(q["result"][0].get("readBy").is_none(), "{q}");

    // postCreate ran after the commit and could see the stored object.
    let created_events = events(&gw, "created").await;
    assert_eq!(created_events.len(), 1);
    assert_eq!(created_events[0]["who"], "ada");
    assert_eq!(created_events[0]["cn"], "Ada Lovelace");

    // onUpdate sees oldObject; PUT and PATCH both count.
    let mut changed = ada.clone();
    changed["sn"] = json!("Byron");
    changed["cn"] = Value::Null;
    let (status, updated) =
        send(&gw, Method::PUT, "/openidm/managed/user/ada", Some(changed)).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["updates"], 1);
    assert_eq!(
        updated["cn"], "Ada Byron",
        "onStore recomputes a cleared cn"
    );
    assert_eq!(updated["displayName"], "Ada BYRON");
    let (status, patched) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/ada",
        Some(json!([{"operation": "replace", "field": "givenName", "value": "Augusta"}])),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["updates"], 2);
    assert_eq!(patched["displayName"], "Augusta BYRON");
    let updated_events = events(&gw, "updated").await;
    assert_eq!(updated_events.len(), 2, "{updated_events:?}");

    // A virtual property is computed, never patched.
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/ada",
        Some(json!([{"operation": "replace", "field": "/displayName", "value": "x"}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("displayName"));

    // onDelete refuses a protected object: it stays; postDelete runs for the others.
    let (status, _) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/ada",
        Some(json!([{"operation": "add", "field": "protected", "value": true}])),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = send(&gw, Method::DELETE, "/openidm/managed/user/ada", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["message"], "ada is protected");
    let (status, _) = send(&gw, Method::GET, "/openidm/managed/user/ada", None).await;
    assert_eq!(status, 200, "a refused delete deleted");
    assert!(events(&gw, "deleted").await.is_empty());
    let (status, _) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/ada",
        Some(json!([{"operation": "remove", "field": "protected"}])),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = send(&gw, Method::DELETE, "/openidm/managed/user/ada", None).await;
    assert_eq!(status, 200, "{body}");
    let deleted = events(&gw, "deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["who"], "ada");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throwing_or_runaway_trigger_writes_nothing_and_says_why() {
    let gw = gateway().await;
    // onCreate throws IDM's {code, message}: that is the answer, and nothing is stored.
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/f",
        Some(json!({"userName": "forbidden", "givenName": "F", "sn": "X"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], "userName forbidden is reserved");
    let (status, _) = send(&gw, Method::GET, "/openidm/managed/user/f", None).await;
    assert_eq!(status, 404);
    assert!(events(&gw, "created").await.is_empty(), "postCreate ran");

    // A property onValidate refuses a create and an update; the stored object is kept.
    let (status, body) = send(
        &gw,
        Method::POST,
        "/openidm/managed/user?_action=create",
        Some(json!({"userName": "bob", "givenName": "Bob", "sn": "B", "mail": "nope"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "mail nope has no @");
    let (_, q) = send(
        &gw,
        Method::GET,
        "/openidm/managed/user?_queryFilter=true",
        None,
    )
    .await;
    assert_eq!(q["resultCount"], 0, "{q}");
    let (status, _) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/bob",
        Some(json!({"userName": "bob", "givenName": "Bob", "sn": "B", "mail": "bob@example.com"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = send(
        &gw,
        Method::PATCH,
        "/openidm/managed/user/bob",
        Some(json!([{"operation": "replace", "field": "mail", "value": "bob-at-example"}])),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, bob) = send(&gw, Method::GET, "/openidm/managed/user/bob", None).await;
    assert_eq!(bob["mail"], "bob@example.com");
    assert!(bob.get("updates").is_none(), "{bob}");

    // A runaway onCreate is stopped at the time limit, named with its line; the gateway
    // keeps serving, triggers included.
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/r",
        Some(json!({"userName": "runaway", "givenName": "R", "sn": "R"})),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("managed.json user.onCreate"), "{msg}");
    assert!(msg.contains("time limit of 500 ms"), "{msg}");
    let (status, _) = send(&gw, Method::GET, "/openidm/managed/user/r", None).await;
    assert_eq!(status, 404);
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/cy",
        Some(json!({"userName": "Cy", "givenName": "Cy", "sn": "D"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["cn"], "Cy D");
    assert!(
        gw.wait_for_log("managed object trigger failed", Duration::from_secs(5))
            .await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_managed_json_with_a_broken_trigger_is_refused_and_the_last_good_one_stays() {
    let gw = gateway().await;
    let mut broken = managed();
    broken["objects"][0]["onCreate"] = js("object.x = (1;");
    let (status, body) = send(&gw, Method::PUT, "/openidm/config/managed", Some(broken)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("user.onCreate"), "{body}");
    // The last good file is still live: its onCreate runs.
    let (status, body) = send(
        &gw,
        Method::PUT,
        "/openidm/managed/user/dee",
        Some(json!({"userName": "Dee", "givenName": "Dee", "sn": "E"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["createdBy"], "openidm-admin");
}
