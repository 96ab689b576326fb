//! Live state shared by every request: the conf snapshot and the remote registry, swapped
//! together atomically on reload. A request takes one [`Live`] at its start and uses it to
//! the end, so a reload never shows it half a config.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use serde_json::Value;

use crate::access::{parse_access, AccessConfig, ACCESS_CONFIG};
use crate::audit::{self, Audit};
use crate::auth::{parse_authentication, AuthConfig, Authn, AUTHENTICATION_CONFIG};
use crate::config::{self, ConfSnapshot, Dirs, ReloadOutcome};
use crate::managed::{parse_managed, ManagedSchema};
use crate::metrics::Metrics;
use crate::remote::Registry;
use crate::scheduler::job::{self as schedule, Schedules};
use crate::script::{endpoint, filters};
use crate::sync::mapping::{self, Mappings};
use crate::system::{self, provisioner_name, Systems};

/// Config id of the managed object types.
pub const MANAGED_CONFIG: &str = "managed";

pub struct Live {
    pub conf: Arc<ConfSnapshot>,
    pub registry: Arc<Registry>,
    /// Managed object types (the last good `managed.json`).
    pub managed: Arc<ManagedSchema>,
    /// Sync mappings in processing order (the last good `sync.json` and `mapping-*.json`).
    pub mappings: Arc<Mappings>,
    /// Scheduled jobs by name (the last good `schedule-*.json`).
    pub schedules: Arc<Schedules>,
    /// Connector systems by name (the last good `provisioner.openicf-*.json`).
    pub systems: Arc<Systems>,
    /// Who may call (the last good `authentication.json`; built-in defaults without one).
    pub authentication: Arc<AuthConfig>,
    /// Who may do what (the last good `access.json`; the shipped rules without one).
    pub access: Arc<AccessConfig>,
}

/// Validates a config document: the one check of every kind of conf file, made when a
/// file is loaded (at start-up and on reload) and before a REST write, so a write that
/// passes can never stop the next start.
pub fn validate_conf(id: &str, doc: &Value) -> Result<(), Vec<String>> {
    if !doc.is_object() {
        return Err(vec!["the file must contain a JSON object".into()]);
    }
    if let Some(name) = config::instance_name(id) {
        return config::lower_instance(name, doc).map(|_| ());
    }
    if let Some(checked) = crate::external::validate(id, doc) {
        return checked;
    }
    match id {
        // Read once at start-up (not reloaded), but checked here too: a REST write of it
        // is refused, and a hand edit is reported, before the next start would fail.
        config::GATEWAY_CONFIG => config::GatewayFile::from_document(doc).map(|_| ()),
        MANAGED_CONFIG => parse_managed(doc).map(|_| ()),
        AUTHENTICATION_CONFIG => parse_authentication(doc).map(|_| ()),
        ACCESS_CONFIG => parse_access(doc).map(|_| ()),
        id if mapping::is_mapping_config(id) => mapping::parse_config(id, doc).map(|_| ()),
        // Building a connector checks its configuration only; the trust does not matter.
        id if provisioner_name(id).is_some() => system::parse_and_build(
            provisioner_name(id).unwrap_or_default(),
            doc,
            &Arc::default(),
        )
        .map(|_| ()),
        id if schedule::schedule_name(id).is_some() => {
            schedule::parse_job(schedule::schedule_name(id).unwrap_or_default(), doc).map(|_| ())
        }
        filters::ROUTER_CONFIG => filters::parse_router(doc).map(|_| ()),
        // Read at start-up; checked here so a REST write or a hand edit is refused now.
        crate::cluster::CLUSTER_CONFIG => crate::cluster::ClusterConfig::parse(doc, "node")
            .map(|_| ())
            .map_err(|e| vec![e]),
        // Directories are the running gateway's business: any path checks the rest.
        audit::AUDIT_CONFIG => audit::config::parse(doc, &|name: &str| {
            crate::config::substitute::from_env(name)
                .or_else(|| name.starts_with("idm.").then(|| ".".to_owned()))
        })
        .map(|_| ()),
        id if endpoint::endpoint_name(id).is_some() => {
            endpoint::parse_endpoint(endpoint::endpoint_name(id).unwrap_or_default(), doc)
                .map(|_| ())
        }
        _ => Ok(()),
    }
}

pub struct Gateway {
    pub dirs: Dirs,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Authn>,
    /// Audit events (`audit.json`, applied again by every reload that sees it change).
    pub audit: Arc<Audit>,
    live: ArcSwap<Live>,
    reload_lock: Mutex<()>,
    /// Held by every REST edit of a conf file from reading its current bytes to writing
    /// the new ones, so an edit that checks the revision it read is a compare-and-swap.
    write_lock: Mutex<()>,
    /// Where REST edits are shared with the other nodes of a cluster (a shared store).
    share: std::sync::OnceLock<Arc<dyn ConfShare>>,
}

/// Shares conf files written over REST with the other nodes sharing the store.
#[async_trait::async_trait]
pub trait ConfShare: Send + Sync {
    /// Stores the new bytes of `file_name` (`None`: deleted) for the other nodes.
    async fn publish(&self, file_name: &str, bytes: Option<&[u8]>) -> Result<(), String>;
    /// Held by a REST edit from its local write to its publishing, and by every pass that
    /// applies the other nodes' files: a pass never writes a version it read before the
    /// edit over the edit.
    async fn exclusive(&self) -> tokio::sync::OwnedMutexGuard<()>;
}

/// What an edit of one conf file does with it.
#[derive(Debug)]
pub enum ConfEdit {
    Write(Vec<u8>),
    Delete,
}

impl Gateway {
    /// Builds the state and performs the first load.
    pub fn new(dirs: Dirs, metrics: Arc<Metrics>, auth: Arc<Authn>, audit: Arc<Audit>) -> Self {
        let gw = Self {
            dirs,
            metrics,
            auth,
            audit,
            live: ArcSwap::from_pointee(Live {
                conf: Arc::new(ConfSnapshot::default()),
                registry: Arc::new(Registry::default()),
                managed: Arc::new(ManagedSchema::default()),
                mappings: Arc::new(Mappings::default()),
                schedules: Arc::new(Schedules::default()),
                systems: Arc::new(Systems::default()),
                authentication: Arc::new(AuthConfig::default()),
                access: Arc::new(AccessConfig::default()),
            }),
            reload_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
            share: std::sync::OnceLock::new(),
        };
        gw.reload();
        gw
    }

    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Runs `edit` on the current bytes of `conf/<file_name>` (`None`: no such file) and
    /// does what it answers, writing atomically (temp file, fsync, rename), then reloads.
    /// Edits are serialised from the read to the write, and run on the blocking pool so
    /// the fsync and the reload stay off the event loop. An `Err` from `edit` changes
    /// nothing and is returned as the inner error.
    pub async fn edit_conf_file<T, E>(
        self: &Arc<Self>,
        file_name: String,
        edit: impl FnOnce(Option<Vec<u8>>) -> Result<(ConfEdit, T), E> + Send + 'static,
    ) -> std::io::Result<Result<T, E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let _shared = match self.share.get() {
            Some(share) => Some(share.exclusive().await),
            None => None,
        };
        let gw = self.clone();
        let name = file_name.clone();
        let done = tokio::task::spawn_blocking(move || {
            let _guard = gw.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            let current = match std::fs::read(gw.dirs.conf.join(&name)) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let (change, out) = match edit(current) {
                Ok(done) => done,
                Err(e) => return Ok(Err(e)),
            };
            let written = match change {
                ConfEdit::Write(bytes) => {
                    config::write_config_file(&gw.dirs.conf, &name, &bytes)?;
                    Some(bytes)
                }
                ConfEdit::Delete => {
                    config::delete_config_file(&gw.dirs.conf, &name)?;
                    None
                }
            };
            gw.reload();
            Ok(Ok((out, written)))
        })
        .await
        .map_err(std::io::Error::other)??;
        let (out, written) = match done {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(share) = self.share.get() {
            share
                .publish(&file_name, written.as_deref())
                .await
                .map_err(|e| {
                    std::io::Error::other(format!(
                        "it is live on this node but could not be shared with the cluster ({e}); write it again"
                    ))
                })?;
        }
        Ok(Ok(out))
    }

    /// Shares REST edits through `share` from now on.
    pub fn set_share(&self, share: Arc<dyn ConfShare>) {
        let _ = self.share.set(share);
    }

    /// Applies a conf file another node wrote over REST (`None`: deleted there): written
    /// atomically under the edit lock, not shared again, then reloaded. Returns whether
    /// anything changed.
    pub fn apply_shared_conf_file(
        &self,
        file_name: &str,
        bytes: Option<&[u8]>,
    ) -> std::io::Result<bool> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = match std::fs::read(self.dirs.conf.join(file_name)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if current.as_deref() == bytes {
            return Ok(false);
        }
        match bytes {
            Some(b) => config::write_config_file(&self.dirs.conf, file_name, b)?,
            None => config::delete_config_file(&self.dirs.conf, file_name)?,
        }
        self.reload();
        Ok(true)
    }

    /// Writes `conf/<file_name>` whatever it holds now (see [`Gateway::edit_conf_file`]).
    pub async fn write_conf_file(
        self: &Arc<Self>,
        file_name: String,
        bytes: Vec<u8>,
    ) -> std::io::Result<()> {
        self.edit_conf_file(file_name, move |_| {
            Ok::<_, std::convert::Infallible>((ConfEdit::Write(bytes), ()))
        })
        .await
        .map(|_| ())
    }

    /// Deletes `conf/<file_name>` (see [`Gateway::edit_conf_file`]).
    pub async fn delete_conf_file(self: &Arc<Self>, file_name: String) -> std::io::Result<()> {
        self.edit_conf_file(file_name, |current| match current {
            Some(_) => Ok((ConfEdit::Delete, ())),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        })
        .await?
    }

    /// Re-reads the conf and certs directories and swaps in the result if anything
    /// changed. Safe to call from any thread at any time; calls are serialised.
    ///
    /// A panic inside is caught and reported (error log, `panicked` reload outcome): the
    /// previous state stays live, and the watcher and the next reload go on. (A panic in
    /// the check of one file is narrower: that file alone is rejected, see `config::load`.)
    pub fn reload(&self) -> Vec<(String, ReloadOutcome)> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        config::guarded(|| self.reload_locked()).unwrap_or_else(|panic| {
            self.metrics
                .config_reloads
                .with_label_values(&[ReloadOutcome::Panicked(String::new()).label()])
                .inc();
            tracing::error!(
                panic = %panic,
                "config reload panicked (a bug; please report it); the previous config stays live"
            );
            vec![(String::new(), ReloadOutcome::Panicked(panic))]
        })
    }

    fn reload_locked(&self) -> Vec<(String, ReloadOutcome)> {
        let prev = self.live.load_full();
        let (conf, outcomes) = config::load_with(&self.dirs, &prev.conf, &validate_conf);
        if outcomes.is_empty() {
            return outcomes;
        }
        let registry = Registry::build(&conf, &prev.registry, &self.metrics);
        let managed = single_file(
            &conf,
            &outcomes,
            MANAGED_CONFIG,
            &prev.managed,
            parse_managed,
        );
        let mappings = sync_mappings(&conf, &outcomes, &prev.mappings);
        let schedules = schedules(&conf, &outcomes, &prev.schedules);
        let systems = systems(&conf, &outcomes, &prev.systems);
        let authentication = single_file(
            &conf,
            &outcomes,
            AUTHENTICATION_CONFIG,
            &prev.authentication,
            parse_authentication,
        );
        let access = single_file(&conf, &outcomes, ACCESS_CONFIG, &prev.access, parse_access);
        self.live.store(Arc::new(Live {
            conf: Arc::new(conf),
            registry: Arc::new(registry),
            managed,
            mappings,
            schedules,
            systems,
            authentication,
            access,
        }));
        let live = self.live.load();
        // The audit handlers follow `audit.json` (a rejected file was logged below and
        // changes nothing).
        match outcomes.iter().find(|(id, _)| id == audit::AUDIT_CONFIG) {
            Some((_, ReloadOutcome::Applied)) => {
                let doc = live
                    .conf
                    .files
                    .get(audit::AUDIT_CONFIG)
                    .and_then(|f| f.raw.as_ref());
                if doc.is_some() {
                    self.audit.apply(doc);
                }
            }
            Some((_, ReloadOutcome::Removed)) => {
                self.audit.apply(None);
            }
            _ => {}
        }
        for (id, outcome) in &outcomes {
            self.metrics
                .config_reloads
                .with_label_values(&[outcome.label()])
                .inc();
            match outcome {
                ReloadOutcome::Rejected(problems) => tracing::error!(
                    config = %id,
                    problems = %problems.join("; "),
                    "config rejected; the last good version stays live"
                ),
                other => tracing::info!(config = %id, outcome = other.label(), "config reloaded"),
            }
        }
        self.update_instance_gauges(&live);
        outcomes
    }

    fn update_instance_gauges(&self, live: &Live) {
        let enabled = live.registry.iter().filter(|i| i.config.enabled).count();
        let disabled = live.registry.len() - enabled;
        let invalid = live
            .conf
            .files
            .iter()
            .filter(|(id, f)| config::instance_name(id).is_some() && !f.is_valid())
            .count();
        let g = &self.metrics.instances;
        g.with_label_values(&["enabled"]).set(enabled as i64);
        g.with_label_values(&["disabled"]).set(disabled as i64);
        g.with_label_values(&["invalid"]).set(invalid as i64);
    }
}

/// A single-file config after a reload (`managed.json`, `authentication.json`,
/// `access.json`): re-parsed when the file was applied, the default when it was removed,
/// the last good one otherwise (unchanged or rejected).
fn single_file<T: Default, E>(
    conf: &ConfSnapshot,
    outcomes: &[(String, ReloadOutcome)],
    id: &str,
    prev: &Arc<T>,
    parse: fn(&Value) -> Result<T, E>,
) -> Arc<T> {
    match outcomes.iter().find(|(changed, _)| changed == id) {
        Some((_, ReloadOutcome::Applied)) => conf
            .files
            .get(id)
            .and_then(|f| f.raw.as_ref())
            .and_then(|raw| parse(raw).ok())
            .map(Arc::new)
            .unwrap_or_else(|| prev.clone()),
        Some((_, ReloadOutcome::Removed)) => Arc::new(T::default()),
        _ => prev.clone(),
    }
}

/// The mappings after a reload: the files applied are re-parsed, removed ones dropped, and
/// rejected or unchanged ones keep their last good mappings.
fn sync_mappings(
    conf: &ConfSnapshot,
    outcomes: &[(String, ReloadOutcome)],
    prev: &Arc<Mappings>,
) -> Arc<Mappings> {
    let changes: Vec<_> = file_changes(conf, outcomes, |id| {
        mapping::is_mapping_config(id).then(|| id.to_owned())
    })
    .into_iter()
    .filter_map(|(id, doc)| match doc {
        Some(raw) => mapping::parse_config(&id, raw)
            .ok()
            .map(|ms| (id, Some(ms))),
        None => Some((id, None)),
    })
    .collect();
    if changes.is_empty() {
        return prev.clone();
    }
    Arc::new(Mappings::with_changes(prev, changes))
}

/// The schedules after a reload: applied files re-parsed, removed ones dropped, rejected or
/// unchanged ones keep their last good job (the same `Arc`, so the scheduler sees no change).
fn schedules(
    conf: &ConfSnapshot,
    outcomes: &[(String, ReloadOutcome)],
    prev: &Arc<Schedules>,
) -> Arc<Schedules> {
    let mut next: Option<Schedules> = None;
    let changes = file_changes(conf, outcomes, |id| {
        schedule::schedule_name(id).map(str::to_owned)
    });
    for (name, doc) in changes {
        match doc {
            Some(raw) => {
                if let Ok(job) = schedule::parse_job(&name, raw) {
                    next.get_or_insert_with(|| (**prev).clone())
                        .insert(name, Arc::new(job));
                }
            }
            None => {
                next.get_or_insert_with(|| (**prev).clone()).remove(&name);
            }
        }
    }
    next.map(Arc::new).unwrap_or_else(|| prev.clone())
}

/// The systems after a reload: applied provisioner files rebuilt (a new connector, so new
/// connections), removed ones dropped, rejected or unchanged ones keep their connector.
/// A change of `certs/` (applied, or partly rejected: the usable certificates are live
/// either way) also rebuilds every connector that verifies TLS servers with it.
fn systems(
    conf: &ConfSnapshot,
    outcomes: &[(String, ReloadOutcome)],
    prev: &Arc<Systems>,
) -> Arc<Systems> {
    let changes = file_changes(conf, outcomes, |id| provisioner_name(id).map(str::to_owned));
    let trust_changed = outcomes.iter().any(|(id, _)| id == "certs");
    if changes.is_empty() && !trust_changed {
        return prev.clone();
    }
    let base = if trust_changed {
        Systems::with_trust(prev, &conf.trust)
    } else {
        (**prev).clone()
    };
    Arc::new(Systems::with_changes(&base, changes, &conf.trust))
}

/// The conf files of one kind a reload applied (`Some(document as written)`) or removed
/// (`None`), keyed by `key`, which also picks the kind (`None`: not of this kind). Rejected
/// and unchanged files are not changes: what they define keeps its last good version.
fn file_changes<'a, K>(
    conf: &'a ConfSnapshot,
    outcomes: &[(String, ReloadOutcome)],
    key: impl Fn(&str) -> Option<K>,
) -> Vec<(K, Option<&'a Value>)> {
    outcomes
        .iter()
        .filter_map(|(id, outcome)| {
            let k = key(id)?;
            match outcome {
                ReloadOutcome::Applied => conf
                    .files
                    .get(id)
                    .and_then(|f| f.raw.as_ref())
                    .map(|raw| (k, Some(raw))),
                ReloadOutcome::Removed => Some((k, None)),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_conf_files_pass_the_check_of_writes_and_loads() {
        let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut checked = 0;
        for entry in std::fs::read_dir(&conf).unwrap().flatten() {
            let name = entry.file_name().into_string().unwrap();
            let Some(id) = config::config_id_for_file(&name) else {
                continue;
            };
            let doc: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
            assert_eq!(validate_conf(&id, &doc), Ok(()), "{name}");
            checked += 1;
        }
        assert!(checked >= 3, "gateway, managed and an instance at least");
    }

    #[test]
    fn gateway_json_is_checked_like_at_start_up() {
        let bad = serde_json::json!({"listen": "127.0.0.1:1", "lisen": "x"});
        let problems = validate_conf(config::GATEWAY_CONFIG, &bad).unwrap_err();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("gateway.json"), bad.to_string()).unwrap();
        let at_start = config::GatewayFile::load(tmp.path()).unwrap_err();
        assert!(
            at_start.ends_with(&problems.join("; ")),
            "{at_start} vs {problems:?}"
        );
        assert!(
            problems[0].contains("unknown field `lisen`"),
            "{problems:?}"
        );
    }
}
