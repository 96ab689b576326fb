//! Script values in config, in IDM's form: `{"type": "text/javascript", "source": "…"}` or
//! `{"type": "text/javascript", "file": "script/x.js"}`, with optional `globals` (extra
//! variables the script sees). `file` is relative to the project directory (the parent of
//! the conf directory, as IDM resolves it).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

/// IDM's JavaScript media type. `javascript` and a missing `type` are accepted as well.
pub const JAVASCRIPT: &str = "text/javascript";

/// Where a script's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptSource {
    /// `source`: the text, checked when the config was loaded, and its
    /// [`content_hash`].
    Inline(Arc<str>, u64),
    /// `file`: relative to the project directory; read (and re-read when it changes) by
    /// the engine.
    File(PathBuf),
}

/// One script as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// How messages and logs name it: the file, or where the config holds it
    /// (`sync.json /mappings/0/onCreate`).
    pub name: Arc<str>,
    pub source: ScriptSource,
    /// `globals`: extra variables, bound before the hook's own.
    pub globals: Map<String, Value>,
}

impl Script {
    /// An inline script (tests, `/openidm/script?_action=eval`).
    pub fn inline(name: impl Into<Arc<str>>, text: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            source: {
                let text: Arc<str> = text.into();
                let hash = content_hash(&text);
                ScriptSource::Inline(text, hash)
            },
            globals: Map::new(),
        }
    }

    /// The file a `file` script names, if it is one.
    pub fn file(&self) -> Option<&std::path::Path> {
        match &self.source {
            ScriptSource::File(p) => Some(p),
            ScriptSource::Inline(..) => None,
        }
    }
}

/// Whether `v` is meant as a script: an object with a script `type`, or with `source` or
/// `file` (IDM's script object), as opposed to a declarative value of the same key.
pub fn is_script(v: &Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    match obj.get("type").and_then(Value::as_str) {
        Some(t) => t.starts_with("text/") || t == "groovy" || t == "javascript",
        None => obj.contains_key("source") || obj.contains_key("file"),
    }
}

/// Parses a script object; `name` is how messages will name it. An inline source is
/// compiled here, so a script with a syntax error is refused with the config that holds
/// it (the message gives the line and the engine's reason).
pub fn parse_script(v: &Value, name: &str) -> Result<Script, String> {
    let obj = v.as_object().ok_or_else(|| {
        format!("{name}: a script must be an object with 'type' and 'source' or 'file'")
    })?;
    match obj.get("type").map(|t| t.as_str()) {
        None | Some(Some(JAVASCRIPT)) | Some(Some("javascript")) => {}
        Some(Some("groovy")) => {
            return Err(format!(
                "{name}: Groovy scripts are not supported by this gateway; rewrite it in JavaScript (type 'text/javascript')"
            ))
        }
        Some(other) => {
            return Err(format!(
                "{name}: unsupported script type {}; use 'text/javascript'",
                other.map(str::to_owned).unwrap_or_else(|| obj["type"].to_string())
            ))
        }
    }
    let globals = match obj.get("globals") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(g)) => g.clone(),
        Some(_) => return Err(format!("{name}: 'globals' must be an object")),
    };
    let source = match (obj.get("source"), obj.get("file")) {
        (Some(_), Some(_)) => {
            return Err(format!("{name}: a script has 'source' or 'file', not both"))
        }
        (Some(Value::String(text)), None) => {
            super::runner::check_syntax(name, text).map_err(|e| e.to_string())?;
            ScriptSource::Inline(Arc::from(text.as_str()), content_hash(text))
        }
        (None, Some(Value::String(file))) => ScriptSource::File(file_path(name, file)?),
        (Some(_), None) => return Err(format!("{name}: 'source' must be a string")),
        (None, Some(_)) => return Err(format!("{name}: 'file' must be a string")),
        (None, None) => return Err(format!("{name}: a script needs 'source' or 'file'")),
    };
    Ok(Script {
        name: Arc::from(match &source {
            ScriptSource::File(p) => format!("{name} ({})", p.display()),
            ScriptSource::Inline(..) => name.to_owned(),
        }),
        source,
        globals,
    })
}

/// A `file` value: relative, without `..` (a script cannot reach outside the project).
fn file_path(name: &str, file: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(file);
    let escapes = path.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir
                | std::path::Component::RootDir
                | std::path::Component::Prefix(_)
        )
    });
    if file.is_empty() || escapes {
        return Err(format!(
            "{name}: 'file' must be a path inside the project directory (relative, no '..'): {file:?}"
        ));
    }
    Ok(path)
}

/// A stable hash of a script's text: the key of compiled code.
pub fn content_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idm_script_objects_are_recognised_and_parsed() {
        assert!(is_script(
            &json!({"type": "text/javascript", "source": "1"})
        ));
        assert!(is_script(&json!({"file": "script/x.js"})));
        assert!(!is_script(&json!({"_queryFilter": "true"})));
        assert!(!is_script(&json!("source.x")));
        let s = parse_script(
            &json!({"type": "text/javascript", "source": "source.a", "globals": {"k": 1}}),
            "sync.json /mappings/0/onCreate",
        )
        .unwrap();
        assert_eq!(
            s.source,
            ScriptSource::Inline(Arc::from("source.a"), content_hash("source.a"))
        );
        assert_eq!(s.globals["k"], json!(1));
        let f = parse_script(
            &json!({"type": "text/javascript", "file": "script/x.js"}),
            "m",
        )
        .unwrap();
        assert_eq!(f.file(), Some(std::path::Path::new("script/x.js")));
        assert_eq!(&*f.name, "m (script/x.js)");
    }

    #[test]
    fn bad_script_objects_are_refused_with_the_reason() {
        let err = |v: Value| parse_script(&v, "here").unwrap_err();
        assert!(err(json!({"type": "groovy", "source": "1"})).contains("Groovy"));
        assert!(err(json!({"type": "text/javascript"})).contains("'source' or 'file'"));
        assert!(err(json!({"source": "1", "file": "a.js"})).contains("not both"));
        assert!(err(json!({"file": "../etc/passwd"})).contains("inside the project"));
        assert!(err(json!({"file": "/etc/passwd"})).contains("inside the project"));
        let syntax = err(json!({"source": "var x = ;\n"}));
        assert!(syntax.starts_with("script here"), "{syntax}");
        assert!(syntax.contains("line 1"), "{syntax}");
        let line3 = err(json!({"source": "var a = 1;\nvar b = 2;\nif (a {\n}"}));
        assert!(line3.contains("line 3"), "{line3}");
    }
}
