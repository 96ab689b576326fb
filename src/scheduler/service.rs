//! [`Scheduler`]: keeps run state (next and previous fire, pause, active runs) for the live
//! schedules, fires due jobs from a background loop, and answers the REST handler.
//!
//! Pause state is kept in memory: it survives reloads of the job's file but not a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::job::{format_time, Invoke, Job, MisfirePolicy, Schedules};
use super::scanner::TaskScanner;
use super::taskscan::TaskScan;
use crate::crest::ResourceError;
use crate::metrics::Metrics;
use crate::script::{vars, Script};
use crate::sync::SyncService;
use crate::system::service::SystemService;

/// The live schedules.
pub type ScheduleSource = Arc<dyn Fn() -> Arc<Schedules> + Send + Sync>;

/// A fire later than this after its time is a misfire (`misfirePolicy` applies).
const MISFIRE_THRESHOLD: chrono::Duration = chrono::Duration::seconds(5);
/// The loop re-reads the schedules at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(250);

struct JobState {
    job: Arc<Job>,
    /// When this version of the job was loaded: the origin of simple triggers.
    anchor: DateTime<Utc>,
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
        }
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
                    s.compute_next(now);
                    tracing::info!(job = %name, "schedule changed; rescheduled");
                }
                None => {
                    let mut s = JobState {
                        job: job.clone(),
                        anchor: now,
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

    /// Advances every due job and returns those to fire now.
    fn due(&self, now: DateTime<Utc>) -> Vec<(Arc<Job>, Arc<AtomicUsize>)> {
        self.refresh(now);
        let mut out = Vec::new();
        for (name, s) in self.lock().iter_mut() {
            let Some(next) = s.next else { continue };
            if next > now {
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
            out.push((s.job.clone(), s.active.clone()));
        }
        out
    }

    fn sleep_for(&self, now: DateTime<Utc>) -> Duration {
        self.lock()
            .values()
            .filter(|s| !s.paused)
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
            for (job, active) in self.due(now) {
                // Each fire on its own task: a run that waits for completion (a task scan's
                // `waitForCompletion`) must not hold up the other jobs' fires.
                let me = self.clone();
                tokio::spawn(async move {
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

    /// Pauses (`true`) or resumes a job; a resumed job fires at its next time from now.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<Value, ResourceError> {
        let now = Utc::now();
        self.refresh(now);
        let out = {
            let mut state = self.lock();
            let s = state.get_mut(name).ok_or_else(|| not_found(name))?;
            if s.paused != paused {
                s.paused = paused;
                s.compute_next(now);
                tracing::info!(job = %name, paused, "scheduled job {}", if paused { "paused" } else { "resumed" });
            }
            view(s)
        };
        self.wake.notify_one();
        Ok(out)
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
