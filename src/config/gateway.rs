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
        serde_json::from_value(doc).map_err(|e| vec![e.to_string()])
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
}
