//! IDM property substitution: `&{NAME}` and `&{NAME|default}` inside config strings,
//! resolved from environment variables so that secrets need not sit in files.
//!
//! Pure: the caller passes the lookup function, tests pass a map.

use serde_json::Value;

/// Replaces every `&{NAME}` / `&{NAME|default}` in every string of `value` (keys are left
/// alone). Returns one message per unresolved or malformed reference, with the JSON
/// pointer of the string it sits in. On error `value` may be partially substituted; callers
/// discard it.
pub fn substitute(value: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut problems = Vec::new();
    walk(value, String::new(), lookup, &mut problems);
    problems
}

fn walk(
    value: &mut Value,
    pointer: String,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    match value {
        Value::String(s) if s.contains("&{") => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(msg) => problems.push(format!("{}: {msg}", display_pointer(&pointer))),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{pointer}/{i}"), lookup, problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                walk(v, format!("{pointer}/{k}"), lookup, problems);
            }
        }
        _ => {}
    }
}

fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() {
        "/"
    } else {
        pointer
    }
}

/// Expands the references in one string.
fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("&{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated property reference '&{' (missing '}')".to_string())?;
        let reference = &after[..end];
        let (name, default) = match reference.split_once('|') {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if name.is_empty() {
            return Err("empty property name in '&{}'".into());
        }
        match lookup(name).or_else(|| default.map(str::to_owned)) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "property '{name}' is not set in the environment and has no default"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The lookup used by the running gateway: the process environment.
pub fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".into()),
            "HOST" => Some("idm.example.com".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_whole_and_embedded_references() {
        let mut v =
            json!({"password": "&{SECRET}", "url": "https://&{HOST}:8443/openidm/", "n": 1});
        assert!(substitute(&mut v, &env).is_empty());
        assert_eq!(
            v,
            json!({"password": "s3cr3t", "url": "https://idm.example.com:8443/openidm/", "n": 1})
        );
    }

    #[test]
    fn default_used_only_when_unset() {
        let mut v = json!(["&{MISSING|fallback}", "&{SECRET|x}", "&{MISSING|}"]);
        assert!(substitute(&mut v, &env).is_empty());
        assert_eq!(v, json!(["fallback", "s3cr3t", ""]));
    }

    #[test]
    fn reports_every_unresolved_reference_with_its_pointer() {
        let mut v = json!({"a": "&{NOPE}", "b": ["ok", "&{ALSO_NOPE"], "c": "&{}"});
        let problems = substitute(&mut v, &env);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("/a: property 'NOPE'"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("/b/1: unterminated"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("/c: empty property name"),
            "{problems:?}"
        );
    }

    #[test]
    fn strings_without_references_are_untouched() {
        let mut v = json!({"a": "100% &amp; {braces}"});
        assert!(substitute(&mut v, &env).is_empty());
        assert_eq!(v["a"], "100% &amp; {braces}");
    }
}
