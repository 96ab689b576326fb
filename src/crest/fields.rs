//! `_fields`: which fields of a resource a response carries (crest-wire.md §0, §12).
//!
//! Pure functions: parsing the parameter and projecting one JSON object. What counts as a
//! default field or a relationship is the schema's business, asked through callbacks; this
//! module must not know about schemas, the store or HTTP.
//!
//! Grammar of one `_fields` value (the parameter may also be repeated):
//!
//! ```text
//! fields   = [ entry *( "," entry ) ]      ; empty entries are ignored
//! entry    = "*"                           ; every default field
//!          / "*_ref" / "*_ref/*"           ; every relationship field (IDM wildcard)
//!          / pointer [ "/*" ]              ; a field, or a nested field; "/*" = all of it
//! pointer  = JSON pointer, leading "/" optional, "~0" and "~1" the only escapes
//! ```
//!
//! Projection rules: `_id` and `_rev` always come first; then the selected fields in the
//! object's own order. A nested pointer (`/name/givenName`) keeps only that path
//! (`{"name":{"givenName":…}}`); through a list it applies to every object element and leaves
//! out elements holding none of the selected fields. Missing fields are simply absent.

use serde_json::{Map, Value};

use super::filter::JsonPointer;
use super::ResourceError;

/// What the caller asked for with `_fields`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldSpec {
    /// No `_fields`, or only empty entries: the default fields.
    All,
    /// At least one selector.
    Fields(Vec<FieldSelector>),
}

/// One comma-separated entry of `_fields`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldSelector {
    /// A field or nested field; never empty, never containing a `*` token.
    Pointer(JsonPointer),
    /// `*`: every default field.
    AllDefault,
    /// `*_ref`: every relationship field.
    Relationships,
    /// `*_ref/*`: every relationship field with the fields of the related objects. Without
    /// relationship expansion this selects the same as [`FieldSelector::Relationships`].
    RelationshipsExpanded,
}

/// The `_fields` of a request, parsed.
pub fn of_request(req: &super::Request) -> Result<FieldSpec, ResourceError> {
    let values: Vec<&str> = req.fields.iter().map(String::as_str).collect();
    parse_fields(&values)
}

/// Parses the values of every `_fields` parameter of a request.
///
/// An entry that is not a JSON pointer (a bad `~` escape, a `*` other than the forms above)
/// is a 400 naming the whole parameter value, in CREST's words.
pub fn parse_fields(values: &[&str]) -> Result<FieldSpec, ResourceError> {
    let mut selectors = Vec::new();
    for value in values {
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let selector = parse_entry(entry).ok_or_else(|| {
                ResourceError::bad_request(format!(
                    "The value '{value}' for parameter '_fields' could not be parsed as a comma \
                     separated list of JSON pointers"
                ))
            })?;
            selectors.push(selector);
        }
    }
    if selectors.is_empty() {
        Ok(FieldSpec::All)
    } else {
        Ok(FieldSpec::Fields(selectors))
    }
}

fn parse_entry(entry: &str) -> Option<FieldSelector> {
    if !valid_escapes(entry) {
        return None;
    }
    let mut pointer = JsonPointer::parse(entry);
    pointer.0.retain(|token| !token.is_empty());
    let tokens: Vec<&str> = pointer.0.iter().map(String::as_str).collect();
    match tokens.as_slice() {
        // `/` designates the whole resource: the same as `*`.
        [] | ["*"] => return Some(FieldSelector::AllDefault),
        ["*_ref"] => return Some(FieldSelector::Relationships),
        ["*_ref", "*"] => return Some(FieldSelector::RelationshipsExpanded),
        _ => {}
    }
    if pointer.0.last().is_some_and(|last| last == "*") {
        pointer.0.pop();
    }
    if pointer.0.iter().any(|token| token == "*") {
        return None;
    }
    Some(FieldSelector::Pointer(pointer))
}

/// RFC 6901: `~` is only ever followed by `0` or `1`.
fn valid_escapes(text: &str) -> bool {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

/// The fields of `object` that `spec` selects, `_id` and `_rev` first and always.
///
/// `is_default(name)` says whether a top-level field is returned by default (IDM: not a
/// relationship or virtual field unless `returnByDefault`); `is_relationship(name)` whether it
/// is a relationship field.
pub fn project(
    object: &Map<String, Value>,
    spec: &FieldSpec,
    is_default: &dyn Fn(&str) -> bool,
    is_relationship: &dyn Fn(&str) -> bool,
) -> Map<String, Value> {
    const DEFAULT: &[FieldSelector] = &[FieldSelector::AllDefault];
    let selectors = match spec {
        FieldSpec::All => DEFAULT,
        FieldSpec::Fields(selectors) => selectors.as_slice(),
    };
    let mut out = Map::new();
    for key in ["_id", "_rev"] {
        if let Some(value) = object.get(key) {
            out.insert(key.to_string(), value.clone());
        }
    }
    for (key, value) in object {
        if key == "_id" || key == "_rev" {
            continue;
        }
        let whole = selectors.iter().any(|selector| match selector {
            FieldSelector::AllDefault => is_default(key),
            FieldSelector::Relationships | FieldSelector::RelationshipsExpanded => {
                is_relationship(key)
            }
            FieldSelector::Pointer(pointer) => pointer.tokens() == std::slice::from_ref(key),
        });
        if whole {
            out.insert(key.clone(), value.clone());
            continue;
        }
        let nested: Vec<&[String]> = selectors
            .iter()
            .filter_map(|selector| match selector {
                FieldSelector::Pointer(pointer) => match pointer.tokens().split_first() {
                    Some((first, rest)) if first == key && !rest.is_empty() => Some(rest),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        if let Some(projected) = project_nested(value, &nested) {
            out.insert(key.clone(), projected);
        }
    }
    out
}

/// The parts of `value` that `paths` (each non-empty) select, or `None` if nothing is left.
fn project_nested(value: &Value, paths: &[&[String]]) -> Option<Value> {
    if paths.is_empty() {
        return None;
    }
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, child) in map {
                if paths.iter().any(|path| *path == std::slice::from_ref(key)) {
                    out.insert(key.clone(), child.clone());
                    continue;
                }
                let deeper: Vec<&[String]> = paths
                    .iter()
                    .filter_map(|path| match path.split_first() {
                        Some((first, rest)) if first == key && !rest.is_empty() => Some(rest),
                        _ => None,
                    })
                    .collect();
                if let Some(projected) = project_nested(child, &deeper) {
                    out.insert(key.clone(), projected);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let projected: Vec<Value> = items
                .iter()
                .filter_map(|item| project_nested(item, paths))
                .collect();
            (!projected.is_empty()).then_some(Value::Array(projected))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ptr(text: &str) -> FieldSelector {
        FieldSelector::Pointer(JsonPointer::parse(text))
    }

    #[test]
    fn parse_good_values() {
        use FieldSelector::*;
        let cases: &[(&[&str], FieldSpec)] = &[
            (&[], FieldSpec::All),
            (&[""], FieldSpec::All),
            (&[" , ,"], FieldSpec::All),
            (&["_id"], FieldSpec::Fields(vec![ptr("_id")])),
            (
                &["_id,userName"],
                FieldSpec::Fields(vec![ptr("_id"), ptr("userName")]),
            ),
            (
                &["userName", "/name/givenName"],
                FieldSpec::Fields(vec![ptr("userName"), ptr("name/givenName")]),
            ),
            (
                &[" mail , ,sn,"],
                FieldSpec::Fields(vec![ptr("mail"), ptr("sn")]),
            ),
            (&["*"], FieldSpec::Fields(vec![AllDefault])),
            (&["/"], FieldSpec::Fields(vec![AllDefault])),
            (
                &["*,authzMembers"],
                FieldSpec::Fields(vec![AllDefault, ptr("authzMembers")]),
            ),
            (&["*_ref"], FieldSpec::Fields(vec![Relationships])),
            (&["*_ref/*"], FieldSpec::Fields(vec![RelationshipsExpanded])),
            (&["name/*"], FieldSpec::Fields(vec![ptr("name")])),
            (&["/name/"], FieldSpec::Fields(vec![ptr("name")])),
            (&["a~1b/c~0d"], FieldSpec::Fields(vec![ptr("a~1b/c~0d")])),
            (&["foo*"], FieldSpec::Fields(vec![ptr("foo*")])),
        ];
        for (values, expected) in cases {
            assert_eq!(&parse_fields(values).unwrap(), expected, "{values:?}");
        }
        assert_eq!(
            parse_fields(&["a~1b"]).unwrap(),
            FieldSpec::Fields(vec![FieldSelector::Pointer(JsonPointer(
                vec!["a/b".into()]
            ))])
        );
    }

    #[test]
    fn parse_errors_name_the_whole_value() {
        let cases: &[(&[&str], &str)] = &[
            (&["a~2"], "a~2"),
            (&["name,x~"], "name,x~"),
            (&["ok", "*/x"], "*/x"),
            (&["a/*/b"], "a/*/b"),
            (&["*_ref/*/x"], "*_ref/*/x"),
        ];
        for (values, named) in cases {
            let err = parse_fields(values).expect_err(named);
            assert_eq!(err.code, 400);
            assert_eq!(
                err.message,
                format!(
                    "The value '{named}' for parameter '_fields' could not be parsed as a comma \
                     separated list of JSON pointers"
                )
            );
        }
    }

    fn user() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "manager": {"_ref": "managed/user/2", "_refProperties": {"x": 1}},
            "roles": [{"_ref": "managed/role/1", "name": "a"}, {"_ref": "managed/role/2"}, "odd"],
            "effectiveRoles": ["r1"],
            "mail": "b@example.com",
            "_rev": "3",
            "_id": "u1"
        }) else {
            unreachable!()
        };
        map
    }

    fn is_default(name: &str) -> bool {
        !matches!(name, "manager" | "roles" | "effectiveRoles")
    }

    fn is_relationship(name: &str) -> bool {
        matches!(name, "manager" | "roles")
    }

    /// (case, _fields values, the projection as JSON text: key order matters).
    #[test]
    fn projection() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "no _fields: default fields, _id and _rev first",
                &[],
                r#"{"_id":"u1","_rev":"3","userName":"bjensen","name":{"givenName":"Barbara","familyName":"Jensen"},"mail":"b@example.com"}"#,
            ),
            (
                "* is the same as no _fields",
                &["*"],
                r#"{"_id":"u1","_rev":"3","userName":"bjensen","name":{"givenName":"Barbara","familyName":"Jensen"},"mail":"b@example.com"}"#,
            ),
            (
                "_id alone still carries _rev",
                &["_id"],
                r#"{"_id":"u1","_rev":"3"}"#,
            ),
            (
                "object order, not parameter order",
                &["mail,userName"],
                r#"{"_id":"u1","_rev":"3","userName":"bjensen","mail":"b@example.com"}"#,
            ),
            (
                "a non-default field by name",
                &["*,effectiveRoles"],
                r#"{"_id":"u1","_rev":"3","userName":"bjensen","name":{"givenName":"Barbara","familyName":"Jensen"},"effectiveRoles":["r1"],"mail":"b@example.com"}"#,
            ),
            (
                "a nested field",
                &["/name/givenName"],
                r#"{"_id":"u1","_rev":"3","name":{"givenName":"Barbara"}}"#,
            ),
            (
                "nested fields in the object's order",
                &["name/familyName,name/givenName"],
                r#"{"_id":"u1","_rev":"3","name":{"givenName":"Barbara","familyName":"Jensen"}}"#,
            ),
            (
                "the whole field wins over a nested one",
                &["name/givenName,name"],
                r#"{"_id":"u1","_rev":"3","name":{"givenName":"Barbara","familyName":"Jensen"}}"#,
            ),
            (
                "name/* is the whole field",
                &["name/*"],
                r#"{"_id":"u1","_rev":"3","name":{"givenName":"Barbara","familyName":"Jensen"}}"#,
            ),
            (
                "missing fields are absent",
                &["nope,name/middle,userName/x"],
                r#"{"_id":"u1","_rev":"3"}"#,
            ),
            (
                "a nested field through a list",
                &["roles/_ref"],
                r#"{"_id":"u1","_rev":"3","roles":[{"_ref":"managed/role/1"},{"_ref":"managed/role/2"}]}"#,
            ),
            (
                "list elements without the field are left out",
                &["roles/name"],
                r#"{"_id":"u1","_rev":"3","roles":[{"name":"a"}]}"#,
            ),
            (
                "*_ref: relationship fields only",
                &["*_ref"],
                r#"{"_id":"u1","_rev":"3","manager":{"_ref":"managed/user/2","_refProperties":{"x":1}},"roles":[{"_ref":"managed/role/1","name":"a"},{"_ref":"managed/role/2"},"odd"]}"#,
            ),
            (
                "*_ref/* selects the same without expansion",
                &["userName,*_ref/*"],
                r#"{"_id":"u1","_rev":"3","userName":"bjensen","manager":{"_ref":"managed/user/2","_refProperties":{"x":1}},"roles":[{"_ref":"managed/role/1","name":"a"},{"_ref":"managed/role/2"},"odd"]}"#,
            ),
            (
                "a nested field of a non-default field",
                &["manager/_ref"],
                r#"{"_id":"u1","_rev":"3","manager":{"_ref":"managed/user/2"}}"#,
            ),
        ];
        for (case, values, expected) in cases {
            let spec = parse_fields(values).unwrap();
            let out = project(&user(), &spec, &is_default, &is_relationship);
            let text = serde_json::to_string(&out).unwrap();
            assert_eq!(text, *expected, "{case}");
        }
    }

    #[test]
    fn projection_without_id_or_rev() {
        let Value::Object(object) = json!({"b": 1, "a": {"c": [1, 2]}}) else {
            unreachable!()
        };
        let spec = parse_fields(&["a/c,b"]).unwrap();
        let out = project(&object, &spec, &|_| true, &|_| false);
        assert_eq!(Value::Object(out), json!({"b": 1, "a": {"c": [1, 2]}}));
        let spec = parse_fields(&["a/c/0"]).unwrap();
        let out = project(&object, &spec, &|_| true, &|_| false);
        assert_eq!(serde_json::to_string(&out).unwrap(), "{}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(values in proptest::collection::vec(".{0,12}", 0..3)) {
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let _ = parse_fields(&refs);
            }

            #[test]
            fn projection_keeps_a_subset_in_order(
                values in proptest::collection::vec("[*a-c_/,~01]{0,8}", 0..3),
            ) {
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                if let Ok(spec) = parse_fields(&refs) {
                    let object = user();
                    let out = project(&object, &spec, &is_default, &is_relationship);
                    let keys: Vec<&String> = out.keys().collect();
                    prop_assert_eq!(keys[0], "_id");
                    prop_assert_eq!(keys[1], "_rev");
                    let mut rest = object.keys().filter(|k| *k != "_id" && *k != "_rev");
                    for key in &keys[2..] {
                        prop_assert!(rest.any(|k| k == *key), "{key} out of order");
                    }
                }
            }
        }
    }
}
