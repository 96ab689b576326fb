use super::*;
use serde_json::json;

const M: &str = "managedUser_systemLdapAccounts";

/// An `effectiveAssignments` item as the managed side returns it.
fn assignment(id: &str, mapping: &str, attributes: Value) -> Value {
    json!({"_id": id, "_rev": "1", "name": format!("n-{id}"), "description": "d",
           "mapping": mapping, "attributes": attributes,
           "_refResourceCollection": "managed/assignment", "_refResourceId": id,
           "_ref": format!("managed/assignment/{id}")})
}

fn attr(name: &str, value: Value, assign: &str, unassign: &str) -> Value {
    json!({"name": name, "value": value, "assignmentOperation": assign,
           "unassignmentOperation": unassign})
}

fn source(items: Vec<Value>) -> Value {
    json!({"_id": "u1", "userName": "ada", "effectiveAssignments": items})
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn a_create_gets_the_attributes_of_the_mappings_assignments_only() {
    let src = source(vec![
        assignment(
            "a1",
            M,
            json!([attr(
                "description",
                json!("Staff"),
                "replaceTarget",
                "removeFromTarget"
            )]),
        ),
        assignment(
            "a2",
            "otherMapping",
            json!([attr(
                "mail",
                json!("x@y"),
                "replaceTarget",
                "removeFromTarget"
            )]),
        ),
        assignment(
            "a3",
            M,
            json!([attr(
                "groups",
                json!(["g1", "g2"]),
                "mergeWithTarget",
                "noOp"
            )]),
        ),
    ]);
    let mapped = obj(json!({"uid": "ada", "sn": "L"}));
    let out = apply(M, &src, None, &mapped, &Value::Null).unwrap();
    assert_eq!(
        Value::Object(out.attributes),
        json!({"description": "Staff", "groups": ["g1", "g2"]})
    );
    // The snapshot keeps the applied assignments' ids and attributes as written.
    let ids: Vec<&str> = out
        .snapshot
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1", "a3"]);
    assert_eq!(
        out.snapshot[1]["attributes"][0],
        attr("groups", json!(["g1", "g2"]), "mergeWithTarget", "noOp")
    );
    // Nothing for this mapping: nothing applied, nothing kept.
    let none = apply("x_y", &src, None, &mapped, &Value::Null).unwrap();
    assert!(none.attributes.is_empty() && none.snapshot.is_null());
    let no_field = apply(M, &json!({"_id": "u"}), None, &mapped, &Value::Null).unwrap();
    assert_eq!(no_field, Applied::default());
}

#[test]
fn merge_keeps_existing_values_without_duplicates_and_merges_objects() {
    let src = source(vec![
        assignment(
            "a1",
            M,
            json!([
                attr(
                    "groups",
                    json!(["g1", "g2"]),
                    "mergeWithTarget",
                    "removeFromTarget"
                ),
                attr(
                    "prefs",
                    json!({"a": 1, "b": 2}),
                    "mergeWithTarget",
                    "removeFromTarget"
                ),
                attr(
                    "title",
                    json!("Boss"),
                    "mergeWithTarget",
                    "removeFromTarget"
                ),
                attr("tag", json!("t1"), "mergeWithTarget", "removeFromTarget")
            ]),
        ),
        // A second assignment on the same attribute merges after the first.
        assignment(
            "a2",
            M,
            json!([attr(
                "groups",
                json!(["g3", "g1"]),
                "mergeWithTarget",
                "removeFromTarget"
            )]),
        ),
    ]);
    let existing = json!({"_id": "t1", "groups": ["g0", "g2"], "prefs": {"a": 0, "z": 9},
                          "title": "Clerk", "tag": ["t0"]});
    let out = apply(M, &src, Some(&existing), &Map::new(), &Value::Null).unwrap();
    assert_eq!(
        Value::Object(out.attributes),
        json!({"groups": ["g0", "g2", "g1", "g3"], "prefs": {"a": 1, "z": 9, "b": 2},
               "title": "Boss", "tag": ["t0", "t1"]})
    );
}

#[test]
fn replace_is_the_default_and_a_second_replace_of_one_attribute_merges() {
    let src = source(vec![
        assignment("a1", M, json!([{"name": "groups", "value": ["g1"]}])),
        assignment("a2", M, json!([{"name": "groups", "value": ["g2"]}])),
        assignment("a3", M, json!([{"name": "description", "value": "one"}])),
        assignment("a4", M, json!([{"name": "description", "value": "two"}])),
    ]);
    let existing = json!({"groups": ["old"], "description": "before"});
    let out = apply(M, &src, Some(&existing), &Map::new(), &Value::Null).unwrap();
    assert_eq!(out.attributes["groups"], json!(["g1", "g2"]));
    // Scalars merge by being set: the last one wins.
    assert_eq!(out.attributes["description"], json!("two"));
}

#[test]
fn the_mapped_value_is_the_start_when_the_mapping_maps_the_attribute() {
    let src = source(vec![assignment(
        "a1",
        M,
        json!([attr(
            "groups",
            json!(["g9"]),
            "mergeWithTarget",
            "removeFromTarget"
        )]),
    )]);
    let mapped = obj(json!({"groups": ["m1"]}));
    let existing = json!({"groups": ["t1"]});
    let out = apply(M, &src, Some(&existing), &mapped, &Value::Null).unwrap();
    assert_eq!(out.attributes["groups"], json!(["m1", "g9"]));
}

#[test]
fn a_removed_assignment_takes_its_values_out_unless_noop() {
    let a1 = assignment(
        "a1",
        M,
        json!([
            attr(
                "groups",
                json!(["g1", "g2"]),
                "mergeWithTarget",
                "removeFromTarget"
            ),
            attr(
                "description",
                json!("Staff"),
                "replaceTarget",
                "removeFromTarget"
            ),
            attr(
                "prefs",
                json!({"a": 1}),
                "mergeWithTarget",
                "removeFromTarget"
            ),
            attr("mail", json!("kept@x"), "replaceTarget", "noOp")
        ]),
    );
    let first = apply(M, &source(vec![a1]), None, &Map::new(), &Value::Null).unwrap();
    let target = json!({"_id": "t", "groups": ["g0", "g1", "g2"], "description": "Staff",
                        "prefs": {"a": 1, "b": 2}, "mail": "kept@x", "cn": "Ada"});
    let out = apply(
        M,
        &source(vec![]),
        Some(&target),
        &Map::new(),
        &first.snapshot,
    )
    .unwrap();
    assert_eq!(
        Value::Object(out.attributes),
        json!({"groups": ["g0"], "description": null, "prefs": {"b": 2}})
    );
    assert!(out.snapshot.is_null());
    // A scalar that is no longer the assigned value stays.
    let changed = json!({"description": "Changed by hand"});
    let out = apply(
        M,
        &source(vec![]),
        Some(&changed),
        &Map::new(),
        &first.snapshot,
    )
    .unwrap();
    assert_eq!(out.attributes["description"], json!("Changed by hand"));
}

#[test]
fn a_changed_attribute_is_unassigned_then_assigned_again() {
    let before = assignment(
        "a1",
        M,
        json!([
            attr(
                "groups",
                json!(["g1"]),
                "mergeWithTarget",
                "removeFromTarget"
            ),
            attr("title", json!("Same"), "replaceTarget", "removeFromTarget")
        ]),
    );
    let first = apply(M, &source(vec![before]), None, &Map::new(), &Value::Null).unwrap();
    let after = assignment(
        "a1",
        M,
        json!([
            attr(
                "groups",
                json!(["g2"]),
                "mergeWithTarget",
                "removeFromTarget"
            ),
            attr("title", json!("Same"), "replaceTarget", "removeFromTarget")
        ]),
    );
    let target = json!({"groups": ["g0", "g1"], "title": "Same"});
    let out = apply(
        M,
        &source(vec![after]),
        Some(&target),
        &Map::new(),
        &first.snapshot,
    )
    .unwrap();
    assert_eq!(out.attributes["groups"], json!(["g0", "g2"]));
    assert_eq!(out.attributes["title"], json!("Same"));
    // Unchanged: the same values again, the same snapshot.
    let again = apply(
        M,
        &source(vec![assignment(
            "a1",
            M,
            json!([attr(
                "groups",
                json!(["g2"]),
                "mergeWithTarget",
                "removeFromTarget"
            )]),
        )]),
        Some(&json!({"groups": ["g0", "g2"], "title": "Same"})),
        &Map::new(),
        &out.snapshot,
    )
    .unwrap();
    assert_eq!(again.attributes["groups"], json!(["g0", "g2"]));
    // The other attribute was dropped from the assignment: removed.
    assert_eq!(again.attributes["title"], Value::Null);
}

#[test]
fn two_assignments_sharing_a_value_keep_it_when_one_goes() {
    let a = |id: &str| {
        assignment(
            id,
            M,
            json!([attr(
                "groups",
                json!(["shared"]),
                "mergeWithTarget",
                "removeFromTarget"
            )]),
        )
    };
    let first = apply(
        M,
        &source(vec![a("a1"), a("a2")]),
        None,
        &Map::new(),
        &Value::Null,
    )
    .unwrap();
    let target = json!({"groups": ["shared"]});
    let out = apply(
        M,
        &source(vec![a("a2")]),
        Some(&target),
        &Map::new(),
        &first.snapshot,
    )
    .unwrap();
    assert_eq!(out.attributes["groups"], json!(["shared"]));
}

#[test]
fn link_qualifiers_other_than_default_are_not_applied() {
    let with = |lq: Value| {
        let mut a = assignment(
            "a1",
            M,
            json!([attr(
                "description",
                json!("x"),
                "replaceTarget",
                "removeFromTarget"
            )]),
        );
        a["linkQualifiers"] = lq;
        source(vec![a])
    };
    for (lq, applies) in [
        (json!(null), true),
        (json!([]), true),
        (json!(["default"]), true),
        (json!(["employee", "default"]), true),
        (json!(["employee"]), false),
    ] {
        let out = apply(M, &with(lq.clone()), None, &Map::new(), &Value::Null).unwrap();
        assert_eq!(out.attributes.contains_key("description"), applies, "{lq}");
    }
    assert!(apply(M, &with(json!("default")), None, &Map::new(), &Value::Null).is_err());
}

#[test]
fn malformed_assignments_fail_with_the_reason() {
    let one = |attributes: Value| source(vec![assignment("a1", M, attributes)]);
    let cases = [
        (
            one(json!([attr(
                "d",
                json!(1),
                "appendToTarget",
                "removeFromTarget"
            )])),
            "unsupported assignmentOperation 'appendToTarget'",
        ),
        (
            one(json!([attr("d", json!(1), "replaceTarget", "forget")])),
            "unsupported unassignmentOperation 'forget'",
        ),
        (
            one(json!([{"name": "d", "value": 1,
                        "assignmentOperation": {"type": "text/javascript", "source": "x"}}])),
            "scripts are not supported",
        ),
        (one(json!([{"value": 1}])), "an attribute has no name"),
        (
            one(json!([{"name": "_id", "value": "x"}])),
            "'_id' cannot be set",
        ),
        (one(json!({"name": "d"})), "attributes must be an array"),
        (
            json!({"effectiveAssignments": {"a1": {}}}),
            "effectiveAssignments is not an array",
        ),
        (
            source(vec![json!({"mapping": M, "attributes": []})]),
            "has no _id",
        ),
    ];
    for (src, reason) in cases {
        let err = apply(M, &src, None, &Map::new(), &Value::Null).unwrap_err();
        assert!(err.contains(reason), "{err} / {reason}");
    }
    let mut scripted = assignment("a9", M, json!([]));
    scripted["onAssignment"] = json!({"type": "text/javascript", "source": "target"});
    let err = apply(M, &source(vec![scripted]), None, &Map::new(), &Value::Null).unwrap_err();
    assert!(err.contains("assignment a9: onAssignment scripts"), "{err}");
    // Another mapping's malformed assignment is not this mapping's business.
    let other = source(vec![assignment("a1", "other", json!({"bad": true}))]);
    assert!(apply(M, &other, None, &Map::new(), &Value::Null).is_ok());
    assert!(apply(M, &source(vec![]), None, &Map::new(), &json!({"x": 1})).is_err());
}

#[test]
fn snapshots_and_multi_values_compare_as_sets() {
    assert!(same_snapshot(&Value::Null, &json!([])));
    assert!(!same_snapshot(&Value::Null, &json!([{"_id": "a"}])));
    assert!(same_values(&json!(["a", "b"]), &json!(["b", "a"])));
    assert!(!same_values(&json!(["a", "b"]), &json!(["a"])));
    assert!(!same_values(&json!(["a", "a"]), &json!(["a", "b"])));
    assert!(same_values(&json!("x"), &json!("x")));
    assert!(same_values(&json!("x"), &json!(["x"])));
    assert!(same_values(&json!([]), &Value::Null));
    assert!(!same_values(&json!("x"), &Value::Null));
}

#[test]
fn the_link_keeps_each_mappings_snapshot_apart() {
    let mine = json!([{"_id": "a1", "attributes": []}]);
    let all = on_link(&Value::Null, M, mine.clone());
    assert_eq!(all, json!({M: mine}));
    // The reverse mapping sharing the link sees nothing of it, and keeps its own beside it.
    assert!(of_link(&all, "reverse").is_null());
    let both = on_link(&all, "reverse", json!([{"_id": "r1"}]));
    assert_eq!(of_link(&both, M), &mine);
    assert_eq!(of_link(&both, "reverse"), &json!([{"_id": "r1"}]));
    // Nothing left applied: the entry goes, then the field.
    let back = on_link(&both, "reverse", Value::Null);
    assert_eq!(back, all);
    assert!(on_link(&back, M, json!([])).is_null());
    assert!(same_snapshot(&json!({}), &Value::Null));
}
