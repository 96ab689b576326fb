//! Builds and runs the pingora server from resolved [`Settings`].

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{Opt, Server};
use pingora::server::configuration::ServerConf;

use crate::audit::{self, handler::AuditHandler, Audit};
use crate::auth::CachingAuthenticator;
use crate::config::{watcher, Dirs};
use crate::crest::Router;
use crate::crypto::Crypto;
use crate::csv_import::{CsvHandler, CsvImports};
use crate::external::{EmailHandler, RestHandler};
use crate::internal::{InternalHandler, StoreAuthenticator};
use crate::local::{ConfigHandler, FeatureHandler, InfoHandler, MetricsHandler, SchemaHandler};
use crate::managed::policy::service::PolicyHandler;
use crate::managed::ManagedHandler;
use crate::metrics::Metrics;
use crate::proxy::GatewayProxy;
use crate::remote::RemoteHandler;
use crate::repo::sqlite::SqliteRepo;
use crate::repo::Repo;
use crate::scheduler::{Scheduler, SchedulerHandler, TaskScanner, TaskScannerHandler};
use crate::script::endpoint::EndpointHandler;
use crate::script::files::FileChange;
use crate::script::filters::ScriptFilters;
use crate::script::handler::ScriptHandler;
use crate::script::ScriptEngine;
use crate::settings::Settings;
use crate::state::Gateway;
use crate::sync::{DeadLetterHandler, ReconHandler, SyncHandler, SyncService};
use crate::system::handler::SystemHandler;
use crate::system::service::SystemService;

/// Everything a running gateway is made of.
pub struct Built {
    pub gw: Arc<Gateway>,
    pub router: Arc<Router>,
    pub repo: Arc<dyn Repo>,
    pub watch: watcher::WatchHandle,
    pub scheduler: Arc<Scheduler>,
    pub engine: Arc<ScriptEngine>,
    /// The keys of `$crypto` envelopes (managed `encryption`, `openidm.encrypt`).
    pub crypto: Arc<Crypto>,
    /// Bulk import (`csv/...`, `/upload/csv/...`, `/export/csvImportFailures/...`).
    pub csv: Arc<CsvImports>,
}

/// Seconds a graceful stop (SIGTERM) waits before closing listeners, and then for
/// in-flight requests: short, so container stops do not end in a kill.
const GRACE_PERIOD_SECONDS: u64 = 1;
const GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// Opens the store (seeding it on first start), loads the conf, builds the router and
/// starts the watcher.
pub fn build_gateway(settings: &Settings) -> Result<Built, String> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        format!(
            "cannot create data dir {}: {e}",
            settings.data_dir.display()
        )
    })?;
    let crypto = Crypto::open(&settings.data_dir)?;
    let store = SqliteRepo::open(&settings.data_dir).map_err(|e| {
        format!(
            "cannot open the store in {}: {e}",
            settings.data_dir.display()
        )
    })?;
    store.set_query_time_limit(settings.query_time_limit);
    let repo: Arc<dyn Repo> = Arc::new(store);
    // Start-up work on the store runs on a short-lived runtime: pingora builds its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(crate::internal::seed(
        repo.as_ref(),
        &settings.admin_password,
        !settings.admin_password_is_default,
    ))?;
    if settings.admin_password_is_default {
        tracing::warn!(
            "the openidm-admin password is the default 'openidm-admin' unless changed in the store: set adminPassword in gateway.json or IDM_GATEWAY_ADMIN_PASSWORD"
        );
    }
    let caching = Arc::new(CachingAuthenticator::new(Arc::new(
        StoreAuthenticator::new(repo.clone()),
    )));
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
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(match audit::load(&settings.conf_dir, &settings.data_dir) {
        Ok(Some(cfg)) => Audit::start(cfg, repo.clone(), metrics.audit_dropped.clone())?,
        Ok(None) => Audit::disabled(metrics.audit_dropped.clone()),
        // As any conf file: reported, and the gateway runs (here without audit).
        Err(e) => {
            tracing::error!("{e}; nothing is audited until it is fixed and the gateway restarted");
            Audit::disabled(metrics.audit_dropped.clone())
        }
    });
    let gw = Arc::new(Gateway::new(
        dirs.clone(),
        metrics.clone(),
        caching.clone(),
        audit.clone(),
    ));
    let engine = start_engine(settings, &metrics)?;
    engine.host().set_secrets(crypto.clone());

    let mappings_gw = gw.clone();
    let sync = Arc::new(SyncService::new(
        repo.clone(),
        Arc::new(move || mappings_gw.live().mappings.clone()),
        metrics.clone(),
    ));
    sync.set_scripts(engine.clone());
    sync.set_audit(audit.clone());
    rt.block_on(sync.recover())
        .map_err(|e| format!("cannot read the reconciliation runs: {e}"))?;
    let schedules_gw = gw.clone();
    let scheduler = Arc::new(Scheduler::new(
        Arc::new(move || schedules_gw.live().schedules.clone()),
        sync.clone(),
        metrics.clone(),
    ));
    let scheduler_handler = Arc::new(SchedulerHandler {
        gw: gw.clone(),
        scheduler: scheduler.clone(),
    });
    // Managed-object writes are pushed to the targets of their mappings (implicit sync).
    let implicit = crate::sync::implicit::start(sync.clone())?;
    let schema_gw = gw.clone();
    let policy_gw = gw.clone();
    let policy = Arc::new(PolicyHandler::new(
        repo.clone(),
        Arc::new(move || policy_gw.live().managed.clone()),
    ));
    let internal_gw = gw.clone();
    let managed = Arc::new(
        ManagedHandler::new(
            repo.clone(),
            Arc::new(move || schema_gw.live().managed.clone()),
        )
        .with_hook(Arc::new(audit::Hooks(vec![
            implicit.clone() as Arc<dyn crate::events::ChangeHook>,
            Arc::new(audit::ActivityHook(audit.clone())),
        ])))
        .with_crypto(crypto.clone())
        .with_engine(engine.clone()),
    );
    rt.block_on(managed.index_all());
    crate::managed::relationships::temporal::spawn_sweeper(
        managed.notifier(),
        settings.temporal_check,
    )?;
    // System objects: REST writes are pushed like managed ones; liveSync pushes through
    // the sync service.
    let systems_gw = gw.clone();
    let systems = Arc::new(
        SystemService::new(
            Arc::new(move || systems_gw.live().systems.clone()),
            repo.clone(),
            metrics.clone(),
        )
        .with_hook(implicit.clone()),
    );
    systems.set_sink(sync.clone());
    systems.set_engine(engine.clone());
    scheduler.set_systems(systems.clone());
    let scanner_gw = gw.clone();
    let scanner = Arc::new(TaskScanner::new(
        engine.clone(),
        Arc::new(move || scanner_gw.live().schedules.clone()),
    ));
    scheduler.set_scanner(scanner.clone());
    let csv = CsvImports::new(
        gw.clone(),
        repo.clone(),
        &settings.data_dir,
        settings.max_upload_bytes,
    )?;
    rt.block_on(csv.recover())
        .map_err(|e| format!("cannot read the CSV import records: {e}"))?;
    let mut router = Router::new(crate::access::authorize);
    router
        .mount("info", Arc::new(InfoHandler(gw.clone())))
        .mount("audit", Arc::new(AuditHandler(audit.clone())))
        .mount("csv", Arc::new(CsvHandler(csv.clone())))
        .mount("config", Arc::new(ConfigHandler(gw.clone())))
        .mount(
            "schema",
            Arc::new(SchemaHandler {
                gw: gw.clone(),
                repo: repo.clone(),
            }),
        )
        .mount(
            "feature",
            Arc::new(FeatureHandler {
                gw: gw.clone(),
                repo: repo.clone(),
            }),
        )
        .mount("metrics", Arc::new(MetricsHandler(metrics)))
        .mount(
            "endpoint",
            Arc::new(EndpointHandler::new(gw.clone(), engine.clone())),
        )
        .mount(
            "script",
            Arc::new(ScriptHandler {
                engine: engine.clone(),
            }),
        )
        .mount("recon", Arc::new(ReconHandler(sync.clone())))
        .mount("sync", Arc::new(SyncHandler(sync.clone())))
        .mount(
            "repo/synchronisation/deadLetterQueue",
            Arc::new(DeadLetterHandler(repo.clone())),
        )
        .mount("scheduler/job", scheduler_handler.clone())
        .mount("scheduler", scheduler_handler)
        .mount("taskscanner", Arc::new(TaskScannerHandler(scanner.clone())))
        .mount("managed", managed)
        .mount("policy", policy)
        .mount("system", Arc::new(SystemHandler { service: systems }))
        .mount("external/idm", Arc::new(RemoteHandler::new(gw.clone())))
        .mount("external/rest", Arc::new(RestHandler::new(gw.clone())))
        .mount(
            "external/email",
            Arc::new(EmailHandler::new(gw.clone(), crypto.clone())),
        )
        .mount(
            "internal",
            Arc::new(
                InternalHandler::new(repo.clone(), Arc::new(move || caching.invalidate_all()))
                    .with_managed(Arc::new(move || internal_gw.live().managed.clone())),
            ),
        );

    router.set_filters(Arc::new(ScriptFilters::new(gw.clone(), engine.clone())));

    let reloader = gw.clone();
    let watch = watcher::spawn(&[dirs.conf, dirs.certs], move || {
        reloader.reload();
    })
    .map_err(|e| format!("cannot watch the conf directory: {e}"))?;
    let router = Arc::new(router);
    sync.set_router(&router);
    engine.host().set_router(&router);
    scanner.set_router(&router);
    csv.set_router(&router);
    spawn_scheduler(scheduler.clone())?;
    Ok(Built {
        gw,
        router,
        repo,
        watch,
        scheduler,
        engine,
        crypto,
        csv,
    })
}

/// The script engine: `file` scripts are relative to the project directory, the parent
/// of the conf directory (as IDM resolves them); reloads of script files are counted
/// with the conf reloads.
fn start_engine(settings: &Settings, metrics: &Arc<Metrics>) -> Result<Arc<ScriptEngine>, String> {
    let conf =
        std::path::absolute(&settings.conf_dir).unwrap_or_else(|_| settings.conf_dir.clone());
    let project = conf
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| conf.clone());
    let metrics = metrics.clone();
    ScriptEngine::start(
        settings.scripting,
        project,
        Box::new(move |_, change| {
            let outcome = match change {
                FileChange::Unchanged => return,
                FileChange::Applied => "applied",
                FileChange::Rejected => "rejected",
            };
            metrics.config_reloads.with_label_values(&[outcome]).inc();
        }),
    )
}

/// The scheduler loop runs on its own small runtime: `build_gateway` runs before pingora's
/// runtimes exist, and scheduled runs should not compete with request threads anyway.
fn spawn_scheduler(scheduler: Arc<Scheduler>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("scheduler")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the scheduler runtime: {e}"))?;
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || rt.block_on(scheduler.run()))
        .map_err(|e| format!("cannot start the scheduler thread: {e}"))?;
    Ok(())
}

/// Runs the gateway until it is stopped (SIGTERM: graceful; SIGINT: fast).
pub fn run(settings: Settings) -> Result<(), String> {
    if !settings.conf_dir.is_dir() {
        return Err(format!(
            "conf directory {} does not exist",
            settings.conf_dir.display()
        ));
    }
    let built = build_gateway(&settings)?;

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

    let mut service = pingora::proxy::http_proxy_service(
        &server.configuration,
        GatewayProxy::new(built.gw.clone(), built.router.clone())
            .with_csv(built.csv.clone())
            .with_trusted_proxies(settings.trusted_proxies.clone())
            .with_rate_limits(
                crate::proxy::limits::RateLimits::new(&settings.rate_limit)
                    .map_err(|e| format!("gateway.json: {e}"))?,
            ),
    );
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
