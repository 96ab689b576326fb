//! Audit (IDM's `conf/audit.json`): the topics `access`, `activity`, `authentication`,
//! `config`, `recon` and `sync` in IDM's event shapes ([`event`]), written by the JSON file
//! handler ([`file`]) and the store handler ([`store`]), and read back by
//! `GET /openidm/audit/<topic>` ([`handler`]).
//!
//! What this module must not do: make a request wait. Emitting serializes the event once
//! and puts the line on each subscribed handler's bounded queue with `try_send`; every
//! handler writes from its own thread, waking every `buffering.writeInterval` (IDM's key,
//! default 100 ms) to write what was queued in one go, so a request never wakes a writer.
//! A full queue drops the event, counts it in `idm_gateway_audit_dropped_total{topic}` and
//! logs a warning at most once per [`WARN_EVERY`]. Events never carry a secret (see
//! [`event`]). [`Audit::close`] writes what is queued when the process stops.
//!
//! `audit.json` is read at start-up and applied again whenever the conf reload sees it
//! change ([`Audit::apply`]): the handlers of one configuration form a routing swapped
//! whole, so every holder of the `Arc<Audit>` keeps it; the replaced handlers write what
//! was queued for them before they stop. Without the file nothing is audited, as in IDM.

pub mod config;
pub mod event;
pub mod file;
pub mod handler;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::crest::Caller;
use crate::repo::Repo;
use config::{AuditConfig, HandlerKind};
pub use event::{AccessRecord, ObjectChange, SyncEntry};

/// Least time between two "audit queue full" warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Config id of the audit configuration.
pub const AUDIT_CONFIG: &str = "audit";

tokio::task_local! {
    /// The transaction id of the HTTP request a task serves: events raised deeper down
    /// (activity, config) carry it without every layer passing it on.
    pub static CURRENT_TRANSACTION: Arc<str>;
}

/// The transaction id of the current request, or a new one (work of no request: a
/// scheduled run).
pub fn current_transaction() -> String {
    CURRENT_TRANSACTION
        .try_with(|t| t.to_string())
        .unwrap_or_else(|_| event::new_id())
}

/// One event on its way to a handler: its JSON text, serialized once for every handler.
#[derive(Clone)]
pub struct Event {
    pub topic: Arc<str>,
    pub json: Arc<String>,
}

/// What a handler thread needs besides its queue.
#[derive(Clone)]
pub struct Writer {
    /// Time between two writes (`buffering.writeInterval`).
    pub interval: Duration,
    /// Set by [`Audit::close`]: write what is queued and stop.
    pub closing: Arc<AtomicBool>,
}

impl Writer {
    /// Takes what is queued, at most `max` events, waiting for the next interval while
    /// nothing is; `None` once closing (or every sender is gone) and the queue is empty.
    pub fn next_batch(&self, rx: &mut mpsc::Receiver<Event>, max: usize) -> Option<Vec<Event>> {
        use mpsc::error::TryRecvError;
        loop {
            let mut batch = Vec::new();
            let mut gone = false;
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                return Some(batch);
            }
            if gone || self.closing.load(Ordering::Acquire) {
                return None;
            }
            // Woken early by `Audit::close`.
            std::thread::park_timeout(self.interval);
        }
    }
}

impl Writer {
    /// Like [`Writer::next_batch`], but also answers an empty batch when a write interval
    /// passed with nothing queued: the wake-ups a handler does its periodic work on
    /// (time-based rotation).
    pub fn next_tick(&self, rx: &mut mpsc::Receiver<Event>, max: usize) -> Option<Vec<Event>> {
        let mut batch = Vec::new();
        let mut gone = take_queued(rx, &mut batch, max);
        if batch.is_empty() && !gone && !self.closing.load(Ordering::Acquire) {
            // Woken early by `Audit::close`.
            std::thread::park_timeout(self.interval);
            gone = take_queued(rx, &mut batch, max);
        }
        if batch.is_empty() && (gone || self.closing.load(Ordering::Acquire)) {
            return None;
        }
        Some(batch)
    }
}

/// Moves what is queued into `batch`, up to `max` events; whether every sender is gone.
fn take_queued(rx: &mut mpsc::Receiver<Event>, batch: &mut Vec<Event>, max: usize) -> bool {
    use mpsc::error::TryRecvError;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
    false
}

/// Where `GET /openidm/audit/<topic>` reads.
#[derive(Clone)]
pub enum QuerySource {
    Store(Arc<dyn Repo>),
    Files(std::path::PathBuf),
}

struct Route {
    topic: Arc<str>,
    queues: Vec<mpsc::Sender<Event>>,
}

/// What one applied `audit.json` routes where. Swapped whole on reload: an event takes
/// the routing live when it is sent. The queues of a routing close once nobody sends
/// through it any more (the last guard of it is gone); its handlers then write what was
/// queued and stop, so a reload loses no event.
struct Routing {
    routes: HashMap<String, Route>,
    actions: HashMap<String, Vec<String>>,
    password_fields: Vec<String>,
    query: Option<QuerySource>,
    /// The configuration it runs (`None`: nothing is audited).
    config: Option<AuditConfig>,
    /// Its JSON handlers by log directory, with their "finished" signals: a handler of a
    /// later routing writing the same directory waits for them, so a file has one writer.
    json_writers: Vec<(std::path::PathBuf, Arc<Finished>)>,
}

impl Routing {
    fn empty() -> Self {
        Self {
            routes: HashMap::new(),
            actions: HashMap::new(),
            password_fields: vec!["password".into()],
            query: None,
            config: None,
            json_writers: Vec::new(),
        }
    }

    /// Whether `topic`'s `filter.actions` keeps `operation`.
    fn keeps(&self, topic: &str, operation: &str) -> bool {
        self.actions
            .get(topic)
            .is_none_or(|a| a.iter().any(|x| x == operation))
    }
}

/// Set when a handler thread ends (also by a panic).
#[derive(Default)]
struct Finished {
    done: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Finished {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    /// Waits until set, at most `timeout`; whether it was set.
    fn wait(&self, timeout: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = self
            .changed
            .wait_timeout_while(done, timeout, |d| !*d)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

/// Sets a [`Finished`] when dropped: at the end of a handler thread, however it ends.
struct SetOnDrop(Arc<Finished>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Longest a new JSON handler waits for the one it replaces to finish writing the same
/// directory (it writes what was queued within one write interval).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// What handlers are built from: the store (repo handler), and the directories the
/// `&{idm.*}` properties of `audit.json` name.
pub struct Sources {
    pub repo: Arc<dyn Repo>,
    pub conf_dir: std::path::PathBuf,
    pub data_dir: std::path::PathBuf,
}

/// What [`Audit::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The new handlers run; the old ones finish what they had queued.
    Applied,
    /// The file says what runs already.
    Unchanged,
    /// Refused (why); the running configuration stays.
    Rejected(String),
}

pub struct Audit {
    live: ArcSwap<Routing>,
    /// `None`: built by [`Audit::disabled`], which no reload can start.
    sources: Option<Sources>,
    dropped: prometheus::IntCounterVec,
    closing: Arc<AtomicBool>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Serialises [`Audit::apply`].
    apply_lock: std::sync::Mutex<()>,
    /// Milliseconds since `started` of the last "queue full" warning (0: none yet).
    last_warning: AtomicU64,
    started: Instant,
}

impl Audit {
    /// Nothing audited, for good (no reload can start handlers).
    pub fn disabled(dropped: prometheus::IntCounterVec) -> Self {
        Self {
            live: ArcSwap::from_pointee(Routing::empty()),
            sources: None,
            dropped,
            closing: Arc::new(AtomicBool::new(false)),
            threads: std::sync::Mutex::new(Vec::new()),
            apply_lock: std::sync::Mutex::new(()),
            last_warning: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Starts one writer thread per handler of `cfg` (`None`: nothing audited until a
    /// reload applies an `audit.json`).
    pub fn start(
        cfg: Option<AuditConfig>,
        sources: Sources,
        dropped: prometheus::IntCounterVec,
    ) -> Result<Self, String> {
        let mut audit = Self::disabled(dropped);
        audit.sources = Some(sources);
        let routing = audit.build(cfg, &Routing::empty())?;
        audit.live.store(Arc::new(routing));
        Ok(audit)
    }

    /// Applies `audit.json` as it now is (`None`: the file was removed, nothing is
    /// audited): the new handlers start and take every event sent from now on, the old
    /// ones write what they had queued and stop. A file that does not parse, or handlers
    /// that cannot start, leave the running configuration live.
    pub fn apply(&self, doc: Option<&Value>) -> Applied {
        let _serial = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sources) = &self.sources else {
            return Applied::Rejected("audit was started without handlers".into());
        };
        let cfg = match doc {
            None => None,
            Some(doc) => match parse_document(doc, &sources.conf_dir, &sources.data_dir) {
                Ok(cfg) => Some(cfg),
                Err(e) => {
                    tracing::error!("{e}; the running audit configuration stays live");
                    return Applied::Rejected(e);
                }
            },
        };
        let prev = self.live.load_full();
        if prev.config == cfg {
            return Applied::Unchanged;
        }
        let next = match self.build(cfg, &prev) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("{e}; the running audit configuration stays live");
                return Applied::Rejected(e);
            }
        };
        // From here every event goes to the new handlers; the old routing (and with it
        // the old queues' senders) is freed once the events being sent through it are.
        self.live.store(Arc::new(next));
        drop(prev);
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !t.is_finished());
        tracing::info!("audit.json applied");
        Applied::Applied
    }

    /// A routing for `cfg`, its handler threads started; JSON handlers of a directory
    /// `prev` writes too start writing once `prev`'s are done.
    fn build(&self, cfg: Option<AuditConfig>, prev: &Routing) -> Result<Routing, String> {
        let mut routing = Routing::empty();
        let Some(cfg) = cfg else {
            return Ok(routing);
        };
        let Some(sources) = &self.sources else {
            return Err("audit was started without handlers".into());
        };
        let repo = &sources.repo;
        for skipped in &cfg.skipped {
            tracing::warn!("{skipped}");
        }
        for h in cfg.handlers.iter().cloned() {
            let (tx, rx) = mpsc::channel(h.queue);
            let thread = std::thread::Builder::new().name(format!("audit-{}", h.name));
            let is_query_handler = cfg.handler_for_queries.as_deref() == Some(h.name.as_str());
            let writer = Writer {
                interval: h.write_interval,
                closing: self.closing.clone(),
            };
            let handle = match h.kind {
                HandlerKind::JsonFile(f) => {
                    if is_query_handler {
                        routing.query = Some(QuerySource::Files(f.dir.clone()));
                    }
                    let before: Vec<Arc<Finished>> = prev
                        .json_writers
                        .iter()
                        .filter(|(dir, _)| *dir == f.dir)
                        .map(|(_, done)| done.clone())
                        .collect();
                    let finished = Arc::new(Finished::default());
                    routing
                        .json_writers
                        .push((f.dir.clone(), finished.clone()));
                    let file = file::JsonFileWriter::new(f);
                    thread.spawn(move || {
                        let _finished = SetOnDrop(finished);
                        for done in before {
                            if !done.wait(HANDOVER_TIMEOUT) {
                                tracing::warn!("the replaced audit handler of the same log directory is still writing; both write now");
                            }
                        }
                        file.run(rx, writer)
                    })
                }
                HandlerKind::Repo => {
                    if is_query_handler {
                        routing.query = Some(QuerySource::Store(repo.clone()));
                    }
                    let repo = repo.clone();
                    thread.spawn(move || store::run(repo, rx, writer))
                }
            }
            .map_err(|e| format!("cannot start audit handler '{}': {e}", h.name))?;
            self.threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle);
            for topic in &h.topics {
                routing
                    .routes
                    .entry(topic.clone())
                    .or_insert_with(|| Route {
                        topic: Arc::from(topic.as_str()),
                        queues: Vec::new(),
                    })
                    .queues
                    .push(tx.clone());
            }
        }
        routing.actions = cfg.actions.clone();
        routing.password_fields = cfg.password_fields.clone();
        routing.config = Some(cfg);
        Ok(routing)
    }

    /// Whether some handler writes `topic`: callers skip building events nobody wants.
    pub fn wants(&self, topic: &str) -> bool {
        self.live.load().routes.contains_key(topic)
    }

    /// Where queries read, if a `handlerForQueries` runs.
    pub fn query_source(&self) -> Option<QuerySource> {
        self.live.load().query.clone()
    }

    /// `eventTopics.activity.passwordFields` of the running configuration.
    pub fn password_fields(&self) -> Vec<String> {
        self.live.load().password_fields.clone()
    }

    /// Writes what the handlers have queued and stops them; waits at most `timeout` (a
    /// handler stuck on its output is left behind).
    pub fn close(&self, timeout: Duration) {
        self.closing.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in &threads {
            t.thread().unpark();
        }
        let deadline = Instant::now() + timeout;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!(
                    "an audit handler did not finish writing before the process stopped"
                );
            }
        }
    }

    /// Queues one serialized event for every handler of `route`; never waits. Callers
    /// look the route up first, so an event nobody wants is never built.
    fn send(&self, route: &Route, json: String) {
        let event = Event {
            topic: route.topic.clone(),
            json: Arc::new(json),
        };
        for q in &route.queues {
            if q.try_send(event.clone()).is_err() {
                self.dropped.with_label_values(&[&route.topic]).inc();
                self.warn_full(&route.topic);
            }
        }
    }

    fn warn_full(&self, topic: &str) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64)
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(topic, "an audit handler's queue is full: events are dropped (counted in idm_gateway_audit_dropped_total)");
        }
    }

    /// The `access` event of one request.
    pub fn access(&self, record: &AccessRecord<'_>) {
        if let Some(route) = self.live.load().routes.get("access") {
            self.send(route, event::access(record));
        }
    }

    /// One authentication attempt by `principal`; `caller` when it succeeded.
    pub fn authentication(
        &self,
        principal: &str,
        caller: Option<&Caller>,
        txid: &str,
        ip: Option<std::net::IpAddr>,
    ) {
        if let Some(route) = self.live.load().routes.get("authentication") {
            self.send(route, event::authentication(principal, caller, txid, ip));
        }
    }

    /// A write of a managed or internal object (`activity`) or of a config object
    /// (`config`).
    pub fn object_change(&self, topic: &str, change: ObjectChange<'_>) {
        let live = self.live.load();
        if let Some(route) = live.routes.get(topic) {
            if live.keeps(topic, change.operation) {
                let event = event::object_change(topic, change, &live.password_fields);
                self.send(route, event.to_string());
            }
        }
    }

    /// What sync did to one object: a `recon` entry (`entry.recon_id` set) or a `sync`
    /// event, kept when the topic's `filter.actions` lists the action.
    pub fn sync_entry(&self, entry: &SyncEntry<'_>) {
        let topic = if entry.recon_id.is_some() {
            "recon"
        } else {
            "sync"
        };
        let live = self.live.load();
        if let Some(route) = live.routes.get(topic) {
            if live.keeps(topic, &entry.action.to_ascii_lowercase()) {
                self.send(route, event::sync_entry(entry));
            }
        }
    }

    /// Start or summary of a reconciliation run.
    pub fn recon(
        &self,
        entry_type: &str,
        recon_id: &str,
        mapping: &str,
        status: &str,
        detail: Value,
    ) {
        if let Some(route) = self.live.load().routes.get("recon") {
            let user = "openidm-admin";
            let event = event::recon(entry_type, recon_id, mapping, status, detail, user);
            self.send(route, event.to_string());
        }
    }
}

/// Activity events from managed object writes: a [`crate::events::ChangeHook`].
pub struct ActivityHook(pub Arc<Audit>);

impl crate::events::ChangeHook for ActivityHook {
    /// Activity events carry the object before an update or patch.
    fn wants_before(&self) -> bool {
        self.0.wants("activity")
    }

    /// IDM audits the writes of relationship edges like any other object's.
    fn on_relationship_change(&self, change: &crate::events::Change<'_>) {
        self.on_change(change);
    }

    fn on_change(&self, change: &crate::events::Change<'_>) {
        if !self.0.wants("activity") {
            return;
        }
        let operation = match (&change.request.op, change.kind) {
            (crate::crest::Operation::Patch { .. }, _) => "patch",
            (_, kind) => kind.as_str(),
        };
        let object_id = format!("{}/{}", change.resource, change.id);
        let revision = change
            .after
            .or(change.before)
            .and_then(|c| c.get("_rev"))
            .and_then(Value::as_str);
        self.0.object_change(
            "activity",
            ObjectChange {
                txid: &current_transaction(),
                caller: &change.request.caller,
                object_id: &object_id,
                operation,
                before: change.before.map(|m| Value::Object(m.clone())),
                after: change.after.map(|m| Value::Object(m.clone())),
                revision,
                password_written: event::writes_password(
                    &change.request.body,
                    &self.0.live.load().password_fields,
                ),
            },
        );
    }
}

/// `audit.json` from the conf dir (see [`parse_document`]). `Ok(None)`: no file.
pub fn load(
    conf_dir: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<Option<AuditConfig>, String> {
    let path = conf_dir.join("audit.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    parse_document(&doc, conf_dir, data_dir).map(Some)
}

/// `audit.json` (as written) with IDM's properties: `idm.data.dir` (the data dir),
/// `idm.install.dir`/`idm.instance.dir` (the project dir, parent of the conf dir), others
/// from the environment.
pub fn parse_document(
    doc: &Value,
    conf_dir: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<AuditConfig, String> {
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let data = abs(data_dir).display().to_string();
    let project = abs(conf_dir)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    config::parse(doc, &|name: &str| match name {
        "idm.data.dir" => Some(data.clone()),
        "idm.install.dir" | "idm.instance.dir" | "openidm.instance.dir" => Some(project.clone()),
        _ => crate::config::substitute::from_env(name),
    })
    .map_err(|problems| format!("audit.json: {}", problems.join("; ")))
}
