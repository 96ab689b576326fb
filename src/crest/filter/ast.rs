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

    /// The value this pointer designates in `value`, if any. A token is an object key, or
    /// an array position when the value there is an array ([`array_index`]).
    pub fn resolve<'a>(&self, value: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        let mut cur = value;
        for token in &self.0 {
            cur = match cur {
                serde_json::Value::Object(map) => map.get(token)?,
                serde_json::Value::Array(items) => items.get(array_index(token)?)?,
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

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for FilterValue {
    /// Strings as JSON strings (double quotes, backslash escapes); floats always with a `.`
    /// or an exponent so that they read back as floats, not integers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterValue::String(s) => write_quoted(f, s),
            FilterValue::Integer(i) => write!(f, "{i}"),
            // `Debug` is the shortest text that reads back as the same f64 and always has a
            // `.` or an exponent (`1.0`, `1e20`), unlike `Display` (`1`, `100000000000000000000`).
            FilterValue::Float(x) => write!(f, "{x:?}"),
            FilterValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A JSON string literal: valid filter syntax, escapes included.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    match serde_json::to_string(s) {
        Ok(quoted) => f.write_str(&quoted),
        Err(_) => Err(fmt::Error),
    }
}

impl QueryFilter {
    /// A condition that needs no parentheses after `!`.
    fn is_leaf(&self) -> bool {
        !matches!(
            self,
            QueryFilter::And(_) | QueryFilter::Or(_) | QueryFilter::Not(_)
        )
    }

    /// Writes `items` joined by `keyword`, parenthesising the children for which `wrap` holds.
    fn write_joined(
        f: &mut fmt::Formatter<'_>,
        items: &[QueryFilter],
        keyword: &str,
        wrap: fn(&QueryFilter) -> bool,
    ) -> fmt::Result {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                write!(f, " {keyword} ")?;
            }
            if wrap(item) {
                write!(f, "({item})")?;
            } else {
                write!(f, "{item}")?;
            }
        }
        Ok(())
    }
}

/// Filter text that parses back to the same tree, with only the parentheses the tree needs:
/// `and` binds tighter than `or`, and a nested `and` in an `and` (or `or` in an `or`) keeps
/// its parentheses because the parser does not merge parenthesised groups. Fields print as
/// `/pointer`, strings as JSON strings, `!` is followed by a leaf or a parenthesised group.
///
/// The round trip holds for every tree the parser builds. A hand-built tree can step outside
/// the syntax: an `And`/`Or` with fewer than two operands prints as `true`/`false`/its only
/// operand, a NaN or infinite float prints as `NaN`/`inf`, a pointer token holding
/// whitespace, a parenthesis or a quote has no filter spelling, and the pointer made of one
/// empty token prints as `/`, which reads back as the empty pointer.
impl fmt::Display for QueryFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryFilter::True => f.write_str("true"),
            QueryFilter::False => f.write_str("false"),
            QueryFilter::And(items) if items.is_empty() => f.write_str("true"),
            QueryFilter::Or(items) if items.is_empty() => f.write_str("false"),
            QueryFilter::And(items) => Self::write_joined(f, items, "and", |child| {
                matches!(child, QueryFilter::And(_) | QueryFilter::Or(_))
            }),
            QueryFilter::Or(items) => {
                Self::write_joined(f, items, "or", |child| matches!(child, QueryFilter::Or(_)))
            }
            QueryFilter::Not(inner) if inner.is_leaf() => write!(f, "!{inner}"),
            QueryFilter::Not(inner) => write!(f, "!({inner})"),
            QueryFilter::Present(field) => write!(f, "{field} pr"),
            QueryFilter::Compare { field, op, value } => write!(f, "{field} {op} {value}"),
            QueryFilter::In { field, values } => {
                let array = serde_json::to_string(values).map_err(|_| fmt::Error)?;
                write!(f, "{field} in ")?;
                write_quoted(f, &array)
            }
        }
    }
}

/// The array position a pointer token names (RFC 6901: `0`, or digits without a leading
/// zero); `None` for any other token, which can only be an object key.
pub fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0"
        || (!token.is_empty()
            && !token.starts_with('0')
            && token.bytes().all(|b| b.is_ascii_digit()));
    if canonical {
        token.parse().ok()
    } else {
        None
    }
}
