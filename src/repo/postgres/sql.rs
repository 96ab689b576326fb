//! `_queryFilter`, sort keys and keyset cookies translated to PostgreSQL over one object
//! table (`id text COLLATE "C"`, `rev text`, `body jsonb`): the PostgreSQL twin of
//! `repo::sqlite::sql`, with the same semantics (those of the in-memory evaluator, checked
//! by the shared contract tests and `crest::filter::conformance`).
//!
//! Everything the caller controls is a bound parameter (all of type `text`, cast in SQL),
//! except JSON paths: an expression index serves only a query whose expression is the same,
//! so a path is a text-array literal (`'{"name","given"}'`), quoted by [`path_literal`].
//!
//! * A property's value is `body #> '{…}'` (jsonb), its type `jsonb_typeof(…)` (NULL when
//!   missing). `#>` reads a numeric token as an array position where the value is an array
//!   and as a key otherwise, as the evaluator does; tokens PostgreSQL would also read as a
//!   position but the evaluator does not (`-1`, `01`) are guarded ([`value_expr`]).
//! * Strings compare as text in the `"C"` collation (code point order, whatever the
//!   database's locale); numbers and booleans compare as jsonb (numerically, `false <
//!   true`), guarded by type so a value of another type never matches.
//! * A comparison on an array property matches when any element matches: `@>` for
//!   equality, an `EXISTS` over the elements otherwise. That branch is guarded by
//!   `jsonb_typeof(…) = 'array'`, which partial indexes serve, so the planner answers the
//!   `OR` with a bitmap of both branches' indexes.
//! * Array expansions are guarded by `CASE` (PostgreSQL does not promise to evaluate `AND`
//!   left to right, and `jsonb_array_elements` fails on a non-array).

use std::fmt::Write as _;

use crate::crest::filter::{array_index, CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::query::SortKey;
use crate::repo::sql_common::{element_field, leaf_field, EdgeField};
use crate::repo::sqlite::prefix_successor;
use crate::repo::{RepoError, RELATIONSHIP_FIELD};

/// Deepest filter nesting translated (as the embedded store).
const MAX_FILTER_DEPTH: usize = 128;

/// SQL text with its bound parameters (`$1`, `$2`, …, all text).
#[derive(Debug, Default, Clone)]
pub(crate) struct Sql {
    pub text: String,
    pub params: Vec<String>,
    /// The table of the relationship edges, for filters on relationship fields.
    pub edges: Option<String>,
}

impl Sql {
    /// Adds a parameter and returns its placeholder, typed text (`$N::text`).
    fn param(&mut self, value: impl Into<String>) -> String {
        self.params.push(value.into());
        format!("${}::text", self.params.len())
    }
}

/// A SQL string literal: `'` doubled.
pub(crate) fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A text-array literal of path tokens, as a SQL literal: every element double-quoted with
/// `"` and `\` escaped.
pub(crate) fn path_literal(tokens: &[String]) -> String {
    let mut arr = String::from("{");
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            arr.push(',');
        }
        arr.push('"');
        for c in t.chars() {
            if c == '"' || c == '\\' {
                arr.push('\\');
            }
            arr.push(c);
        }
        arr.push('"');
    }
    arr.push('}');
    sql_literal(&arr)
}

/// Whether PostgreSQL's `#>` would read `token` as an array position (`strtol` with
/// nothing left over) while the evaluator reads it as a key.
fn position_only_for_postgres(token: &str) -> bool {
    if array_index(token).is_some() {
        return false;
    }
    let t = token.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
}

/// The jsonb value at `tokens` below `base` (a jsonb expression, usually `body`).
pub(crate) fn path_from(base: &str, tokens: &[String]) -> String {
    let mut expr = base.to_string();
    let mut pending: Vec<String> = Vec::new();
    let flush = |expr: &mut String, pending: &mut Vec<String>| {
        if !pending.is_empty() {
            *expr = format!("({expr} #> {})", path_literal(pending));
            pending.clear();
        }
    };
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 && position_only_for_postgres(token) {
            flush(&mut expr, &mut pending);
            expr = format!(
                "(CASE WHEN jsonb_typeof({expr}) = 'array' THEN NULL ELSE {expr} -> {} END)",
                sql_literal(token)
            );
        } else {
            pending.push(token.clone());
        }
    }
    flush(&mut expr, &mut pending);
    if tokens.is_empty() {
        // The whole object.
        return base.to_string();
    }
    expr
}

/// `body #> '{…}'`: the indexed jsonb expression of a property.
pub(crate) fn value_expr(ptr: &JsonPointer) -> String {
    path_from("body", ptr.tokens())
}

/// The property as text in the "C" collation (meaningful for strings): the indexed text
/// expression of a property.
pub(crate) fn text_expr(ptr: &JsonPointer) -> String {
    text_of(&value_expr(ptr))
}

fn text_of(v: &str) -> String {
    format!("(({v} #>> '{{}}') COLLATE \"C\")")
}

/// A jsonb expression guarded to be an array (`'[]'` otherwise), for `jsonb_array_elements`.
fn as_array(v: &str) -> String {
    format!("(CASE WHEN jsonb_typeof({v}) = 'array' THEN {v} ELSE '[]'::jsonb END)")
}

/// How a property is reached.
enum Field {
    /// `_id` or `_rev`: a text column (collation "C").
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

/// Appends the SQL of `filter` (a boolean expression; NULL means no match).
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
        QueryFilter::True => "TRUE".to_string(),
        QueryFilter::False => "FALSE".to_string(),
        QueryFilter::And(items) | QueryFilter::Or(items) => {
            let (joiner, empty) = match filter {
                QueryFilter::And(_) => (" AND ", "TRUE"),
                _ => (" OR ", "FALSE"),
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
            Field::Column(_) => "TRUE".to_string(),
            // An empty array is absent, as in IDM's repositories.
            Field::Json(p) => {
                let v = value_expr(&p);
                format!(
                    "(jsonb_typeof({v}) <> 'null' AND (CASE WHEN jsonb_typeof({v}) = 'array' THEN jsonb_array_length({v}) > 0 ELSE TRUE END))"
                )
            }
        },
        QueryFilter::Compare {
            field: ptr,
            op,
            value,
        } => match field(ptr) {
            Field::Column(c) => compare(None, c, "'string'", *op, value, sql),
            Field::Json(p) => {
                let v = value_expr(&p);
                let scalar = compare(
                    Some(&v),
                    &text_of(&v),
                    &format!("jsonb_typeof({v})"),
                    *op,
                    value,
                    sql,
                );
                if scalar == "FALSE" {
                    return Ok(scalar);
                }
                let mut out = match (op, json_scalar(value)) {
                    // An array holding the value: containment, no subquery (a filter of
                    // thousands of `or`ed equalities stays cheap to plan).
                    (CompareOp::Eq, Some(json)) => {
                        let p = sql.param(json);
                        format!("({scalar} OR (jsonb_typeof({v}) = 'array' AND {v} @> {p}::jsonb)")
                    }
                    _ => {
                        let element = compare(
                            Some("je.value"),
                            &text_of("je.value"),
                            "jsonb_typeof(je.value)",
                            *op,
                            value,
                            sql,
                        );
                        format!(
                            "({scalar} OR (jsonb_typeof({v}) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements({}) AS je(value) WHERE {element}))",
                            as_array(&v)
                        )
                    }
                };
                // A field of the objects of a top-level array: any element's field matches.
                if let Some(inner) = element_field(&p) {
                    let top = path_from("body", &p.tokens()[..1]);
                    let ev = path_from("ae.value", inner.tokens());
                    let each = compare(
                        Some(&ev),
                        &text_of(&ev),
                        &format!("jsonb_typeof({ev})"),
                        *op,
                        value,
                        sql,
                    );
                    let _ = write!(
                        out,
                        " OR EXISTS (SELECT 1 FROM jsonb_array_elements({}) AS ae(value) WHERE jsonb_typeof(ae.value) = 'object' AND {each})",
                        as_array(&top)
                    );
                }
                out.push(')');
                out
            }
        },
        QueryFilter::In { field: ptr, values } => {
            if values.is_empty() {
                return Ok("FALSE".to_string());
            }
            let list = serde_json::to_string(values)
                .map_err(|e| RepoError::Internal(format!("encoding an in list: {e}")))?;
            let p = sql.param(list);
            let set = format!("(SELECT jsonb_array_elements_text({p}::jsonb))");
            match field(ptr) {
                Field::Column(c) => format!("({c} IN {set})"),
                Field::Json(ptr) => format!(
                    "({} IN {set} AND jsonb_typeof({}) = 'string')",
                    text_expr(&ptr),
                    value_expr(&ptr)
                ),
            }
        }
    })
}

/// A filter value as JSON text (`None`: not representable, a non-finite number).
fn json_scalar(value: &FilterValue) -> Option<String> {
    Some(match value {
        FilterValue::String(s) => serde_json::Value::from(s.as_str()).to_string(),
        FilterValue::Integer(i) => i.to_string(),
        FilterValue::Float(f) if f.is_finite() => serde_json::Value::from(*f).to_string(),
        FilterValue::Float(_) => return None,
        FilterValue::Bool(b) => b.to_string(),
    })
}

/// A test of a relationship field ([`RELATIONSHIP_FIELD`]): the object's id is among the
/// ids at its end of the edges that pass the test, the object being either end.
fn edge_filter(
    filter: &QueryFilter,
    ptr: &JsonPointer,
    sql: &mut Sql,
    depth: usize,
) -> Result<String, RepoError> {
    let rel = EdgeField::parse(ptr)?;
    let Some(edges) = sql.edges.clone() else {
        return Ok("FALSE".into());
    };
    let resource = sql.param(rel.resource.to_string());
    let property = sql.param(rel.property.to_string());
    let mut parts = Vec::new();
    for (me, other) in [("first", "second"), ("second", "first")] {
        let inner = rel.edge_test(filter, other)?;
        let test = filter_at(&inner, sql, depth + 1)?;
        let f = |name: &str| text_expr(&JsonPointer(vec![format!("{me}{name}")]));
        parts.push(format!(
            "id IN (SELECT {id} FROM \"{edges}\" WHERE {coll} = {resource} AND {prop} = {property} AND {test})",
            id = f("ResourceId"),
            coll = f("ResourceCollection"),
            prop = f("PropertyName"),
        ));
    }
    Ok(format!("({})", parts.join(" OR ")))
}

/// One comparison. `v` is the jsonb value (`None` for a text column), `t` its text in the
/// "C" collation, `ty` its JSON type (`'string'` for a column). Returns `"FALSE"` when the
/// operator cannot match a value of that type.
fn compare(
    v: Option<&str>,
    t: &str,
    ty: &str,
    op: CompareOp,
    value: &FilterValue,
    sql: &mut Sql,
) -> String {
    let guard = |want: &str| {
        if v.is_none() {
            String::new()
        } else {
            format!(" AND {ty} = '{want}'")
        }
    };
    let rel = match op {
        CompareOp::Eq => "=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Co | CompareOp::Sw => "",
    };
    match value {
        FilterValue::String(s) => match op {
            CompareOp::Co => {
                let p = sql.param(s.clone());
                format!("(strpos({t}, {p}) > 0{})", guard("string"))
            }
            CompareOp::Sw => {
                let lo = sql.param(s.clone());
                match prefix_successor(s) {
                    Some(hi) => {
                        let hi = sql.param(hi);
                        format!("({t} >= {lo} AND {t} < {hi}{})", guard("string"))
                    }
                    None => format!("({t} >= {lo}{})", guard("string")),
                }
            }
            _ => {
                let p = sql.param(s.clone());
                format!("({t} {rel} {p}{})", guard("string"))
            }
        },
        other => {
            let Some(v) = v else {
                return "FALSE".to_string();
            };
            if matches!(op, CompareOp::Co | CompareOp::Sw) {
                return "FALSE".to_string();
            }
            let want = match other {
                FilterValue::Bool(_) => "boolean",
                _ => "number",
            };
            let Some(json) = json_scalar(other) else {
                return "FALSE".to_string();
            };
            let p = sql.param(json);
            format!("({v} {rel} {p}::jsonb{})", guard(want))
        }
    }
}

/// One ordering component of a sort key, with the SQL type its cookie value is cast to.
pub(crate) struct Component {
    pub expr: String,
    pub cast: &'static str,
}

/// What a sort key orders by. A property sorts as the embedded store does: missing and
/// null first (ascending), then booleans and numbers (as 0/1 and numerically), then
/// strings (code point order), then arrays and objects (by their JSON text). Every
/// component is non-null, so keyset comparisons need no NULL cases.
pub(crate) fn components(ptr: &JsonPointer) -> Vec<Component> {
    match field(ptr) {
        Field::Column(c) => vec![Component {
            expr: c.to_string(),
            cast: "",
        }],
        Field::Json(p) => {
            let v = value_expr(&p);
            vec![
                Component {
                    expr: format!(
                        "(CASE jsonb_typeof({v}) WHEN 'boolean' THEN 1 WHEN 'number' THEN 1 WHEN 'string' THEN 2 WHEN 'array' THEN 3 WHEN 'object' THEN 3 ELSE 0 END)"
                    ),
                    cast: "::int",
                },
                Component {
                    expr: format!(
                        "(CASE jsonb_typeof({v}) WHEN 'number' THEN ({v} #>> '{{}}')::numeric WHEN 'boolean' THEN (CASE WHEN {v} = 'true'::jsonb THEN 1 ELSE 0 END) ELSE 0 END)"
                    ),
                    cast: "::numeric",
                },
                Component {
                    expr: format!(
                        "((CASE jsonb_typeof({v}) WHEN 'string' THEN {v} #>> '{{}}' WHEN 'array' THEN {v}::text WHEN 'object' THEN {v}::text ELSE '' END) COLLATE \"C\")"
                    ),
                    cast: "",
                },
            ]
        }
    }
}

/// Every component of `sort`, with its direction.
pub(crate) fn sort_components(sort: &[SortKey]) -> Vec<(Component, bool)> {
    sort.iter()
        .flat_map(|k| {
            components(&k.field)
                .into_iter()
                .map(move |c| (c, k.ascending))
        })
        .collect()
}

/// `ORDER BY` items for `sort`, with `id` as the final tie-breaker.
pub(crate) fn order_by(sort: &[SortKey]) -> String {
    let mut items: Vec<String> = sort_components(sort)
        .into_iter()
        .map(|(c, asc)| format!("{} {}", c.expr, if asc { "ASC" } else { "DESC" }))
        .collect();
    items.push("id ASC".to_string());
    items.join(", ")
}

/// The paging cookie, keyed by this dialect's sort key values.
pub(crate) type Cookie = crate::repo::sql_common::Cookie<String>;

/// The condition "row comes strictly after the cookie's row" in the order of `sort`
/// (then `id` ascending). Cookie values that do not parse as their component's type are a
/// bad cookie (checked by the caller before running: see [`check_cookie_values`]).
pub(crate) fn after_cookie(sort: &[SortKey], cookie: &Cookie, sql: &mut Sql) -> String {
    let mut alternatives = Vec::new();
    let mut equal_prefix: Vec<String> = Vec::new();
    for ((c, asc), value) in sort_components(sort).into_iter().zip(&cookie.keys) {
        let p = format!("{}{}", sql.param(value.clone()), c.cast);
        let mut terms = equal_prefix.clone();
        terms.push(format!("{} {} {p}", c.expr, if asc { ">" } else { "<" }));
        alternatives.push(format!("({})", terms.join(" AND ")));
        equal_prefix.push(format!("{} = {p}", c.expr));
    }
    let id = sql.param(cookie.id.clone());
    equal_prefix.push(format!("id > {id}"));
    alternatives.push(format!("({})", equal_prefix.join(" AND ")));
    format!("({})", alternatives.join(" OR "))
}

/// Cookie values of numeric components must be numbers (`::int`, `::numeric` casts would
/// fail in SQL otherwise), and no value may hold a NUL (PostgreSQL text cannot).
pub(crate) fn check_cookie_values(sort: &[SortKey], cookie: &Cookie) -> Result<(), RepoError> {
    for ((c, _), value) in sort_components(sort).into_iter().zip(&cookie.keys) {
        let ok = match c.cast {
            "::int" => value.parse::<i32>().is_ok(),
            "::numeric" => {
                let v = value.strip_prefix('-').unwrap_or(value);
                !v.is_empty()
                    && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && v.bytes().filter(|b| *b == b'.').count() <= 1
                    && v.bytes().next().is_some_and(|b| b.is_ascii_digit())
            }
            _ => true,
        };
        if !ok || value.contains('\0') {
            return Err(RepoError::BadCookie);
        }
    }
    if cookie.id.contains('\0') {
        return Err(RepoError::BadCookie);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted() {
        assert_eq!(
            value_expr(&JsonPointer::parse("/userName")),
            "(body #> '{\"userName\"}')"
        );
        assert_eq!(
            path_literal(&["it's".into(), "a\"b\\".into()]),
            "'{\"it''s\",\"a\\\"b\\\\\"}'"
        );
        assert_eq!(value_expr(&JsonPointer::parse("/")), "body");
        assert!(value_expr(&JsonPointer::parse("/a/-1")).contains("CASE WHEN"));
        assert!(!value_expr(&JsonPointer::parse("/a/1")).contains("CASE WHEN"));
    }

    #[test]
    fn numeric_cookie_values_are_checked() {
        let sort = [SortKey::parse("n").unwrap()];
        let cookie = |k: [&str; 3]| Cookie {
            query: "q".into(),
            keys: k.iter().map(|s| s.to_string()).collect(),
            id: "x".into(),
        };
        assert!(check_cookie_values(&sort, &cookie(["1", "-2.5", "t"])).is_ok());
        assert!(check_cookie_values(&sort, &cookie(["x", "0", ""])).is_err());
        assert!(check_cookie_values(&sort, &cookie(["1", "1e9", ""])).is_err());
        assert!(check_cookie_values(&sort, &cookie(["1", "0);--", ""])).is_err());
    }
}
