//! What a script run can end with, and its CREST form.

use std::sync::Arc;
use std::time::Duration;

use rquickjs::{Ctx, Value};
use serde_json::Value as Json;

use super::runner::{to_json, Limits};
use crate::crest::ResourceError;

#[derive(Debug, Clone, PartialEq)]
pub enum ScriptErrorKind {
    /// The text does not compile.
    Syntax,
    /// It threw (an `Error`, a string, …) without a CREST code.
    Runtime,
    /// It threw an object with a `code` (IDM's `throw {code: 400, message: …}`), or an
    /// `openidm.*` call it made failed and it did not catch that.
    Thrown {
        code: u16,
        detail: Option<Box<Json>>,
    },
    /// It ran past its time limit and was stopped.
    Timeout(Duration),
    /// It allocated past the runtime's memory limit.
    Memory(usize),
    /// The engine itself failed (no runtime, pool gone).
    Internal,
}

/// A failed run: which script, where, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptError {
    pub script: Arc<str>,
    pub line: Option<u32>,
    pub kind: ScriptErrorKind,
    pub message: String,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "script {}", self.script)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        match &self.kind {
            ScriptErrorKind::Syntax => write!(f, ": syntax error: {}", self.message),
            ScriptErrorKind::Timeout(limit) => write!(
                f,
                ": stopped after its time limit of {} ms",
                limit.as_millis()
            ),
            ScriptErrorKind::Memory(limit) => write!(
                f,
                ": stopped at its memory limit of {} MiB",
                limit / (1024 * 1024)
            ),
            _ => write!(f, ": {}", self.message),
        }
    }
}

impl std::error::Error for ScriptError {}

impl ScriptError {
    pub fn internal(script: &str, message: impl Into<String>) -> Self {
        Self {
            script: Arc::from(script),
            line: None,
            kind: ScriptErrorKind::Internal,
            message: message.into(),
        }
    }

    /// The CREST error a caller sees: a thrown code as thrown (IDM's behaviour), anything
    /// else a 500 naming the script and line.
    pub fn to_resource_error(&self) -> ResourceError {
        match &self.kind {
            ScriptErrorKind::Thrown { code, detail } => {
                let e = ResourceError::new(*code, self.message.clone());
                match detail {
                    Some(d) if !d.is_null() => e.with_detail((**d).clone()),
                    _ => e,
                }
            }
            _ => ResourceError::internal(self.to_string()),
        }
    }

    /// Reads the exception pending in `ctx` (after `e`) into an error of `script`.
    pub fn from_js(ctx: &Ctx<'_>, script: &Arc<str>, e: rquickjs::Error, limits: Limits) -> Self {
        let mut out = Self {
            script: script.clone(),
            line: None,
            kind: ScriptErrorKind::Runtime,
            message: String::new(),
        };
        if !matches!(e, rquickjs::Error::Exception) {
            out.kind = ScriptErrorKind::Internal;
            out.message = e.to_string();
            return out;
        }
        let thrown = ctx.catch();
        read_thrown(ctx, thrown, &mut out, limits);
        out
    }
}

fn read_thrown<'js>(ctx: &Ctx<'js>, thrown: Value<'js>, out: &mut ScriptError, limits: Limits) {
    let Some(obj) = thrown.as_object() else {
        out.message = match thrown.as_string() {
            Some(s) => s.to_string().unwrap_or_default(),
            None => to_json(ctx, thrown.clone())
                .map(|j| j.to_string())
                .unwrap_or_else(|_| "an exception".into()),
        };
        return;
    };
    let get_str = |k: &str| -> Option<String> {
        obj.get::<_, Value>(k)
            .ok()
            .and_then(|v| v.as_string().and_then(|s| s.to_string().ok()))
    };
    let name = get_str("name").unwrap_or_default();
    let message = get_str("message");
    out.line = get_str("stack").and_then(|s| stack_line(&s));
    let code = obj
        .get::<_, Value>("code")
        .ok()
        .and_then(|v| v.as_number())
        .filter(|c| (400.0..600.0).contains(c) && c.fract() == 0.0);
    if let Some(code) = code {
        let detail = obj
            .get::<_, Value>("detail")
            .ok()
            .and_then(|d| to_json(ctx, d).ok())
            .map(Box::new);
        out.kind = ScriptErrorKind::Thrown {
            code: code as u16,
            detail,
        };
        out.message = message.unwrap_or_else(|| crate::crest::reason_phrase(code as u16).into());
        return;
    }
    let message = message.unwrap_or_else(|| {
        to_json(ctx, thrown.clone())
            .map(|j| j.to_string())
            .unwrap_or_default()
    });
    out.kind = match (name.as_str(), message.as_str()) {
        ("InternalError", "interrupted") => ScriptErrorKind::Timeout(limits.time),
        (_, "out of memory") => ScriptErrorKind::Memory(limits.memory),
        ("SyntaxError", _) if out.line.is_some() && is_compile_frame(obj) => {
            ScriptErrorKind::Syntax
        }
        _ => ScriptErrorKind::Runtime,
    };
    out.message = if name.is_empty() || name == "Error" {
        message
    } else {
        format!("{name}: {message}")
    };
}

/// A syntax error raised while compiling has only the script's own position in its stack;
/// one raised at run time (`JSON.parse('{')`) has a frame naming a function too.
fn is_compile_frame(obj: &rquickjs::Object<'_>) -> bool {
    obj.get::<_, String>("stack")
        .map(|s| !s.contains('('))
        .unwrap_or(true)
}

/// The line of the innermost frame of a QuickJS stack (`    at f (name:3:7)` or
/// `    at name:1:9`).
fn stack_line(stack: &str) -> Option<u32> {
    let frame = stack.lines().find(|l| l.trim_start().starts_with("at "))?;
    let frame = frame.trim().trim_end_matches(')');
    let mut parts = frame.rsplitn(3, ':');
    let _col = parts.next()?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_lines_are_read_from_both_frame_forms() {
        assert_eq!(stack_line("    at name:3:9\n"), Some(3));
        assert_eq!(
            stack_line("    at <eval> (sync.json /mappings/0/onCreate:12:5)\n"),
            Some(12)
        );
        assert_eq!(stack_line("no frames"), None);
    }
}
