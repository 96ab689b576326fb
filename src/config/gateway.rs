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

/// Default interval of the temporal constraints' check.
pub const DEFAULT_TEMPORAL_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Default drain window of a stop or an upgrade, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 5;
/// Largest `shutdownGraceSeconds`: an hour; beyond it a stop looks like a hang.
pub const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 3_600;

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
    /// The script engine's limits and pool (gateway extra).
    pub scripting: Option<ScriptingFile>,
    /// How often temporal constraints (roles', grants') are checked for a start or end
    /// that passed (default 30 s). Gateway extra: IDM schedules a job per boundary.
    pub temporal_constraints_check_seconds: Option<f64>,
    /// Addresses or networks (`10.0.0.0/8`, `127.0.0.1`) of the proxies in front of the
    /// gateway whose `X-Forwarded-For`/`Forwarded`/`X-Forwarded-Proto` are kept (gateway
    /// extra; default none: the caller's are dropped).
    pub trusted_proxies: Option<Vec<String>>,
    /// Request rate limits per caller and per remote instance (gateway extra).
    pub rate_limit: Option<crate::proxy::limits::RateLimitFile>,
    /// Failed-login throttling and the password verification queue (gateway extra).
    pub login_throttle: Option<crate::auth::LoginThrottleConfig>,
    /// Largest request body proxied to a remote instance (gateway extra; default 64 MiB).
    pub max_proxy_body_bytes: Option<u64>,
    /// Seconds a stop (SIGTERM) or an upgrade (SIGQUIT) lets in-flight requests finish
    /// after the listeners closed (gateway extra; default [`DEFAULT_SHUTDOWN_GRACE_SECONDS`]).
    pub shutdown_grace_seconds: Option<u64>,
    /// pingora's runtime settings (gateway extra): see [`ServerTuning`].
    pub server: Option<ServerTuning>,
    #[serde(rename = "_id")]
    pub id: Option<String>,
}

/// `gateway.json` `server` (gateway extra): pingora's runtime settings that change what a
/// proxied request costs. Defaults are pingora's, except the pool (see
/// [`ServerTuning::DEFAULT_POOL`]); benches/load.sh measures each.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerTuning {
    /// One work-stealing tokio runtime for the proxy's threads (`true`, pingora's default)
    /// or one single-threaded runtime per thread (`false`): a connection stays on the
    /// thread that accepted it, with no cross-thread wake-ups, but one busy connection
    /// cannot be helped by an idle thread.
    pub work_stealing: bool,
    /// Accept loops per listening socket (pingora's `listener_tasks_per_fd`, default 1).
    pub listener_tasks_per_fd: usize,
    /// Idle keep-alive connections to the remotes kept in the pool, all instances together
    /// (pingora's `upstream_keepalive_pool_size`).
    pub upstream_keepalive_pool_size: usize,
}

impl ServerTuning {
    /// Pooled upstream connections by default: pingora's 128 is below what 64 concurrent
    /// callers on a few remotes keep busy.
    pub const DEFAULT_POOL: usize = 512;

    fn check(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.listener_tasks_per_fd) {
            return Err(format!(
                "server.listenerTasksPerFd must be from 1 to 64, not {}",
                self.listener_tasks_per_fd
            ));
        }
        if !(1..=100_000).contains(&self.upstream_keepalive_pool_size) {
            return Err(format!(
                "server.upstreamKeepalivePoolSize must be from 1 to 100000, not {}",
                self.upstream_keepalive_pool_size
            ));
        }
        Ok(())
    }
}

impl Default for ServerTuning {
    fn default() -> Self {
        Self {
            work_stealing: true,
            listener_tasks_per_fd: 1,
            upstream_keepalive_pool_size: Self::DEFAULT_POOL,
        }
    }
}

/// `gateway.json` `scripting`: `{"timeLimitMs", "memoryLimitMb", "threads"}` (gateway extra;
/// defaults 5000 ms, 64 MiB per runtime, one thread per core from 2 to 8).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptingFile {
    pub time_limit_ms: Option<u64>,
    pub memory_limit_mb: Option<u64>,
    pub threads: Option<usize>,
}

/// The bounds of a drain window, shared by `shutdownGraceSeconds` and
/// `--shutdown-grace-seconds`.
pub fn check_shutdown_grace(seconds: u64) -> Result<u64, String> {
    if seconds > MAX_SHUTDOWN_GRACE_SECONDS {
        return Err(format!(
            "must be from 0 to {MAX_SHUTDOWN_GRACE_SECONDS} seconds, not {seconds}"
        ));
    }
    Ok(seconds)
}

impl GatewayFile {
    /// The script engine's settings, checked.
    pub fn scripting(&self) -> Result<crate::script::EngineConfig, String> {
        let mut config = crate::script::EngineConfig::default();
        let Some(s) = &self.scripting else {
            return Ok(config);
        };
        if let Some(ms) = s.time_limit_ms {
            if !(1..=600_000).contains(&ms) {
                return Err(format!(
                    "scripting.timeLimitMs must be from 1 to 600000, not {ms}"
                ));
            }
            config.limits.time = std::time::Duration::from_millis(ms);
        }
        if let Some(mb) = s.memory_limit_mb {
            if !(4..=4096).contains(&mb) {
                return Err(format!(
                    "scripting.memoryLimitMb must be from 4 to 4096, not {mb}"
                ));
            }
            config.limits.memory = mb as usize * 1024 * 1024;
        }
        if let Some(n) = s.threads {
            if !(1..=64).contains(&n) {
                return Err(format!("scripting.threads must be from 1 to 64, not {n}"));
            }
            config.threads = n;
        }
        Ok(config)
    }

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
        file.scripting().map_err(|e| vec![e])?;
        file.temporal_check().map_err(|e| vec![e])?;
        file.trusted_proxies().map_err(|e| vec![e])?;
        file.shutdown_grace().map_err(|e| vec![e])?;
        if let Some(t) = &file.server {
            t.check().map_err(|e| vec![e])?;
        }
        if let Some(r) = &file.rate_limit {
            r.check().map_err(|e| vec![e])?;
        }
        if let Some(t) = &file.login_throttle {
            t.check().map_err(|e| vec![e])?;
        }
        if file.max_proxy_body_bytes == Some(0) {
            return Err(vec!["maxProxyBodyBytes must be at least 1".into()]);
        }
        Ok(file)
    }

    /// `shutdownGraceSeconds`, checked: 0 to [`MAX_SHUTDOWN_GRACE_SECONDS`].
    pub fn shutdown_grace(&self) -> Result<u64, String> {
        check_shutdown_grace(
            self.shutdown_grace_seconds
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS),
        )
        .map_err(|e| format!("shutdownGraceSeconds {e}"))
    }

    /// `trustedProxies`, parsed: a single address is a network of one.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .flatten()
            .map(|text| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("trustedProxies: '{text}' is not an address or a network like 10.0.0.0/8")
                    })
            })
            .collect()
    }

    /// `temporalConstraintsCheckSeconds`, checked: from 0.1 s to a day.
    pub fn temporal_check(&self) -> Result<std::time::Duration, String> {
        match self.temporal_constraints_check_seconds {
            None => Ok(DEFAULT_TEMPORAL_CHECK),
            Some(s) if s.is_finite() && (0.1..=86_400.0).contains(&s) => {
                Ok(std::time::Duration::from_secs_f64(s))
            }
            Some(s) => Err(format!(
                "temporalConstraintsCheckSeconds must be between 0.1 and 86400 seconds, not {s}"
            )),
        }
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
    fn shutdown_grace_is_checked() {
        let doc = |v: serde_json::Value| GatewayFile::from_document(&v);
        assert_eq!(
            doc(serde_json::json!({"shutdownGraceSeconds": 30}))
                .unwrap()
                .shutdown_grace(),
            Ok(30)
        );
        assert_eq!(
            GatewayFile::default().shutdown_grace(),
            Ok(DEFAULT_SHUTDOWN_GRACE_SECONDS)
        );
        let e = doc(serde_json::json!({"shutdownGraceSeconds": 4000})).unwrap_err();
        assert_eq!(
            e,
            vec!["shutdownGraceSeconds must be from 0 to 3600 seconds, not 4000".to_string()]
        );
        assert!(doc(serde_json::json!({"shutdownGraceSeconds": -1})).is_err());
    }

    #[test]
    fn server_tuning_is_checked() {
        let doc = |v: serde_json::Value| GatewayFile::from_document(&v);
        let g = doc(serde_json::json!({"server": {"workStealing": false}})).unwrap();
        assert_eq!(
            g.server.unwrap(),
            ServerTuning {
                work_stealing: false,
                ..ServerTuning::default()
            }
        );
        let e = doc(serde_json::json!({"server": {"listenerTasksPerFd": 0}})).unwrap_err();
        assert_eq!(
            e,
            vec!["server.listenerTasksPerFd must be from 1 to 64, not 0".to_string()]
        );
        assert!(doc(serde_json::json!({"server": {"upstreamKeepalivePoolSize": 0}})).is_err());
        assert!(doc(serde_json::json!({"server": {"threads": 2}})).is_err());
    }

    #[test]
    fn scripting_settings_are_checked() {
        let doc = |v: serde_json::Value| GatewayFile::from_document(&v);
        let g = doc(serde_json::json!({"scripting": {"timeLimitMs": 250, "memoryLimitMb": 16, "threads": 3}}))
            .unwrap();
        let c = g.scripting().unwrap();
        assert_eq!(c.limits.time, std::time::Duration::from_millis(250));
        assert_eq!(c.limits.memory, 16 * 1024 * 1024);
        assert_eq!(c.threads, 3);
        assert!(doc(serde_json::json!({"scripting": {"timeLimitMs": 0}})).is_err());
        assert!(doc(serde_json::json!({"scripting": {"memoryLimitMb": 1}})).is_err());
        assert!(doc(serde_json::json!({"scripting": {"timeLimit": 5}})).is_err());
    }

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
