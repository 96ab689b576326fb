//! Documents the service-layer tests share: shipped conf files and sample users.

use serde_json::{json, Value};

/// `conf/<name>.json` as shipped.
pub fn shipped(name: &str) -> Value {
    let path = format!("{}/conf/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The shipped managed.json plus a schema-light type `other` (a sync target).
pub fn managed_with_other() -> Value {
    let mut doc = shipped("managed");
    doc["objects"].as_array_mut().unwrap().push(json!({
        "name": "other",
        "schema": {"properties": {
            "userName": {"type": "string", "searchable": true},
            "mail": {"type": "string", "searchable": true},
            "givenName": {"type": "string"},
            "sn": {"type": "string"}}}}));
    doc
}

/// A valid managed user number `i` (no password).
pub fn user(i: usize) -> Value {
    json!({"userName": format!("user{i}"), "givenName": "Given", "sn": format!("Sn{i}"),
           "mail": format!("user{i}@example.com")})
}
