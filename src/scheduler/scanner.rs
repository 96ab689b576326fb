//! [`TaskScanner`]: runs task scans (IDM's `taskscanner` service). A run queries the
//! scanned resource, claims each object by writing its `taskState.started` marker (with
//! the object's revision, so two runs never both take it), runs the task script with
//! `input` and `objectID`, and writes `taskState.completed`. The markers live on the
//! objects, so a run that stopped (cancel, restart) is resumed by the next one: completed
//! objects are never taken again, started ones only after `recovery.timeout`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::job::{format_time, parse_time, Invoke};
use super::service::ScheduleSource;
use super::taskscan::{ScanQuery, TaskScan};
use crate::crest::{
    Caller, Operation, QueryKind, QueryParams, Request, ResourceError, Response, Router,
};
use crate::script::{vars, ScriptEngine};

/// Finished runs kept for `GET /openidm/taskscanner` (IDM's `maxcompletedruns` default).
const MAX_COMPLETED_RUNS: usize = 100;

/// One run of a task scan: what `GET /openidm/taskscanner/<id>` shows.
pub struct ScanRun {
    pub id: String,
    /// The schedule that started it.
    pub name: String,
    state: Mutex<RunTimes>,
    total: AtomicU64,
    processed: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    cancel: AtomicBool,
}

struct RunTimes {
    state: &'static str,
    started: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
}

impl ScanRun {
    fn new(name: &str) -> Self {
        Self {
            id: crate::repo::new_object_id(),
            name: name.to_owned(),
            state: Mutex::new(RunTimes {
                state: "INITIALIZED",
                started: Utc::now(),
                ended: None,
            }),
            total: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
        }
    }

    fn times(&self) -> std::sync::MutexGuard<'_, RunTimes> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, state: &'static str) {
        let mut t = self.times();
        // A run cancelled before it started stays CANCELLED.
        if !(state == "ACTIVE" && t.state == "CANCELLED") {
            t.state = state;
        }
        if state != "ACTIVE" {
            t.ended = Some(Utc::now());
        }
    }

    pub fn is_finished(&self) -> bool {
        self.times().ended.is_some()
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// IDM's view: `_id`, `name`, `progress`, `started` and `ended` (epoch milliseconds).
    pub fn to_json(&self) -> Value {
        let t = self.times();
        json!({
            "_id": self.id,
            "name": self.name,
            "progress": {
                "state": t.state,
                "processed": self.processed.load(Ordering::SeqCst),
                "total": self.total.load(Ordering::SeqCst),
                "successes": self.successes.load(Ordering::SeqCst),
                "failures": self.failures.load(Ordering::SeqCst),
            },
            "started": t.started.timestamp_millis(),
            "ended": t.ended.map(|e| e.timestamp_millis()),
        })
    }
}

/// What became of one object.
enum Outcome {
    Success,
    Failure,
    /// Claimed by another run meanwhile, or completed: not this run's.
    Skipped,
}

pub struct TaskScanner {
    engine: Arc<ScriptEngine>,
    schedules: ScheduleSource,
    router: OnceLock<Weak<Router>>,
    runs: Mutex<VecDeque<Arc<ScanRun>>>,
}

impl TaskScanner {
    pub fn new(engine: Arc<ScriptEngine>, schedules: ScheduleSource) -> Self {
        Self {
            engine,
            schedules,
            router: OnceLock::new(),
            runs: Mutex::new(VecDeque::new()),
        }
    }

    pub fn engine(&self) -> &Arc<ScriptEngine> {
        &self.engine
    }

    /// The router scans query and write objects through (held weakly: the router owns the
    /// handler that owns the scanner).
    pub fn set_router(&self, router: &Arc<Router>) {
        let _ = self.router.set(Arc::downgrade(router));
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<ScanRun>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every run kept, oldest first.
    pub fn list(&self) -> Vec<Value> {
        self.lock_runs().iter().map(|r| r.to_json()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<ScanRun>> {
        self.lock_runs().iter().find(|r| r.id == id).cloned()
    }

    /// Asks a run to stop: objects being processed finish, no other is taken. `false`
    /// when the run had already ended.
    pub fn cancel(&self, id: &str) -> Result<bool, ResourceError> {
        let run = self
            .get(id)
            .ok_or_else(|| ResourceError::not_found(format!("Task scan '{id}' not found")))?;
        if run.is_finished() {
            return Ok(false);
        }
        run.cancel.store(true, Ordering::SeqCst);
        // As IDM: the state says CANCELLED at once; `ended` is set when the objects in
        // flight are done.
        run.times().state = "CANCELLED";
        tracing::info!(task = %id, name = %run.name, "task scan cancel requested");
        Ok(true)
    }

    /// The task scan of the schedule `name` (`sunsetTask` or `schedule/sunsetTask`).
    pub fn scan_of(&self, name: &str) -> Result<Arc<TaskScan>, ResourceError> {
        let name = super::job::schedule_name(name).unwrap_or(name);
        match (self.schedules)().get(name).map(|j| &j.invoke) {
            Some(Invoke::TaskScan(scan)) => Ok(scan.clone()),
            Some(_) => Err(ResourceError::bad_request(format!(
                "Schedule '{name}' is not a task scan (invokeService \"taskscanner\")"
            ))),
            // IDM answers a name it cannot resolve with 400, not 404.
            None => Err(ResourceError::bad_request(format!(
                "Error obtaining named config: schedule '{name}' not found"
            ))),
        }
    }

    /// Registers a new run of `scan` for the schedule `name`; [`Self::perform`] does it.
    pub fn begin(&self, name: &str) -> Arc<ScanRun> {
        let run = Arc::new(ScanRun::new(name));
        let mut runs = self.lock_runs();
        runs.push_back(run.clone());
        // Keep the active runs and the last finished ones.
        let finished = runs.iter().filter(|r| r.is_finished()).count();
        let mut excess = finished.saturating_sub(MAX_COMPLETED_RUNS);
        runs.retain(|r| {
            if excess > 0 && r.is_finished() {
                excess -= 1;
                false
            } else {
                true
            }
        });
        run
    }

    /// Starts a run of the schedule `name` now: it ends before this returns when the scan
    /// has `waitForCompletion`, else in the background.
    pub async fn execute(self: &Arc<Self>, name: &str) -> Result<Arc<ScanRun>, ResourceError> {
        let scan = self.scan_of(name)?;
        let name = super::job::schedule_name(name).unwrap_or(name);
        let run = self.begin(name);
        if scan.wait_for_completion {
            self.clone().perform(run.clone(), scan).await;
        } else {
            tokio::spawn(self.clone().perform(run.clone(), scan));
        }
        Ok(run)
    }

    /// Runs `scan` to its end (or cancel).
    pub async fn perform(self: Arc<Self>, run: Arc<ScanRun>, scan: Arc<TaskScan>) {
        run.set_state("ACTIVE");
        tracing::info!(task = %run.id, name = %run.name, object = %scan.object, "task scan started");
        let now = Utc::now();
        let found = match self.query(&scan, now).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(task = %run.id, name = %run.name, error = %e, "task scan query failed");
                run.set_state("ERROR");
                return;
            }
        };
        // Completed objects are never taken again (whether or not the filter excludes
        // them); started ones only once their recovery timeout has passed.
        let todo: VecDeque<Value> = found
            .into_iter()
            .filter(|o| due(o, &scan, now))
            .take(scan.max_records.unwrap_or(usize::MAX))
            .collect();
        run.total.store(todo.len() as u64, Ordering::SeqCst);
        let threads = scan.threads.min(todo.len()).max(1);
        let queue = Arc::new(Mutex::new(todo));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..threads {
            let (me, run, scan, queue) = (self.clone(), run.clone(), scan.clone(), queue.clone());
            workers.spawn(async move {
                while !run.cancelled() {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(object) = next else { break };
                    let counter = match me.process(&run, &scan, object).await {
                        Outcome::Success => &run.successes,
                        Outcome::Failure => &run.failures,
                        Outcome::Skipped => continue,
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    run.processed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        while workers.join_next().await.is_some() {}
        run.set_state(if run.cancelled() {
            "CANCELLED"
        } else {
            "COMPLETED"
        });
        tracing::info!(task = %run.id, name = %run.name, progress = %run.to_json()["progress"],
            "task scan ended");
    }

    fn router(&self) -> Result<Arc<Router>, ResourceError> {
        self.router
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| ResourceError::unavailable("the router is not available"))
    }

    async fn call(&self, req: Request) -> Result<Response, ResourceError> {
        self.router()?.handle(&req).await
    }

    fn request(op: Operation, path: &str) -> Request {
        Request::new(op, path, Arc::new(Caller::system()))
    }

    async fn query(
        &self,
        scan: &TaskScan,
        now: DateTime<Utc>,
    ) -> Result<Vec<Value>, ResourceError> {
        let kind = match scan.query_at(now).map_err(ResourceError::bad_request)? {
            ScanQuery::Filter(f) => QueryKind::Filter(f),
            ScanQuery::Id(id) => QueryKind::Id(id),
        };
        let mut params = QueryParams::filter("");
        params.kind = kind;
        let req = Self::request(Operation::Query(Box::new(params)), &scan.object);
        let results = match self.call(req).await? {
            Response::Query(q) => q.results,
            _ => return Err(ResourceError::internal("unexpected answer to a query")),
        };
        // An ids-only answer (`_queryId: query-all-ids`) carries no markers: each object is
        // read whole, or completed objects would be taken again.
        let mut out = Vec::with_capacity(results.len());
        for object in results {
            let ids_only = object
                .as_object()
                .is_some_and(|m| m.keys().all(|k| k == "_id" || k == "_rev"));
            let id = object.get("_id").and_then(Value::as_str);
            match (ids_only, id) {
                (true, Some(id)) => match self.read(&format!("{}/{id}", scan.object)).await {
                    Ok(full) => out.push(full),
                    Err(e) if e.code == 404 => {} // deleted since the query
                    Err(e) => return Err(e),
                },
                _ => out.push(object),
            }
        }
        Ok(out)
    }

    async fn read(&self, path: &str) -> Result<Value, ResourceError> {
        let req = Self::request(
            Operation::Read {
                if_none_match: None,
            },
            path,
        );
        match self.call(req).await? {
            Response::Resource(r) => Ok(r.to_json()),
            _ => Err(ResourceError::internal("unexpected answer to a read")),
        }
    }

    async fn patch(
        &self,
        path: &str,
        rev: Option<String>,
        ops: Value,
    ) -> Result<Value, ResourceError> {
        let req = Self::request(Operation::Patch { rev }, path).with_body(ops);
        match self.call(req).await? {
            Response::Resource(r) => Ok(r.to_json()),
            _ => Err(ResourceError::internal("unexpected answer to a patch")),
        }
    }

    /// Claims `object`, runs the task on it and marks it completed.
    async fn process(&self, run: &ScanRun, scan: &TaskScan, mut object: Value) -> Outcome {
        let Some(id) = object.get("_id").and_then(Value::as_str).map(str::to_owned) else {
            tracing::warn!(task = %run.id, "task scan: an object without _id was skipped");
            return Outcome::Failure;
        };
        let path = format!("{}/{id}", scan.object);
        let expected_start = scan.started.resolve(&object).cloned();
        // The claim: started = now, completed removed, at the revision read.
        let input = loop {
            let rev = object
                .get("_rev")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let ops = json!([
                {"operation": "add", "field": scan.started.to_string(), "value": format_time(Utc::now())},
                {"operation": "remove", "field": scan.completed.to_string()},
            ]);
            match self.patch(&path, rev, ops).await {
                Ok(claimed) => break claimed,
                Err(e) if e.code == 412 && !run.cancelled() => {
                    // Changed since the query: take it still if nobody else did.
                    match self.read(&path).await {
                        Ok(now)
                            if marker(&now, &scan.completed).is_none()
                                && scan.started.resolve(&now).cloned() == expected_start =>
                        {
                            object = now;
                        }
                        _ => return Outcome::Skipped,
                    }
                }
                Err(e) if e.code == 404 => return Outcome::Skipped,
                Err(e) => {
                    tracing::warn!(task = %run.id, object = %path, error = %e, "task scan: the object could not be claimed");
                    return Outcome::Failure;
                }
            }
        };
        let out = self
            .engine
            .eval(
                &scan.script,
                vars([("input", input), ("objectID", json!(path))]),
                &[],
            )
            .await;
        match out {
            Ok(o) if o.value == Value::Bool(false) => {
                tracing::info!(task = %run.id, object = %path, "task scan: the task returned false");
                return Outcome::Failure;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(task = %run.id, object = %path, error = %e, "task scan: the task failed");
                return Outcome::Failure;
            }
        }
        let ops = json!([{"operation": "add", "field": scan.completed.to_string(),
                          "value": format_time(Utc::now())}]);
        match self.patch(&path, None, ops).await {
            Ok(_) => Outcome::Success,
            Err(e) => {
                tracing::warn!(task = %run.id, object = %path, error = %e, "task scan: the completed marker could not be written");
                Outcome::Failure
            }
        }
    }
}

/// A marker's value, unless absent or null.
fn marker<'a>(object: &'a Value, field: &crate::crest::filter::JsonPointer) -> Option<&'a Value> {
    field.resolve(object).filter(|v| !v.is_null())
}

/// Whether a run at `now` takes `object`: not completed, and not started, or started
/// longer ago than the recovery timeout (an unreadable start time counts as expired).
fn due(object: &Value, scan: &TaskScan, now: DateTime<Utc>) -> bool {
    if marker(object, &scan.completed).is_some() {
        return false;
    }
    let Some(started) = marker(object, &scan.started) else {
        return true;
    };
    let Some(at) = started.as_str().and_then(parse_time) else {
        return true;
    };
    let recovery = chrono::Duration::from_std(scan.recovery).unwrap_or(chrono::Duration::MAX);
    at.checked_add_signed(recovery)
        .is_none_or(|expires| expires <= now)
}
