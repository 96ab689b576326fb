//! `conf/gateway.json`: settings of the gateway process itself. Read at start-up; the
//! command line and `IDM_GATEWAY_*` environment variables take precedence (see `settings`).

use std::path::Path;

use serde::Deserialize;

use super::{from_env, substitute, Secret};

/// Config id of `gateway.json`.
pub const GATEWAY_CONFIG: &str = "gateway";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Largest `queryTimeLimitSeconds` (a day): beyond it a query holding a store reader is a
/// mistake, not a setting.
const MAX_QUERY_TIME_LIMIT_SECONDS: f64 = 86_400.0;

/// The disk form of `gateway.json`. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayFile {
    /// Password of the `openidm-admin` caller (plain text, or an argon2 PHC string).
    pub admin_password: Option<String>,
    pub listen: Option<String>,
    pub tls_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub log_format: Option<LogFormat>,
    /// Worker threads of the proxy service (default: number of cores).
    pub threads: Option<usize>,
    /// Longest a store query may run, streaming included, before it is cancelled with a 504
    /// (default [`crate::repo::DEFAULT_QUERY_TIME_LIMIT`], 30 s). Gateway extra.
    pub query_time_limit_seconds: Option<f64>,
    #[serde(rename = "_id")]
    pub id: Option<String>,
}

impl GatewayFile {
    /// Reads `gateway.json` from the conf dir; a missing file is the empty default.
    pub fn load(conf_dir: &Path) -> Result<Self, String> {
        let path = conf_dir.join("gateway.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
        Self::from_document(&doc)
            .map_err(|problems| format!("{}: {}", path.display(), problems.join("; ")))
    }

    /// Substitutes `&{…}` references and reads the document: the one check of
    /// `gateway.json`, made at start-up and before a REST write of the `gateway` config.
    pub fn from_document(doc: &serde_json::Value) -> Result<Self, Vec<String>> {
        let mut doc = doc.clone();
        let problems = substitute(&mut doc, &from_env);
        if !problems.is_empty() {
            return Err(problems);
        }
        let file: GatewayFile = serde_json::from_value(doc).map_err(|e| vec![e.to_string()])?;
        file.query_time_limit().map_err(|e| vec![e])?;
        Ok(file)
    }

    /// `queryTimeLimitSeconds`, checked: a finite number of seconds from 0.001 to 86 400.
    pub fn query_time_limit(&self) -> Result<std::time::Duration, String> {
        match self.query_time_limit_seconds {
            None => Ok(crate::repo::DEFAULT_QUERY_TIME_LIMIT),
            Some(s) if s.is_finite() && (0.001..=MAX_QUERY_TIME_LIMIT_SECONDS).contains(&s) => {
                Ok(std::time::Duration::from_secs_f64(s))
            }
            Some(s) => Err(format!(
                "queryTimeLimitSeconds must be between 0.001 and {MAX_QUERY_TIME_LIMIT_SECONDS} seconds, not {s}"
            )),
        }
    }

    pub fn admin_password(&self) -> Option<Secret> {
        self.admin_password.clone().map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_default_and_typos_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(GatewayFile::load(tmp.path()).unwrap().listen.is_none());
        std::fs::write(tmp.path().join("gateway.json"), r#"{"lisen":"x"}"#).unwrap();
        let err = GatewayFile::load(tmp.path()).unwrap_err();
        assert!(err.contains("unknown field `lisen`"), "{err}");
        std::fs::write(
            tmp.path().join("gateway.json"),
            r#"{"adminPassword":"&{IDM_GW_TEST_UNSET_VAR|fallback}","logFormat":"json"}"#,
        )
        .unwrap();
        let g = GatewayFile::load(tmp.path()).unwrap();
        assert_eq!(g.admin_password().unwrap().expose(), "fallback");
        assert_eq!(g.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn query_time_limit_is_validated() {
        let tmp = tempfile::tempdir().unwrap();
        let g = GatewayFile::load(tmp.path()).unwrap();
        assert_eq!(
            g.query_time_limit().unwrap(),
            crate::repo::DEFAULT_QUERY_TIME_LIMIT
        );
        std::fs::write(
            tmp.path().join("gateway.json"),
            r#"{"queryTimeLimitSeconds": 2.5}"#,
        )
        .unwrap();
        let g = GatewayFile::load(tmp.path()).unwrap();
        assert_eq!(
            g.query_time_limit().unwrap(),
            std::time::Duration::from_millis(2500)
        );
        for bad in ["0", "-1", "100000", "\"30\""] {
            std::fs::write(
                tmp.path().join("gateway.json"),
                format!(r#"{{"queryTimeLimitSeconds": {bad}}}"#),
            )
            .unwrap();
            let err = GatewayFile::load(tmp.path()).unwrap_err();
            assert!(
                err.contains("queryTimeLimitSeconds") || err.contains("invalid type"),
                "{bad}: {err}"
            );
        }
    }
}
