//! [`Scheduler`]: keeps run state (next and previous fire, pause, active runs) for the live
//! schedules, fires due jobs from a background loop, and answers the REST handler.
//!
//! Persisted jobs (`"persisted": true`, IDM's default) keep their trigger in the store
//! (`scheduler/triggers`, IDM's trigger shape): next and previous fire time and pause. A
//! due fire is claimed by a conditional write of the next fire time (on the record's
//! revision), so among the nodes sharing the store exactly one fires each trigger; after a
//! restart of every node the misfire policy applies from the stored next fire time. Jobs
//! with `"persisted": false` fire on every node from memory (pause lost on restart), as in
//! IDM.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::job::{format_time, Invoke, Job, MisfirePolicy, Schedules};
use super::scanner::TaskScanner;
use super::taskscan::TaskScan;
use crate::crest::ResourceError;
use crate::metrics::Metrics;
use crate::repo::{Repo, RepoError};
use crate::script::{vars, Script};
use crate::sync::SyncService;
use crate::system::service::SystemService;

/// The live schedules.
pub type ScheduleSource = Arc<dyn Fn() -> Arc<Schedules> + Send + Sync>;

/// A fire later than this after its time is a misfire (`misfirePolicy` applies).
const MISFIRE_THRESHOLD: chrono::Duration = chrono::Duration::seconds(5);
/// The loop re-reads the schedules at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// Resource of the persisted triggers.
pub const TRIGGERS: &str = "scheduler/triggers";
/// Quartz's group of IDM's scheduler.
pub const GROUP: &str = "scheduler-service-group";
/// How often a paused persisted job looks at its stored state (another node may resume it),
/// and how soon a stored trigger that could not be read is read again.
const RECHECK: chrono::Duration = chrono::Duration::seconds(1);
/// How often a node whose version of a persisted job is older than the stored one looks
/// again (until its config catches up).
const DEFER: chrono::Duration = chrono::Duration::seconds(5);

/// The store-backed part of persisted jobs.
struct TriggerStore {
    repo: Arc<dyn Repo>,
    node: String,
}

/// The trigger record id of job `name`.
pub fn trigger_id(name: &str) -> String {
    format!("{GROUP}.trigger-{name}")
}

/// What identifies a version of a job's schedule: a changed schedule starts its trigger
/// afresh.
fn fingerprint(job: &Job) -> String {
    use sha2::Digest;
    let text = serde_json::to_string(&job.raw).unwrap_or_default();
    let d = sha2::Sha256::digest(text.as_bytes());
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Whether stored trigger `t` is of a newer version of the job than `job` loaded at
/// `anchor` (a trigger without a version is older; equal times are ordered by fingerprint,
/// so two nodes always agree on which is newer).
fn newer(t: &Stored, anchor: DateTime<Utc>, job: &Job) -> bool {
    (t.version, t.fingerprint.as_str()) > (Some(anchor), fingerprint(job).as_str())
}

fn millis(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| json!(t.timestamp_millis()))
}

fn from_millis(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_i64)
        .and_then(DateTime::<Utc>::from_timestamp_millis)
}

/// A trigger record as stored (IDM's trigger object). `version`: when the node writing it
/// loaded this version of the job (the newest version a node loaded wins the record).
fn trigger_record(
    job: &Job,
    version: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    previous: Option<DateTime<Utc>>,
    paused: bool,
) -> Map<String, Value> {
    let Value::Object(m) = json!({
        "calendar": null,
        "group": GROUP,
        "jobKey": format!("{GROUP}.{}", job.name),
        "name": format!("trigger-{}", job.name),
        "nodeId": null,
        "previousState": null,
        "state": if paused { "PAUSED" } else { "NORMAL" },
        "serialized": {
            "type": match job.trigger {
                super::job::Trigger::Cron(_) => "CronTriggerImpl",
                super::job::Trigger::Simple { .. } => "SimpleTriggerImpl",
            },
            "nextFireTime": millis(next),
            "previousFireTime": millis(previous),
            "misfireInstruction": job.misfire.name(),
            "jobFingerprint": fingerprint(job),
            "jobVersionTime": version.timestamp_millis(),
        },
    }) else {
        unreachable!("a JSON object literal")
    };
    m
}

/// What a stored trigger says.
struct Stored {
    rev: String,
    next: Option<DateTime<Utc>>,
    previous: Option<DateTime<Utc>>,
    paused: bool,
    fingerprint: String,
    /// When the node that wrote it loaded its version of the job.
    version: Option<DateTime<Utc>>,
}

fn stored(o: &crate::repo::StoredObject) -> Stored {
    let ser = o.content.get("serialized");
    Stored {
        rev: o.rev.clone(),
        next: from_millis(ser.and_then(|s| s.get("nextFireTime"))),
        previous: from_millis(ser.and_then(|s| s.get("previousFireTime"))),
        paused: o.content.get("state").and_then(Value::as_str) == Some("PAUSED"),
        fingerprint: ser
            .and_then(|s| s.get("jobFingerprint"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        version: from_millis(ser.and_then(|s| s.get("jobVersionTime"))),
    }
}

struct JobState {
    job: Arc<Job>,
    /// Persisted jobs: the stored trigger was read (and written if new or changed) for
    /// this version of the job.
    loaded: bool,
    /// When this version of the job was loaded: the origin of simple triggers until the
    /// stored trigger says otherwise, and which of two versions is newer.
    anchor: DateTime<Utc>,
    /// Persisted jobs not loaded: when to read the stored trigger again (after a failure,
    /// or while another node's newer version of the job owns it).
    retry_at: Option<DateTime<Utc>>,
    /// The stored trigger belongs to a newer version of the job than this node's (warned
    /// once per version).
    deferred: bool,
    next: Option<DateTime<Utc>>,
    previous: Option<DateTime<Utc>>,
    paused: bool,
    /// Runs of this job not finished yet.
    active: Arc<AtomicUsize>,
}

impl JobState {
    fn compute_next(&mut self, now: DateTime<Utc>) {
        self.next = if self.job.enabled {
            self.job.next_after(now, self.anchor)
        } else {
            None
        };
    }
}

pub struct Scheduler {
    schedules: ScheduleSource,
    sync: Arc<SyncService>,
    /// liveSync jobs (`invokeService: "provisioner"`); set once the systems exist.
    systems: std::sync::OnceLock<Arc<SystemService>>,
    /// Script jobs and task scans (`"script"`, `"taskscanner"`): the scanner holds the
    /// script engine.
    scanner: std::sync::OnceLock<Arc<TaskScanner>>,
    metrics: Arc<Metrics>,
    state: Mutex<HashMap<String, JobState>>,
    wake: tokio::sync::Notify,
    /// Where persisted jobs keep their triggers; without it every job is in memory.
    store: std::sync::OnceLock<TriggerStore>,
}

/// Why a fire did not start a run.
#[derive(Debug)]
pub enum FireError {
    /// The previous run of the job is still active and `concurrentExecution` is false.
    Overlap,
    Failed(ResourceError),
}

impl From<FireError> for ResourceError {
    fn from(e: FireError) -> Self {
        match e {
            FireError::Overlap => ResourceError::new(
                409,
                "The previous run of this job is still active and concurrentExecution is false",
            ),
            FireError::Failed(e) => e,
        }
    }
}

impl Scheduler {
    pub fn new(schedules: ScheduleSource, sync: Arc<SyncService>, metrics: Arc<Metrics>) -> Self {
        Self {
            schedules,
            sync,
            systems: std::sync::OnceLock::new(),
            scanner: std::sync::OnceLock::new(),
            metrics,
            state: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            store: std::sync::OnceLock::new(),
        }
    }

    /// Keeps persisted jobs' triggers in `repo`, claimed as cluster node `node`.
    pub fn set_store(&self, repo: Arc<dyn Repo>, node: &str) {
        let _ = self.store.set(TriggerStore {
            repo,
            node: node.to_owned(),
        });
    }

    fn persisted(&self, job: &Job) -> Option<&TriggerStore> {
        self.store.get().filter(|_| job.persisted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JobState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the run state in line with the live schedules: new jobs get a next fire time,
    /// changed ones are rescheduled at once (keeping pause and previous run), removed ones
    /// are dropped.
    fn refresh(&self, now: DateTime<Utc>) {
        let live = (self.schedules)();
        let mut state = self.lock();
        state.retain(|name, _| live.contains_key(name));
        for (name, job) in live.iter() {
            match state.get_mut(name) {
                Some(s) if Arc::ptr_eq(&s.job, job) => {}
                Some(s) => {
                    s.job = job.clone();
                    s.anchor = now;
                    s.loaded = false;
                    s.retry_at = None;
                    s.deferred = false;
                    s.compute_next(now);
                    tracing::info!(job = %name, "schedule changed; rescheduled");
                }
                None => {
                    let mut s = JobState {
                        job: job.clone(),
                        loaded: false,
                        anchor: now,
                        retry_at: None,
                        deferred: false,
                        next: None,
                        previous: None,
                        paused: false,
                        active: Arc::new(AtomicUsize::new(0)),
                    };
                    s.compute_next(now);
                    state.insert(name.clone(), s);
                }
            }
        }
    }

    /// Advances every due job and returns those to fire now (`true`: a persisted job, to
    /// claim first).
    fn due(&self, now: DateTime<Utc>) -> Vec<(Arc<Job>, Arc<AtomicUsize>, bool)> {
        self.refresh(now);
        let has_store = self.store.get().is_some();
        let mut out = Vec::new();
        for (name, s) in self.lock().iter_mut() {
            let Some(next) = s.next else { continue };
            if next > now {
                continue;
            }
            if has_store && s.job.persisted {
                if s.loaded {
                    // The claim reads the stored trigger and sets the real next time.
                    s.next = Some(now + RECHECK);
                    out.push((s.job.clone(), s.active.clone(), true));
                }
                continue;
            }
            s.compute_next(now);
            if s.paused {
                continue;
            }
            if now - next > MISFIRE_THRESHOLD && s.job.misfire == MisfirePolicy::DoNothing {
                tracing::warn!(job = %name, scheduled = %format_time(next),
                    "schedule misfired; misfirePolicy doNothing: skipped");
                continue;
            }
            s.previous = Some(now);
            out.push((s.job.clone(), s.active.clone(), false));
        }
        out
    }

    /// Reads (or writes, when new or changed) the stored trigger of every persisted job
    /// not loaded yet: its next fire time, previous fire and pause become this node's.
    ///
    /// A stored trigger of another version of the job is replaced only by a newer version
    /// (loaded later, by `jobVersionTime`): a node whose config has not caught up yet (or
    /// whose hand-edited file differs) leaves the trigger to the node with the newer
    /// version instead of resetting it back and forth.
    async fn load_persisted(&self, now: DateTime<Utc>) {
        let Some(store) = self.store.get() else {
            return;
        };
        let pending: Vec<(Arc<Job>, DateTime<Utc>)> = self
            .lock()
            .values()
            .filter(|s| s.job.persisted && !s.loaded)
            .filter(|s| s.retry_at.is_none_or(|at| at <= now))
            .map(|s| (s.job.clone(), s.anchor))
            .collect();
        for (job, anchor) in pending {
            let id = trigger_id(&job.name);
            let existing = match store.repo.read(TRIGGERS, &id).await {
                Ok(existing) => existing,
                Err(e) => {
                    tracing::error!(job = %job.name, error = %e,
                        "cannot read the stored trigger of a persisted schedule; retrying");
                    self.retry_load(&job, now + RECHECK, false);
                    continue;
                }
            };
            let current = existing.as_ref().map(stored);
            let t = match current {
                Some(t) if t.fingerprint == fingerprint(&job) => t,
                Some(t) if newer(&t, anchor, &job) => {
                    if self.retry_load(&job, now + DEFER, true) {
                        tracing::warn!(job = %job.name,
                            "the stored trigger of this persisted schedule is a newer version of the job \
                             than this node's; the nodes with the newer version fire it until this \
                             node's config is the same");
                    }
                    continue;
                }
                _ => {
                    // New, or an older version of the schedule: it starts afresh from when
                    // this version was loaded.
                    let next = job.enabled.then(|| job.next_after(now, anchor)).flatten();
                    let paused = current.as_ref().is_some_and(|t| t.paused);
                    let record = trigger_record(&job, anchor, next, None, paused);
                    match write_trigger(store, &id, existing.as_ref(), record).await {
                        Ok(o) => stored(&o),
                        // Another node wrote it first: read it at the next pass.
                        Err(
                            RepoError::AlreadyExists { .. } | RepoError::RevisionMismatch { .. },
                        ) => continue,
                        Err(e) => {
                            tracing::error!(job = %job.name, error = %e,
                                "cannot write the stored trigger of a persisted schedule; retrying");
                            self.retry_load(&job, now + RECHECK, false);
                            continue;
                        }
                    }
                }
            };
            if let Some(s) = self.lock().get_mut(&job.name) {
                if Arc::ptr_eq(&s.job, &job) {
                    s.loaded = true;
                    s.retry_at = None;
                    s.deferred = false;
                    s.next = t.next;
                    s.previous = t.previous;
                    s.paused = t.paused;
                    if t.paused {
                        s.next = Some(now + RECHECK);
                    }
                }
            }
        }
    }

    /// Leaves persisted `job` unloaded until `at`; `deferred`: because the stored trigger
    /// is a newer version's. True the first time this version is deferred.
    fn retry_load(&self, job: &Arc<Job>, at: DateTime<Utc>, deferred: bool) -> bool {
        let mut state = self.lock();
        let Some(s) = state
            .get_mut(&job.name)
            .filter(|s| Arc::ptr_eq(&s.job, job))
        else {
            return false;
        };
        s.loaded = false;
        s.retry_at = Some(at);
        let first = deferred && !s.deferred;
        s.deferred |= deferred;
        first
    }

    /// Claims the due fire of persisted `job`: true if this node fires it. The stored next
    /// fire time is advanced by a write conditional on the record's revision, so only one
    /// node's claim of a trigger lands; a fire later than the misfire threshold follows
    /// the job's `misfirePolicy`.
    async fn claim(&self, job: &Arc<Job>, now: DateTime<Utc>) -> bool {
        let Some(store) = self.persisted(job) else {
            return true;
        };
        let id = trigger_id(&job.name);
        let o = match store.repo.read(TRIGGERS, &id).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                self.reload(job);
                return false;
            }
            Err(e) => {
                tracing::error!(job = %job.name, error = %e, "cannot read a stored trigger");
                return false;
            }
        };
        let t = stored(&o);
        if t.fingerprint != fingerprint(job) {
            self.reload(job);
            return false;
        }
        let local = |next: Option<DateTime<Utc>>, previous: Option<DateTime<Utc>>, paused: bool| {
            if let Some(s) = self.lock().get_mut(&job.name) {
                if Arc::ptr_eq(&s.job, job) {
                    s.next = next;
                    s.previous = previous;
                    s.paused = paused;
                }
            }
        };
        if t.paused {
            local(Some(now + RECHECK), t.previous, true);
            return false;
        }
        let Some(scheduled) = t.next.filter(|n| *n <= now) else {
            // Fired by another node already (or not due): its next time is ours.
            local(t.next, t.previous, false);
            return false;
        };
        // The next fire follows the stored one (a simple trigger without startTime keeps the
        // phase the trigger was created with, whichever node fires it).
        let next = job.next_after(now, scheduled);
        let misfired = now - scheduled > MISFIRE_THRESHOLD;
        let fire = !(misfired && job.misfire == MisfirePolicy::DoNothing);
        let previous = if fire { Some(now) } else { t.previous };
        // A trigger written before versions were stored is this node's version.
        let version = t
            .version
            .unwrap_or_else(|| self.lock().get(&job.name).map_or(now, |s| s.anchor));
        let record = trigger_record(job, version, next, previous, false);
        match store
            .repo
            .update(TRIGGERS, &id, Some(&t.rev), record, Default::default())
            .await
        {
            Ok(_) => {
                local(next, previous, false);
                if !fire {
                    tracing::warn!(job = %job.name, scheduled = %format_time(scheduled),
                        "schedule misfired; misfirePolicy doNothing: skipped");
                } else if misfired {
                    tracing::info!(job = %job.name, scheduled = %format_time(scheduled),
                        "schedule misfired; misfirePolicy fireAndProceed: fired once now");
                }
                fire
            }
            Err(RepoError::RevisionMismatch { .. } | RepoError::NotFound { .. }) => {
                // Another node claimed it: read what it wrote at the next pass.
                local(Some(now + RECHECK), t.previous, false);
                false
            }
            Err(e) => {
                tracing::error!(job = %job.name, node = %store.node, error = %e,
                    "cannot claim a persisted schedule's trigger");
                false
            }
        }
    }

    fn reload(&self, job: &Arc<Job>) {
        if let Some(s) = self.lock().get_mut(&job.name) {
            if Arc::ptr_eq(&s.job, job) {
                s.loaded = false;
            }
        }
    }

    fn sleep_for(&self, now: DateTime<Utc>) -> Duration {
        let has_store = self.store.get().is_some();
        self.lock()
            .values()
            .filter(|s| !s.paused)
            // Waiting for its stored trigger: the loop's pass reads it (at `retry_at`).
            .filter(|s| s.loaded || !(has_store && s.job.persisted))
            .filter_map(|s| s.next)
            .min()
            .and_then(|next| (next - now).to_std().ok())
            .unwrap_or(MAX_SLEEP)
            .clamp(Duration::from_millis(5), MAX_SLEEP)
    }

    /// The background loop: fires due jobs until the process ends or `drain` starts (this
    /// process handed its listeners to a new one, or is stopping). Runs already started go
    /// on; no new one starts, so the new process's scheduler is the only one firing.
    pub async fn run(self: Arc<Self>, drain: crate::lifecycle::Drain) {
        tracing::info!("scheduler started");
        loop {
            if drain.is_draining() {
                tracing::info!("scheduler stopped: the process is draining");
                return;
            }
            let now = Utc::now();
            self.refresh(now);
            self.load_persisted(now).await;
            for (job, active, persisted) in self.due(now) {
                // Each fire on its own task: a run that waits for completion (a task scan's
                // `waitForCompletion`) must not hold up the other jobs' fires.
                let me = self.clone();
                tokio::spawn(async move {
                    if persisted && !me.claim(&job, now).await {
                        return;
                    }
                    let _ = me.fire(&job, &active).await;
                });
            }
            let pause = self.sleep_for(Utc::now());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Gives the scheduler the systems its liveSync jobs run on.
    pub fn set_systems(&self, systems: Arc<SystemService>) {
        let _ = self.systems.set(systems);
    }

    /// Gives the scheduler the task scanner (and through it the script engine) its script
    /// and task scan jobs run on.
    pub fn set_scanner(&self, scanner: Arc<TaskScanner>) {
        let _ = self.scanner.set(scanner);
    }

    fn scanner_for(&self, job: &Job, active: &AtomicUsize) -> Result<Arc<TaskScanner>, FireError> {
        self.scanner.get().cloned().ok_or_else(|| {
            active.fetch_sub(1, Ordering::SeqCst);
            self.count(job, "failed");
            FireError::Failed(ResourceError::unavailable(
                "the script engine is not started",
            ))
        })
    }

    fn count(&self, job: &Job, outcome: &str) {
        self.metrics
            .scheduler_fires
            .with_label_values(&[&job.name, outcome])
            .inc();
    }

    /// Runs a script job in the background; a failure is logged and counted, as the
    /// failure of a run.
    fn script_job(
        &self,
        job: &Job,
        script: &Script,
        active: &Arc<AtomicUsize>,
    ) -> Result<Value, FireError> {
        let engine = self.scanner_for(job, active)?.engine().clone();
        self.count(job, "started");
        let (script, active, metrics) = (script.clone(), active.clone(), self.metrics.clone());
        let (name, context) = (job.name.clone(), job.raw.get("invokeContext").cloned());
        tokio::spawn(async move {
            let input = vars([("input", context.unwrap_or(Value::Null))]);
            match engine.eval(&script, input, &[]).await {
                Ok(_) => tracing::debug!(job = %name, "scheduled script ran"),
                Err(e) => {
                    metrics
                        .scheduler_fires
                        .with_label_values(&[&name, "failed"])
                        .inc();
                    tracing::error!(job = %name, error = %e, "scheduled script failed");
                }
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(json!({"_id": job.name, "success": true}))
    }

    /// Starts a task scan in the background; the job stays active until the scan ends (so
    /// `concurrentExecution: false` holds whether or not the scan has `waitForCompletion`,
    /// and a trigger over REST answers at once, as IDM's does).
    fn task_scan(
        &self,
        job: &Job,
        scan: &Arc<TaskScan>,
        active: &Arc<AtomicUsize>,
    ) -> Result<Value, FireError> {
        let scanner = self.scanner_for(job, active)?;
        self.count(job, "started");
        let run = scanner.begin(&job.name);
        let id = run.id.clone();
        let (active, scan) = (active.clone(), scan.clone());
        tokio::spawn(async move {
            scanner.perform(run, scan).await;
            active.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(json!({"_id": job.name, "success": true, "taskScanId": id}))
    }

    /// Runs one liveSync of `source` in the background; the job stays active until it ends.
    async fn live_sync(
        &self,
        job: &Job,
        source: &str,
        active: &Arc<AtomicUsize>,
    ) -> Result<Value, FireError> {
        let fail = |e: ResourceError| {
            active.fetch_sub(1, Ordering::SeqCst);
            self.metrics
                .scheduler_fires
                .with_label_values(&[&job.name, "failed"])
                .inc();
            tracing::error!(job = %job.name, source = %source, error = %e, "scheduled liveSync failed to start");
            FireError::Failed(e)
        };
        let Some(systems) = self.systems.get().cloned() else {
            return Err(fail(ResourceError::unavailable(
                "the systems are not started",
            )));
        };
        let (system, type_name) = SystemService::split_source(source).map_err(fail)?;
        systems.object_type(system, type_name).map_err(fail)?;
        self.metrics
            .scheduler_fires
            .with_label_values(&[&job.name, "started"])
            .inc();
        let (system, type_name) = (system.to_owned(), type_name.to_owned());
        let (name, active) = (job.name.clone(), active.clone());
        tokio::spawn(async move {
            if let Err(e) = systems.live_sync(&system, &type_name).await {
                tracing::error!(job = %name, source = %format!("system/{system}/{type_name}"),
                    error = %e, "scheduled liveSync failed");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(json!({"_id": job.name, "success": true, "source": source}))
    }

    /// Starts one run of `job`, unless its previous run is still active and it may not
    /// overlap. Counted in `idm_gateway_scheduler_fires_total`.
    async fn fire(&self, job: &Job, active: &Arc<AtomicUsize>) -> Result<Value, FireError> {
        let count = |outcome: &str| {
            self.metrics
                .scheduler_fires
                .with_label_values(&[&job.name, outcome])
                .inc()
        };
        if job.concurrent {
            active.fetch_add(1, Ordering::SeqCst);
        } else if active
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            count("skipped_overlap");
            tracing::info!(job = %job.name,
                "scheduled job skipped: its previous run is still active (concurrentExecution false)");
            return Err(FireError::Overlap);
        }
        let mapping = match &job.invoke {
            Invoke::Reconcile { mapping } => mapping,
            Invoke::LiveSync { source } => return self.live_sync(job, source, active).await,
            Invoke::Script(script) => return self.script_job(job, script, active),
            Invoke::TaskScan(scan) => return self.task_scan(job, scan, active),
        };
        match self.sync.start(mapping, None).await {
            Ok(run) => {
                count("started");
                tracing::info!(job = %job.name, mapping = %mapping, run = %run.id, "scheduled job fired");
                let active = active.clone();
                let id = run.id.clone();
                tokio::spawn(async move {
                    run.wait().await;
                    active.fetch_sub(1, Ordering::SeqCst);
                });
                Ok(json!({"_id": job.name, "success": true, "mapping": mapping, "reconId": id}))
            }
            // A run of the mapping is active, on this node or another one.
            Err(e) if e.code == 409 && !job.concurrent => {
                active.fetch_sub(1, Ordering::SeqCst);
                count("skipped_overlap");
                tracing::info!(job = %job.name, mapping = %mapping, reason = %e.message,
                    "scheduled job skipped: a run of its mapping is still active (concurrentExecution false)");
                Err(FireError::Overlap)
            }
            Err(e) => {
                active.fetch_sub(1, Ordering::SeqCst);
                count("failed");
                tracing::error!(job = %job.name, mapping = %mapping, error = %e, "scheduled job failed to start");
                Err(FireError::Failed(e))
            }
        }
    }

    /// Every job as the REST API shows it, by name.
    pub fn list(&self) -> Vec<Value> {
        self.refresh(Utc::now());
        let state = self.lock();
        let mut names: Vec<&String> = state.keys().collect();
        names.sort();
        names.into_iter().map(|n| view(&state[n])).collect()
    }

    pub fn get(&self, name: &str) -> Option<Value> {
        self.refresh(Utc::now());
        self.lock().get(name).map(view)
    }

    /// Pauses (`true`) or resumes a job; a resumed job fires at its next time from now. A
    /// persisted job's pause is stored (every node, and restarts, see it).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Value, ResourceError> {
        let now = Utc::now();
        self.refresh(now);
        let job = {
            let state = self.lock();
            state.get(name).ok_or_else(|| not_found(name))?.job.clone()
        };
        let anchor = self.lock().get(name).map(|s| s.anchor).unwrap_or(now);
        let mut stored_next = None;
        if let Some(store) = self.persisted(&job) {
            let id = trigger_id(name);
            loop {
                let existing = store.repo.read(TRIGGERS, &id).await.map_err(store_error)?;
                let current = existing.as_ref().map(stored);
                let record = match (&existing, &current) {
                    // A newer version of the job owns the trigger: only its state changes.
                    (Some(o), Some(t))
                        if t.fingerprint != fingerprint(&job) && newer(t, anchor, &job) =>
                    {
                        stored_next = t.next;
                        let mut content = o.content.clone();
                        let state = if paused { "PAUSED" } else { "NORMAL" };
                        content.insert("state".into(), json!(state));
                        content
                    }
                    _ => {
                        // A simple trigger keeps its phase: the stored next fire is its
                        // origin.
                        let origin = current.as_ref().and_then(|t| t.next).unwrap_or(anchor);
                        let next = job.enabled.then(|| job.next_after(now, origin)).flatten();
                        stored_next = next;
                        let previous = current.as_ref().and_then(|t| t.previous);
                        let version = current
                            .as_ref()
                            .filter(|t| t.fingerprint == fingerprint(&job))
                            .and_then(|t| t.version)
                            .unwrap_or(anchor);
                        trigger_record(&job, version, next, previous, paused)
                    }
                };
                let written = write_trigger(store, &id, existing.as_ref(), record).await;
                match written {
                    Ok(_) => break,
                    Err(RepoError::RevisionMismatch { .. } | RepoError::AlreadyExists { .. }) => {
                        continue
                    }
                    Err(e) => return Err(store_error(e)),
                }
            }
        }
        let out = {
            let mut state = self.lock();
            let s = state.get_mut(name).ok_or_else(|| not_found(name))?;
            if s.paused != paused {
                s.paused = paused;
                s.compute_next(now);
                tracing::info!(job = %name, paused, "scheduled job {}", if paused { "paused" } else { "resumed" });
            }
            if s.job.persisted && self.store.get().is_some() {
                // What was stored; the loop's next pass reads the trigger back.
                s.next = stored_next;
                s.loaded = false;
                s.retry_at = None;
            }
            view(s)
        };
        self.wake.notify_one();
        Ok(out)
    }

    /// Pauses or resumes every job (`pauseJobs`, `resumeJobs`).
    pub async fn set_all_paused(&self, paused: bool) -> Result<(), ResourceError> {
        self.refresh(Utc::now());
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for name in names {
            self.set_paused(&name, paused).await?;
        }
        Ok(())
    }

    /// The jobs with a run active on this node (`listCurrentlyExecutingJobs`).
    pub fn executing(&self) -> Vec<Value> {
        let state = self.lock();
        let mut names: Vec<&String> = state
            .iter()
            .filter(|(_, s)| s.active.load(Ordering::SeqCst) > 0)
            .map(|(n, _)| n)
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| Value::Object(state[n].job.to_json()))
            .collect()
    }

    /// `scheduler/acquiredTriggers` (`acquired`) or `scheduler/waitingTriggers`: the ids of
    /// the stored triggers acquired by this node, or waiting for their time. Triggers are
    /// claimed at their fire time, never acquired ahead, so none is ever shown acquired.
    pub async fn trigger_lists(&self, acquired: bool) -> Result<Value, ResourceError> {
        let node = self.store.get().map(|s| s.node.clone()).unwrap_or_default();
        let triggers = self.triggers().await?;
        let ids: Vec<&Value> = triggers
            .iter()
            .filter(|t| t["nodeId"].is_null() != acquired && t["state"] == "NORMAL")
            .map(|t| &t["_id"])
            .collect();
        Ok(if acquired {
            json!({"_id": "acquiredTriggers", "nodeId": node, "triggers": ids})
        } else {
            json!({"_id": "waitingTriggers", "triggers": ids})
        })
    }

    /// The stored triggers of persisted jobs, as `scheduler/trigger` shows them.
    pub async fn triggers(&self) -> Result<Vec<Value>, ResourceError> {
        let Some(store) = self.store.get() else {
            return Ok(Vec::new());
        };
        let filter = crate::crest::filter::QueryFilter::True;
        let page = store
            .repo
            .query(TRIGGERS, crate::repo::RepoQuery::all(&filter, &[]))
            .await
            .map_err(store_error)?;
        Ok(page
            .results
            .into_iter()
            .map(|o| trigger_view(o.id, o.rev, o.content))
            .collect())
    }

    /// Fires a job now (respecting `concurrentExecution`).
    pub async fn trigger(&self, name: &str) -> Result<Value, ResourceError> {
        let now = Utc::now();
        self.refresh(now);
        let (job, active) = {
            let mut state = self.lock();
            let s = state.get_mut(name).ok_or_else(|| not_found(name))?;
            (s.job.clone(), s.active.clone())
        };
        let out = self.fire(&job, &active).await?;
        if let Some(s) = self.lock().get_mut(name) {
            s.previous = Some(now);
        }
        Ok(out)
    }

    /// Wakes the loop (after a job was written or removed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Replaces the trigger `existing` (if its revision is still current) or creates it when
/// there was none: [`RepoError::RevisionMismatch`] / [`RepoError::AlreadyExists`] when
/// another node wrote it first.
async fn write_trigger(
    store: &TriggerStore,
    id: &str,
    existing: Option<&crate::repo::StoredObject>,
    record: Map<String, Value>,
) -> Result<crate::repo::StoredObject, RepoError> {
    match existing {
        Some(o) => {
            store
                .repo
                .update(TRIGGERS, id, Some(&o.rev), record, Default::default())
                .await
        }
        None => {
            store
                .repo
                .create(TRIGGERS, id, record, Default::default())
                .await
        }
    }
}

fn store_error(e: RepoError) -> ResourceError {
    tracing::error!(error = %e, "scheduler store failure");
    ResourceError::internal("The store failed to process the request")
}

/// A stored trigger as IDM shows it (`_id`, `_rev` first; the gateway's fingerprint left
/// out).
fn trigger_view(id: String, rev: String, mut content: Map<String, Value>) -> Value {
    if let Some(Value::Object(s)) = content.get_mut("serialized") {
        s.remove("jobFingerprint");
    }
    let mut out = Map::new();
    out.insert("_id".into(), json!(id));
    out.insert("_rev".into(), json!(rev));
    out.extend(content);
    Value::Object(out)
}

pub fn not_found(name: &str) -> ResourceError {
    ResourceError::not_found(format!("Schedule '{name}' not found"))
}

fn view(s: &JobState) -> Value {
    let mut out = s.job.to_json();
    out.insert(
        "nextRunDate".into(),
        json!(s.next.filter(|_| !s.paused).map(format_time)),
    );
    out.insert("previousRunDate".into(), json!(s.previous.map(format_time)));
    out.insert("paused".into(), json!(s.paused));
    out.insert("running".into(), json!(s.active.load(Ordering::SeqCst) > 0));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::mapping::Mappings;

    /// A node's scheduler of `jobs` on the shared `repo` (nothing fires: the tests drive
    /// `due` and `claim` on their own clock).
    fn node(repo: &Arc<dyn Repo>, id: &str, jobs: &[(&str, Value)]) -> Arc<Scheduler> {
        let schedules: Schedules = jobs
            .iter()
            .map(|(name, doc)| {
                let job = super::super::job::parse_job(name, doc).unwrap();
                (name.to_string(), Arc::new(job))
            })
            .collect();
        let schedules = Arc::new(schedules);
        let metrics = Arc::new(Metrics::new());
        let sync = Arc::new(SyncService::new(
            repo.clone(),
            Arc::new(|| Arc::new(Mappings::default())),
            metrics.clone(),
        ));
        let s = Scheduler::new(Arc::new(move || schedules.clone()), sync, metrics);
        s.set_store(repo.clone(), id);
        Arc::new(s)
    }

    fn every(ms: u64) -> Value {
        json!({"enabled": true, "persisted": true, "type": "simple", "repeatInterval": ms,
               "invokeService": "script",
               "invokeContext": {"script": {"type": "text/javascript", "source": "1;"}}})
    }

    /// One pass of `node`'s loop at `now`: the fires of persisted jobs it claims.
    async fn pass(node: &Scheduler, now: DateTime<Utc>) -> Vec<String> {
        node.refresh(now);
        node.load_persisted(now).await;
        let mut fired = Vec::new();
        for (job, _, persisted) in node.due(now) {
            assert!(persisted);
            if node.claim(&job, now).await {
                fired.push(job.name.clone());
            }
        }
        fired
    }

    async fn stored_trigger(repo: &Arc<dyn Repo>, name: &str) -> Stored {
        stored(
            &repo
                .read(TRIGGERS, &trigger_id(name))
                .await
                .unwrap()
                .unwrap(),
        )
    }

    fn repo() -> Arc<dyn Repo> {
        Arc::new(crate::repo::sqlite::SqliteRepo::open_temporary().unwrap())
    }

    #[tokio::test]
    async fn a_simple_trigger_keeps_its_phase_whichever_node_fires_it() {
        let repo = repo();
        let t0 = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000).unwrap();
        let ms = chrono::Duration::milliseconds;
        // The nodes load the job half an interval apart.
        let a = node(&repo, "a", &[("tick", every(1000))]);
        let b = node(&repo, "b", &[("tick", every(1000))]);
        assert!(pass(&a, t0).await.is_empty());
        assert!(pass(&b, t0 + ms(500)).await.is_empty());
        let mut fires = Vec::new();
        for step in 6..=105 {
            let now = t0 + ms(step * 100);
            // The later node looks first: it claims the fires.
            for n in [&b, &a] {
                if !pass(n, now).await.is_empty() {
                    fires.push((now - t0).num_milliseconds());
                }
            }
        }
        // Once a second, on the phase of the node that created the trigger.
        assert_eq!(fires, (1..=10).map(|k| k * 1000).collect::<Vec<_>>());
        assert_eq!(
            stored_trigger(&repo, "tick").await.next,
            Some(t0 + ms(11_000))
        );
    }

    #[tokio::test]
    async fn a_changed_job_owns_its_trigger_and_an_older_node_defers_to_it() {
        let repo = repo();
        let t0 = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000).unwrap();
        let ms = chrono::Duration::milliseconds;
        let old = node(&repo, "old", &[("tick", every(1000))]);
        assert!(pass(&old, t0).await.is_empty());
        // A newer version (every 3 s) is loaded on the other node later.
        let new = node(&repo, "new", &[("tick", every(3000))]);
        assert!(pass(&new, t0 + ms(1500)).await.is_empty());
        let new_fp = fingerprint(&new.lock()["tick"].job);
        let t = stored_trigger(&repo, "tick").await;
        assert_eq!(t.fingerprint, new_fp);
        assert_eq!(t.next, Some(t0 + ms(4500)), "starts afresh from its load");

        let mut fires = Vec::new();
        for step in 16..=120 {
            let now = t0 + ms(step * 100);
            for (who, n) in [("old", &old), ("new", &new)] {
                if !pass(n, now).await.is_empty() {
                    fires.push((who, (now - t0).num_milliseconds()));
                }
            }
            // The older node never takes the trigger back (nor moves its next fire).
            let t = stored_trigger(&repo, "tick").await;
            assert_eq!(t.fingerprint, new_fp, "at {step}");
            assert!(t
                .next
                .is_some_and(|n| (n - t0).num_milliseconds() % 3000 == 1500));
        }
        // On the new schedule only, fired by the node that has it.
        assert_eq!(fires, [("new", 4500), ("new", 7500), ("new", 10_500)]);
        assert!(old.lock()["tick"].deferred);
    }
}
