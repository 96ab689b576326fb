//! Builds and runs the pingora server from resolved [`Settings`].

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{Opt, Server};
use pingora::server::configuration::ServerConf;
use pingora::server::ExecutionPhase;

use crate::access::privileges::{PrivilegeHandler, Privileges};
use crate::access::reauth::AccessGuard;
use crate::audit::{self, handler::AuditHandler, Audit};
use crate::auth::{AccountChanges, Authn, Reauthentication};
use crate::cluster::{Cluster, ClusterConfig, ClusterHandler, SharedConfig};
use crate::config::{watcher, Dirs};
use crate::crest::Router;
use crate::crypto::Crypto;
use crate::csv_import::{CsvHandler, CsvImports};
use crate::external::{EmailHandler, RestHandler};
use crate::internal::InternalHandler;
use crate::lifecycle::{self, Drain, InstanceLock};
use crate::local::{
    AuthenticationHandler, ConfigHandler, FeatureHandler, InfoHandler, MetricsHandler,
    SchemaHandler,
};
use crate::managed::policy::service::PolicyHandler;
use crate::managed::relationships::notify::Notifier;
use crate::managed::ManagedHandler;
use crate::metrics::Metrics;
use crate::proxy::GatewayProxy;
use crate::remote::RemoteHandler;
use crate::repo::postgres::PgRepo;
use crate::repo::sqlite::SqliteRepo;
use crate::repo::Repo;
use crate::scheduler::{
    Scheduler, SchedulerHandler, TaskScanner, TaskScannerHandler, TriggerHandler,
};
use crate::script::endpoint::EndpointHandler;
use crate::script::files::FileChange;
use crate::script::filters::ScriptFilters;
use crate::script::handler::ScriptHandler;
use crate::script::ScriptEngine;
use crate::settings::{Settings, StoreKind};
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
    /// Set when this process drains; the background writers stop starting work.
    pub drain: Drain,
    /// The temporal constraints' check, started with the scheduler.
    temporal: (Arc<Notifier>, std::time::Duration),
    sync: Arc<SyncService>,
    /// This node's heartbeats and the detection of dead nodes.
    pub cluster: Arc<Cluster>,
    /// Config written over REST on other nodes (a shared store only).
    shared_config: Option<Arc<SharedConfig>>,
}

impl Built {
    /// Start-up recovery: reconciliation runs and CSV imports a previous process left
    /// running are marked as cut off. Only the owner of the data directory may do it (see
    /// [`lifecycle::InstanceLock`]); `clean_spool`: also remove spool files no import names
    /// (not while this process serves: an upload being spooled has no record yet).
    pub async fn recover(&self, clean_spool: bool) -> Result<(), String> {
        self.sync
            .recover()
            .await
            .map_err(|e| format!("cannot read the reconciliation runs: {e}"))?;
        self.csv
            .recover(clean_spool)
            .await
            .map_err(|e| format!("cannot read the CSV import records: {e}"))?;
        Ok(())
    }

    /// Starts the background writers (scheduler, temporal constraints' check). During an
    /// upgrade the new process calls this only once it owns the data directory, i.e. once
    /// the old one exited: scheduled work never runs in both.
    pub fn start_background(&self) -> Result<(), String> {
        let (notifier, every) = &self.temporal;
        crate::managed::relationships::temporal::spawn_sweeper(
            notifier.clone(),
            *every,
            self.drain.clone(),
        )?;
        spawn_cluster(
            self.cluster.clone(),
            self.shared_config.clone(),
            self.drain.clone(),
        )?;
        if self.shared_config.is_some() {
            spawn_page_worker(self.sync.clone(), self.drain.clone())?;
        }
        spawn_scheduler(self.scheduler.clone(), self.drain.clone())
    }
}

/// After the drain window (`shutdownGraceSeconds`, during which in-flight requests finish),
/// how long pingora waits for blocking tasks; async tasks still running are dropped.
const GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 1;

/// Opens the store (seeding it on first start), loads the conf, builds the router and
/// starts the watcher and the background writers (scheduler, temporal constraints).
pub fn build_gateway(settings: &Settings) -> Result<Built, String> {
    let built = build_parts(settings)?;
    block_on(built.recover(true))??;
    built.start_background()?;
    Ok(built)
}

/// Runs start-up work on a short-lived runtime: pingora builds its own later.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    Ok(rt.block_on(work))
}

/// The store `--store` names: the embedded SQLite store in the data directory, or
/// PostgreSQL (connected and migrated on `rt`; its pool reconnects on the runtimes that use
/// it later). Fails with a message that never shows the password.
fn open_store(settings: &Settings, rt: &tokio::runtime::Runtime) -> Result<Arc<dyn Repo>, String> {
    match settings.store.kind()? {
        StoreKind::Sqlite => {
            let store = SqliteRepo::open(&settings.data_dir).map_err(|e| {
                format!(
                    "cannot open the store in {}: {e}",
                    settings.data_dir.display()
                )
            })?;
            store.set_query_time_limit(settings.query_time_limit);
            Ok(Arc::new(store))
        }
        StoreKind::Postgres(url) => {
            // TLS (sslmode=require) trusts what outgoing connections trust: the platform
            // roots and certs/*.pem.
            let trust = crate::config::Trust::load(
                &settings.certs_dir,
                &[],
                &crate::config::Trust::default(),
            );
            let tls = crate::tls::client_config(&trust);
            let store = rt
                .block_on(PgRepo::connect_with(url, Some(tls)))
                .map_err(|e| {
                    format!(
                        "cannot open the store at {}: {e}",
                        settings.store.redacted()
                    )
                })?;
            store.set_query_time_limit(settings.query_time_limit);
            tracing::info!(store = %store.location(), "object store on PostgreSQL");
            Ok(Arc::new(store))
        }
    }
}

/// [`build_gateway`] without the recovery and the background writers.
fn build_parts(settings: &Settings) -> Result<Built, String> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        format!(
            "cannot create data dir {}: {e}",
            settings.data_dir.display()
        )
    })?;
    let crypto = Crypto::open(&settings.data_dir)?;
    // Start-up work on the store runs on a short-lived runtime: pingora builds its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let repo = open_store(settings, &rt)?;
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
    // Everything after the seed reaches the store through the timing wrapper.
    let repo: Arc<dyn Repo> = Arc::new(crate::repo::timed::TimedRepo::new(
        repo,
        metrics.store_duration.clone(),
    ));
    let audit_cfg = match audit::load(&settings.conf_dir, &settings.data_dir) {
        Ok(cfg) => cfg,
        // As any conf file: reported, and the gateway runs (here without audit, until the
        // conf reload applies a fixed file).
        Err(e) => {
            tracing::error!("{e}; nothing is audited until it is fixed");
            None
        }
    };
    let audit = Arc::new(Audit::start(
        audit_cfg,
        audit::Sources {
            repo: repo.clone(),
            conf_dir: settings.conf_dir.clone(),
            data_dir: settings.data_dir.clone(),
        },
        metrics.audit_dropped.clone(),
    )?);
    let caching = Arc::new(Authn::new(
        repo.clone(),
        Some(crypto.clone()),
        metrics.clone(),
        &settings.login_throttle,
    ));
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
    // The node id names this node's runs and queue claims before the first is written.
    let cluster_config = ClusterConfig::load(&settings.conf_dir, &settings.node_id)?;
    sync.set_node(&cluster_config.instance_id);
    let cluster = Arc::new(Cluster::new(
        cluster_config,
        repo.clone(),
        Some(metrics.cluster_nodes.clone()),
    ));
    cluster.on_node_down(sync.clone());
    // With a shared store, config written over REST reaches every node.
    let shared_config = match settings.store.kind()? {
        StoreKind::Postgres(_) => {
            let shared = Arc::new(SharedConfig::new(repo.clone(), &gw, cluster.node_id()));
            rt.block_on(shared.poll())
                .map_err(|e| format!("cannot read the shared conf files: {e}"))?;
            gw.set_share(shared.clone());
            sync.set_clustered();
            Some(shared)
        }
        StoreKind::Sqlite => None,
    };
    let schedules_gw = gw.clone();
    let scheduler = Arc::new(Scheduler::new(
        Arc::new(move || schedules_gw.live().schedules.clone()),
        sync.clone(),
        metrics.clone(),
    ));
    scheduler.set_store(repo.clone(), cluster.node_id());
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
    let account_changes = Arc::new(AccountChanges(caching.clone()));
    let managed = Arc::new(
        ManagedHandler::new(
            repo.clone(),
            Arc::new(move || schema_gw.live().managed.clone()),
        )
        .with_hook(Arc::new(crate::events::FanOut(vec![
            implicit.clone() as Arc<dyn crate::events::ChangeHook>,
            account_changes.clone(),
            Arc::new(audit::ActivityHook(audit.clone())),
        ])))
        .with_relationship_watch(Arc::new(move |resource, id| {
            account_changes.relationship_written(resource, id)
        }))
        .with_crypto(crypto.clone())
        .with_engine(engine.clone()),
    );
    rt.block_on(managed.index_all());
    let temporal = (managed.notifier(), settings.temporal_check);
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
    csv.set_node(cluster.node_id());
    cluster.on_node_down(csv.clone());
    let access_gw = gw.clone();
    let remote_gw = gw.clone();
    let privilege_gw = gw.clone();
    let privileges = Arc::new(Privileges::new(repo.clone()));
    let roles_privileges = privileges.clone();
    let auth_gw = gw.clone();
    let reauth = Arc::new(Reauthentication {
        authn: caching.clone(),
        live: Arc::new(move || {
            let live = auth_gw.live();
            (live.authentication.clone(), live.conf.trust.clone())
        }),
    });
    let mut router = Router::with_authorizer(Arc::new(AccessGuard {
        live: Arc::new(move || {
            let live = access_gw.live();
            (live.access.clone(), live.managed.clone())
        }),
        repo: repo.clone(),
        reauth: reauth.clone(),
    }));
    router
        .mount("info", Arc::new(InfoHandler(gw.clone())))
        .mount("authentication", Arc::new(AuthenticationHandler(reauth)))
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
        .mount("cluster", Arc::new(ClusterHandler(cluster.clone())))
        .mount("sync", Arc::new(SyncHandler(sync.clone())))
        .mount(
            "repo/synchronisation/deadLetterQueue",
            Arc::new(DeadLetterHandler(repo.clone())),
        )
        .mount("scheduler/job", scheduler_handler.clone())
        .mount(
            "scheduler/trigger",
            Arc::new(TriggerHandler(scheduler.clone())),
        )
        .mount("scheduler", scheduler_handler)
        .mount("taskscanner", Arc::new(TaskScannerHandler(scanner.clone())))
        .mount("managed", managed)
        .mount("policy", policy)
        .mount(
            "privilege",
            Arc::new(PrivilegeHandler {
                privileges: privileges.clone(),
                managed: Arc::new(move || privilege_gw.live().managed.clone()),
            }),
        )
        .mount("system", Arc::new(SystemHandler { service: systems }))
        .mount(
            "external/idm",
            Arc::new(RemoteHandler::with_registry(
                move || remote_gw.live().registry.clone(),
                gw.metrics.clone(),
            )),
        )
        .mount("external/rest", Arc::new(RestHandler::new(gw.clone())))
        .mount(
            "external/email",
            Arc::new(EmailHandler::new(gw.clone(), crypto.clone())),
        )
        .mount(
            "internal",
            Arc::new(
                InternalHandler::new(
                    repo.clone(),
                    Arc::new(move || {
                        caching.invalidate_all();
                        roles_privileges.invalidate_all();
                    }),
                )
                .with_managed(Arc::new(move || internal_gw.live().managed.clone()))
                .with_hook(Arc::new(audit::ActivityHook(audit.clone()))),
            ),
        );

    router.set_filters(Arc::new(ScriptFilters::new(gw.clone(), engine.clone())));
    router.set_delegation(privileges);

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
    Ok(Built {
        gw,
        router,
        repo,
        watch,
        scheduler,
        engine,
        crypto,
        csv,
        drain: Drain::new(),
        temporal,
        sync,
        cluster,
        shared_config,
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
/// The cluster heartbeat runs on its own thread: a node busy with requests or a long
/// reconciliation must still check in, or the others take it for dead.
fn spawn_cluster(
    cluster: Arc<Cluster>,
    shared_config: Option<Arc<SharedConfig>>,
    drain: Drain,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .thread_name("cluster")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the cluster runtime: {e}"))?;
    std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || {
            if let Some(shared) = shared_config {
                rt.spawn(shared.run(drain.clone()));
            }
            rt.block_on(cluster.run(drain))
        })
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    Ok(())
}

/// Works on the source pages of clustered reconciliations (a shared store only), on a
/// runtime of its own: a page's work never holds up the heartbeats or the scheduler.
fn spawn_page_worker(sync: Arc<SyncService>, drain: Drain) -> Result<(), String> {
    spawn_on_own_runtime(
        "recon-pages",
        "reconciliation page",
        sync.page_worker(drain),
    )
}

fn spawn_scheduler(scheduler: Arc<Scheduler>, drain: Drain) -> Result<(), String> {
    spawn_on_own_runtime("scheduler", "scheduler", scheduler.run(drain))
}

/// Runs `work` on a two-thread runtime of its own, on thread `name`.
fn spawn_on_own_runtime(
    name: &str,
    what: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the {what} runtime: {e}"))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(work))
        .map_err(|e| format!("cannot start the {what} thread: {e}"))?;
    Ok(())
}

/// Runs the gateway until it is stopped (SIGTERM: graceful; SIGINT: fast; SIGQUIT: hand
/// the listeners over to a process started with `--upgrade`, then drain).
///
/// With `--upgrade` the whole gateway is built (conf, store) before the listeners are
/// asked for: a new process that cannot start fails before the old one is told to go.
pub fn run(settings: Settings) -> Result<(), String> {
    if !settings.conf_dir.is_dir() {
        return Err(format!(
            "conf directory {} does not exist",
            settings.conf_dir.display()
        ));
    }
    let upgrade_sock = settings
        .upgrade_sock
        .to_str()
        .ok_or_else(|| {
            format!(
                "the upgrade socket path {} is not UTF-8",
                settings.upgrade_sock.display()
            )
        })?
        .to_owned();
    if upgrade_sock.len() > 107 {
        return Err(format!(
            "the upgrade socket path {upgrade_sock} is longer than a unix socket path may be (107 bytes)"
        ));
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        format!(
            "cannot create data dir {}: {e}",
            settings.data_dir.display()
        )
    })?;
    let lock = InstanceLock::open(&settings.data_dir)?;
    let owner = lock.try_take()?;
    match (owner, settings.upgrade) {
        (false, false) => {
            return Err(format!(
                "another idm-gateway runs on the data directory {} (start this one with --upgrade to take over from it)",
                settings.data_dir.display()
            ))
        }
        (true, true) => {
            return Err(format!(
                "--upgrade: no idm-gateway runs on the data directory {} to take over from",
                settings.data_dir.display()
            ))
        }
        _ => {}
    }
    let built = build_parts(&settings)?;
    if owner {
        block_on(built.recover(true))??;
    }

    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.shutdown_grace_seconds),
        graceful_shutdown_timeout_seconds: Some(GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS),
        // Per URL of an instance: a failed connect or a broken GET, plus a stale pooled
        // connection; and one retry after a remote rejected a bearer token. Which
        // failures are retried at all is decided in `GatewayProxy`.
        max_retries: 2 * crate::config::MAX_INSTANCE_URLS + 1,
        // Each side of an upgrade waits 5 s for the other on this socket (pingora's fixed
        // wait: 0.9.1 does not read `upgrade_sock_connect_accept_max_retries`).
        upgrade_sock,
        upstream_keepalive_pool_size: settings.server.upstream_keepalive_pool_size,
        work_stealing: settings.server.work_stealing,
        listener_tasks_per_fd: settings.server.listener_tasks_per_fd,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: settings.upgrade,
        ..Opt::default()
    };
    if settings.upgrade {
        tracing::info!(
            upgrade_sock = %settings.upgrade_sock.display(),
            "waiting for the running gateway to hand its listeners over"
        );
    }
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // With --upgrade this blocks until the old process sent its listeners (after its
    // SIGQUIT), and exits the process if none came.
    server.bootstrap();
    follow_phases(server.watch_execution_phase(), &built)?;
    let built = Arc::new(built);
    if owner {
        built.start_background()?;
    } else {
        take_over_when_free(lock, built.clone())?;
    }

    let mut service = pingora::proxy::http_proxy_service(
        &server.configuration,
        GatewayProxy::new(built.gw.clone(), built.router.clone())
            .with_csv(built.csv.clone())
            .with_trusted_proxies(settings.trusted_proxies.clone())
            .with_max_proxy_body(settings.max_proxy_body_bytes)
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
    // `run`, not `run_forever` (which exits the process): what the audit handlers and the
    // log writer hold is written before the process ends.
    server.run(pingora::server::RunArgs::default());
    built.gw.audit.close(AUDIT_CLOSE_TIMEOUT);
    tracing::info!("idm-gateway stopped");
    Ok(())
}

/// Longest the audit handlers get to write what is queued when the process stops.
const AUDIT_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// During an upgrade: once the old process exited (its lock is free), this one owns the data
/// directory; it recovers what the old one left cut off and starts the scheduler. Until then
/// no scheduled work runs in either (the old one stopped starting any at the handover).
fn take_over_when_free(lock: InstanceLock, built: Arc<Built>) -> Result<(), String> {
    std::thread::Builder::new()
        .name("take-over".into())
        .spawn(move || {
            if let Err(e) = lock.take() {
                tracing::error!("cannot take the data directory over: {e}");
                return;
            }
            if built.drain.is_draining() {
                // Replaced before the previous process exited: the lock goes (with this
                // thread's end) to the process that replaced this one.
                return;
            }
            let outcome = block_on(built.recover(false))
                .and_then(|recovered| recovered)
                .and_then(|()| built.start_background());
            match outcome {
                Ok(()) => {
                    // The lock lives as long as the process.
                    std::mem::forget(lock);
                    tracing::info!(
                        pid = std::process::id(),
                        "the previous process exited: this one owns the data directory"
                    );
                }
                Err(e) => tracing::error!(
                    "cannot take the data directory over from the previous process: {e}"
                ),
            }
        })
        .map_err(|e| format!("cannot start the take-over thread: {e}"))?;
    Ok(())
}

/// Reacts to pingora's execution phases on a thread of its own: tells systemd when this
/// process serves (and that it is the main one now, after an upgrade), and starts the
/// drain when it hands its listeners over or stops.
fn follow_phases(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    built: &Built,
) -> Result<(), String> {
    use tokio::sync::broadcast::error::RecvError;
    let drain = built.drain.clone();
    std::thread::Builder::new()
        .name("lifecycle".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::Running) => {
                    tracing::info!(pid = std::process::id(), "idm-gateway serving");
                    lifecycle::notify_systemd(&format!("READY=1\nMAINPID={}", std::process::id()));
                }
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                    // No STOPPING=1: the unit goes on, in the new process.
                    tracing::info!("handing the listeners over to the new process; draining");
                    drain.start();
                }
                Ok(ExecutionPhase::GracefulTerminate) => {
                    tracing::info!("stopping; draining");
                    drain.start();
                    lifecycle::notify_systemd("STOPPING=1");
                }
                Ok(ExecutionPhase::Terminated) | Err(RecvError::Closed) => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
            }
        })
        .map_err(|e| format!("cannot start the lifecycle thread: {e}"))?;
    Ok(())
}
