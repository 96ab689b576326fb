//! PostgreSQL's SQL dialect: text values cast to each column's type, `TRUE`/`FALSE`,
//! `NULLS FIRST`/`NULLS LAST`, and values read back as text shaped by the type.

use super::*;

/// The table's columns with what PostgreSQL says of their types, and PostgreSQL's SQL:
/// text values bound as `$N::text` and cast to the column's type, `TRUE`/`FALSE`,
/// `NULLS FIRST` ascending and `NULLS LAST` descending.
pub(super) struct PgColumns {
    pub(super) base: Columns,
    /// `pg_type.typcategory`: `N` numeric, `B` boolean, `S` string, `D` date/time, ….
    pub(super) category: Vec<char>,
    /// The key column has a default (serial, identity): an insert may leave it out.
    pub(super) key_has_default: bool,
}

impl PgColumns {
    pub(super) fn ty(&self, c: usize) -> &str {
        &self.base.types[c]
    }

    /// `($n::text)::<type>`.
    pub(super) fn typed(sql: &mut Sql<Self>, v: Option<String>, ty: &str) -> String {
        format!("({})::{ty}", sql.param(v))
    }
}

impl Dialect for PgColumns {
    type Value = Option<String>;
    type Cookie = Cookie;
    const TRUE: &'static str = "TRUE";
    const FALSE: &'static str = "FALSE";
    const ASC: &'static str = "ASC NULLS FIRST";
    const DESC: &'static str = "DESC NULLS LAST";
    const ECHOES_TOKEN: bool = true;

    fn cols(&self) -> &Columns {
        &self.base
    }

    fn placeholder(n: usize) -> String {
        format!("${n}::text")
    }

    fn null() -> Option<String> {
        None
    }

    fn string(s: String) -> Option<String> {
        Some(s)
    }

    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn bind(&self, sql: &mut Sql<Self>, c: usize, v: Option<String>) -> String {
        Self::typed(sql, v, self.ty(c))
    }

    fn out(&self, expr: String) -> String {
        format!("{expr}::text")
    }

    fn contains(&self, sql: &mut Sql<Self>, c: usize, s: &str) -> String {
        let p = sql.param(Some(s.to_owned()));
        format!("(strpos({}, {p}) > 0)", self.select(c))
    }

    fn starts_with(&self, sql: &mut Sql<Self>, c: usize, s: &str) -> String {
        let p = sql.param(Some(s.to_owned()));
        format!("starts_with({}, {p})", self.select(c))
    }

    fn operand(&self, sql: &mut Sql<Self>, c: usize, value: &FilterValue) -> String {
        let (text, ty) = match value {
            FilterValue::String(s) => (s.clone(), self.ty(c)),
            FilterValue::Integer(i) => (i.to_string(), self.ty(c)),
            // A fraction against an integer column compares as numeric.
            FilterValue::Float(f) if self.category[c] == 'N' => (f.to_string(), "numeric"),
            FilterValue::Float(f) => (f.to_string(), self.ty(c)),
            FilterValue::Bool(b) => (b.to_string(), self.ty(c)),
        };
        Self::typed(sql, Some(text), ty)
    }

    fn in_list(&self, c: usize, list: &str) -> String {
        format!(
            "({} IN (SELECT json_array_elements_text(({list})::json)))",
            self.select(c)
        )
    }

    fn limit(_sql: &mut Sql<Self>, n: Option<usize>) -> String {
        n.map_or_else(|| "ALL".to_owned(), |n| n.to_string())
    }

    fn offset(_sql: &mut Sql<Self>, n: usize) -> String {
        n.to_string()
    }

    /// Shaped by the type's category.
    fn json(&self, c: usize, text: Option<String>) -> Option<Value> {
        let text = text?;
        Some(match self.category[c] {
            'N' => match text.parse::<i64>() {
                Ok(i) => json!(i),
                Err(_) => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::String(text)),
            },
            'B' => match text.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(text),
            },
            _ => Value::String(text),
        })
    }

    fn uid(v: &Option<String>) -> String {
        v.clone().unwrap_or_default()
    }

    fn key_json(v: Option<String>) -> Value {
        json!(v)
    }

    fn token_value(v: &Value) -> Option<Option<String>> {
        match v {
            Value::Null => Some(None),
            Value::String(s) => Some(Some(s.clone())),
            Value::Number(n) => Some(Some(n.to_string())),
            _ => None,
        }
    }

    fn token_key(v: &Value) -> Option<Option<String>> {
        match v {
            Value::String(k) => Some(Some(k.clone())),
            _ => None,
        }
    }

    fn cookie(values: Vec<Option<String>>) -> Cookie {
        Cookie { pg: values }
    }

    fn cookie_values(cookie: Cookie) -> Vec<Option<String>> {
        cookie.pg
    }

    fn key_shown(v: &Option<String>) -> Option<String> {
        v.clone()
    }

    fn generates_key(&self) -> bool {
        !self.key_has_default && self.category[self.base.key] == 'S'
    }

    fn password_text(v: &Option<String>) -> Option<&str> {
        v.as_deref()
    }

    /// Whether `uid` can be a value of the key column (else no row has it).
    fn key_parses(&self, uid: &str) -> bool {
        self.category[self.base.key] != 'N' || uid.trim().parse::<f64>().is_ok()
    }
}
