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
//! `audit.json` is read at start-up (a change needs a restart); without the file nothing
//! is audited, as in IDM.

pub mod config;
pub mod event;
pub mod file;
pub mod handler;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

pub struct Audit {
    routes: HashMap<String, Route>,
    actions: HashMap<String, Vec<String>>,
    password_fields: Vec<String>,
    query: Option<QuerySource>,
    dropped: prometheus::IntCounterVec,
    closing: Arc<AtomicBool>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Milliseconds since `started` of the last "queue full" warning (0: none yet).
    last_warning: AtomicU64,
    started: Instant,
}

impl Audit {
    /// Nothing audited (no `audit.json`).
    pub fn disabled(dropped: prometheus::IntCounterVec) -> Self {
        Self {
            routes: HashMap::new(),
            actions: HashMap::new(),
            password_fields: vec!["password".into()],
            query: None,
            dropped,
            closing: Arc::new(AtomicBool::new(false)),
            threads: std::sync::Mutex::new(Vec::new()),
            last_warning: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Starts one writer thread per handler of `cfg`.
    pub fn start(
        cfg: AuditConfig,
        repo: Arc<dyn Repo>,
        dropped: prometheus::IntCounterVec,
    ) -> Result<Self, String> {
        let mut audit = Self::disabled(dropped);
        for skipped in &cfg.skipped {
            tracing::warn!("{skipped}");
        }
        for h in cfg.handlers {
            let (tx, rx) = mpsc::channel(h.queue);
            let thread = std::thread::Builder::new().name(format!("audit-{}", h.name));
            let is_query_handler = cfg.handler_for_queries.as_deref() == Some(h.name.as_str());
            let writer = Writer {
                interval: h.write_interval,
                closing: audit.closing.clone(),
            };
            let handle = match h.kind {
                HandlerKind::JsonFile(f) => {
                    if is_query_handler {
                        audit.query = Some(QuerySource::Files(f.dir.clone()));
                    }
                    let file = file::JsonFileWriter::new(f);
                    thread.spawn(move || file.run(rx, writer))
                }
                HandlerKind::Repo => {
                    if is_query_handler {
                        audit.query = Some(QuerySource::Store(repo.clone()));
                    }
                    let repo = repo.clone();
                    thread.spawn(move || store::run(repo, rx, writer))
                }
            }
            .map_err(|e| format!("cannot start audit handler '{}': {e}", h.name))?;
            audit
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle);
            for topic in h.topics {
                audit
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
        audit.actions = cfg.actions;
        audit.password_fields = cfg.password_fields;
        Ok(audit)
    }

    /// Whether some handler writes `topic`: callers skip building events nobody wants.
    pub fn wants(&self, topic: &str) -> bool {
        self.routes.contains_key(topic)
    }

    /// Where queries read, if a `handlerForQueries` runs.
    pub fn query_source(&self) -> Option<&QuerySource> {
        self.query.as_ref()
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

    /// Whether `topic`'s `filter.actions` keeps `operation`.
    fn keeps(&self, topic: &str, operation: &str) -> bool {
        self.actions
            .get(topic)
            .is_none_or(|a| a.iter().any(|x| x == operation))
    }

    /// The `access` event of one request.
    pub fn access(&self, record: &AccessRecord<'_>) {
        if let Some(route) = self.routes.get("access") {
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
        if let Some(route) = self.routes.get("authentication") {
            self.send(route, event::authentication(principal, caller, txid, ip));
        }
    }

    /// A write of a managed or internal object (`activity`) or of a config object
    /// (`config`).
    pub fn object_change(&self, topic: &str, change: ObjectChange<'_>) {
        if let Some(route) = self.routes.get(topic) {
            if self.keeps(topic, change.operation) {
                let event = event::object_change(topic, change, &self.password_fields);
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
        if let Some(route) = self.routes.get(topic) {
            if self.keeps(topic, &entry.action.to_ascii_lowercase()) {
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
        if let Some(route) = self.routes.get("recon") {
            let user = "openidm-admin";
            let event = event::recon(entry_type, recon_id, mapping, status, detail, user);
            self.send(route, event.to_string());
        }
    }
}

/// Activity events from managed object writes: a [`crate::events::ChangeHook`].
pub struct ActivityHook(pub Arc<Audit>);

impl crate::events::ChangeHook for ActivityHook {
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
                    &self.0.password_fields,
                ),
            },
        );
    }
}

/// `audit.json` from the conf dir, with IDM's properties: `idm.data.dir` (the data dir),
/// `idm.install.dir`/`idm.instance.dir` (the project dir, parent of the conf dir), others
/// from the environment. `Ok(None)`: no file.
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
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let data = abs(data_dir).display().to_string();
    let project = abs(conf_dir)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    config::parse(&doc, &|name: &str| match name {
        "idm.data.dir" => Some(data.clone()),
        "idm.install.dir" | "idm.instance.dir" | "openidm.instance.dir" => Some(project.clone()),
        _ => crate::config::substitute::from_env(name),
    })
    .map(Some)
    .map_err(|problems| format!("audit.json: {}", problems.join("; ")))
}
