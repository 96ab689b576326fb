//! Privilege filters templated from the caller's own object: IDM's
//! `"filter": "stateProvince eq \"{{stateProvince}}\""` on an internal role's privilege.
//!
//! A template is the filter text with `{{field}}` placeholders. `field` is a property of the
//! caller's own managed object (`managed/user/<id>`), read as a JSON pointer like the fields
//! of a filter (`{{stateProvince}}`, `{{/address/state}}`, `{{address/state}}`; a dot is part
//! of the name, not a path separator). [`FilterTemplate::render`] writes the value in as a
//! filter literal and the result is parsed by the ordinary filter parser, so a value can
//! never change the filter's structure:
//! * a placeholder that is a whole string literal (`"{{f}}"`, `'{{f}}'`) or stands alone
//!   (`{{f}}`) becomes the value's literal of its own type: a string as an escaped JSON
//!   string, a number or a boolean as itself;
//! * a placeholder inside a longer string literal (`"{{f}}-admins"`) has the value written in
//!   with the escapes of that literal (numbers and booleans as their text).
//!
//! A missing or null field, or an array or object value, renders nothing ([`Unresolved`]):
//! the privilege then grants nothing. This module only renders text; reading the caller's
//! object and deciding what an unresolved template means belongs to the privileges.

use std::fmt;

use serde_json::Value;

use crate::crest::filter::{parse as parse_filter, JsonPointer, QueryFilter};

/// One part of a template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// Filter text, copied as is.
    Text(String),
    /// A placeholder standing for a whole literal (bare or a whole quoted string).
    Literal(JsonPointer),
    /// A placeholder inside a string literal delimited by `quote`.
    InString { field: JsonPointer, quote: char },
}

/// A parsed `filter` holding `{{field}}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterTemplate {
    text: String,
    pieces: Vec<Piece>,
}

/// Why a template gave no filter for one caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Unresolved {
    /// The field is absent or null on the caller's object.
    Missing(String),
    /// The field holds an array or an object, which has no filter literal.
    NotScalar(String),
    /// The filter with the values written in does not parse (a placeholder in a field's
    /// position, say, or a value too long for a filter). The parser's explanation is left
    /// out: it quotes the text, hence the caller's value.
    Invalid,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::Missing(field) => {
                write!(f, "the caller's object has no value for '{field}'")
            }
            Unresolved::NotScalar(field) => write!(
                f,
                "the caller's '{field}' is an array or an object, which a filter cannot hold"
            ),
            Unresolved::Invalid => {
                f.write_str("the filter with the caller's values does not parse")
            }
        }
    }
}

/// Whether `text` holds a placeholder (and is therefore a template, not a plain filter).
pub fn is_template(text: &str) -> bool {
    text.contains("{{")
}

impl FilterTemplate {
    /// Splits `text` into filter text and placeholders. Refuses an unclosed `{{`, an empty
    /// `{{}}`, a string literal left open, and a template that would not parse whatever the
    /// values (it is checked with a string in every placeholder).
    pub fn parse(text: &str) -> Result<FilterTemplate, String> {
        let mut pieces = Vec::new();
        let mut plain = String::new();
        let mut quote: Option<char> = None;
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("{{") {
                let (field, after) = placeholder(rest)?;
                if !plain.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut plain)));
                }
                pieces.push(match quote {
                    Some(quote) => Piece::InString { field, quote },
                    None => Piece::Literal(field),
                });
                rest = after;
                continue;
            }
            match quote {
                None if c == '"' || c == '\'' => {
                    // A string literal that is exactly one placeholder is replaced whole.
                    let inner = &rest[1..];
                    if inner.starts_with("{{") {
                        let (field, after) = placeholder(inner)?;
                        if let Some(after) = after.strip_prefix(c) {
                            if !plain.is_empty() {
                                pieces.push(Piece::Text(std::mem::take(&mut plain)));
                            }
                            pieces.push(Piece::Literal(field));
                            rest = after;
                            continue;
                        }
                    }
                    quote = Some(c);
                }
                Some(q) if c == '\\' => {
                    // The escaped character is copied with its backslash, whatever it is.
                    plain.push(c);
                    rest = &rest[1..];
                    match rest.chars().next() {
                        Some(next) => {
                            plain.push(next);
                            rest = &rest[next.len_utf8()..];
                        }
                        None => return Err(format!("the string opened by {q} is not closed")),
                    }
                    continue;
                }
                Some(q) if c == q => quote = None,
                _ => {}
            }
            plain.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if let Some(q) = quote {
            return Err(format!("the string opened by {q} is not closed"));
        }
        if !plain.is_empty() {
            pieces.push(Piece::Text(plain));
        }
        let template = FilterTemplate {
            text: text.to_owned(),
            pieces,
        };
        let probe = Value::String("probe".into());
        let text = template
            .render(|_| Some(&probe))
            .map_err(|e| e.to_string())?;
        parse_filter(&text)
            .map_err(|e| format!("with a string in every placeholder it does not parse: {e}"))?;
        Ok(template)
    }

    /// The template as configured.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The filter for the caller whose object is `own`.
    pub fn render_for(&self, own: &Value) -> Result<(String, QueryFilter), Unresolved> {
        let text = self.render(|field| field.resolve(own))?;
        let filter = parse_filter(&text).map_err(|_| Unresolved::Invalid)?;
        Ok((text, filter))
    }

    /// The filter text with every placeholder replaced by what `value_of` answers.
    fn render<'v>(
        &self,
        value_of: impl Fn(&JsonPointer) -> Option<&'v Value>,
    ) -> Result<String, Unresolved> {
        let mut out = String::with_capacity(self.text.len());
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Literal(field) => out.push_str(&literal(field, value_of(field))?),
                Piece::InString { field, quote } => {
                    out.push_str(&in_string(field, value_of(field), *quote)?)
                }
            }
        }
        Ok(out)
    }
}

/// `{{name}}` at the start of `text`: the field and the text after the closing braces.
fn placeholder(text: &str) -> Result<(JsonPointer, &str), String> {
    let body = &text[2..];
    let Some(end) = body.find("}}") else {
        return Err("a placeholder '{{' is not closed by '}}'".into());
    };
    let name = body[..end].trim();
    if name.is_empty() {
        return Err("a placeholder '{{}}' names no field".into());
    }
    if name.contains('{') {
        return Err(format!("the placeholder '{{{{{name}}}}}' holds a '{{'"));
    }
    Ok((JsonPointer::parse(name), &body[end + 2..]))
}

/// The filter literal of a scalar value.
fn literal(field: &JsonPointer, value: Option<&Value>) -> Result<String, Unresolved> {
    match scalar(field, value)? {
        Value::String(s) => serde_json::to_string(s).map_err(|_| Unresolved::Invalid),
        other => Ok(other.to_string()),
    }
}

/// A value written inside a string literal delimited by `quote`: the JSON escapes, plus `\'`
/// in a single-quoted literal.
fn in_string(
    field: &JsonPointer,
    value: Option<&Value>,
    quote: char,
) -> Result<String, Unresolved> {
    let quoted = literal(field, value)?;
    let inner = match scalar(field, value)? {
        Value::String(_) => quoted[1..quoted.len() - 1].to_owned(),
        _ => quoted,
    };
    Ok(if quote == '\'' {
        inner.replace('\'', "\\'")
    } else {
        inner
    })
}

fn scalar<'v>(field: &JsonPointer, value: Option<&'v Value>) -> Result<&'v Value, Unresolved> {
    let name = || field.tokens().join("/");
    match value {
        None | Some(Value::Null) => Err(Unresolved::Missing(name())),
        Some(Value::Array(_) | Value::Object(_)) => Err(Unresolved::NotScalar(name())),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::filter::{CompareOp, FilterValue, MAX_FILTER_LENGTH};
    use serde_json::json;

    fn render(template: &str, own: Value) -> Result<String, Unresolved> {
        FilterTemplate::parse(template)
            .unwrap()
            .render_for(&own)
            .map(|(text, _)| text)
    }

    #[test]
    fn idm_example_renders_the_callers_value() {
        assert_eq!(
            render(
                r#"stateProvince eq "{{stateProvince}}""#,
                json!({"stateProvince": "WA"})
            )
            .unwrap(),
            r#"stateProvince eq "WA""#
        );
    }

    #[test]
    fn values_keep_their_type() {
        let own = json!({"level": 3, "ratio": 0.5, "active": true, "name": "x"});
        for (template, rendered) in [
            ("level eq {{level}}", "level eq 3"),
            (r#"level eq "{{level}}""#, "level eq 3"),
            ("ratio lt '{{ratio}}'", "ratio lt 0.5"),
            ("active eq {{active}}", "active eq true"),
            (r#"name eq "{{name}}""#, r#"name eq "x""#),
            (r#"name eq '{{name}}'"#, r#"name eq "x""#),
            (r#"group eq "lvl-{{level}}""#, r#"group eq "lvl-3""#),
            (r#"group eq "{{name}}-{{active}}""#, r#"group eq "x-true""#),
        ] {
            assert_eq!(
                render(template, own.clone()).unwrap(),
                rendered,
                "{template}"
            );
        }
        let (_, f) = FilterTemplate::parse("level eq {{level}}")
            .unwrap()
            .render_for(&own)
            .unwrap();
        assert!(matches!(
            f,
            QueryFilter::Compare {
                op: CompareOp::Eq,
                value: FilterValue::Integer(3),
                ..
            }
        ));
    }

    #[test]
    fn nested_fields_are_pointers() {
        let own = json!({"address": {"state": "OR"}, "a.b": "dotted"});
        assert_eq!(
            render(r#"s eq "{{address/state}}""#, own.clone()).unwrap(),
            r#"s eq "OR""#
        );
        assert_eq!(
            render(r#"s eq "{{/address/state}}""#, own.clone()).unwrap(),
            r#"s eq "OR""#
        );
        assert_eq!(
            render(r#"s eq "{{ a.b }}""#, own).unwrap(),
            r#"s eq "dotted""#
        );
    }

    /// The value must stay one literal whatever it holds.
    #[test]
    fn values_cannot_change_the_filters_structure() {
        let hostile = [
            r#"x" or true or ""#,
            r#"x' or true or '"#,
            r#"x\" or true or \""#,
            "x\\",
            "x\") or (true",
            "line\nbreak \u{1}",
        ];
        for value in hostile {
            for template in [
                r#"stateProvince eq "{{stateProvince}}""#,
                "stateProvince eq '{{stateProvince}}'",
                "stateProvince eq {{stateProvince}}",
                r#"stateProvince eq "pre-{{stateProvince}}-post""#,
                "stateProvince eq 'pre-{{stateProvince}}-post'",
            ] {
                let (_, f) = FilterTemplate::parse(template)
                    .unwrap()
                    .render_for(&json!({"stateProvince": value}))
                    .unwrap_or_else(|e| panic!("{template} with {value:?}: {e}"));
                let QueryFilter::Compare {
                    field,
                    op: CompareOp::Eq,
                    value: FilterValue::String(s),
                } = f
                else {
                    panic!("{template} with {value:?} became {f:?}");
                };
                assert_eq!(field.tokens(), ["stateProvince"]);
                let expected = if template.contains("pre-") {
                    format!("pre-{value}-post")
                } else {
                    value.to_owned()
                };
                assert_eq!(s, expected, "{template}");
            }
        }
    }

    #[test]
    fn missing_null_and_structured_values_render_nothing() {
        let t = r#"stateProvince eq "{{stateProvince}}""#;
        assert_eq!(
            render(t, json!({})),
            Err(Unresolved::Missing("stateProvince".into()))
        );
        assert_eq!(
            render(t, json!({"stateProvince": null})),
            Err(Unresolved::Missing("stateProvince".into()))
        );
        assert_eq!(
            render(t, json!({"stateProvince": ["WA", "OR"]})),
            Err(Unresolved::NotScalar("stateProvince".into()))
        );
        assert_eq!(
            render(t, json!({"stateProvince": {"$crypto": {}}})),
            Err(Unresolved::NotScalar("stateProvince".into()))
        );
        // A value that makes the filter too long for the parser: no filter, no match-all.
        let long = "x".repeat(MAX_FILTER_LENGTH);
        assert_eq!(
            render(t, json!({"stateProvince": long})),
            Err(Unresolved::Invalid)
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for (template, needle) in [
            ("a eq \"{{a\"", "not closed"),
            ("a eq \"{{}}\"", "names no field"),
            ("a eq \"{{a}}", "not closed"),
            ("a eq {{a}} and", "does not parse"),
            ("a eq \"{{a{b}}\"", "holds"),
            // In a field's position the value would be a string literal.
            ("{{f}} eq 'x'", "does not parse"),
        ] {
            let e = FilterTemplate::parse(template).unwrap_err();
            assert!(e.contains(needle), "{template}: {e}");
        }
        assert!(is_template("a eq \"{{a}}\""));
        assert!(!is_template("a eq \"b\""));
    }
}
