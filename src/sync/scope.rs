//! The filters of a mapping as IDM evaluates them: on a *scope object*, never on the bare
//! source or target, and `${source.…}` templates filled into a parsed filter tree.
//!
//! * **Scopes** (idm-model-and-scripts.md §3.2, §4.3): `sourceCondition` and `validSource` see
//!   `{"source": <source>, "linkQualifier": …}`, `validTarget` sees `{"target": <target>,
//!   "linkQualifier": …}`, a property `condition` sees `{"object": <source>, "source":
//!   <source>, "linkQualifier": …}`, a policy `condition` sees `{"object": <source>,
//!   "linkQualifier": …}`. So IDM's documented `"/source/accountStatus eq
//!   \"active\""` is the form that works; a pointer outside the scope (`/accountStatus`)
//!   could never match, and such a filter is refused when the mapping is loaded
//!   ([`FilterScope::check`]) rather than silently disqualifying every object.
//! * **Templates** ([`FilterTemplate`]): a correlation `_queryFilter` with placeholders is
//!   parsed once, at load, with each placeholder a value slot of the tree; rendering fills
//!   the slots with values. Data never becomes filter text, so a value such as
//!   `x' or userName eq 'admin` stays one string.
//!
//! Pure: no I/O.

use serde_json::{Map, Value};

use crate::crest::filter::{self, FilterValue, JsonPointer, QueryFilter};

use super::mapping::DEFAULT_LINK_QUALIFIER;

/// Which scope object a mapping filter is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterScope {
    /// `sourceCondition`, `validSource`: `{source, linkQualifier}`.
    Source,
    /// `validTarget`: `{target, linkQualifier}`.
    Target,
    /// A property `condition`: `{object, source, linkQualifier}` (`object` is the source).
    Property,
    /// A policy `condition`: `{object, linkQualifier}` (`object` is the source, `null` when
    /// there is none).
    Policy,
}

impl FilterScope {
    /// The top-level names of the scope object; the first is the one the object is bound to
    /// in IDM's documentation examples.
    pub fn roots(self) -> &'static [&'static str] {
        match self {
            FilterScope::Source => &["source", "linkQualifier"],
            FilterScope::Target => &["target", "linkQualifier"],
            FilterScope::Property => &["object", "source", "linkQualifier"],
            FilterScope::Policy => &["object", "linkQualifier"],
        }
    }

    /// The scope object for `object`.
    pub fn bind(self, object: &Value) -> Value {
        let mut scope = Map::new();
        for root in self.roots() {
            let value = match *root {
                "linkQualifier" => Value::String(DEFAULT_LINK_QUALIFIER.to_owned()),
                _ => object.clone(),
            };
            scope.insert((*root).to_owned(), value);
        }
        Value::Object(scope)
    }

    /// `filter` evaluated on the scope of `object`.
    pub fn matches(self, filter: &QueryFilter, object: &Value) -> bool {
        filter.matches(&self.bind(object))
    }

    /// Refuses a filter with a pointer outside the scope (it could never match): the
    /// message names the setting and `mapping`, the pointers, and gives IDM's form.
    pub fn check(self, filter: &QueryFilter, setting: &str, mapping: &str) -> Result<(), String> {
        let roots = self.roots();
        let mut outside = Vec::new();
        for_each_pointer(filter, &mut |p| {
            let inside = p
                .tokens()
                .first()
                .is_some_and(|t| roots.contains(&t.as_str()));
            if !inside && !outside.contains(p) {
                outside.push(p.clone());
            }
        });
        if outside.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = outside.iter().map(|p| format!("'{p}'")).collect();
        let scope: Vec<String> = roots.iter().map(|r| format!("\"{r}\": …")).collect();
        let idm_form = prefixed(filter, roots, roots[0]);
        Err(format!(
            "{setting}: {} cannot match anything: mapping '{mapping}' evaluates this filter on \
             {{{}}}, as IDM does; write it in IDM's form: {idm_form}",
            listed.join(", "),
            scope.join(", ")
        ))
    }
}

/// Calls `f` with every field pointer of `filter`.
fn for_each_pointer(filter: &QueryFilter, f: &mut impl FnMut(&JsonPointer)) {
    match filter {
        QueryFilter::True | QueryFilter::False => {}
        QueryFilter::And(items) | QueryFilter::Or(items) => {
            items.iter().for_each(|i| for_each_pointer(i, f))
        }
        QueryFilter::Not(inner) => for_each_pointer(inner, f),
        QueryFilter::Present(field)
        | QueryFilter::Compare { field, .. }
        | QueryFilter::In { field, .. } => f(field),
    }
}

/// `filter` with `root` put in front of every pointer that is outside `roots`.
fn prefixed(filter: &QueryFilter, roots: &[&str], root: &str) -> QueryFilter {
    let fix = |p: &JsonPointer| {
        if p.tokens()
            .first()
            .is_some_and(|t| roots.contains(&t.as_str()))
        {
            p.clone()
        } else {
            let mut tokens = vec![root.to_owned()];
            tokens.extend(p.tokens().iter().cloned());
            JsonPointer(tokens)
        }
    };
    match filter {
        QueryFilter::True => QueryFilter::True,
        QueryFilter::False => QueryFilter::False,
        QueryFilter::And(items) => {
            QueryFilter::And(items.iter().map(|i| prefixed(i, roots, root)).collect())
        }
        QueryFilter::Or(items) => {
            QueryFilter::Or(items.iter().map(|i| prefixed(i, roots, root)).collect())
        }
        QueryFilter::Not(inner) => QueryFilter::Not(Box::new(prefixed(inner, roots, root))),
        QueryFilter::Present(field) => QueryFilter::Present(fix(field)),
        QueryFilter::Compare { field, op, value } => QueryFilter::Compare {
            field: fix(field),
            op: *op,
            value: value.clone(),
        },
        QueryFilter::In { field, values } => QueryFilter::In {
            field: fix(field),
            values: values.clone(),
        },
    }
}

/// Marks a placeholder written inside a quoted string: its value is filled in as text.
const TEXT_SLOT: char = '\u{F8FF}';
/// Marks a placeholder written bare (`age eq ${source.age}`): its value keeps its JSON type.
const TYPED_SLOT: char = '\u{F8FE}';

/// A `_queryFilter` whose values may hold `${source}` / `${source.a.b}` placeholders, parsed
/// once with each placeholder a value slot.
///
/// A placeholder inside quotes (`mail eq "${source.mail}"`, `cn sw "${source.sn}, "`) is
/// filled with the value's text; a bare one (`age eq ${source.age}`) takes the value's JSON
/// type (string, number or boolean). Placeholders stand for values only: one in a field
/// position is refused at load.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterTemplate {
    tree: QueryFilter,
    slots: Vec<JsonPointer>,
}

impl FilterTemplate {
    pub fn parse(text: &str) -> Result<FilterTemplate, String> {
        if text.contains(TEXT_SLOT) || text.contains(TYPED_SLOT) {
            return Err("the characters U+F8FE and U+F8FF are reserved in a template".into());
        }
        let mut marked = String::with_capacity(text.len());
        let mut slots = Vec::new();
        let mut quote: Option<char> = None;
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c == '$' && rest[1..].starts_with('{') {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unterminated placeholder in '{text}'"))?;
                slots.push(placeholder(rest[2..end].trim())?);
                let n = slots.len() - 1;
                match quote {
                    Some(_) => marked.push_str(&format!("{TEXT_SLOT}{n}{TEXT_SLOT}")),
                    None => marked.push_str(&format!("\"{TYPED_SLOT}{n}{TYPED_SLOT}\"")),
                }
                rest = &rest[end + 1..];
                continue;
            }
            marked.push(c);
            rest = &rest[c.len_utf8()..];
            match (quote, c) {
                (Some(_), '\\') => {
                    // The escaped character is copied as is, whatever it is.
                    if let Some(next) = rest.chars().next() {
                        marked.push(next);
                        rest = &rest[next.len_utf8()..];
                    }
                }
                (Some(q), c) if c == q => quote = None,
                (None, '"' | '\'') => quote = Some(c),
                _ => {}
            }
        }
        let tree = filter::parse(&marked).map_err(|e| {
            format!(
                "not a valid _queryFilter (placeholders stand for values only): {}",
                e.to_string().replace([TEXT_SLOT, TYPED_SLOT], "")
            )
        })?;
        let mut in_field = false;
        for_each_pointer(&tree, &mut |p| {
            in_field |= p
                .tokens()
                .iter()
                .any(|t| t.contains(TEXT_SLOT) || t.contains(TYPED_SLOT));
        });
        if in_field {
            return Err("placeholders stand for values, not for field names".into());
        }
        Ok(FilterTemplate { tree, slots })
    }

    /// The filter for `source`: every slot filled with its value. `None` when a value is
    /// missing or is not a string, number or boolean (no candidate).
    pub fn render(&self, source: &Value) -> Option<QueryFilter> {
        let values = self
            .slots
            .iter()
            .map(|p| p.resolve(source))
            .collect::<Option<Vec<&Value>>>()?;
        fill(&self.tree, &values)
    }
}

/// `source` or `source.a.b` → the pointer into the source.
pub(super) fn placeholder(name: &str) -> Result<JsonPointer, String> {
    match name.strip_prefix("source") {
        Some("") => Ok(JsonPointer::default()),
        Some(p) if p.starts_with('.') && p.len() > 1 => {
            Ok(JsonPointer(p[1..].split('.').map(str::to_owned).collect()))
        }
        _ => Err(format!(
            "placeholder '${{{name}}}' must name a source property, like ${{source.mail}}"
        )),
    }
}

fn fill(f: &QueryFilter, values: &[&Value]) -> Option<QueryFilter> {
    let all = |items: &[QueryFilter]| {
        items
            .iter()
            .map(|i| fill(i, values))
            .collect::<Option<Vec<_>>>()
    };
    Some(match f {
        QueryFilter::True | QueryFilter::False | QueryFilter::Present(_) => f.clone(),
        QueryFilter::And(items) => QueryFilter::And(all(items)?),
        QueryFilter::Or(items) => QueryFilter::Or(all(items)?),
        QueryFilter::Not(inner) => QueryFilter::Not(Box::new(fill(inner, values)?)),
        QueryFilter::Compare { field, op, value } => QueryFilter::Compare {
            field: field.clone(),
            op: *op,
            value: match value {
                FilterValue::String(s) => fill_value(s, values)?,
                other => other.clone(),
            },
        },
        QueryFilter::In { field, values: vs } => QueryFilter::In {
            field: field.clone(),
            values: vs
                .iter()
                .map(|v| fill_text(v, values))
                .collect::<Option<Vec<_>>>()?,
        },
    })
}

/// A string literal of the tree: a typed slot, or text with text slots.
fn fill_value(s: &str, values: &[&Value]) -> Option<FilterValue> {
    if let Some(n) = s
        .strip_prefix(TYPED_SLOT)
        .and_then(|r| r.strip_suffix(TYPED_SLOT))
    {
        let value = values.get(n.parse::<usize>().ok()?)?;
        return match value {
            Value::String(s) => Some(FilterValue::String(s.clone())),
            Value::Bool(b) => Some(FilterValue::Bool(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(FilterValue::Integer(i)),
                None => n.as_f64().map(FilterValue::Float),
            },
            _ => None,
        };
    }
    fill_text(s, values).map(FilterValue::String)
}

/// `s` with each text slot replaced by its value's text.
fn fill_text(s: &str, values: &[&Value]) -> Option<String> {
    if !s.contains(TEXT_SLOT) {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    for (i, part) in s.split(TEXT_SLOT).enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
            continue;
        }
        match values.get(part.parse::<usize>().ok()?)? {
            Value::String(v) => out.push_str(v),
            v @ (Value::Number(_) | Value::Bool(_)) => out.push_str(&v.to_string()),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_bind_the_object_under_idm_s_names() {
        let user = json!({"accountStatus": "active"});
        let f = filter::parse("/source/accountStatus eq \"active\"").unwrap();
        assert!(FilterScope::Source.matches(&f, &user));
        // The bare form never matches on the scope object: refused at load instead.
        let bare = filter::parse("accountStatus eq \"active\"").unwrap();
        assert!(!FilterScope::Source.matches(&bare, &user));
        let t =
            filter::parse("/target/accountStatus pr and /linkQualifier eq \"default\"").unwrap();
        assert!(FilterScope::Target.matches(&t, &user));
        let p = filter::parse("/object/accountStatus pr and /source/accountStatus pr").unwrap();
        assert!(FilterScope::Property.matches(&p, &user));
        assert!(!FilterScope::Source.matches(&p, &user));
    }

    #[test]
    fn a_pointer_outside_the_scope_is_refused_with_idm_s_form() {
        let cases = [
            (
                FilterScope::Source,
                "accountStatus eq \"active\"",
                "'sourceCondition': '/accountStatus' cannot match anything: mapping 'u2o' \
                 evaluates this filter on {\"source\": …, \"linkQualifier\": …}, as IDM does; \
                 write it in IDM's form: /source/accountStatus eq \"active\"",
            ),
            (
                FilterScope::Target,
                "/mail pr and !(/source/x eq 1) or /linkQualifier eq \"default\"",
                "'validTarget': '/mail', '/source/x' cannot match anything: mapping 'u2o' \
                 evaluates this filter on {\"target\": …, \"linkQualifier\": …}, as IDM does; \
                 write it in IDM's form: /target/mail pr and !/target/source/x eq 1 or \
                 /linkQualifier eq \"default\"",
            ),
            (
                FilterScope::Property,
                "copyMe eq true",
                "'condition': '/copyMe' cannot match anything: mapping 'u2o' evaluates this \
                 filter on {\"object\": …, \"source\": …, \"linkQualifier\": …}, as IDM does; \
                 write it in IDM's form: /object/copyMe eq true",
            ),
        ];
        for (scope, text, message) in cases {
            let f = filter::parse(text).unwrap();
            let setting = match scope {
                FilterScope::Source => "'sourceCondition'",
                FilterScope::Target => "'validTarget'",
                FilterScope::Property | FilterScope::Policy => "'condition'",
            };
            assert_eq!(scope.check(&f, setting, "u2o").unwrap_err(), message);
        }
        for (scope, ok) in [
            (FilterScope::Source, "/source/a eq 1 and /linkQualifier pr"),
            (FilterScope::Source, "true"),
            (FilterScope::Target, "!(/target/a pr)"),
            (FilterScope::Property, "/object/a pr or /source/b pr"),
        ] {
            let f = filter::parse(ok).unwrap();
            assert_eq!(scope.check(&f, "'x'", "m"), Ok(()), "{ok}");
        }
    }

    #[test]
    fn templates_fill_values_into_the_tree_never_into_text() {
        let t = FilterTemplate::parse(
            "mail eq \"${source.mail}\" and name/given eq '${source.name.given}'",
        )
        .unwrap();
        let hostile = [
            "x' or userName eq 'admin",
            "x\" or true or \"",
            "a\"b\\c@x",
            ") or (true",
        ];
        for value in hostile {
            let source = json!({"mail": value, "name": {"given": "Ann"}});
            let f = t.render(&source).unwrap();
            // One comparison per placeholder, the value intact, whatever it holds.
            let expect = QueryFilter::And(vec![
                QueryFilter::Compare {
                    field: JsonPointer::parse("mail"),
                    op: filter::CompareOp::Eq,
                    value: FilterValue::String(value.into()),
                },
                QueryFilter::Compare {
                    field: JsonPointer::parse("name/given"),
                    op: filter::CompareOp::Eq,
                    value: FilterValue::String("Ann".into()),
                },
            ]);
            assert_eq!(f, expect, "{value}");
            // Its text, as sent to a handler, reads back as the same tree.
            assert_eq!(filter::parse(&f.to_string()).unwrap(), expect, "{value}");
            assert!(!f.matches(&json!({"userName": "admin", "mail": "other"})));
        }
        assert_eq!(t.render(&json!({"mail": "m"})), None, "a missing value");
        assert_eq!(
            t.render(&json!({"mail": {"o": 1}, "name": {"given": "A"}})),
            None,
            "an object value"
        );
    }

    #[test]
    fn bare_placeholders_keep_their_type_and_quoted_ones_are_text() {
        let t = FilterTemplate::parse(
            "age eq ${source.age} and active eq ${source.on} and cn eq \"${source.sn}, ${source.gn}\" and code eq \"${source.age}\"",
        )
        .unwrap();
        let f = t
            .render(&json!({"age": 42, "on": true, "sn": "Lee", "gn": "Ann"}))
            .unwrap();
        assert_eq!(
            f.to_string(),
            "/age eq 42 and /active eq true and /cn eq \"Lee, Ann\" and /code eq \"42\""
        );
        let f = t
            .render(&json!({"age": "x or true", "on": 1.5, "sn": "", "gn": "\\"}))
            .unwrap();
        assert_eq!(
            f.to_string(),
            "/age eq \"x or true\" and /active eq 1.5 and /cn eq \", \\\\\" and /code eq \"x or true\""
        );
    }

    #[test]
    fn template_errors() {
        for (text, message) in [
            ("${source.attr} eq \"x\"", "placeholders stand for values"),
            ("mail eq \"${source.mail\"", "unterminated placeholder"),
            ("mail eq \"${target.mail}\"", "must name a source property"),
            ("mail eq", "not a valid _queryFilter"),
            ("mail eq \"\u{F8FF}\"", "reserved"),
        ] {
            let e = FilterTemplate::parse(text).unwrap_err();
            assert!(e.contains(message), "{text}: {e}");
        }
        // An escaped quote does not end the string the placeholder is in.
        let t = FilterTemplate::parse(r#"cn eq "a\"${source.x}""#).unwrap();
        assert_eq!(
            t.render(&json!({"x": "b"})).unwrap().to_string(),
            r#"/cn eq "a\"b""#
        );
    }
}
