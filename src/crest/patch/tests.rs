use super::*;
use serde_json::json;

fn user() -> Value {
    json!({
        "_id": "u1",
        "_rev": "00000000f20217df",
        "userName": "bjensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "phoneNumber": ["202-555-0185", "202-555-0100", "202-555-0185"],
        "loginCount": 3,
        "score": 1.5,
        "scores": [1, 2, 3],
        "manager": null,
        "active": true
    })
}

fn run(body: Value) -> Result<Value, ResourceError> {
    let mut target = user();
    parse_and_apply(&mut target, &body, false).map(|()| target)
}

/// Parse errors: (case, body, text the detail's problem must contain, index).
#[test]
fn parse_errors_use_crest_message_and_name_the_problem() {
    let cases: &[(&str, Value, &str, Value)] = &[
        (
            "body is an object",
            json!({"operation": "add"}),
            "JSON array",
            json!(null),
        ),
        ("body is a string", json!("add"), "JSON array", json!(null)),
        (
            "operation is a number",
            json!([1]),
            "not a JSON object",
            json!(0),
        ),
        (
            "operation missing",
            json!([{"field": "/a", "value": 1}]),
            "'operation' is required",
            json!(0),
        ),
        (
            "operation null",
            json!([{"operation": null, "field": "/a"}]),
            "'operation' is required",
            json!(0),
        ),
        (
            "operation not a string",
            json!([{"operation": 1, "field": "/a"}]),
            "'operation' must be a string",
            json!(0),
        ),
        (
            "unknown operation named",
            json!([{"operation": "add", "field": "/a", "value": 1},
                   {"operation": "test", "field": "/a", "value": 1}]),
            "unknown operation 'test'",
            json!(1),
        ),
        (
            "field missing",
            json!([{"operation": "remove"}]),
            "'field' is required",
            json!(0),
        ),
        (
            "field not a string",
            json!([{"operation": "remove", "field": ["a"]}]),
            "'field' must be a JSON pointer string",
            json!(0),
        ),
        (
            "field is the whole resource",
            json!([{"operation": "replace", "field": "/", "value": {}}]),
            "whole resource",
            json!(0),
        ),
        (
            "copy without from",
            json!([{"operation": "copy", "field": "/a"}]),
            "'from' is required for copy",
            json!(0),
        ),
        (
            "move with null from",
            json!([{"operation": "move", "field": "/a", "from": null}]),
            "'from' is required for move",
            json!(0),
        ),
        (
            "copy from the whole resource",
            json!([{"operation": "copy", "field": "/a", "from": "/"}]),
            "'from' must name a field",
            json!(0),
        ),
        (
            "from not a string",
            json!([{"operation": "copy", "field": "/a", "from": 3}]),
            "'from' must be a JSON pointer string",
            json!(0),
        ),
        (
            "from with add",
            json!([{"operation": "add", "field": "/a", "from": "/b", "value": 1}]),
            "'from' is only allowed with copy and move, not add",
            json!(0),
        ),
        (
            "add without value",
            json!([{"operation": "add", "field": "/a"}]),
            "'value' is required for add",
            json!(0),
        ),
        (
            "add with null value",
            json!([{"operation": "add", "field": "/a", "value": null}]),
            "'value' is required for add",
            json!(0),
        ),
        (
            "increment without value",
            json!([{"operation": "increment", "field": "/loginCount"}]),
            "'value' is required for increment",
            json!(0),
        ),
        (
            "increment by a string",
            json!([{"operation": "increment", "field": "/loginCount", "value": "1"}]),
            "single number, not a string",
            json!(0),
        ),
        (
            "increment by a list",
            json!([{"operation": "increment", "field": "/loginCount", "value": [1]}]),
            "single number, not a list",
            json!(0),
        ),
        (
            "transform without value",
            json!([{"operation": "transform", "field": "/a"}]),
            "'value' is required for transform",
            json!(0),
        ),
    ];
    for (case, body, problem, index) in cases {
        let err = parse_patch(body).expect_err(case);
        assert_eq!(err.code, 400, "{case}");
        assert_eq!(err.message, INVALID_PATCH, "{case}");
        let detail = err.detail.clone().unwrap_or_default();
        assert_eq!(&detail["index"], index, "{case}: {detail}");
        let text = detail["problem"].as_str().unwrap_or_default();
        assert!(text.contains(problem), "{case}: {text}");
    }
}

#[test]
fn parse_accepts_any_case_and_normalises_pointers() {
    let ops = parse_patch(&json!([
        {"operation": "ADD", "field": "name/givenName", "value": "B"},
        {"operation": "Remove", "field": "/phoneNumber/", "value": "202-555-0185"},
        {"operation": "replace", "field": "/a", "value": null, "extra": 1},
        {"operation": "move", "from": "/a/", "field": "/b", "value": "ignored"},
        {"operation": "increment", "field": "/n", "value": -2},
    ]))
    .unwrap();
    let expected = vec![
        PatchOperation {
            op: PatchOp::Add,
            field: JsonPointer(vec!["name".into(), "givenName".into()]),
            from: None,
            value: Some(json!("B")),
        },
        PatchOperation {
            op: PatchOp::Remove,
            field: JsonPointer(vec!["phoneNumber".into()]),
            from: None,
            value: Some(json!("202-555-0185")),
        },
        PatchOperation {
            op: PatchOp::Replace,
            field: JsonPointer(vec!["a".into()]),
            from: None,
            value: None,
        },
        PatchOperation {
            op: PatchOp::Move,
            field: JsonPointer(vec!["b".into()]),
            from: Some(JsonPointer(vec!["a".into()])),
            value: None,
        },
        PatchOperation {
            op: PatchOp::Increment,
            field: JsonPointer(vec!["n".into()]),
            from: None,
            value: Some(json!(-2)),
        },
    ];
    assert_eq!(ops, expected);
    assert_eq!(parse_patch(&json!([])).unwrap(), vec![]);
    for op in PatchOp::ALL {
        assert_eq!(PatchOp::parse(op.as_str()), Some(op));
    }
}

/// Successful patches: (case, ops, the fields expected afterwards, as a partial object;
/// `null` means absent).
#[test]
fn operations_apply_idm_rules() {
    let cases: &[(&str, Value, Value)] = &[
        // add
        (
            "add a new field",
            json!([{"operation": "add", "field": "/mail", "value": "b@example.com"}]),
            json!({"mail": "b@example.com"}),
        ),
        (
            "add creates missing parents",
            json!([{"operation": "add", "field": "/address/home/city", "value": "Oslo"}]),
            json!({"address": {"home": {"city": "Oslo"}}}),
        ),
        (
            "add through a null parent",
            json!([{"operation": "add", "field": "/manager/_ref", "value": "managed/user/2"}]),
            json!({"manager": {"_ref": "managed/user/2"}}),
        ),
        (
            "add replaces a single value",
            json!([{"operation": "add", "field": "/name/givenName", "value": "Babs"}]),
            json!({"name": {"givenName": "Babs", "familyName": "Jensen"}}),
        ),
        (
            "add replaces an object whole",
            json!([{"operation": "add", "field": "/name", "value": {"givenName": "B"}}]),
            json!({"name": {"givenName": "B"}}),
        ),
        (
            "add a list to a list appends every element",
            json!([{"operation": "add", "field": "/scores", "value": [4, 1]}]),
            json!({"scores": [1, 2, 3, 4, 1]}),
        ),
        (
            "add a single value to a list appends it",
            json!([{"operation": "add", "field": "/scores", "value": 9}]),
            json!({"scores": [1, 2, 3, 9]}),
        ),
        (
            "add to /field/- appends one value, even a list",
            json!([{"operation": "add", "field": "/scores/-", "value": [7]}]),
            json!({"scores": [1, 2, 3, [7]]}),
        ),
        (
            "add to /missing/- creates the list",
            json!([{"operation": "add", "field": "/emails/-", "value": "a@b"}]),
            json!({"emails": ["a@b"]}),
        ),
        (
            "add to /object/- is a property named -",
            json!([{"operation": "add", "field": "/name/-", "value": 1}]),
            json!({"name": {"givenName": "Barbara", "familyName": "Jensen", "-": 1}}),
        ),
        (
            "a numeric token on an object is a property name",
            json!([{"operation": "add", "field": "/name/0", "value": "zero"}]),
            json!({"name": {"givenName": "Barbara", "familyName": "Jensen", "0": "zero"}}),
        ),
        // remove
        (
            "remove without value removes the field",
            json!([{"operation": "remove", "field": "/name"}]),
            json!({"name": null}),
        ),
        (
            "remove an absent field is not an error",
            json!([{"operation": "remove", "field": "/nothing/here"}]),
            json!({"nothing": null}),
        ),
        (
            "remove under a scalar is not an error",
            json!([{"operation": "remove", "field": "/userName/x"}]),
            json!({"userName": "bjensen"}),
        ),
        (
            "seed002: remove a value removes every duplicate",
            json!([{"operation": "remove", "field": "/phoneNumber/", "value": "202-555-0185"}]),
            json!({"phoneNumber": ["202-555-0100"]}),
        ),
        (
            "remove a list of values removes each",
            json!([{"operation": "remove", "field": "/scores", "value": [1, 3, 8]}]),
            json!({"scores": [2]}),
        ),
        (
            "remove a value absent from the list changes nothing",
            json!([{"operation": "remove", "field": "/scores", "value": 8}]),
            json!({"scores": [1, 2, 3]}),
        ),
        (
            "remove an equal single value",
            json!([{"operation": "remove", "field": "/userName", "value": "bjensen"}]),
            json!({"userName": null}),
        ),
        (
            "remove an unequal single value changes nothing",
            json!([{"operation": "remove", "field": "/userName", "value": "other"}]),
            json!({"userName": "bjensen"}),
        ),
        (
            "remove a single value listed in the value",
            json!([{"operation": "remove", "field": "/loginCount", "value": [2, 3]}]),
            json!({"loginCount": null}),
        ),
        (
            "remove with a null value removes the field",
            json!([{"operation": "remove", "field": "/scores", "value": null}]),
            json!({"scores": null}),
        ),
        // replace
        (
            "replace an existing field",
            json!([{"operation": "replace", "field": "/userName", "value": "babs"}]),
            json!({"userName": "babs"}),
        ),
        (
            "replace a list with a list sets it",
            json!([{"operation": "replace", "field": "/scores", "value": [9]}]),
            json!({"scores": [9]}),
        ),
        (
            "replace a missing field creates it",
            json!([{"operation": "replace", "field": "/a/b", "value": 1}]),
            json!({"a": {"b": 1}}),
        ),
        (
            "replace with null removes",
            json!([{"operation": "replace", "field": "/userName", "value": null}]),
            json!({"userName": null}),
        ),
        (
            "replace without value removes",
            json!([{"operation": "replace", "field": "/name/givenName"}]),
            json!({"name": {"familyName": "Jensen"}}),
        ),
        // increment
        (
            "increment an integer",
            json!([{"operation": "increment", "field": "/loginCount", "value": 2}]),
            json!({"loginCount": 5}),
        ),
        (
            "a negative increment decrements",
            json!([{"operation": "increment", "field": "/loginCount", "value": -5}]),
            json!({"loginCount": -2}),
        ),
        (
            "integer plus float is a float",
            json!([{"operation": "increment", "field": "/loginCount", "value": 0.5}]),
            json!({"loginCount": 3.5}),
        ),
        (
            "float plus integer is a float",
            json!([{"operation": "increment", "field": "/score", "value": 1}]),
            json!({"score": 2.5}),
        ),
        (
            "increment every number of a list",
            json!([{"operation": "increment", "field": "/scores", "value": 10}]),
            json!({"scores": [11, 12, 13]}),
        ),
        // copy, move
        (
            "copy a field",
            json!([{"operation": "copy", "from": "/userName", "field": "/mail"}]),
            json!({"userName": "bjensen", "mail": "bjensen"}),
        ),
        (
            "copy replaces a list rather than appending",
            json!([{"operation": "copy", "from": "/phoneNumber", "field": "/scores"}]),
            json!({"scores": ["202-555-0185", "202-555-0100", "202-555-0185"]}),
        ),
        (
            "copy from _id is allowed",
            json!([{"operation": "copy", "from": "/_id", "field": "/a/b"}]),
            json!({"_id": "u1", "a": {"b": "u1"}}),
        ),
        (
            "move a field into a new parent",
            json!([{"operation": "move", "from": "/name/givenName", "field": "/first/name"}]),
            json!({"name": {"familyName": "Jensen"}, "first": {"name": "Barbara"}}),
        ),
        (
            "move out of a parent onto it",
            json!([{"operation": "move", "from": "/name/givenName", "field": "/name"}]),
            json!({"name": "Barbara"}),
        ),
        (
            "move a field onto itself changes nothing",
            json!([{"operation": "move", "from": "/userName", "field": "/userName"}]),
            json!({"userName": "bjensen"}),
        ),
        // _rev
        (
            "operations on _rev are skipped",
            json!([{"operation": "replace", "field": "/_rev", "value": "1"},
                   {"operation": "remove", "field": "/_rev"}]),
            json!({"_rev": "00000000f20217df"}),
        ),
        (
            "operations apply in order",
            json!([{"operation": "add", "field": "/n", "value": 1},
                   {"operation": "increment", "field": "/n", "value": 1},
                   {"operation": "move", "from": "/n", "field": "/m"}]),
            json!({"n": null, "m": 2}),
        ),
    ];
    for (case, body, expected) in cases {
        let patched = run(body.clone()).unwrap_or_else(|e| panic!("{case}: {e:?}"));
        let mut want = user();
        if let (Value::Object(want), Value::Object(changes)) = (&mut want, expected) {
            for (key, value) in changes {
                if value.is_null() {
                    want.shift_remove(key);
                } else {
                    want.insert(key.clone(), value.clone());
                }
            }
        }
        assert_eq!(patched, want, "{case}");
    }
}

/// Failed patches: (case, ops, status, text the message must contain, index).
#[test]
fn errors_name_the_field_and_leave_the_target_unchanged() {
    let cases: &[(&str, Value, u16, &str, usize)] = &[
        (
            "add by list index",
            json!([{"operation": "add", "field": "/phoneNumber/0", "value": "x"}]),
            400,
            "IDM does not support PATCH by list index",
            0,
        ),
        (
            "remove by list index",
            json!([{"operation": "remove", "field": "/phoneNumber/1"}]),
            400,
            "'/phoneNumber/1' addresses an element of the list '/phoneNumber' by index",
            0,
        ),
        (
            "replace by list index",
            json!([{"operation": "replace", "field": "/scores/0", "value": 1}]),
            400,
            "IDM does not support PATCH by list index",
            0,
        ),
        (
            "increment by list index",
            json!([{"operation": "increment", "field": "/scores/2", "value": 1}]),
            400,
            "IDM does not support PATCH by list index",
            0,
        ),
        (
            "remove the append index",
            json!([{"operation": "remove", "field": "/scores/-"}]),
            400,
            "'/scores/-' uses the append index '-'",
            0,
        ),
        (
            "append index not last",
            json!([{"operation": "add", "field": "/scores/-/a", "value": 1}]),
            400,
            "append index '-'",
            0,
        ),
        (
            "name inside a list",
            json!([{"operation": "add", "field": "/phoneNumber/home", "value": "x"}]),
            400,
            "'/phoneNumber/home' steps into the list '/phoneNumber'",
            0,
        ),
        (
            "add under a scalar",
            json!([{"operation": "add", "field": "/userName/first", "value": "x"}]),
            400,
            "'/userName/first' cannot be created: '/userName' is a string",
            0,
        ),
        (
            "append to a scalar",
            json!([{"operation": "add", "field": "/loginCount/-", "value": 1}]),
            400,
            "'/loginCount' cannot be appended to: it is a number",
            0,
        ),
        (
            "patch _id",
            json!([{"operation": "replace", "field": "/_id", "value": "u2"}]),
            400,
            "'_id' cannot be patched",
            0,
        ),
        (
            "patch inside _id",
            json!([{"operation": "add", "field": "/_id/x", "value": 1}]),
            400,
            "'_id' cannot be patched",
            0,
        ),
        (
            "increment a string",
            json!([{"operation": "increment", "field": "/userName", "value": 1}]),
            400,
            "'/userName' cannot be incremented: it is a string",
            0,
        ),
        (
            "increment an absent field",
            json!([{"operation": "increment", "field": "/visits", "value": 1}]),
            400,
            "'/visits' cannot be incremented: it is absent",
            0,
        ),
        (
            "increment a list holding a string",
            json!([{"operation": "increment", "field": "/phoneNumber", "value": 1}]),
            400,
            "it is a list holding a string",
            0,
        ),
        (
            "increment an object",
            json!([{"operation": "increment", "field": "/name", "value": 1}]),
            400,
            "it is an object",
            0,
        ),
        (
            "copy from a missing field",
            json!([{"operation": "copy", "from": "/nope", "field": "/a"}]),
            400,
            "'/nope' named by 'from' does not exist",
            0,
        ),
        (
            "move from a missing field",
            json!([{"operation": "move", "from": "/a/b", "field": "/c"}]),
            400,
            "'/a/b' named by 'from' does not exist",
            0,
        ),
        (
            "move a missing field onto itself",
            json!([{"operation": "move", "from": "/a", "field": "/a"}]),
            400,
            "'/a' named by 'from' does not exist",
            0,
        ),
        (
            "move into itself",
            json!([{"operation": "move", "from": "/name", "field": "/name/inner"}]),
            400,
            "'/name' cannot be moved into itself ('/name/inner')",
            0,
        ),
        (
            "move _id",
            json!([{"operation": "move", "from": "/_id", "field": "/id"}]),
            400,
            "'/_id' cannot be moved",
            0,
        ),
        (
            "move _rev",
            json!([{"operation": "move", "from": "/_rev", "field": "/rev"}]),
            400,
            "'/_rev' cannot be moved",
            0,
        ),
        (
            "copy from a list element",
            json!([{"operation": "copy", "from": "/phoneNumber/0", "field": "/p"}]),
            400,
            "IDM does not support PATCH by list index",
            0,
        ),
        (
            "transform outside the config endpoint",
            json!([{"operation": "transform", "field": "/a", "value": {"script": {}}}]),
            400,
            TRANSFORM_CONFIG_ONLY,
            0,
        ),
        (
            "a later failure undoes earlier operations",
            json!([{"operation": "replace", "field": "/userName", "value": "x"},
                   {"operation": "remove", "field": "/name"},
                   {"operation": "increment", "field": "/userName", "value": 1}]),
            400,
            "'/userName' cannot be incremented",
            2,
        ),
    ];
    for (case, body, code, message, index) in cases {
        let ops = parse_patch(body).unwrap_or_else(|e| panic!("{case}: {e:?}"));
        let mut target = user();
        let err = apply_patch(&mut target, &ops, false).expect_err(case);
        assert_eq!(err.code, *code, "{case}");
        assert!(err.message.contains(message), "{case}: {}", err.message);
        let detail = err.detail.clone().unwrap_or_default();
        assert_eq!(detail["index"], json!(index), "{case}");
        assert_eq!(
            detail["field"],
            json!(ops[*index].field.to_string()),
            "{case}"
        );
        assert_eq!(target, user(), "{case}: target changed");
    }
}

#[test]
fn transform_on_the_config_endpoint_is_not_supported() {
    let mut config = json!({"_id": "sync", "mappings": []});
    let body = json!([{"operation": "transform", "field": "/mappings", "value": {"script": {"type": "text/javascript", "source": "x"}}}]);
    let err = parse_and_apply(&mut config, &body, true).unwrap_err();
    assert_eq!(err.code, 501);
    assert!(err.message.contains("'/mappings'"), "{}", err.message);
    assert!(err.message.contains("no script engine"), "{}", err.message);
    assert_eq!(err.detail.unwrap()["operation"], "transform");
    assert_eq!(config, json!({"_id": "sync", "mappings": []}));
}

#[test]
fn increment_keeps_integers_within_64_bits() {
    let cases: &[(Value, Value, Option<Value>)] = &[
        (json!(i64::MAX), json!(1), Some(json!(i64::MAX as u64 + 1))),
        (json!(u64::MAX), json!(-1), Some(json!(u64::MAX - 1))),
        (json!(i64::MIN), json!(-1), None),
        (json!(u64::MAX), json!(1), None),
        (json!(1.5e308), json!(1.5e308), None),
        (json!(0.25), json!(0.5), Some(json!(0.75))),
    ];
    for (start, by, expected) in cases {
        let mut target = json!({ "n": start });
        let body = json!([{"operation": "increment", "field": "/n", "value": by}]);
        let result = parse_and_apply(&mut target, &body, false);
        match expected {
            Some(want) => {
                assert!(result.is_ok(), "{start} + {by}: {result:?}");
                assert_eq!(target["n"], *want, "{start} + {by}");
            }
            None => {
                let err = result.expect_err("overflow");
                assert!(err.message.contains("out of range"), "{}", err.message);
                assert_eq!(target["n"], *start);
            }
        }
    }
}

#[test]
fn fields_keep_their_position() {
    let mut target = json!({"_id": "1", "a": 1, "b": 2, "c": 3});
    let body = json!([
        {"operation": "remove", "field": "/a"},
        {"operation": "replace", "field": "/b", "value": 20},
        {"operation": "add", "field": "/d", "value": 4},
    ]);
    parse_and_apply(&mut target, &body, false).unwrap();
    let text = serde_json::to_string(&target).unwrap();
    assert_eq!(text, r#"{"_id":"1","b":20,"c":3,"d":4}"#);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "_id", "_rev", "0", "-", ""]).prop_map(String::from)
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..4)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    fn pointer() -> impl Strategy<Value = String> {
        prop::collection::vec(key(), 0..4).prop_map(|tokens| format!("/{}", tokens.join("/")))
    }

    fn operation() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec![
                "add",
                "remove",
                "replace",
                "increment",
                "copy",
                "move",
                "transform",
                "x",
            ]),
            pointer(),
            prop::option::of(pointer()),
            prop::option::of(json_value()),
        )
            .prop_map(|(op, field, from, value)| {
                let mut obj = Map::new();
                obj.insert("operation".into(), op.into());
                obj.insert("field".into(), field.into());
                if let Some(from) = from {
                    obj.insert("from".into(), from.into());
                }
                if let Some(value) = value {
                    obj.insert("value".into(), value);
                }
                Value::Object(obj)
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(body in json_value()) {
            let _ = parse_patch(&body);
        }

        #[test]
        fn apply_never_panics_and_failure_changes_nothing(
            target in json_value(),
            ops in prop::collection::vec(operation(), 0..6),
            allow_transform in any::<bool>(),
        ) {
            // Parse each operation alone so that invalid ones do not hide the valid ones.
            let parsed: Vec<PatchOperation> = ops
                .iter()
                .filter_map(|op| parse_patch(&Value::Array(vec![op.clone()])).ok())
                .flatten()
                .collect();
            let mut patched = target.clone();
            match apply_patch(&mut patched, &parsed, allow_transform) {
                Ok(()) => {
                    // _id is never touched by a successful patch.
                    prop_assert_eq!(patched.get("_id"), target.get("_id"));
                    prop_assert_eq!(patched.get("_rev"), target.get("_rev"));
                }
                Err(err) => {
                    prop_assert!(err.code == 400 || err.code == 501);
                    prop_assert_eq!(patched, target);
                }
            }
        }
    }
}
