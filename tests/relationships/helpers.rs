//! Shared by the relationship tests: a realm-style `managed.json` and request helpers.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::Gateway;

/// A relationship property as IDM's `managed.json` declares one.
pub fn rel(array: bool, reverse: Option<&str>, path: &str, extra: Value) -> Value {
    let mut items = json!({
        "type": "relationship", "validate": true,
        "properties": {"_ref": {"type": "string"}, "_refProperties": {"type": "object",
            "properties": {"_id": {"type": "string"}, "_grantType": {"type": "string"}}}},
        "resourceCollection": [{"path": path, "label": "x",
            "query": {"queryFilter": "true", "fields": ["name"]}}]
    });
    if let Some(r) = reverse {
        items["reverseRelationship"] = json!(true);
        items["reversePropertyName"] = json!(r);
    }
    for (k, v) in extra.as_object().unwrap() {
        items[k] = v.clone();
    }
    if array {
        json!({"type": "array", "returnByDefault": false, "items": items})
    } else {
        items["returnByDefault"] = json!(false);
        items
    }
}

pub fn managed() -> Value {
    json!({"objects": [
        {"name": "alpha_user", "schema": {"properties": {
            "userName": {"type": "string", "searchable": true},
            "roles": rel(true, Some("members"), "managed/alpha_role", json!({})),
            "groups": rel(true, Some("members"), "managed/alpha_group", json!({})),
            "manager": rel(false, Some("reports"), "managed/alpha_user", json!({})),
            "reports": rel(true, Some("manager"), "managed/alpha_user", json!({})),
            "favourite": rel(false, None, "managed/alpha_role", json!({"validate": false})),
        }}},
        {"name": "alpha_role", "schema": {"properties": {
            "name": {"type": "string", "searchable": true},
            "members": rel(true, Some("roles"), "managed/alpha_user", json!({})),
        }}},
        {"name": "alpha_group", "schema": {"properties": {
            "name": {"type": "string", "searchable": true},
            "members": rel(true, Some("groups"), "managed/alpha_user", json!({})),
        }}},
    ]})
}

pub async fn gateway() -> Gateway {
    Gateway::builder()
        .conf_file("managed", managed())
        .start()
        .await
}

pub use crate::common::send;

pub async fn ok(gw: &Gateway, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, body) = send(gw, method.clone(), path, body).await;
    assert!(
        status == 200 || status == 201,
        "{method} {path}: {status} {body}"
    );
    body
}

pub async fn create(gw: &Gateway, path: &str, body: Value) -> Value {
    ok(gw, Method::PUT, path, Some(body)).await
}

/// The `_refResourceId`s of a relationship value (array or single).
pub fn ids(v: &Value) -> BTreeSet<String> {
    let list = match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        v => vec![v.clone()],
    };
    list.iter()
        .map(|r| r["_refResourceId"].as_str().unwrap().to_owned())
        .collect()
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
