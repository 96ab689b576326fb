//! The `_queryFilter` syntax tree: what the parser produces, the evaluator walks and the
//! store translates to SQL. A plain enum with a compact `Display` that prints valid filter
//! text (so AST → text → AST is the identity).

use std::fmt;

/// A parsed `_queryFilter`.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryFilter {
    /// `true`: matches everything.
    True,
    /// `false`: matches nothing.
    False,
    /// `a and b and …` (at least two operands once built by the parser).
    And(Vec<QueryFilter>),
    /// `a or b or …` (at least two operands once built by the parser).
    Or(Vec<QueryFilter>),
    /// `!a`.
    Not(Box<QueryFilter>),
    /// `field pr`.
    Present(JsonPointer),
    /// `field <op> value` for the standard operators.
    Compare {
        field: JsonPointer,
        op: CompareOp,
        value: FilterValue,
    },
    /// IDM's limited `in`: `field in '["a","b"]'` — the value is a string holding a JSON array
    /// of strings; matches a singleton string property equal to one of them.
    In {
        field: JsonPointer,
        values: Vec<String>,
    },
}

/// The standard comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Co,
    Sw,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
        }
    }
}

/// A literal on the right of an operator.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    String(String),
    /// Integer literal (no `.`, no exponent).
    Integer(i64),
    /// Any other number.
    Float(f64),
    Bool(bool),
}

/// A JSON pointer to a field, as reference tokens: `/name/givenName` and `name/givenName`
/// are both `["name", "givenName"]`. Tokens are stored unescaped (`~1` → `/`, `~0` → `~`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct JsonPointer(pub Vec<String>);

impl JsonPointer {
    /// Parses `/a/b` or `a/b`; an empty string or `/` is the empty pointer (the whole object).
    pub fn parse(text: &str) -> JsonPointer {
        let trimmed = text.strip_prefix('/').unwrap_or(text);
        if trimmed.is_empty() {
            return JsonPointer(Vec::new());
        }
        JsonPointer(
            trimmed
                .split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect(),
        )
    }

    pub fn tokens(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value this pointer designates in `value`, if any.
    pub fn resolve<'a>(&self, value: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        let mut cur = value;
        for token in &self.0 {
            cur = match cur {
                serde_json::Value::Object(map) => map.get(token)?,
                serde_json::Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for token in &self.0 {
            write!(f, "/{}", token.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}
