//! `customAuthz` of `access.json`: a JavaScript boolean expression over IDM's helpers from
//! `router-authz.js`. Until scripts run access checks, the expressions IDM's default
//! rules use are evaluated natively: calls of known helpers with literal arguments,
//! combined with `&&`, `||`, `!` and parentheses.
//!
//! Helpers: `ownDataOnly()`, `ownRelationshipCollection([...])`, `disallowQueryExpression()`,
//! `disallowCommandAction()`, `onlyEditableManagedObjectProperties(type, [...])`,
//! `reauthIfProtectedAttributeChange()`, `restrictPatchToFields([...])`,
//! `isQueryOneOf({...})`. Helpers for features the gateway does not have (self-service,
//! workflow, UI: `checkIfAnyFeatureEnabled`, `isSelfServiceRequest`, `isMyTask`, …) and
//! any other call evaluate to false: the rule does not allow the request.

use serde_json::{Map, Value};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Call(String, Vec<Value>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// Helpers evaluated natively; other calls parse but never allow.
pub const KNOWN_HELPERS: &[&str] = &[
    "ownDataOnly",
    "ownRelationshipCollection",
    "disallowQueryExpression",
    "disallowCommandAction",
    "onlyEditableManagedObjectProperties",
    "reauthIfProtectedAttributeChange",
    "restrictPatchToFields",
    "isQueryOneOf",
];

pub fn parse(text: &str) -> Result<Expr, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let e = p.or(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected text at {}", p.i));
    }
    Ok(e)
}

impl Expr {
    /// Calls of helpers the gateway does not evaluate (they never allow).
    pub fn unknown_helpers(&self, out: &mut Vec<String>) {
        match self {
            Expr::Call(name, _) => {
                if !KNOWN_HELPERS.contains(&name.as_str()) {
                    out.push(name.clone());
                }
            }
            Expr::Not(e) => e.unknown_helpers(out),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.unknown_helpers(out);
                b.unknown_helpers(out);
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

const MAX_DEPTH: usize = 32;

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.and(depth)?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.unary(depth)?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
        }
        Ok(e)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.eat("(") {
            let e = self.or(depth + 1)?;
            if !self.eat(")") {
                return Err(format!("missing ')' at {}", self.i));
            }
            return Ok(e);
        }
        let name = self.ident()?;
        if !self.eat("(") {
            return Err(format!("expected a helper call: '{name}(…)'"));
        }
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                args.push(self.literal(0)?);
                if self.eat(")") {
                    break;
                }
                if !self.eat(",") {
                    return Err(format!("expected ',' or ')' at {}", self.i));
                }
            }
        }
        Ok(Expr::Call(name, args))
    }

    fn ident(&mut self) -> Result<String, String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'_' | b'$'))
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a helper name at {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A JavaScript literal: string ('…' or "…"), number, true/false/null, array, object
    /// (keys quoted or bare).
    fn literal(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("literal nested too deeply".into());
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'\'' | b'"') => self.string().map(Value::String),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat("]") {
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.literal(depth + 1)?);
                    if self.eat("]") {
                        return Ok(Value::Array(items));
                    }
                    if !self.eat(",") {
                        return Err(format!("expected ',' or ']' at {}", self.i));
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut map = Map::new();
                if self.eat("}") {
                    return Ok(Value::Object(map));
                }
                loop {
                    self.ws();
                    let key = match self.s.get(self.i) {
                        Some(b'\'' | b'"') => self.string()?,
                        _ => self.ident()?,
                    };
                    if !self.eat(":") {
                        return Err(format!("expected ':' at {}", self.i));
                    }
                    map.insert(key, self.literal(depth + 1)?);
                    if self.eat("}") {
                        return Ok(Value::Object(map));
                    }
                    if !self.eat(",") {
                        return Err(format!("expected ',' or '}}' at {}", self.i));
                    }
                }
            }
            _ => {
                let word = self.ident()?;
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "null" => Ok(Value::Null),
                    w => w
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| format!("'{w}' is not a literal")),
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            if c == quote {
                return String::from_utf8(out).map_err(|_| "string is not UTF-8".to_owned());
            }
            if c == b'\\' {
                if let Some(&n) = self.s.get(self.i) {
                    self.i += 1;
                    out.push(n);
                    continue;
                }
            }
            out.push(c);
        }
        Err("unterminated string".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idm_default_expressions_parse() {
        let e = parse("ownDataOnly() && onlyEditableManagedObjectProperties('user', []) && reauthIfProtectedAttributeChange()").unwrap();
        let mut unknown = Vec::new();
        e.unknown_helpers(&mut unknown);
        assert!(unknown.is_empty());
        assert_eq!(
            parse("isQueryOneOf({'managed/user': ['for-userName']}) && restrictPatchToFields(['password'])").unwrap(),
            Expr::And(
                Box::new(Expr::Call("isQueryOneOf".into(), vec![json!({"managed/user": ["for-userName"]})])),
                Box::new(Expr::Call("restrictPatchToFields".into(), vec![json!(["password"])]))
            )
        );
        let e = parse("!(isMyTask() || checkIfAnyFeatureEnabled(\"kba\"))").unwrap();
        let mut unknown = Vec::new();
        e.unknown_helpers(&mut unknown);
        assert_eq!(
            unknown,
            vec!["isMyTask".to_owned(), "checkIfAnyFeatureEnabled".to_owned()]
        );
    }

    #[test]
    fn junk_is_refused() {
        for bad in [
            "",
            "ownDataOnly",
            "ownDataOnly() &&",
            "a(",
            "a('x)",
            "a() b()",
            "a(x y)",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = format!("{}a(){}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse(&deep).is_err());
        let nots = format!("{}a()", "!".repeat(100));
        assert!(parse(&nots).is_err());
    }
}
