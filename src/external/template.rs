//! Email templates, `emailTemplate-<name>.json` as IDM writes them:
//!
//! ```json
//! { "enabled": true, "from": "", "defaultLocale": "en", "mimeType": "text/html",
//!   "subject": {"en": "Your account has been created"},
//!   "message": {"en": "<p>Welcome, {{object.userName}}.</p>"} }
//! ```
//!
//! Subject and message are rendered with the `handlebars` crate (`{{object.x}}`, blocks,
//! `{{#if}}`, `{{#each}}`); values are HTML-escaped in the message of a `text/html`
//! template and nowhere else. Other fields (`displayName`, `description`, `styles`, …)
//! are accepted and ignored.

use std::collections::BTreeMap;

use handlebars::Handlebars;
use serde_json::{json, Value};

/// One parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub enabled: bool,
    /// Empty: the `from` of `external.email.json`.
    pub from: String,
    pub subject: BTreeMap<String, String>,
    pub message: BTreeMap<String, String>,
    pub default_locale: String,
    pub mime_type: String,
}

/// A rendered template.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

impl Template {
    pub fn parse(name: &str, doc: &Value) -> Result<Self, Vec<String>> {
        let Some(o) = doc.as_object() else {
            return Err(vec!["the file must contain a JSON object".into()]);
        };
        let mut problems = Vec::new();
        let text = |k: &str, problems: &mut Vec<String>| match o.get(k) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                problems.push(format!("{k}: must be a string"));
                String::new()
            }
        };
        let from = text("from", &mut problems);
        let default_locale = text("defaultLocale", &mut problems);
        let mut mime_type = text("mimeType", &mut problems);
        if mime_type.is_empty() {
            mime_type = "text/html".into();
        }
        if !matches!(mime_type.as_str(), "text/html" | "text/plain" | "text/xml") {
            problems.push(format!(
                "mimeType: '{mime_type}' is not one of text/html, text/plain, text/xml"
            ));
        }
        let enabled = match o.get("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                problems.push("enabled: must be true or false".into());
                true
            }
        };
        let subject = localized(o.get("subject"), "subject", &mut problems);
        let message = localized(o.get("message"), "message", &mut problems);
        if message.is_empty() {
            problems.push("message: must give the message in at least one locale".into());
        }
        if problems.is_empty() {
            Ok(Self {
                name: name.to_owned(),
                enabled,
                from,
                subject,
                message,
                default_locale,
                mime_type,
            })
        } else {
            Err(problems)
        }
    }

    /// Renders subject and message for the first of `locales` the template has (an exact
    /// locale, else its language: `fr-CA` → `fr`), else its `defaultLocale`, else its
    /// first locale, with `object` bound as `object`.
    pub fn render(&self, locales: &[&str], object: &Value) -> Result<Rendered, String> {
        let data = json!({ "object": object });
        let subject = match pick(&self.subject, locales, &self.default_locale) {
            Some(s) => render(s, &data, false).map_err(|e| format!("subject: {e}"))?,
            None => String::new(),
        };
        let message = pick(&self.message, locales, &self.default_locale).unwrap_or("");
        let body = render(message, &data, self.mime_type == "text/html")
            .map_err(|e| format!("message: {e}"))?;
        Ok(Rendered { subject, body })
    }
}

/// `{"en": "…", "fr": "…"}` (or one string for every locale), each checked as a template.
fn localized(v: Option<&Value>, key: &str, problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert(String::new(), s.clone());
        }
        Some(Value::Object(m)) => {
            for (locale, text) in m {
                match text.as_str() {
                    Some(t) => {
                        out.insert(locale.clone(), t.to_owned());
                    }
                    None => problems.push(format!("{key}/{locale}: must be a string")),
                }
            }
        }
        Some(_) => problems.push(format!("{key}: must be an object of locale: text")),
    }
    for (locale, text) in &out {
        if let Err(e) = handlebars::Template::compile(text) {
            let at = if locale.is_empty() {
                key.to_owned()
            } else {
                format!("{key}/{locale}")
            };
            problems.push(format!("{at}: not a valid template: {e}"));
        }
    }
    out
}

fn pick<'a>(
    texts: &'a BTreeMap<String, String>,
    locales: &[&str],
    default: &str,
) -> Option<&'a str> {
    let find = |want: &str| {
        texts.get(want).or_else(|| {
            let language = want.split(['-', '_']).next().unwrap_or(want);
            texts
                .iter()
                .find(|(l, _)| l.eq_ignore_ascii_case(want) || l.eq_ignore_ascii_case(language))
                .map(|(_, t)| t)
        })
    };
    locales
        .iter()
        .filter(|l| !l.is_empty())
        .find_map(|l| find(l))
        .or_else(|| find(default))
        .or_else(|| texts.values().next())
        .map(String::as_str)
}

fn render(text: &str, data: &Value, html: bool) -> Result<String, String> {
    let mut hb = Handlebars::new();
    if !html {
        hb.register_escape_fn(handlebars::no_escape);
    }
    hb.render_template(text, data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome() -> Template {
        Template::parse(
            "welcome",
            &json!({
                "enabled": true,
                "from": "",
                "subject": {"en": "Hello {{object.givenName}} & co", "fr": "Bonjour {{object.givenName}}"},
                "message": {
                    "en": "<p>Welcome {{object.userName}}</p>",
                    "fr": "<p>Bienvenue {{object.userName}}</p>"
                },
                "defaultLocale": "en",
                "mimeType": "text/html"
            }),
        )
        .unwrap()
    }

    #[test]
    fn renders_the_asked_locale_escaping_html_only_in_the_message() {
        let t = welcome();
        let object = json!({"userName": "<b>bjensen</b>", "givenName": "Babs"});
        let r = t.render(&["fr-CA"], &object).unwrap();
        assert_eq!(r.subject, "Bonjour Babs");
        assert_eq!(r.body, "<p>Bienvenue &lt;b&gt;bjensen&lt;/b&gt;</p>");
        let r = t.render(&["de"], &object).unwrap();
        assert_eq!(r.subject, "Hello Babs & co");
        assert!(r.body.starts_with("<p>Welcome"));
    }

    #[test]
    fn bad_templates_are_rejected_with_the_reason() {
        let problems = Template::parse(
            "x",
            &json!({"subject": {"en": "{{#if object.a}}open"}, "message": {}, "mimeType": "image/png"}),
        )
        .unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("subject/en: not a valid template")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("message: must give")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("mimeType:")),
            "{problems:?}"
        );
    }
}
