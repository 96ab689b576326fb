//! `csv/template`: the header row of an import into a managed type, as IDM builds it: the
//! properties of type `string`, `boolean` or `number` (and `integer`) that do not start
//! with `_`, are not `scope: private` and are not virtual, in schema order; the properties
//! of an object property whose schema declares them, as `parent/child`.

use serde_json::{Map, Value};

use super::columns::raw_types;
use crate::managed::schema::{JsonType, ObjectSchema};

/// The header's column names.
pub fn columns(schema: &ObjectSchema, raw: Option<&Map<String, Value>>) -> Vec<String> {
    let mut out = Vec::new();
    for p in &schema.properties {
        if p.name.starts_with('_') || p.private || p.virtual_ || p.relationship {
            continue;
        }
        if is_scalar(&p.types) {
            out.push(p.name.clone());
            continue;
        }
        // An object property: its declared properties, nested.
        if let Some(def) = raw.and_then(|r| r.get(&p.name)) {
            nested(&p.name, def, &mut out);
        }
    }
    out
}

/// Whether the first non-null type is `string`, `boolean`, `integer` or `number`.
fn is_scalar(types: &[JsonType]) -> bool {
    matches!(
        types.iter().find(|t| **t != JsonType::Null),
        Some(JsonType::String | JsonType::Boolean | JsonType::Integer | JsonType::Number)
    )
}

fn nested(prefix: &str, def: &Value, out: &mut Vec<String>) {
    let Some(props) = def.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, sub) in props {
        let private = sub.get("scope").and_then(Value::as_str) == Some("private");
        let virtual_ = sub.get("isVirtual").and_then(Value::as_bool) == Some(true);
        if name.starts_with('_') || private || virtual_ {
            continue;
        }
        let types = raw_types(sub);
        let path = format!("{prefix}/{name}");
        if is_scalar(&types) {
            out.push(path);
        } else {
            nested(&path, sub, out);
        }
    }
}

/// IDM's `header` string: every column name in double quotes, comma-separated.
pub fn header_line(columns: &[String]) -> String {
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(columns);
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::schema::parse_schema;
    use serde_json::json;

    #[test]
    fn only_writable_scalar_properties_in_schema_order() {
        let props = json!({
            "_id": {"type": "string"},
            "userName": {"type": "string"},
            "password": {"type": "string", "scope": "private"},
            "active": {"type": "boolean"},
            "age": {"type": ["number", "null"]},
            "tags": {"type": "array"},
            "computed": {"type": "string", "isVirtual": true},
            "preferences": {"type": "object", "properties": {
                "updates": {"type": "boolean"},
                "secret": {"type": "string", "scope": "private"},
                "deep": {"type": "object", "properties": {"x": {"type": "string"}}}
            }}
        });
        let schema = parse_schema("managed/user", &json!({"properties": props}), "t").unwrap();
        let cols = columns(&schema, props.as_object());
        assert_eq!(
            cols,
            [
                "userName",
                "active",
                "age",
                "preferences/updates",
                "preferences/deep/x"
            ]
        );
        assert_eq!(header_line(&cols[..2]), r#""userName","active""#);
    }
}
