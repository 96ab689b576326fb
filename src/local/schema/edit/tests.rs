use serde_json::{json, Map, Value};

use super::*;
use crate::managed::parse_managed;

fn doc() -> Map<String, Value> {
    match json!({"objects": [
        {"name": "alpha_user", "schema": {"order": ["userName"], "required": ["userName"],
            "properties": {"userName": {"type": "string"}}}},
        {"name": "alpha_role", "schema": {"properties": {"name": {"type": "string"}}}},
    ]}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// Seed 002's example body, for `alpha_user`.
fn children() -> Map<String, Value> {
    obj(json!({
        "description": "A user as a child of another user.", "title": "Custom children",
        "viewable": true, "type": "array", "required": false,
        "items": {"type": "relationship", "title": "Custom Parent", "reverseRelationship": true,
            "reversePropertyName": "custom_Parents", "notifySelf": false, "validate": true,
            "properties": {"_ref": {"type": "string"}, "_refProperties": {"type": "object",
                "properties": {"_id": {"type": "string"}}}},
            "resourceCollection": [{"path": "managed/alpha_user", "label": "User",
                "query": {"queryFilter": "true", "fields": ["userName"]}, "notify": false,
                "reverseProperty": {"type": "array", "validate": true,
                    "resourceCollection": {"notify": false,
                        "query": {"queryFilter": "true", "fields": ["userName"]}}}}]}
    }))
}

fn valid(d: &Map<String, Value>) {
    parse_managed(&Value::Object(d.clone())).unwrap();
}

#[test]
fn the_seed_example_creates_both_sides_and_stores_no_directive() {
    let mut d = doc();
    let w = put_property(
        &mut d,
        "alpha_user",
        "custom_Children",
        children(),
        &Expect::Any,
    )
    .unwrap();
    assert!(w.created);
    valid(&d);
    let fwd = property(&d, "alpha_user", "custom_Children").unwrap();
    assert!(fwd["items"]["resourceCollection"][0]
        .get("reverseProperty")
        .is_none());
    let back = property(&d, "alpha_user", "custom_Parents").unwrap();
    assert_eq!(back["type"], "array");
    assert_eq!(back["items"]["reversePropertyName"], "custom_Children");
    assert_eq!(back["items"]["validate"], true);
    assert_eq!(
        back["items"]["resourceCollection"][0]["path"],
        "managed/alpha_user"
    );
    assert_eq!(
        back["items"]["resourceCollection"][0]["query"]["fields"][0],
        "userName"
    );
    let order = &type_schema(&d, "alpha_user").unwrap()["order"];
    assert_eq!(
        order,
        &json!(["userName", "custom_Children", "custom_Parents"])
    );

    // Again, retitled: a replace of the same relationship, whose edges stay.
    let mut retitled = children();
    retitled.insert("title".into(), json!("Kids"));
    let w = put_property(
        &mut d,
        "alpha_user",
        "custom_Children",
        retitled,
        &Expect::Any,
    )
    .unwrap();
    assert!(!w.created && w.relations.is_empty(), "{:?}", w.relations);
    valid(&d);
    assert!(put_property(
        &mut d,
        "alpha_user",
        "custom_Children",
        children(),
        &Expect::Absent
    )
    .is_err_and(|e| e.code == 412));

    let del = delete_property(&mut d, "alpha_user", "custom_Parents", None).unwrap();
    assert_eq!(
        del.relations,
        vec![
            ("managed/alpha_user".to_owned(), "custom_Parents".to_owned()),
            (
                "managed/alpha_user".to_owned(),
                "custom_Children".to_owned()
            )
        ]
    );
    assert!(property(&d, "alpha_user", "custom_Children").is_none());
    assert_eq!(
        type_schema(&d, "alpha_user").unwrap()["order"],
        json!(["userName"])
    );
    valid(&d);
}

#[test]
fn a_renamed_reverse_side_replaces_the_old_one_on_the_target() {
    let mut d = doc();
    let roles = |reverse: &str| {
        obj(json!({"type": "array", "items": {"type": "relationship",
            "reverseRelationship": true, "reversePropertyName": reverse,
            "resourceCollection": [{"path": "managed/alpha_role",
                "reverseProperty": {"type": "array"}}]}}))
    };
    put_property(
        &mut d,
        "alpha_user",
        "custom_roles",
        roles("custom_members"),
        &Expect::Any,
    )
    .unwrap();
    valid(&d);
    let rev = property_rev(property(&d, "alpha_user", "custom_roles").unwrap());
    let w = put_property(
        &mut d,
        "alpha_user",
        "custom_roles",
        roles("custom_holders"),
        &Expect::Rev(rev.clone()),
    )
    .unwrap();
    valid(&d);
    assert_eq!(
        w.relations,
        vec![
            ("managed/alpha_user".to_owned(), "custom_roles".to_owned()),
            ("managed/alpha_role".to_owned(), "custom_members".to_owned())
        ]
    );
    assert!(property(&d, "alpha_role", "custom_members").is_none());
    assert!(property(&d, "alpha_role", "custom_holders").is_some());
    // The old revision no longer matches.
    let e = put_property(
        &mut d,
        "alpha_user",
        "custom_roles",
        roles("x"),
        &Expect::Rev(rev),
    )
    .unwrap_err();
    assert_eq!(e.code, 412);
}

#[test]
fn deleting_removes_required_and_answers_404_when_absent() {
    let mut d = doc();
    let del = delete_property(&mut d, "alpha_user", "userName", None).unwrap();
    assert_eq!(del.definition, obj(json!({"type": "string"})));
    assert!(del.relations.is_empty());
    let s = type_schema(&d, "alpha_user").unwrap();
    assert_eq!((&s["order"], &s["required"]), (&json!([]), &json!([])));
    assert_eq!(
        delete_property(&mut d, "alpha_user", "userName", None)
            .unwrap_err()
            .code,
        404
    );
    assert_eq!(
        delete_property(&mut d, "nosuch", "x", None)
            .unwrap_err()
            .code,
        404
    );
}

#[test]
fn bad_requests_are_named() {
    let mut d = doc();
    let cases: Vec<(&str, Map<String, Value>, &str)> = vec![
        ("_id", obj(json!({"type": "string"})), "reserved"),
        (
            "r",
            obj(
                json!({"type": "relationship", "resourceCollection": [{"path": "managed/alpha_role",
            "reverseProperty": {}}]}),
            ),
            "reverseRelationship",
        ),
        (
            "r",
            obj(
                json!({"type": "relationship", "reverseRelationship": true, "reversePropertyName": "x",
            "resourceCollection": [{"path": "internal/role", "reverseProperty": {}}]}),
            ),
            "only for managed",
        ),
        (
            "r",
            obj(
                json!({"type": "relationship", "reverseRelationship": true, "reversePropertyName": "name",
            "resourceCollection": [{"path": "managed/alpha_role", "reverseProperty": {}}]}),
            ),
            "already has a property 'name'",
        ),
        (
            "r",
            obj(
                json!({"type": "relationship", "reverseRelationship": true, "reversePropertyName": "x",
            "resourceCollection": [{"path": "managed/alpha_role", "reverseProperty": {"type": "string"}}]}),
            ),
            "reverseProperty.type",
        ),
    ];
    for (name, def, needle) in cases {
        let e = put_property(&mut d, "alpha_user", name, def, &Expect::Any).unwrap_err();
        assert_eq!(e.code, 400, "{needle}");
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }
    assert_eq!(
        put_property(&mut d, "nosuch", "x", Map::new(), &Expect::Any)
            .unwrap_err()
            .code,
        404
    );
}
