//! Builds and runs the pingora server from resolved [`Settings`].

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{Opt, Server};
use pingora::server::configuration::ServerConf;

use crate::auth::{CachingAuthenticator, StaticAdmin};
use crate::config::{watcher, Dirs};
use crate::metrics::Metrics;
use crate::proxy::GatewayProxy;
use crate::settings::Settings;
use crate::state::Gateway;

/// Seconds a graceful stop (SIGTERM) waits before closing listeners, and then for
/// in-flight requests: short, so container stops do not end in a kill.
const GRACE_PERIOD_SECONDS: u64 = 1;
const GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// Builds the shared state (first config load included) and the watcher.
pub fn build_gateway(settings: &Settings) -> Result<(Arc<Gateway>, watcher::WatchHandle), String> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        format!(
            "cannot create data dir {}: {e}",
            settings.data_dir.display()
        )
    })?;
    if settings.admin_password_is_default {
        tracing::warn!(
            "the openidm-admin password is the default 'openidm-admin': set adminPassword in gateway.json or IDM_GATEWAY_ADMIN_PASSWORD"
        );
    }
    let admin = StaticAdmin::new(&settings.admin_password)?;
    let auth = Arc::new(CachingAuthenticator::new(Arc::new(admin)));
    let mut certs_exclude = Vec::new();
    if let Some(tls) = &settings.tls {
        certs_exclude.push(tls.cert.clone());
    }
    certs_exclude.push(settings.certs_dir.join("server.pem"));
    let dirs = Dirs {
        conf: settings.conf_dir.clone(),
        certs: settings.certs_dir.clone(),
        certs_exclude,
    };
    let gw = Arc::new(Gateway::new(dirs.clone(), Arc::new(Metrics::new()), auth));
    let reloader = gw.clone();
    let watch = watcher::spawn(&[dirs.conf, dirs.certs], move || {
        reloader.reload();
    })
    .map_err(|e| format!("cannot watch the conf directory: {e}"))?;
    Ok((gw, watch))
}

/// Runs the gateway until it is stopped (SIGTERM: graceful; SIGINT: fast).
pub fn run(settings: Settings) -> Result<(), String> {
    if !settings.conf_dir.is_dir() {
        return Err(format!(
            "conf directory {} does not exist",
            settings.conf_dir.display()
        ));
    }
    let (gw, _watch) = build_gateway(&settings)?;

    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(GRACE_PERIOD_SECONDS),
        graceful_shutdown_timeout_seconds: Some(GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS),
        // One retry after a remote rejected a bearer token, plus one of pingora's own
        // retries of a failed reused connection.
        max_retries: 3,
        upstream_keepalive_pool_size: 512,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let mut service =
        pingora::proxy::http_proxy_service(&server.configuration, GatewayProxy::new(gw));
    service.add_tcp(&settings.listen);
    if let Some(tls) = &settings.tls {
        let cert = tls.cert.to_string_lossy();
        let key = tls.key.to_string_lossy();
        let mut tls_settings = TlsSettings::intermediate(&cert, &key)
            .map_err(|e| format!("cannot use TLS certificate {cert} / key {key}: {e}"))?;
        tls_settings.enable_h2();
        service.add_tls_with_settings(&tls.addr, None, tls_settings);
    }
    tracing::info!(
        listen = %settings.listen,
        tls_listen = settings.tls.as_ref().map(|t| t.addr.as_str()).unwrap_or("-"),
        conf = %settings.conf_dir.display(),
        threads = settings.threads,
        "idm-gateway starting"
    );
    server.add_service(service);
    server.run_forever()
}
