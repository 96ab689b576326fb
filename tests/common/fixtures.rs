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

/// The shipped managed.json with the user `password` encrypted (IDM's default form)
/// instead of hashed.
pub fn managed_encrypted() -> Value {
    let mut doc = shipped("managed");
    let user = doc["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["name"] == "user")
        .unwrap();
    let password = user["schema"]["properties"]["password"]
        .as_object_mut()
        .unwrap();
    password.remove("secureHash");
    password.insert(
        "encryption".into(),
        json!({"purpose": "idm.password.encryption"}),
    );
    doc
}

/// A valid managed user number `i` (no password).
pub fn user(i: usize) -> Value {
    json!({"userName": format!("user{i}"), "givenName": "Given", "sn": format!("Sn{i}"),
           "mail": format!("user{i}@example.com")})
}

/// `PUT managed/user/<id>` (create or replace), asserting success.
pub async fn put_user(gw: &super::Gateway, id: &str, body: &Value) {
    let r = gw
        .put(&format!("/openidm/managed/user/{id}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Users `u0..u<n>` ([`user`]), 32 requests at a time.
pub async fn seed_users(gw: &super::Gateway, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        futures_util::future::join_all(
            chunk
                .iter()
                .map(|&i| async move { put_user(gw, &format!("u{i}"), &user(i)).await }),
        )
        .await;
    }
}

/// Runs `mapping` to completion (`waitForCompletion=true`) and returns the stored run.
pub async fn recon(gw: &super::Gateway, mapping: &str) -> Value {
    let r = gw
        .post(&format!(
            "/openidm/recon?_action=recon&mapping={mapping}&waitForCompletion=true"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let started: Value = r.json().await.unwrap();
    assert_ne!(started["state"], "ACTIVE", "{started}");
    get_run(gw, started["_id"].as_str().unwrap()).await
}

/// `GET recon/<id>`, asserting it exists.
pub async fn get_run(gw: &super::Gateway, id: &str) -> Value {
    let r = gw
        .get(&format!("/openidm/recon/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The situations of a run that occurred, with their counts, in the run's order.
pub fn situations(run: &Value) -> Vec<(String, u64)> {
    run["situationSummary"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

/// Runs `mapping` to completion with `body` as the recon request's body (IDM's overrides,
/// e.g. `{"allowEmptySourceSet": true}`) and returns the stored run.
pub async fn recon_with(gw: &super::Gateway, mapping: &str, body: &Value) -> Value {
    let r = gw
        .post(&format!(
            "/openidm/recon?_action=recon&mapping={mapping}&waitForCompletion=true"
        ))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let started: Value = r.json().await.unwrap();
    assert_ne!(started["state"], "ACTIVE", "{started}");
    get_run(gw, started["_id"].as_str().unwrap()).await
}

/// `reconById` of one source id, to completion; the stored run.
pub async fn recon_by_id(gw: &super::Gateway, mapping: &str, id: &str) -> Value {
    let r = gw
        .post(&format!(
            "/openidm/recon?_action=reconById&mapping={mapping}&id={id}&waitForCompletion=true"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let started: Value = r.json().await.unwrap();
    get_run(gw, started["_id"].as_str().unwrap()).await
}

/// Every object of `resource` (`managed/other`), sorted by `userName`.
pub async fn all_of(gw: &super::Gateway, resource: &str) -> Vec<Value> {
    let v: Value = gw
        .get(&format!(
            "/openidm/{resource}?_queryFilter=true&_sortKeys=userName"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["result"].as_array().unwrap().clone()
}

/// `(SUCCESS, FAILURE)` of a run's `statusSummary`.
pub fn status(run: &Value) -> (u64, u64) {
    (
        run["statusSummary"]["SUCCESS"].as_u64().unwrap(),
        run["statusSummary"]["FAILURE"].as_u64().unwrap(),
    )
}

/// `[("ABSENT", 2)]` as [`situations`] returns them.
pub fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// A script object as IDM's config files hold it: `{"type": "text/javascript", "source"}`.
pub fn js(source: &str) -> Value {
    json!({"type": "text/javascript", "source": source})
}
