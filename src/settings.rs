//! Command line, environment and `gateway.json`, merged once with a written precedence:
//! file < environment < command line (clap reads `IDM_GATEWAY_*` and flags; the file fills
//! what neither gave; then the built-in defaults).

use std::path::PathBuf;

use clap::Parser;

use crate::auth::DEFAULT_ADMIN_PASSWORD;
use crate::config::{GatewayFile, LogFormat, Secret};

/// idm-gateway: reverse-proxy gateway and sync hub for ForgeRock/Ping IDM federation.
///
/// Relays /openidm/external/idm/<name>/* to the remote IDM instance defined by
/// CONF/external.idm-<name>.json (hot reloaded) and answers the rest of /openidm itself.
/// Every flag can also be given as an IDM_GATEWAY_* environment variable; flags win over the
/// environment, which wins over CONF/gateway.json.
#[derive(Debug, Clone, Parser)]
#[command(name = "idm-gateway", version, about, long_about)]
pub struct Cli {
    /// Configuration directory (external.idm-*.json, gateway.json, …); watched for changes.
    #[arg(
        long,
        env = "IDM_GATEWAY_CONF",
        value_name = "DIR",
        default_value = "conf"
    )]
    pub conf: PathBuf,

    /// Data directory (embedded store, audit logs). Created if missing.
    #[arg(
        long,
        env = "IDM_GATEWAY_DATA",
        value_name = "DIR",
        default_value = "data"
    )]
    pub data: PathBuf,

    /// Directory of PEM files: extra CAs trusted for remote instances (added to the platform
    /// roots), and by default the server certificate and key. Watched for changes.
    #[arg(
        long,
        env = "IDM_GATEWAY_CERTS",
        value_name = "DIR",
        default_value = "certs"
    )]
    pub certs: PathBuf,

    /// Plain-HTTP listen address [default: 127.0.0.1:8080, or gateway.json "listen"].
    #[arg(long, env = "IDM_GATEWAY_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,

    /// HTTPS listen address (HTTP/1.1 and HTTP/2); off unless given here or in gateway.json.
    #[arg(long, env = "IDM_GATEWAY_TLS_LISTEN", value_name = "HOST:PORT")]
    pub tls_listen: Option<String>,

    /// Server certificate chain (PEM) for --tls-listen [default: CERTS/server.pem].
    #[arg(long, env = "IDM_GATEWAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Server private key (PEM) for --tls-listen [default: CERTS/server.key].
    #[arg(long, env = "IDM_GATEWAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Log format: one line of text or one JSON object per event [default: text].
    #[arg(long, env = "IDM_GATEWAY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Worker threads of the proxy [default: number of cores].
    #[arg(long, env = "IDM_GATEWAY_THREADS")]
    pub threads: Option<usize>,

    /// Largest body of a bulk import upload (`POST /upload/csv/...`), in bytes; larger
    /// uploads are answered 413 [default: 512 MiB].
    #[arg(long, env = "IDM_GATEWAY_MAX_UPLOAD_BYTES", value_name = "BYTES")]
    pub max_upload_bytes: Option<u64>,

    /// Zero-downtime upgrade: take the listening sockets over from the running gateway
    /// (which is sent SIGQUIT once this process waits on --upgrade-sock) instead of binding.
    #[arg(long)]
    pub upgrade: bool,

    /// Unix socket the listeners are handed over on during an upgrade; the old and the new
    /// process must agree [default: DATA/upgrade.sock, or a per-data-dir name under /tmp
    /// when that path is too long for a socket].
    #[arg(long, env = "IDM_GATEWAY_UPGRADE_SOCK", value_name = "FILE")]
    pub upgrade_sock: Option<PathBuf>,

    /// Seconds a stop (SIGTERM) or an upgrade lets in-flight requests finish after the
    /// listeners closed [default: 5, or gateway.json "shutdownGraceSeconds"].
    #[arg(long, env = "IDM_GATEWAY_SHUTDOWN_GRACE_SECONDS", value_name = "SECONDS", value_parser = parse_grace)]
    pub shutdown_grace_seconds: Option<u64>,

    /// The object store: `sqlite` (embedded, in DATA) or
    /// `postgres://user:password@host:port/database` (shared by every node using it; the
    /// password may come from IDM_GATEWAY_STORE_PASSWORD instead) [default: sqlite].
    #[arg(long, env = "IDM_GATEWAY_STORE", value_name = "sqlite|URL", value_parser = parse_store, hide_env_values = true)]
    pub store: Option<StoreUrl>,

    /// This node's id in a cluster (IDM's `openidm.node.id`): unique among the gateways
    /// sharing one store [default: the host name].
    #[arg(long, env = "IDM_GATEWAY_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
}

/// `--store` as given. Never refused by the command line parser (its errors echo the value,
/// and a URL may hold a password): [`StoreUrl::kind`] checks it at start-up. Its `Debug`
/// hides the password.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct StoreUrl(Option<String>);

/// Which store a [`StoreUrl`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind<'a> {
    /// The embedded SQLite store in the data directory.
    Sqlite,
    /// PostgreSQL at this URL (with its password, if any).
    Postgres(&'a str),
}

fn parse_store(text: &str) -> Result<StoreUrl, String> {
    Ok(StoreUrl::new(text))
}

impl StoreUrl {
    /// `sqlite` (or empty) is the embedded store; anything else is a URL.
    pub fn new(text: &str) -> StoreUrl {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("sqlite") {
            StoreUrl(None)
        } else {
            StoreUrl(Some(text.to_string()))
        }
    }

    /// The store named, or why the value names none (without the value: it may hold a
    /// password).
    pub fn kind(&self) -> Result<StoreKind<'_>, String> {
        match &self.0 {
            None => Ok(StoreKind::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreKind::Postgres(url))
            }
            Some(_) => Err(
                "--store (IDM_GATEWAY_STORE) must be 'sqlite' or postgres://user:password@host:port/database"
                    .into(),
            ),
        }
    }

    /// The value with any password replaced by `***`: what messages show.
    pub fn redacted(&self) -> String {
        match &self.0 {
            None => "sqlite".into(),
            Some(text) => match url::Url::parse(text) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    let query: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if k.eq_ignore_ascii_case("password") {
                                "***".into()
                            } else {
                                v.into_owned()
                            };
                            (k.into_owned(), v)
                        })
                        .collect();
                    if !query.is_empty() {
                        url.query_pairs_mut().clear().extend_pairs(query);
                    }
                    url.to_string()
                }
                Err(_) => "(an unparsable URL)".into(),
            },
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn parse_grace(text: &str) -> Result<u64, String> {
    let seconds = text
        .parse::<u64>()
        .map_err(|_| format!("a whole number of seconds, not {text:?}"))?;
    crate::config::check_shutdown_grace(seconds)
}

/// Longest path of a unix socket (`sun_path` is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The default upgrade socket of a data directory: `DATA/upgrade.sock`, or, when that path
/// is too long for a unix socket, `/tmp/idm-gateway-<hash of DATA>.sock` (still one per
/// instance, and the same for the old and the new process).
pub fn default_upgrade_sock(data_dir: &std::path::Path) -> PathBuf {
    let data = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let inside = data.join("upgrade.sock");
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, data.as_os_str().as_encoded_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::env::temp_dir().join(format!("idm-gateway-{hex}.sock"))
}

/// The host name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`), or `node1` (IDM's default
/// `openidm.node.id`) when neither says.
pub fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node1".to_owned())
}

/// Resolved settings the server is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub conf_dir: PathBuf,
    pub data_dir: PathBuf,
    pub certs_dir: PathBuf,
    pub listen: String,
    pub tls: Option<TlsListen>,
    pub log_format: LogFormat,
    pub threads: usize,
    pub admin_password: Secret,
    /// True when nobody configured the admin password (the default is in use).
    pub admin_password_is_default: bool,
    /// `gateway.json` `queryTimeLimitSeconds` (validated when the file is loaded).
    pub query_time_limit: std::time::Duration,
    /// `gateway.json` `scripting` (validated when the file is loaded).
    pub scripting: crate::script::EngineConfig,
    /// `gateway.json` `temporalConstraintsCheckSeconds`.
    pub temporal_check: std::time::Duration,
    /// `gateway.json` `trustedProxies`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `gateway.json` `rateLimit`.
    pub rate_limit: crate::proxy::limits::RateLimitFile,
    /// `gateway.json` `loginThrottle`.
    pub login_throttle: crate::auth::LoginThrottleConfig,
    /// `gateway.json` `maxProxyBodyBytes`.
    pub max_proxy_body_bytes: u64,
    /// Largest bulk import upload body (`--max-upload-bytes`).
    pub max_upload_bytes: u64,
    /// `--upgrade`: take the listeners over from the running process.
    pub upgrade: bool,
    /// Where listeners are handed over during an upgrade.
    pub upgrade_sock: PathBuf,
    /// Drain window of a stop or an upgrade, in seconds.
    pub shutdown_grace_seconds: u64,
    /// `gateway.json` `server`.
    pub server: crate::config::ServerTuning,
    /// `--store`: the embedded SQLite store (default) or PostgreSQL.
    pub store: StoreUrl,
    /// `--node-id`: this node's id in a cluster (default the host name).
    pub node_id: String,
}

#[derive(Debug, Clone)]
pub struct TlsListen {
    pub addr: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const ADMIN_PASSWORD_ENV: &str = "IDM_GATEWAY_ADMIN_PASSWORD";

impl Settings {
    /// Applies the precedence. `admin_env` is the value of [`ADMIN_PASSWORD_ENV`].
    pub fn resolve(cli: Cli, file: GatewayFile, admin_env: Option<String>) -> Settings {
        // `GatewayFile::load` refused an invalid value; the default covers a hand-built file.
        let query_time_limit = file
            .query_time_limit()
            .unwrap_or(crate::repo::DEFAULT_QUERY_TIME_LIMIT);
        let scripting = file.scripting().unwrap_or_default();
        let trusted_proxies = file.trusted_proxies().unwrap_or_default();
        let file_grace = file
            .shutdown_grace()
            .unwrap_or(crate::config::DEFAULT_SHUTDOWN_GRACE_SECONDS);
        let temporal_check = file
            .temporal_check()
            .unwrap_or(crate::config::DEFAULT_TEMPORAL_CHECK);
        let Cli {
            conf,
            data,
            certs,
            listen,
            tls_listen,
            tls_cert,
            tls_key,
            log_format,
            threads,
            max_upload_bytes,
            upgrade,
            upgrade_sock,
            shutdown_grace_seconds,
            store,
            node_id,
        } = cli;
        let GatewayFile {
            admin_password,
            listen: file_listen,
            tls_listen: file_tls_listen,
            tls_cert: file_tls_cert,
            tls_key: file_tls_key,
            log_format: file_log_format,
            threads: file_threads,
            query_time_limit_seconds: _,
            scripting: _,
            temporal_constraints_check_seconds: _,
            trusted_proxies: _,
            rate_limit: file_rate_limit,
            login_throttle,
            max_proxy_body_bytes,
            shutdown_grace_seconds: _,
            server,
            id: _,
        } = file;
        let tls = tls_listen.or(file_tls_listen).map(|addr| TlsListen {
            addr,
            cert: tls_cert
                .or(file_tls_cert.map(PathBuf::from))
                .unwrap_or_else(|| certs.join("server.pem")),
            key: tls_key
                .or(file_tls_key.map(PathBuf::from))
                .unwrap_or_else(|| certs.join("server.key")),
        });
        let configured = admin_env.or(admin_password);
        Settings {
            listen: listen
                .or(file_listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.into()),
            tls,
            log_format: log_format.or(file_log_format).unwrap_or_default(),
            threads: threads
                .or(file_threads)
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                })
                .max(1),
            admin_password_is_default: configured.is_none(),
            admin_password: Secret::new(
                configured.unwrap_or_else(|| DEFAULT_ADMIN_PASSWORD.into()),
            ),
            upgrade,
            upgrade_sock: upgrade_sock.unwrap_or_else(|| default_upgrade_sock(&data)),
            shutdown_grace_seconds: shutdown_grace_seconds.unwrap_or(file_grace),
            server: server.unwrap_or_default(),
            store: store.unwrap_or_default(),
            node_id: node_id
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(default_node_id),
            conf_dir: conf,
            data_dir: data,
            certs_dir: certs,
            query_time_limit,
            scripting,
            temporal_check,
            trusted_proxies,
            rate_limit: file_rate_limit.unwrap_or_default(),
            login_throttle: login_throttle.unwrap_or_default(),
            max_proxy_body_bytes: max_proxy_body_bytes
                .unwrap_or(crate::proxy::DEFAULT_MAX_PROXY_BODY),
            max_upload_bytes: max_upload_bytes
                .unwrap_or(crate::csv_import::DEFAULT_MAX_UPLOAD_BYTES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_selection_and_redaction() {
        let cli = Cli::parse_from(["idm-gateway"]);
        let s = Settings::resolve(cli, GatewayFile::default(), None);
        assert_eq!(s.store.kind(), Ok(StoreKind::Sqlite));
        let url = "postgres://gw:pa55@db.example:5433/idm?password=other&sslmode=disable";
        let cli = Cli::parse_from(["idm-gateway", "--store", url]);
        let s = Settings::resolve(cli, GatewayFile::default(), None);
        assert_eq!(s.store.kind(), Ok(StoreKind::Postgres(url)));
        let shown = format!("{:?} {}", s, s.store.redacted());
        assert!(
            !shown.contains("pa55") && !shown.contains("other"),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://gw:***@db.example:5433/idm"),
            "{shown}"
        );
        assert!(shown.contains("sslmode=disable"), "{shown}");
        for v in ["SQLite", "sqlite", ""] {
            assert_eq!(StoreUrl::new(v).kind(), Ok(StoreKind::Sqlite));
        }
        // Anything else is refused at start-up, without echoing the value.
        let bad = StoreUrl::new("mysql://u:secret@h/db");
        let err = bad.kind().unwrap_err();
        assert!(
            !err.contains("secret") && err.contains("postgres://"),
            "{err}"
        );
        assert!(!format!("{bad:?}").contains("secret"));
    }

    #[test]
    fn cli_wins_over_file_which_wins_over_defaults() {
        let cli = Cli::parse_from(["idm-gateway", "--listen", "127.0.0.1:1"]);
        let file = GatewayFile {
            listen: Some("127.0.0.1:2".into()),
            tls_listen: Some("127.0.0.1:3".into()),
            log_format: Some(LogFormat::Json),
            admin_password: Some("from-file".into()),
            ..Default::default()
        };
        let s = Settings::resolve(cli, file, None);
        assert_eq!(s.listen, "127.0.0.1:1");
        let tls = s.tls.unwrap();
        assert_eq!(tls.addr, "127.0.0.1:3");
        assert_eq!(tls.cert, PathBuf::from("certs/server.pem"));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.admin_password.expose(), "from-file");
        assert!(!s.admin_password_is_default);
    }

    #[test]
    fn env_password_wins_and_default_is_flagged() {
        let cli = Cli::parse_from(["idm-gateway"]);
        let s = Settings::resolve(cli.clone(), GatewayFile::default(), None);
        assert_eq!(s.listen, DEFAULT_LISTEN);
        assert!(s.admin_password_is_default);
        assert_eq!(s.admin_password.expose(), DEFAULT_ADMIN_PASSWORD);
        let file = GatewayFile {
            admin_password: Some("file".into()),
            ..Default::default()
        };
        let s = Settings::resolve(cli, file, Some("env".into()));
        assert_eq!(s.admin_password.expose(), "env");
    }

    #[test]
    fn upgrade_flags_and_the_grace_precedence() {
        let cli = Cli::parse_from(["idm-gateway", "--data", "/var/lib/gw"]);
        let s = Settings::resolve(cli, GatewayFile::default(), None);
        assert!(!s.upgrade);
        assert_eq!(s.upgrade_sock, PathBuf::from("/var/lib/gw/upgrade.sock"));
        assert_eq!(
            s.shutdown_grace_seconds,
            crate::config::DEFAULT_SHUTDOWN_GRACE_SECONDS
        );

        let file = GatewayFile {
            shutdown_grace_seconds: Some(12),
            ..Default::default()
        };
        let cli = Cli::parse_from(["idm-gateway"]);
        let s = Settings::resolve(cli, file.clone(), None);
        assert_eq!(s.shutdown_grace_seconds, 12);
        let cli = Cli::parse_from([
            "idm-gateway",
            "--upgrade",
            "--upgrade-sock",
            "/run/gw.sock",
            "--shutdown-grace-seconds",
            "0",
        ]);
        let s = Settings::resolve(cli, file, None);
        assert!(s.upgrade);
        assert_eq!(s.upgrade_sock, PathBuf::from("/run/gw.sock"));
        assert_eq!(s.shutdown_grace_seconds, 0);
    }

    #[test]
    fn a_bad_grace_on_the_command_line_is_named() {
        let e = Cli::try_parse_from(["idm-gateway", "--shutdown-grace-seconds", "7200"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("must be from 0 to 3600 seconds, not 7200"),
            "{e}"
        );
        let e = Cli::try_parse_from(["idm-gateway", "--shutdown-grace-seconds", "soon"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a whole number of seconds"), "{e}");
    }

    #[test]
    fn a_data_dir_too_deep_for_a_socket_gets_a_socket_in_tmp() {
        let deep = PathBuf::from("/").join("d".repeat(120));
        let sock = default_upgrade_sock(&deep);
        assert!(sock.starts_with(std::env::temp_dir()), "{}", sock.display());
        assert!(sock.as_os_str().len() <= MAX_SOCKET_PATH);
        // The same data dir gives the same socket (old and new process agree); another
        // one does not.
        assert_eq!(sock, default_upgrade_sock(&deep));
        assert_ne!(sock, default_upgrade_sock(&deep.join("other")));
    }
}
