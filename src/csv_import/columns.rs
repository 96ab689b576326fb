//! CSV columns → managed object properties.
//!
//! A column names a property (`userName`) or, with `/`, a property nested in an object
//! property (`preferences/updates`), as IDM's template writes them. A cell is converted by
//! the property's declared type: `string` as is, `boolean` (`true`/`false`, any case),
//! `integer` and `number` as numbers; `array`, `object` and relationship properties take
//! a JSON document (`[{"_ref":"managed/role/r1"}]`), so relationship columns go through
//! the managed layer as a REST write would. An empty cell is no value. Undeclared columns
//! are strings (IDM stores undeclared properties).

use serde_json::{Map, Value};

use crate::crest::ResourceError;
use crate::managed::schema::{JsonType, ObjectSchema};
use crate::state::Live;
use crate::state::MANAGED_CONFIG;

/// How a column's cells become values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
    Integer,
    Number,
    /// A JSON document (arrays, objects, relationships).
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// The property path (`["preferences", "updates"]`).
    pub path: Vec<String>,
    pub kind: Kind,
}

impl Column {
    /// The JSON pointer of the property (`/preferences/updates`).
    pub fn pointer(&self) -> String {
        self.path
            .iter()
            .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
            .collect()
    }
}

/// The raw schema `properties` of managed type `name` in the live `managed.json` (for the
/// properties of object properties, which the parsed schema does not model).
pub fn raw_properties(live: &Live, name: &str) -> Option<Map<String, Value>> {
    let raw = live.conf.files.get(MANAGED_CONFIG)?.raw.as_ref()?;
    raw.get("objects")?
        .as_array()?
        .iter()
        .find(|o| o.get("name").and_then(Value::as_str) == Some(name))?
        .pointer("/schema/properties")?
        .as_object()
        .cloned()
}

/// The declared types of a raw property definition.
pub fn raw_types(def: &Value) -> Vec<JsonType> {
    let names: Vec<&str> = match def.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    names
        .into_iter()
        .filter_map(|n| {
            Some(match n {
                "string" => JsonType::String,
                "boolean" => JsonType::Boolean,
                "integer" => JsonType::Integer,
                "number" => JsonType::Number,
                "object" => JsonType::Object,
                "array" => JsonType::Array,
                "relationship" => JsonType::Relationship,
                "null" => JsonType::Null,
                _ => return None,
            })
        })
        .collect()
}

/// The kind of a property of these types (the first one that is not `null`).
pub fn kind_of(types: &[JsonType]) -> Kind {
    match types.iter().find(|t| **t != JsonType::Null) {
        Some(JsonType::Boolean) => Kind::Boolean,
        Some(JsonType::Integer) => Kind::Integer,
        Some(JsonType::Number) => Kind::Number,
        Some(JsonType::Object | JsonType::Array | JsonType::Relationship) => Kind::Json,
        _ => Kind::String,
    }
}

/// Checks an uploaded header and types its columns.
pub fn parse_header(
    header: &[String],
    schema: &ObjectSchema,
    raw: Option<&Map<String, Value>>,
) -> Result<Vec<Column>, ResourceError> {
    let bad = |m: String| Err(ResourceError::bad_request(m));
    let mut columns: Vec<Column> = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let path: Vec<String> = name.split('/').map(|t| t.trim().to_owned()).collect();
        if path.iter().any(String::is_empty) {
            return bad(format!(
                "Column {} of the CSV header ('{name}') does not name a property",
                i + 1
            ));
        }
        if path[0].starts_with('_') {
            return bad(format!(
                "Column '{name}' cannot be imported: properties starting with '_' are the store's"
            ));
        }
        if let Some(other) = columns.iter().find(|c| {
            let n = c.path.len().min(path.len());
            c.path[..n] == path[..n]
        }) {
            return bad(format!(
                "Columns '{}' and '{name}' of the CSV header name the same property",
                other.name
            ));
        }
        let kind = match schema.property(&path[0]) {
            Some(p) if path.len() == 1 => {
                if p.relationship {
                    Kind::Json
                } else {
                    kind_of(&p.types)
                }
            }
            // A nested property: typed by the raw schema when it declares it.
            _ => {
                let mut def = raw.and_then(|r| r.get(&path[0]));
                for token in &path[1..] {
                    def = def.and_then(|d| d.get("properties")?.get(token));
                }
                def.map(|d| kind_of(&raw_types(d))).unwrap_or(Kind::String)
            }
        };
        columns.push(Column {
            name: name.clone(),
            path,
            kind,
        });
    }
    if columns.is_empty() {
        return bad("The CSV file has no header row".into());
    }
    Ok(columns)
}

/// The value of one cell (`None`: empty, no value).
pub fn convert(column: &Column, cell: &str) -> Result<Option<Value>, String> {
    if cell.is_empty() {
        return Ok(None);
    }
    let fail = |what: &str| {
        Err(format!(
            "Column '{}': '{}' is not {what}",
            column.name,
            shorten(cell)
        ))
    };
    Ok(Some(match column.kind {
        Kind::String => Value::String(cell.to_owned()),
        Kind::Boolean => match cell.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return fail("a boolean (true or false)"),
        },
        Kind::Integer => match cell.trim().parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => return fail("an integer"),
        },
        Kind::Number => {
            let t = cell.trim();
            if let Ok(n) = t.parse::<i64>() {
                Value::from(n)
            } else {
                match t.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    Some(n) => Value::Number(n),
                    None => return fail("a number"),
                }
            }
        }
        Kind::Json => match serde_json::from_str::<Value>(cell) {
            Ok(v) => v,
            Err(_) => return fail("a JSON value"),
        },
    }))
}

/// At most 100 characters of a cell, for messages.
fn shorten(cell: &str) -> String {
    match cell.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &cell[..at]),
        None => cell.to_owned(),
    }
}

/// Sets `value` at `path` in `object`, creating the objects on the way.
pub fn insert(object: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = object;
    for token in parents {
        let slot = at
            .entry(token.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else {
            return;
        };
        at = next;
    }
    at.insert(last.clone(), value);
}

/// The value at `path` in `object` (`None`: absent or null).
pub fn get<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = object;
    for token in path {
        at = at.get(token)?;
    }
    (!at.is_null()).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::schema::parse_schema;
    use serde_json::json;

    fn schema() -> ObjectSchema {
        parse_schema(
            "managed/user",
            &json!({"properties": {
                "userName": {"type": "string"},
                "active": {"type": "boolean"},
                "age": {"type": ["integer", "null"]},
                "score": {"type": "number"},
                "roles": {"type": "array"},
                "preferences": {"type": "object"}
            }}),
            "t",
        )
        .unwrap()
    }

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn columns_are_typed_by_the_schema() {
        let raw = json!({"preferences": {"type": "object", "properties": {"updates": {"type": "boolean"}}}});
        let cols = parse_header(
            &header(&[
                "userName",
                "active",
                "age",
                "score",
                "roles",
                "preferences/updates",
                "extra",
            ]),
            &schema(),
            raw.as_object(),
        )
        .unwrap();
        let kinds: Vec<Kind> = cols.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::String,
                Kind::Boolean,
                Kind::Integer,
                Kind::Number,
                Kind::Json,
                Kind::Boolean,
                Kind::String
            ]
        );
        assert_eq!(cols[5].pointer(), "/preferences/updates");
    }

    #[test]
    fn bad_headers_are_refused() {
        for h in [
            &["userName", "userName"][..],
            &["preferences", "preferences/updates"],
            &["_id", "userName"],
            &["userName", ""],
            &["a//b"],
            &[],
        ] {
            let e = parse_header(&header(h), &schema(), None).unwrap_err();
            assert_eq!(e.code, 400, "{h:?}");
        }
    }

    #[test]
    fn cells_convert_or_say_why() {
        let cols = parse_header(
            &header(&["userName", "active", "age", "score", "roles"]),
            &schema(),
            None,
        )
        .unwrap();
        assert_eq!(convert(&cols[0], "").unwrap(), None);
        assert_eq!(convert(&cols[0], " a ").unwrap(), Some(json!(" a ")));
        assert_eq!(convert(&cols[1], "TRUE").unwrap(), Some(json!(true)));
        assert!(convert(&cols[1], "yes").unwrap_err().contains("boolean"));
        assert_eq!(convert(&cols[2], "42").unwrap(), Some(json!(42)));
        assert!(convert(&cols[2], "4.2").is_err());
        assert_eq!(convert(&cols[3], "4.5").unwrap(), Some(json!(4.5)));
        assert!(convert(&cols[3], "NaN").is_err());
        assert_eq!(
            convert(&cols[4], r#"[{"_ref":"managed/role/r"}]"#).unwrap(),
            Some(json!([{"_ref": "managed/role/r"}]))
        );
        assert!(convert(&cols[4], "[").is_err());
    }

    #[test]
    fn nested_values_are_inserted_and_read() {
        let mut m = Map::new();
        insert(&mut m, &header(&["a", "b"]), json!(1));
        insert(&mut m, &header(&["a", "c"]), json!(2));
        insert(&mut m, &header(&["d"]), json!(3));
        let v = Value::Object(m);
        assert_eq!(v, json!({"a": {"b": 1, "c": 2}, "d": 3}));
        assert_eq!(get(&v, &header(&["a", "c"])), Some(&json!(2)));
        assert_eq!(get(&v, &header(&["a", "x"])), None);
    }
}
