//! IDM objects ↔ connector objects, by an object type's declared properties: names
//! (`dn` ↔ `__NAME__`), flags, value shapes and types, and `_queryFilter`/`_sortKeys`
//! field names. Pure: every rule here has a unit test.

use serde_json::{Map, Value};

use crate::crest::filter::{JsonPointer, QueryFilter};
use crate::crest::query::SortKey;
use crate::crest::ResourceError;

use super::connector::{ConnectorObject, UID};
use super::provisioner::{ObjectType, Property, PropertyType};

/// What a write is, for the flags that apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Update,
}

/// `system/<name>/<type>`, for messages.
pub fn resource_name(system: &str, class: &ObjectType) -> String {
    format!("system/{system}/{}", class.name)
}

/// The native attributes of an IDM object body. `_id`/`_rev` are skipped (the caller
/// handles the id). Properties the write may not set (`NOT_CREATABLE` on create,
/// `NOT_UPDATEABLE` on update) are left out, as IDM's provisioner does, so an object read
/// back can be written back. Unknown properties and values of the wrong type are a 400.
pub fn to_native(
    system: &str,
    class: &ObjectType,
    body: &Map<String, Value>,
    write: Write,
) -> Result<Map<String, Value>, ResourceError> {
    let mut out = Map::with_capacity(body.len());
    for (name, value) in body {
        if name == "_id" || name == "_rev" {
            continue;
        }
        let prop = class.property(name).ok_or_else(|| {
            ResourceError::bad_request(format!(
                "Property '{name}' is not defined for object type '{}' of system '{system}'",
                class.name
            ))
        })?;
        let allowed = match write {
            Write::Create => prop.creatable,
            Write::Update => prop.updateable,
        };
        if !allowed || prop.native_name == UID {
            continue;
        }
        check_type(system, class, prop, value)?;
        out.insert(prop.native_name.clone(), value.clone());
    }
    Ok(out)
}

/// The required properties a create body lacks (a 400 naming them), skipping `__NAME__`
/// when the client chose the id (connectors whose name is the uid take it from there).
pub fn check_required(
    system: &str,
    class: &ObjectType,
    native: &Map<String, Value>,
    has_uid: bool,
) -> Result<(), ResourceError> {
    let missing: Vec<&str> = class
        .properties
        .iter()
        .filter(|p| p.required && p.creatable && p.native_name != UID)
        .filter(|p| !(has_uid && p.native_name == super::connector::NAME))
        .filter(|p| {
            native
                .get(&p.native_name)
                .is_none_or(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
        })
        .map(|p| p.name.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ResourceError::bad_request(format!(
        "Required {} {} missing for object type '{}' of system '{system}'",
        if missing.len() == 1 {
            "property"
        } else {
            "properties"
        },
        missing
            .iter()
            .map(|m| format!("'{m}'"))
            .collect::<Vec<_>>()
            .join(", "),
        class.name
    )))
}

fn check_type(
    system: &str,
    class: &ObjectType,
    prop: &Property,
    value: &Value,
) -> Result<(), ResourceError> {
    let scalar_ok = |kind: PropertyType, v: &Value| match kind {
        PropertyType::String => v.is_string(),
        PropertyType::Integer => v.is_i64() || v.is_u64(),
        PropertyType::Number => v.is_number(),
        PropertyType::Boolean => v.is_boolean(),
        PropertyType::Object => v.is_object(),
        PropertyType::Array | PropertyType::Any => true,
    };
    let ok = match (prop.kind, value) {
        (_, Value::Null) => true,
        (PropertyType::Array, Value::Array(items)) => {
            items.iter().all(|i| scalar_ok(prop.item_kind, i))
        }
        (PropertyType::Array, v) => scalar_ok(prop.item_kind, v),
        (kind, v) => scalar_ok(kind, v),
    };
    if ok {
        return Ok(());
    }
    let want = match prop.kind {
        PropertyType::String => "a string",
        PropertyType::Integer => "an integer",
        PropertyType::Number => "a number",
        PropertyType::Boolean => "a boolean",
        PropertyType::Object => "an object",
        PropertyType::Array => "an array",
        PropertyType::Any => "any value",
    };
    Err(ResourceError::bad_request(format!(
        "Property '{}' of object type '{}' of system '{system}' must be {want}",
        prop.name, class.name
    )))
}

/// The IDM form of a connector object: `_id`, then `props` in declaration order, each
/// shaped to its declared type (absent → `null`, or `[]` for arrays).
pub fn from_native(obj: &ConnectorObject, props: &[&Property]) -> Map<String, Value> {
    let mut out = Map::with_capacity(props.len() + 1);
    out.insert("_id".into(), Value::String(obj.uid.clone()));
    for p in props {
        if p.native_name == UID {
            continue;
        }
        let raw = obj.attributes.get(&p.native_name);
        out.insert(p.name.clone(), shape(p, raw));
    }
    out
}

/// One value to the declared type: arrays stay arrays (a scalar becomes `[scalar]`);
/// scalars take the first of a list; strings are parsed when an integer, number or
/// boolean is declared (LDAP and CSV have strings only).
fn shape(p: &Property, raw: Option<&Value>) -> Value {
    match p.kind {
        PropertyType::Array => match raw {
            None | Some(Value::Null) => Value::Array(Vec::new()),
            Some(Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .map(|i| coerce(p.item_kind, i.clone()))
                    .collect(),
            ),
            Some(v) => Value::Array(vec![coerce(p.item_kind, v.clone())]),
        },
        kind => match raw {
            None | Some(Value::Null) => Value::Null,
            Some(Value::Array(items)) => items
                .first()
                .map(|v| coerce(kind, v.clone()))
                .unwrap_or(Value::Null),
            Some(v) => coerce(kind, v.clone()),
        },
    }
}

fn coerce(kind: PropertyType, v: Value) -> Value {
    let Value::String(s) = &v else {
        return v;
    };
    match kind {
        PropertyType::Integer => s.trim().parse::<i64>().map(Value::from).unwrap_or(v),
        PropertyType::Number => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or(v),
        PropertyType::Boolean => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v,
        },
        _ => v,
    }
}

/// The native name of a filter or sort field: `_id` → `__UID__`, a readable declared
/// property → its native name; anything else is a 400 naming the field.
fn native_field(
    system: &str,
    class: &ObjectType,
    field: &JsonPointer,
    what: &str,
) -> Result<JsonPointer, ResourceError> {
    let bad = |why: &str| {
        ResourceError::bad_request(format!(
            "{what} field '{field}' {why} for object type '{}' of system '{system}'",
            class.name
        ))
    };
    match field.tokens() {
        [id] if id == "_id" => Ok(JsonPointer(vec![UID.into()])),
        [name] => {
            let p = class.property(name).ok_or_else(|| bad("is not defined"))?;
            if !p.readable {
                return Err(bad("cannot be read, so cannot be queried"));
            }
            Ok(JsonPointer(vec![p.native_name.clone()]))
        }
        [] => Err(bad("is empty")),
        _ => Err(bad("is nested; system objects have flat properties")),
    }
}

/// A `_queryFilter` with native field names; `None` for `true` (everything).
pub fn native_filter(
    system: &str,
    class: &ObjectType,
    filter: &QueryFilter,
) -> Result<Option<QueryFilter>, ResourceError> {
    if *filter == QueryFilter::True {
        return Ok(None);
    }
    map_filter(system, class, filter).map(Some)
}

fn map_filter(
    system: &str,
    class: &ObjectType,
    f: &QueryFilter,
) -> Result<QueryFilter, ResourceError> {
    let field = |p: &JsonPointer| native_field(system, class, p, "Query");
    let all = |fs: &[QueryFilter]| {
        fs.iter()
            .map(|f| map_filter(system, class, f))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match f {
        QueryFilter::True => QueryFilter::True,
        QueryFilter::False => QueryFilter::False,
        QueryFilter::And(fs) => QueryFilter::And(all(fs)?),
        QueryFilter::Or(fs) => QueryFilter::Or(all(fs)?),
        QueryFilter::Not(f) => QueryFilter::Not(Box::new(map_filter(system, class, f)?)),
        QueryFilter::Present(p) => QueryFilter::Present(field(p)?),
        QueryFilter::Compare {
            field: p,
            op,
            value,
        } => QueryFilter::Compare {
            field: field(p)?,
            op: *op,
            value: value.clone(),
        },
        QueryFilter::In { field: p, values } => QueryFilter::In {
            field: field(p)?,
            values: values.clone(),
        },
    })
}

/// `_sortKeys` as (native name, ascending).
pub fn native_sort(
    system: &str,
    class: &ObjectType,
    keys: &[SortKey],
) -> Result<Vec<(String, bool)>, ResourceError> {
    keys.iter()
        .map(|k| {
            native_field(system, class, &k.field, "Sort")
                .map(|p| (p.0.into_iter().next().unwrap_or_default(), k.ascending))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::filter::parse;
    use crate::system::provisioner::parse as parse_provisioner;
    use serde_json::json;

    fn account() -> ObjectType {
        let doc = json!({
            "connectorRef": {"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
            "objectTypes": {"account": {"nativeType": "__ACCOUNT__", "properties": {
                "name": {"type": "string", "nativeName": "__NAME__", "required": true},
                "mail": {"type": "string"},
                "age": {"type": "integer", "nativeName": "years"},
                "active": {"type": "boolean"},
                "groups": {"type": "array", "items": {"type": "string"}},
                "password": {"type": "string", "nativeName": "__PASSWORD__",
                             "nativeType": "JAVA_TYPE_GUARDEDSTRING"},
                "created": {"type": "string", "flags": ["NOT_CREATABLE", "NOT_UPDATEABLE"]},
                "secretQ": {"type": "string", "flags": ["NOT_RETURNED_BY_DEFAULT"]}
            }}}
        });
        let p = parse_provisioner("csv", &doc).unwrap();
        (*p.object_types[0]).clone()
    }

    #[test]
    fn writes_map_names_skip_flagged_and_reject_unknown_or_mistyped() {
        let t = account();
        let body = json!({"_id": "x", "name": "bob", "age": 3, "groups": "g1",
                          "created": "yesterday", "password": "pw"});
        let n = to_native("csv", &t, body.as_object().unwrap(), Write::Create).unwrap();
        assert_eq!(
            Value::Object(n),
            json!({"__NAME__": "bob", "years": 3, "groups": "g1", "__PASSWORD__": "pw"})
        );
        let e = to_native(
            "csv",
            &t,
            json!({"nope": 1}).as_object().unwrap(),
            Write::Update,
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "Property 'nope' is not defined for object type 'account' of system 'csv'"
        );
        let e = to_native(
            "csv",
            &t,
            json!({"age": "three"}).as_object().unwrap(),
            Write::Update,
        )
        .unwrap_err();
        assert!(
            e.message.contains("'age'") && e.message.contains("an integer"),
            "{e:?}"
        );
        let e = check_required("csv", &t, &Map::new(), false).unwrap_err();
        assert_eq!(
            e.message,
            "Required property 'name' missing for object type 'account' of system 'csv'"
        );
        check_required("csv", &t, &Map::new(), true).unwrap();
    }

    #[test]
    fn reads_shape_values_to_declared_types() {
        let t = account();
        let props: Vec<&Property> = t.properties.iter().filter(|p| p.returned()).collect();
        let obj = ConnectorObject {
            uid: "u1".into(),
            attributes: json!({"__NAME__": ["bob"], "years": ["42"], "active": "TRUE",
                               "groups": "g1", "__PASSWORD__": "leak", "secretQ": "q"})
            .as_object()
            .unwrap()
            .clone(),
        };
        assert_eq!(
            Value::Object(from_native(&obj, &props)),
            json!({"_id": "u1", "name": "bob", "mail": null, "age": 42, "active": true,
                   "groups": ["g1"], "created": null})
        );
    }

    #[test]
    fn filters_and_sort_keys_use_native_names() {
        let t = account();
        let f = parse(r#"_id eq "u1" and (age gt 3 or name sw "b") and !(mail pr)"#).unwrap();
        let n = native_filter("csv", &t, &f).unwrap().unwrap();
        assert_eq!(
            n.to_string(),
            parse(r#"__UID__ eq "u1" and (years gt 3 or __NAME__ sw "b") and !(mail pr)"#)
                .unwrap()
                .to_string()
        );
        assert_eq!(native_filter("csv", &t, &QueryFilter::True).unwrap(), None);
        for (text, want) in [
            ("nope eq 1", "Query field '/nope' is not defined"),
            ("password eq 1", "Query field '/password' cannot be read"),
            ("name/x eq 1", "Query field '/name/x' is nested"),
        ] {
            let e = native_filter("csv", &t, &parse(text).unwrap()).unwrap_err();
            assert!(e.message.starts_with(want), "{text}: {}", e.message);
        }
        let keys = vec![
            SortKey::parse("-age").unwrap(),
            SortKey::parse("_id").unwrap(),
        ];
        assert_eq!(
            native_sort("csv", &t, &keys).unwrap(),
            vec![("years".to_string(), false), ("__UID__".to_string(), true)]
        );
    }
}
