//! In-memory evaluation of a [`QueryFilter`] against one JSON object, with CREST semantics.
//! For resources that are not in the store (config, remote results); the store translates
//! filters to SQL instead and must agree with this module.
//!
//! * `eq` compares strings exactly (case-sensitive), numbers by value (`1` equals `1.0`),
//!   booleans by value. `co` and `sw` apply to strings only.
//! * `lt`, `le`, `gt`, `ge` order numbers by value, strings by code point and booleans
//!   `false < true`; any other pairing of types (a string against a number, objects, null)
//!   is no match.
//! * A field holding an array matches a comparison when any element matches; a field of
//!   the objects of a top-level array (`/effectiveRoles/_refResourceId`) matches when any
//!   object's field does.
//! * `pr` holds when the field exists, is not null and is not an empty array.
//! * A numeric pointer token is an array position where the value is an array.
//!
//! The store's SQL translation agrees on every filter of the shared table in
//! [`super::conformance`], which also says why each choice was made.
//! * `in` holds when the field is a string equal to one of the listed strings (IDM's `in`
//!   is limited to singleton string properties, so an array field does not match).

use std::cmp::Ordering;

use serde_json::Value;

use super::ast::{CompareOp, FilterValue, QueryFilter};

impl QueryFilter {
    /// Whether `object` satisfies this filter.
    pub fn matches(&self, object: &Value) -> bool {
        match self {
            QueryFilter::True => true,
            QueryFilter::False => false,
            QueryFilter::And(items) => items.iter().all(|f| f.matches(object)),
            QueryFilter::Or(items) => items.iter().any(|f| f.matches(object)),
            QueryFilter::Not(inner) => !inner.matches(object),
            QueryFilter::Present(field) => match field.resolve(object) {
                None | Some(Value::Null) => false,
                Some(Value::Array(items)) => !items.is_empty(),
                Some(_) => true,
            },
            QueryFilter::Compare { field, op, value } => match field.resolve(object) {
                Some(Value::Array(items)) => items.iter().any(|item| compare(item, *op, value)),
                Some(found) => compare(found, *op, value),
                None => element_matches(field, object, *op, value),
            },
            QueryFilter::In { field, values } => match field.resolve(object) {
                Some(Value::String(s)) => values.iter().any(|v| v == s),
                _ => false,
            },
        }
    }
}

/// A field of the objects of a top-level array (`/effectiveRoles/_refResourceId`): any
/// object element whose field is a matching scalar.
fn element_matches(
    field: &super::ast::JsonPointer,
    object: &Value,
    op: CompareOp,
    value: &FilterValue,
) -> bool {
    let tokens = field.tokens();
    if tokens.len() < 2 || tokens.iter().any(|t| super::ast::array_index(t).is_some()) {
        return false;
    }
    let Some(Value::Array(items)) = object.get(&tokens[0]) else {
        return false;
    };
    let inner = super::ast::JsonPointer(tokens[1..].to_vec());
    items.iter().any(|item| {
        item.is_object()
            && match inner.resolve(item) {
                Some(Value::Array(_)) | None => false,
                Some(found) => compare(found, op, value),
            }
    })
}

/// `found op expected` for one (non-array) JSON value.
fn compare(found: &Value, op: CompareOp, expected: &FilterValue) -> bool {
    match (found, expected) {
        (Value::String(s), FilterValue::String(e)) => match op {
            CompareOp::Co => s.contains(e.as_str()),
            CompareOp::Sw => s.starts_with(e.as_str()),
            _ => ordering_satisfies(op, s.as_str().cmp(e.as_str())),
        },
        (Value::Number(n), FilterValue::Integer(_) | FilterValue::Float(_)) => {
            match number_cmp(n, expected) {
                Some(ordering) if !matches!(op, CompareOp::Co | CompareOp::Sw) => {
                    ordering_satisfies(op, ordering)
                }
                _ => false,
            }
        }
        // `false < true`, as Java's `Boolean.compareTo` in CREST's filter visitor.
        (Value::Bool(b), FilterValue::Bool(e)) => ordering_satisfies(op, b.cmp(e)),
        _ => false,
    }
}

/// Whether `ordering` (found compared to expected) satisfies an ordering operator or `eq`.
fn ordering_satisfies(op: CompareOp, ordering: Ordering) -> bool {
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Co | CompareOp::Sw => false,
    }
}

/// A number to compare: integers exactly (i128 holds every i64 and u64), others as f64.
#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of_json(n: &serde_json::Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i.into()))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(u.into()))
        } else {
            n.as_f64().map(Num::Float)
        }
    }

    fn of_filter(value: &FilterValue) -> Option<Num> {
        match value {
            FilterValue::Integer(i) => Some(Num::Int((*i).into())),
            FilterValue::Float(x) => Some(Num::Float(*x)),
            _ => None,
        }
    }
}

/// `found` compared to `expected`; `None` when they are unordered (NaN) or not numbers.
fn number_cmp(found: &serde_json::Number, expected: &FilterValue) -> Option<Ordering> {
    match (Num::of_json(found)?, Num::of_filter(expected)?) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
        (Num::Int(a), Num::Float(b)) => int_float_cmp(a, b),
        (Num::Float(a), Num::Int(b)) => int_float_cmp(b, a).map(Ordering::reverse),
    }
}

/// An integer against a float without rounding the integer: an integral float within i128
/// range is compared as an integer; a fractional float is below 2^53 in magnitude, where the
/// rounding of `i as f64` cannot cross it.
fn int_float_cmp(i: i128, x: f64) -> Option<Ordering> {
    // 2^127 as f64 is exact; integral floats below it in magnitude convert without loss.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if x.is_nan() {
        return None;
    }
    if x.fract() == 0.0 && x.abs() < LIMIT {
        return Some(i.cmp(&(x as i128)));
    }
    (i as f64).partial_cmp(&x)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::crest::filter::parse;

    fn object() -> serde_json::Value {
        json!({
            "_id": "u1",
            "userName": "bjensen",
            "cn": "Babs Jensen",
            "age": 42,
            "score": 3.5,
            "big": 18446744073709551615u64,
            "active": true,
            "manager": null,
            "name": { "givenName": "Barbara", "familyName": "Jensen" },
            "mail": ["bjensen@example.com", "babs@example.org"],
            "lucky": [7, 13],
            "empty": [],
            "emptyName": "",
            "a/b": "slash",
            "m~n": "tilde"
        })
    }

    #[test]
    fn table() {
        let cases: &[(&str, bool)] = &[
            ("true", true),
            ("false", false),
            // eq: strings exact and case-sensitive, numbers by value, booleans.
            ("userName eq 'bjensen'", true),
            ("userName eq 'BJensen'", false),
            ("userName eq 'bjense'", false),
            ("/name/givenName eq 'Barbara'", true),
            ("name/givenName eq \"Barbara\"", true),
            ("age eq 42", true),
            ("age eq 42.0", true),
            ("age eq 4.2e1", true),
            ("age eq 43", false),
            ("score eq 3.5", true),
            ("score eq 3", false),
            ("big lt 1.8446744073709552e19", true),
            ("big eq 1.8446744073709552e19", false),
            ("big gt 9223372036854775807", true),
            ("active eq true", true),
            ("active eq false", false),
            ("active eq 'true'", false),
            ("age eq '42'", false),
            ("userName eq 1", false),
            ("emptyName eq ''", true),
            // co, sw: strings only, case-sensitive.
            ("cn co 'Jensen'", true),
            ("cn co 'jensen'", false),
            ("cn co ''", true),
            ("cn sw 'Babs'", true),
            ("cn sw 'Jensen'", false),
            ("age co 4", false),
            ("age sw 4", false),
            ("active co true", false),
            // Ordering: numbers by value, strings by code point, mismatches never match.
            ("age lt 43", true),
            ("age lt 42", false),
            ("age le 42", true),
            ("age gt 41.5", true),
            ("age ge 42.0", true),
            ("age ge 42.5", false),
            ("score lt 4", true),
            ("score gt 3", true),
            ("userName lt 'c'", true),
            ("userName gt 'bjensen'", false),
            ("userName ge 'bjensen'", true),
            ("userName le 'bjensen'", true),
            ("userName lt 5", false),
            ("age lt 'z'", false),
            ("active lt true", false),
            ("active le true", true),
            ("active gt false", true),
            ("name eq 'x'", false),
            ("manager eq 'x'", false),
            // Arrays: any element.
            ("mail eq 'babs@example.org'", true),
            ("mail sw 'bjensen@'", true),
            ("mail co 'nowhere'", false),
            ("lucky eq 13", true),
            ("lucky gt 10", true),
            ("lucky gt 20", false),
            ("empty eq 1", false),
            // Presence: present and not null; an empty array is absent.
            ("userName pr", true),
            ("name/givenName pr", true),
            ("manager pr", false),
            ("missing pr", false),
            ("empty pr", false),
            ("mail pr", true),
            ("emptyName pr", true),
            ("mail/0 eq 'bjensen@example.com'", true),
            ("/a~1b eq 'slash'", true),
            ("m~0n pr", true),
            // Absent fields never match a comparison, so their negation does.
            ("missing eq 'x'", false),
            ("!(missing eq 'x')", true),
            // in: a singleton string equal to one of the values.
            (r#"userName in '["alice","bjensen"]'"#, true),
            (r#"userName in '["alice"]'"#, false),
            ("userName in '[]'", false),
            (r#"mail in '["babs@example.org"]'"#, false),
            (r#"age in '["42"]'"#, false),
            // Boolean structure.
            ("!(userName eq 'bjensen')", false),
            ("!userName eq 'alice'", true),
            ("userName eq 'bjensen' and age gt 40", true),
            ("userName eq 'bjensen' and age gt 50", false),
            ("userName eq 'alice' or age gt 40", true),
            ("userName eq 'alice' or age gt 50", false),
            (
                "(uid co 'jensen' and cn sw 'babs') or userName sw 'bj'",
                true,
            ),
        ];
        let object = object();
        let mut failures = Vec::new();
        for (text, expected) in cases {
            let filter = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            if filter.matches(&object) != *expected {
                failures.push(format!("{text}: expected {expected}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    /// The shared conformance table, evaluated in memory (the store runs the same table).
    #[test]
    fn conformance_table() {
        let docs: Vec<(String, serde_json::Value)> = crate::crest::filter::conformance::documents()
            .into_iter()
            .map(|(id, mut doc)| {
                doc["_id"] = json!(id);
                (id.to_owned(), doc)
            })
            .collect();
        crate::crest::filter::conformance::check(|text| {
            let filter = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            docs.iter()
                .filter(|(_, doc)| filter.matches(doc))
                .map(|(id, _)| id.clone())
                .collect()
        });
    }

    #[test]
    fn non_object_documents() {
        let f = parse("a pr").unwrap();
        assert!(!f.matches(&json!(null)));
        assert!(!f.matches(&json!("a")));
        assert!(!f.matches(&json!([1, 2])));
        assert!(parse("/ pr").unwrap().matches(&json!("whole")));
        assert!(!parse("/ pr").unwrap().matches(&json!(null)));
    }

    #[test]
    fn empty_and_or() {
        use crate::crest::filter::QueryFilter;
        assert!(QueryFilter::And(vec![]).matches(&json!({})));
        assert!(!QueryFilter::Or(vec![]).matches(&json!({})));
    }
}
