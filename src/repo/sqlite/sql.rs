//! `_queryFilter`, sort keys and keyset cookies translated to SQL over one object table
//! (`id TEXT`, `rev TEXT`, `body` JSONB).
//!
//! Everything the caller controls reaches SQLite as a bound parameter, except JSON paths:
//! an expression index only serves a query whose expression is textually the same, so a
//! path is a SQL string literal built by [`json_path_literal`], which escapes it twice
//! (JSON-path quoting of the token, then SQL quoting of the literal).
//!
//! Semantics (those of the in-memory evaluator):
//! * strings compare case-sensitively by code point; numbers numerically (`1 eq 1.0`);
//!   booleans only against booleans (`false < true`); a value of another type never matches;
//! * `co` is `instr` (LIKE would be case-insensitive), `sw` a range `[p, succ(p))` so an
//!   index serves it;
//! * a comparison on an array property matches when any element matches; the array branch is
//!   guarded by `json_type(..) = 'array'`, which has its own small partial index, so the
//!   scalar branch stays index-friendly (SQLite answers the `OR` with both indexes);
//! * `pr` is "present, not null and not an empty array"; `!x` matches whatever `x` does not match, missing
//!   properties included (`!(a eq 1)` matches objects without `a`): every `Not` collapses
//!   SQL's NULL to false before negating;
//! * `_id` and `_rev` are the `id` and `rev` columns (strings);
//! * a numeric pointer token is an array position where the value is an array
//!   ([`path_sql`]).
//!
//! `crest::filter::conformance` holds the table both this module and the evaluator answer.

use std::fmt::Write as _;

use rusqlite::types::Value as SqlValue;
use serde::{Deserialize, Serialize};

use crate::crest::filter::{array_index, CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::query::SortKey;
use crate::repo::sql_common::{element_field, leaf_field, EdgeField};
use crate::repo::RepoError;
use crate::repo::RELATIONSHIP_FIELD;

/// Deepest filter nesting translated; deeper filters are refused rather than risking the
/// stack (the parser has its own, smaller, limit).
pub(crate) const MAX_FILTER_DEPTH: usize = 128;

/// SQL text with its bound parameters, numbered `?1`, `?2`, … in order.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub params: Vec<SqlValue>,
    /// The table of the relationship edges, for filters on relationship fields.
    pub edges: Option<String>,
}

impl Sql {
    /// Adds a parameter and returns its placeholder (`?N`), which may be used several times.
    fn param(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        format!("?{}", self.params.len())
    }
}

/// A JSON path (`$.a."b c"`) for a pointer, every token as an object key. Simple tokens
/// stay bare; any other token is quoted with `"` and `\` escaped, control characters as
/// `\uXXXX`.
pub(crate) fn json_path(ptr: &JsonPointer) -> String {
    let mut path = String::from("$");
    for token in ptr.tokens() {
        push_key(&mut path, token);
    }
    path
}

/// Appends `token` as an object-key step to a JSON path.
fn push_key(path: &mut String, token: &str) {
    {
        let simple = token
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if simple {
            path.push('.');
            path.push_str(token);
            return;
        }
        path.push_str(".\"");
        for c in token.chars() {
            match c {
                '"' => path.push_str("\\\""),
                '\\' => path.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(path, "\\u{:04x}", c as u32);
                }
                c => path.push(c),
            }
        }
        path.push('"');
    }
}

/// The SQL expression of a pointer's JSON path. Usually the literal [`json_path`] (what an
/// expression index is built on). A numeric token after the first (`/mail/0`) names an
/// array position where the value is an array and a key otherwise, as in the in-memory
/// evaluator; SQLite paths cannot say "key or position", so such a path is chosen by the
/// parent's JSON type (the first token is always a key: the body is an object).
pub(crate) fn path_sql(ptr: &JsonPointer) -> String {
    // The path so far: an expression (once a position was chosen) plus a literal tail.
    let mut expr: Option<String> = None;
    let mut tail = String::from("$");
    let joined = |expr: &Option<String>, tail: &str| match expr {
        None => sql_literal(tail),
        Some(e) if tail.is_empty() => e.clone(),
        Some(e) => format!("({e} || {})", sql_literal(tail)),
    };
    for (i, token) in ptr.tokens().iter().enumerate() {
        match array_index(token) {
            Some(n) if i > 0 => {
                let parent = joined(&expr, &tail);
                let mut key = String::new();
                push_key(&mut key, token);
                expr = Some(format!(
                    "(CASE WHEN json_type(body, {parent}) = 'array' THEN {parent} || '[{n}]' ELSE {parent} || {} END)",
                    sql_literal(&key)
                ));
                tail.clear();
            }
            _ => push_key(&mut tail, token),
        }
    }
    joined(&expr, &tail)
}

/// What names a property's indexes: the JSON path, or the path expression when it is not
/// a literal (an index on the old expression must not survive under the same name).
pub(crate) fn index_key(ptr: &JsonPointer) -> String {
    let path = path_sql(ptr);
    if path == json_path_literal(ptr) {
        json_path(ptr)
    } else {
        path
    }
}

/// A SQL string literal: `'` doubled. NUL cannot occur (json_path escapes it).
pub(crate) fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// [`json_path`] as a SQL literal, the form used in expression indexes and queries alike.
pub(crate) fn json_path_literal(ptr: &JsonPointer) -> String {
    sql_literal(&json_path(ptr))
}

/// `json_extract(body, <path>)`: the indexed expression of a property.
pub(crate) fn value_expr(ptr: &JsonPointer) -> String {
    format!("json_extract(body, {})", path_sql(ptr))
}

/// `json_type(body, <path>)`: NULL when missing, `'null'`, `'text'`, `'integer'`, `'real'`,
/// `'true'`, `'false'`, `'object'` or `'array'`.
pub(crate) fn type_expr(ptr: &JsonPointer) -> String {
    format!("json_type(body, {})", path_sql(ptr))
}

/// How a property is reached.
enum Field {
    /// `_id` or `_rev`: a text column.
    Column(&'static str),
    Json(JsonPointer),
}

fn field(ptr: &JsonPointer) -> Field {
    match ptr.tokens() {
        [t] if t == "_id" => Field::Column("id"),
        [t] if t == "_rev" => Field::Column("rev"),
        _ => Field::Json(ptr.clone()),
    }
}

/// The SQL expression a sort key orders by.
pub(crate) fn sort_expr(ptr: &JsonPointer) -> String {
    match field(ptr) {
        Field::Column(c) => c.to_string(),
        Field::Json(p) => value_expr(&p),
    }
}

/// Appends the SQL of `filter` (a 0/1/NULL expression; NULL means no match).
pub(crate) fn filter_sql(filter: &QueryFilter, sql: &mut Sql) -> Result<String, RepoError> {
    filter_at(filter, sql, 0)
}

fn filter_at(filter: &QueryFilter, sql: &mut Sql, depth: usize) -> Result<String, RepoError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(RepoError::BadQuery(format!(
            "filter nested deeper than {MAX_FILTER_DEPTH} levels"
        )));
    }
    if let Some(ptr) = leaf_field(filter) {
        if ptr.tokens().first().map(String::as_str) == Some(RELATIONSHIP_FIELD) {
            return edge_filter(filter, ptr, sql, depth);
        }
    }
    Ok(match filter {
        QueryFilter::True => "1".to_string(),
        QueryFilter::False => "0".to_string(),
        QueryFilter::And(items) | QueryFilter::Or(items) => {
            let (joiner, empty) = match filter {
                QueryFilter::And(_) => (" AND ", "1"),
                _ => (" OR ", "0"),
            };
            if items.is_empty() {
                return Ok(empty.to_string());
            }
            let parts = items
                .iter()
                .map(|f| filter_at(f, sql, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            format!("({})", parts.join(joiner))
        }
        QueryFilter::Not(inner) => {
            format!("(({}) IS NOT TRUE)", filter_at(inner, sql, depth + 1)?)
        }
        QueryFilter::Present(ptr) => match field(ptr) {
            Field::Column(_) => "1".to_string(),
            // An empty array is absent, as in IDM's repositories (they store no value).
            Field::Json(p) => format!(
                "({} IS NOT NULL AND ({} <> 'array' OR json_array_length(body, {}) > 0))",
                value_expr(&p),
                type_expr(&p),
                path_sql(&p)
            ),
        },
        QueryFilter::Compare {
            field: ptr,
            op,
            value,
        } => match field(ptr) {
            Field::Column(c) => compare(c, None, *op, value, sql),
            Field::Json(p) => {
                let v = value_expr(&p);
                let t = type_expr(&p);
                let scalar = compare(&v, Some(&t), *op, value, sql);
                if scalar == "0" {
                    return Ok(scalar);
                }
                let element = compare("je.value", Some("je.type"), *op, value, sql);
                let mut out = format!(
                    "({scalar} OR ({t} = 'array' AND EXISTS (SELECT 1 FROM json_each(body, {}) AS je WHERE {element}))",
                    path_sql(&p)
                );
                // A field of the objects of a top-level array (`/effectiveRoles/_refResourceId`):
                // any element's field matches, as IDM's repositories flatten arrays.
                if let Some(inner) = element_field(&p) {
                    let top = JsonPointer(vec![p.tokens()[0].clone()]);
                    let path = json_path_literal(&inner);
                    let v = format!("json_extract(ae.value, {path})");
                    let t = format!("json_type(ae.value, {path})");
                    let each = compare(&v, Some(&t), *op, value, sql);
                    out.push_str(&format!(
                        " OR ({} = 'array' AND EXISTS (SELECT 1 FROM json_each(body, {}) AS ae WHERE ae.type = 'object' AND {each}))",
                        type_expr(&top),
                        path_sql(&top)
                    ));
                }
                out.push(')');
                out
            }
        },
        QueryFilter::In { field: ptr, values } => {
            if values.is_empty() {
                return Ok("0".to_string());
            }
            let list = serde_json::to_string(values)
                .map_err(|e| RepoError::Internal(format!("encoding an in list: {e}")))?;
            let p = sql.param(SqlValue::Text(list));
            match field(ptr) {
                Field::Column(c) => format!("({c} IN (SELECT value FROM json_each({p})))"),
                Field::Json(ptr) => format!(
                    "({} IN (SELECT value FROM json_each({p})) AND {} = 'text')",
                    value_expr(&ptr),
                    type_expr(&ptr)
                ),
            }
        }
    })
}

/// A test of a relationship field ([`RELATIONSHIP_FIELD`]): the object's id is among the
/// ids at its end of the edges that pass the test, the object being either end. The test
/// runs on the edges table (its `secondResourceId`/`firstResourceId` indexes).
fn edge_filter(
    filter: &QueryFilter,
    ptr: &JsonPointer,
    sql: &mut Sql,
    depth: usize,
) -> Result<String, RepoError> {
    let rel = EdgeField::parse(ptr)?;
    let Some(edges) = sql.edges.clone() else {
        // No relationship was ever stored.
        return Ok("0".into());
    };
    let resource = sql.param(SqlValue::Text(rel.resource.to_string()));
    let property = sql.param(SqlValue::Text(rel.property.to_string()));
    let mut parts = Vec::new();
    for (me, other) in [("first", "second"), ("second", "first")] {
        let inner = rel.edge_test(filter, other)?;
        let test = filter_at(&inner, sql, depth + 1)?;
        let field = |name: &str| value_expr(&JsonPointer(vec![format!("{me}{name}")]));
        parts.push(format!(
            "id IN (SELECT {id} FROM \"{edges}\" WHERE {coll} = {resource} AND {prop} = {property} AND {test})",
            id = field("ResourceId"),
            coll = field("ResourceCollection"),
            prop = field("PropertyName"),
        ));
    }
    Ok(format!("({})", parts.join(" OR ")))
}

/// One comparison of value expression `v`, whose JSON type is `t` (`None` for a text column).
/// Returns `"0"` when the operator cannot match a value of that type.
fn compare(v: &str, t: Option<&str>, op: CompareOp, value: &FilterValue, sql: &mut Sql) -> String {
    let guard = |types: &str| match t {
        Some(t) => format!(" AND {t} IN ({types})"),
        None if types == "'text'" => String::new(),
        None => " AND 0".to_string(),
    };
    let rel = |op: CompareOp| match op {
        CompareOp::Eq => "=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Co | CompareOp::Sw => "",
    };
    let (param, types) = match value {
        FilterValue::String(s) => match op {
            CompareOp::Co => {
                let p = sql.param(SqlValue::Text(s.clone()));
                return format!("(instr({v}, {p}) > 0{})", guard("'text'"));
            }
            CompareOp::Sw => {
                let lo = sql.param(SqlValue::Text(s.clone()));
                return match prefix_successor(s) {
                    Some(hi) => {
                        let hi = sql.param(SqlValue::Text(hi));
                        format!("({v} >= {lo} AND {v} < {hi}{})", guard("'text'"))
                    }
                    None => format!("({v} >= {lo}{})", guard("'text'")),
                };
            }
            _ => (SqlValue::Text(s.clone()), "'text'"),
        },
        FilterValue::Integer(i) => (SqlValue::Integer(*i), "'integer','real'"),
        FilterValue::Float(f) => (SqlValue::Real(*f), "'integer','real'"),
        FilterValue::Bool(b) => (
            SqlValue::Integer(i64::from(*b)),
            match (op, b) {
                (CompareOp::Eq, true) => "'true'",
                (CompareOp::Eq, false) => "'false'",
                _ => "'true','false'",
            },
        ),
    };
    if matches!(op, CompareOp::Co | CompareOp::Sw) {
        // Substring and prefix only apply to strings.
        return "0".to_string();
    }
    if t.is_none() && types != "'text'" {
        return "0".to_string();
    }
    let p = sql.param(param);
    format!("({v} {} {p}{})", rel(op), guard(types))
}

/// The smallest string greater than every string starting with `prefix`, or `None` when
/// there is none (empty prefix, or only `char::MAX`s). UTF-8 byte order, which SQLite's
/// BINARY collation uses, is code point order, so `[prefix, successor)` is exactly the set
/// of strings starting with `prefix`.
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `ORDER BY` items for `sort`, with `id` as the final tie-breaker.
pub(crate) fn order_by(sort: &[SortKey]) -> String {
    let mut items: Vec<String> = sort
        .iter()
        .map(|k| {
            format!(
                "{} {}",
                sort_expr(&k.field),
                if k.ascending { "ASC" } else { "DESC" }
            )
        })
        .collect();
    items.push("id ASC".to_string());
    items.join(", ")
}

/// A sort-key value as it comes out of SQLite, kept with its storage class so the next page
/// compares exactly as `ORDER BY` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum KeyValue {
    #[serde(rename = "n")]
    Null,
    #[serde(rename = "i")]
    Integer(i64),
    #[serde(rename = "r")]
    Real(f64),
    #[serde(rename = "t")]
    Text(String),
}

impl KeyValue {
    pub(crate) fn from_sql(value: SqlValue) -> Result<KeyValue, RepoError> {
        Ok(match value {
            SqlValue::Null => KeyValue::Null,
            SqlValue::Integer(i) => KeyValue::Integer(i),
            SqlValue::Real(r) => KeyValue::Real(r),
            SqlValue::Text(t) => KeyValue::Text(t),
            SqlValue::Blob(_) => {
                return Err(RepoError::Internal("a sort key evaluated to a blob".into()))
            }
        })
    }

    fn to_sql(&self) -> SqlValue {
        match self {
            KeyValue::Null => SqlValue::Null,
            KeyValue::Integer(i) => SqlValue::Integer(*i),
            KeyValue::Real(r) => SqlValue::Real(*r),
            KeyValue::Text(t) => SqlValue::Text(t.clone()),
        }
    }
}

/// The paging cookie, keyed by this dialect's sort key values.
pub(crate) type Cookie = crate::repo::sql_common::Cookie<KeyValue>;

/// The condition "row comes strictly after the cookie's row" in the order of `sort`
/// (then `id` ascending). NULL sorts first ascending and last descending, as in SQLite.
pub(crate) fn after_cookie(sort: &[SortKey], cookie: &Cookie, sql: &mut Sql) -> String {
    let mut alternatives = Vec::with_capacity(sort.len() + 1);
    let mut equal_prefix: Vec<String> = Vec::new();
    for (key, value) in sort.iter().zip(&cookie.keys) {
        let expr = sort_expr(&key.field);
        let after = match (value, key.ascending) {
            (KeyValue::Null, true) => Some(format!("{expr} IS NOT NULL")),
            (KeyValue::Null, false) => None,
            (v, true) => Some(format!("{expr} > {}", sql.param(v.to_sql()))),
            (v, false) => Some(format!(
                "({expr} < {p} OR {expr} IS NULL)",
                p = sql.param(v.to_sql())
            )),
        };
        if let Some(after) = after {
            let mut terms = equal_prefix.clone();
            terms.push(after);
            alternatives.push(format!("({})", terms.join(" AND ")));
        }
        equal_prefix.push(match value {
            KeyValue::Null => format!("{expr} IS NULL"),
            v => format!("{expr} = {}", sql.param(v.to_sql())),
        });
    }
    let id = sql.param(SqlValue::Text(cookie.id.clone()));
    equal_prefix.push(format!("id > {id}"));
    alternatives.push(format!("({})", equal_prefix.join(" AND ")));
    format!("({})", alternatives.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted() {
        assert_eq!(json_path(&JsonPointer::parse("/userName")), "$.userName");
        assert_eq!(
            json_path(&JsonPointer::parse("/name/given")),
            "$.name.given"
        );
        assert_eq!(json_path(&JsonPointer::parse("/a.b")), "$.\"a.b\"");
        assert_eq!(
            json_path(&JsonPointer::parse("/x\"y\\z w")),
            "$.\"x\\\"y\\\\z w\""
        );
        assert_eq!(
            json_path(&JsonPointer(vec!["a\u{1}".into()])),
            "$.\"a\\u0001\""
        );
        assert_eq!(
            json_path_literal(&JsonPointer::parse("/it's")),
            "'$.\"it''s\"'"
        );
        assert_eq!(json_path(&JsonPointer::parse("/")), "$");
    }

    #[test]
    fn prefix_successors() {
        assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
    }

    #[test]
    fn cookies_round_trip_and_reject_garbage() {
        let c = Cookie {
            query: "q1".into(),
            keys: vec![
                KeyValue::Null,
                KeyValue::Integer(3),
                KeyValue::Text("x".into()),
            ],
            id: "id-1".into(),
        };
        let text = c.encode().unwrap();
        assert_eq!(Cookie::decode(&text, "q1", 3).unwrap(), c);
        assert_eq!(Cookie::decode(&text, "q2", 3), Err(RepoError::BadCookie));
        assert_eq!(Cookie::decode(&text, "q1", 2), Err(RepoError::BadCookie));
        assert_eq!(Cookie::decode("!!!", "q1", 3), Err(RepoError::BadCookie));
        assert_eq!(Cookie::decode("e30", "q1", 3), Err(RepoError::BadCookie));
    }
}
