//! IDM's external services: `external/rest` (HTTP calls to other services, from REST or
//! scripts) and `external/email` (outbound mail over SMTP, plain or from
//! `emailTemplate-<name>.json` templates).
//!
//! Both read their configuration (`external.rest.json`, `external.email.json`) from the
//! live conf snapshot on every call, parsed once per file revision; a file rejected on
//! reload leaves its last good version in use ([`LastGood`]). Both are administrator
//! services: [`crate::access::authorize`] lets only administrators (and the gateway's own
//! callers, scripts included) reach them.

pub mod email;
pub mod rest;
pub mod ssrf;
pub mod template;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use email::EmailHandler;
pub use rest::RestHandler;

use crate::config::{from_env, substitute, ConfFile, ConfSnapshot};

/// Config id of `external.rest.json`.
pub const REST_CONFIG: &str = "external.rest";
/// Config id of `external.email.json`.
pub const EMAIL_CONFIG: &str = "external.email";
/// Factory of `emailTemplate-<name>.json` (config ids `emailTemplate/<name>`).
pub const TEMPLATE_FACTORY: &str = "emailTemplate";

/// The check of the conf files of this module at load (see [`crate::state::validate_conf`]):
/// `None` for files that are not ours.
pub fn validate(id: &str, doc: &Value) -> Option<Result<(), Vec<String>>> {
    Some(match id {
        REST_CONFIG => rest::RestConfig::parse(doc).map(|_| ()),
        EMAIL_CONFIG => email::EmailConfig::parse(doc).map(|_| ()),
        _ => match id.split_once('/') {
            Some((TEMPLATE_FACTORY, name)) => template::Template::parse(name, doc).map(|_| ()),
            _ => return None,
        },
    })
}

/// `doc` with its `&{NAME}` references resolved from the environment.
fn substituted(doc: &Value) -> Result<Value, Vec<String>> {
    let mut doc = doc.clone();
    let problems = substitute(&mut doc, &from_env);
    if problems.is_empty() {
        Ok(doc)
    } else {
        Err(problems)
    }
}

/// One parsed config file, re-parsed when the file changes; while the file is rejected the
/// last good parse stays in use.
pub struct LastGood<T> {
    cached: Mutex<Option<(String, Arc<T>)>>,
}

impl<T> Default for LastGood<T> {
    fn default() -> Self {
        Self {
            cached: Mutex::new(None),
        }
    }
}

impl<T> LastGood<T> {
    /// The parse of config `id` in `conf`; `None` when there is no such file (or it has
    /// never been valid).
    pub fn get(
        &self,
        conf: &ConfSnapshot,
        id: &str,
        parse: impl FnOnce(&Value) -> Result<T, Vec<String>>,
    ) -> Option<Arc<T>> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = conf.files.get(id) else {
            *cached = None;
            return None;
        };
        if let Some((rev, value)) = cached.as_ref() {
            if *rev == file.rev || !file.is_valid() {
                return Some(value.clone());
            }
        }
        let value = Arc::new(parse_valid(file, parse)?);
        *cached = Some((file.rev.clone(), value.clone()));
        Some(value)
    }
}

fn parse_valid<T>(
    file: &ConfFile,
    parse: impl FnOnce(&Value) -> Result<T, Vec<String>>,
) -> Option<T> {
    if !file.is_valid() {
        return None;
    }
    parse(file.raw.as_ref()?).ok()
}

/// `1 s`, `500 ms`: a duration as error messages show it.
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_shown_in_messages() {
        assert_eq!(show(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(show(Duration::from_secs(2)), "2 s");
    }
}
