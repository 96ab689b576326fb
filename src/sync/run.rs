//! One reconciliation run: its stage, live counters and the JSON record IDM returns for
//! `GET /openidm/recon/<id>` (crest-wire.md §7), keys in IDM's order: `_id, mapping, state,
//! stage, stageDescription, progress, situationSummary, statusSummary, durationSummary,
//! parameters, started, ended, duration`, then, on a failed run, the gateway extra
//! `failureReason` (why it stopped: IDM only logs it).
//!
//! Counters are atomics so workers update them without locks; the record is built on
//! demand (and stored by the engine, so it survives a restart).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};

use super::situation::Situation;

/// IDM's `ReconStage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    ActiveInitialized,
    ActiveQueryEntries,
    ActiveReconcilingSource,
    ActiveReconcilingTarget,
    ActiveLinkCleanup,
    ActiveProcessingResults,
    ActiveCanceling,
    CompletedSuccess,
    CompletedCanceled,
    CompletedFailed,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::ActiveInitialized => "ACTIVE_INITIALIZED",
            Stage::ActiveQueryEntries => "ACTIVE_QUERY_ENTRIES",
            Stage::ActiveReconcilingSource => "ACTIVE_RECONCILING_SOURCE",
            Stage::ActiveReconcilingTarget => "ACTIVE_RECONCILING_TARGET",
            Stage::ActiveLinkCleanup => "ACTIVE_LINK_CLEANUP",
            Stage::ActiveProcessingResults => "ACTIVE_PROCESSING_RESULTS",
            Stage::ActiveCanceling => "ACTIVE_CANCELING",
            Stage::CompletedSuccess => "COMPLETED_SUCCESS",
            Stage::CompletedCanceled => "COMPLETED_CANCELED",
            Stage::CompletedFailed => "COMPLETED_FAILED",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Stage::ActiveInitialized => "initialized",
            Stage::ActiveQueryEntries => "querying sets of entries to reconcile",
            Stage::ActiveReconcilingSource => "reconciling source entries",
            Stage::ActiveReconcilingTarget => "reconciling target entries",
            Stage::ActiveLinkCleanup => "link clean-up",
            Stage::ActiveProcessingResults => "processing reconciling results",
            Stage::ActiveCanceling => "aborting reconciling",
            Stage::CompletedSuccess => "reconciliation completed.",
            Stage::CompletedCanceled => "reconciliation aborted.",
            Stage::CompletedFailed => "reconciliation failed",
        }
    }

    /// `ACTIVE`, `SUCCESS`, `CANCELED` or `FAILED`.
    pub fn state(self) -> &'static str {
        match self {
            Stage::CompletedSuccess => "SUCCESS",
            Stage::CompletedCanceled => "CANCELED",
            Stage::CompletedFailed => "FAILED",
            _ => "ACTIVE",
        }
    }

    pub fn is_done(self) -> bool {
        self.state() != "ACTIVE"
    }
}

/// Timing of one kind of step, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    count: u64,
    sum: u64,
    sum_sq: f64,
    min: u64,
    max: u64,
}

/// Live counters of a run.
#[derive(Debug, Default)]
pub struct Counters {
    pub source_processed: AtomicU64,
    pub target_processed: AtomicU64,
    pub links_processed: AtomicU64,
    pub created: AtomicU64,
    pub updated: AtomicU64,
    pub unchanged: AtomicU64,
    pub deleted: AtomicU64,
    pub links_created: AtomicU64,
    pub success: AtomicU64,
    pub failure: AtomicU64,
    situations: [AtomicU64; 15],
}

impl Counters {
    pub fn situation(&self, s: Situation) {
        self.situations[s.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn situation_count(&self, s: Situation) -> u64 {
        self.situations[s.index()].load(Ordering::Relaxed)
    }

    fn fields(&self) -> [(&'static str, &AtomicU64); 10] {
        [
            ("sourceProcessed", &self.source_processed),
            ("targetProcessed", &self.target_processed),
            ("linksProcessed", &self.links_processed),
            ("created", &self.created),
            ("updated", &self.updated),
            ("unchanged", &self.unchanged),
            ("deleted", &self.deleted),
            ("linksCreated", &self.links_created),
            ("success", &self.success),
            ("failure", &self.failure),
        ]
    }

    /// Every counter, to add to another run's (a clustered run's page, see [`Self::add`]).
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (name, c) in self.fields() {
            out.insert(name.into(), json!(c.load(Ordering::Relaxed)));
        }
        let mut situations = Map::new();
        for s in Situation::ALL {
            situations.insert(s.as_str().into(), json!(self.situation_count(s)));
        }
        out.insert("situations".into(), Value::Object(situations));
        Value::Object(out)
    }

    /// Adds the counters of [`Self::to_json`].
    pub fn add(&self, v: &Value) {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        for (name, c) in self.fields() {
            c.fetch_add(n(v.get(name)), Ordering::Relaxed);
        }
        for s in Situation::ALL {
            let k = n(v.get("situations").and_then(|m| m.get(s.as_str())));
            self.situations[s.index()].fetch_add(k, Ordering::Relaxed);
        }
    }
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A run in this process.
pub struct Run {
    pub id: String,
    pub mapping: String,
    pub parameters: Value,
    started: SystemTime,
    started_at: Instant,
    stage: Mutex<Stage>,
    ended: Mutex<Option<(SystemTime, Duration)>>,
    pub counters: Counters,
    source_total: Mutex<Option<u64>>,
    target_total: Mutex<Option<u64>>,
    durations: Mutex<BTreeMap<&'static str, Stat>>,
    cancel: AtomicBool,
    cancel_notify: Notify,
    done: watch::Sender<bool>,
    /// Why the run stopped early, when it failed as a whole.
    failure: Mutex<Option<String>>,
    /// The cluster node running it (`nodeId`, a gateway extra of the record): a survivor
    /// fails the ACTIVE runs of a dead node, a restarting node only its own.
    pub node: Option<String>,
    /// A clustered run: sources processed by each node (IDM's `sourceProcessedByNode`).
    by_node: Mutex<BTreeMap<String, u64>>,
}

impl Run {
    pub fn new(mapping: &str, parameters: Value) -> Self {
        Self {
            id: crate::repo::new_object_id(),
            mapping: mapping.to_owned(),
            parameters,
            started: SystemTime::now(),
            started_at: Instant::now(),
            stage: Mutex::new(Stage::ActiveInitialized),
            ended: Mutex::new(None),
            counters: Counters::default(),
            source_total: Mutex::new(None),
            target_total: Mutex::new(None),
            durations: Mutex::new(BTreeMap::new()),
            cancel: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            done: watch::channel(false).0,
            failure: Mutex::new(None),
            node: None,
            by_node: Mutex::new(BTreeMap::new()),
        }
    }

    /// The share of run `id` one node of a cluster works on (a clustered run's page).
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = id.to_owned();
        self
    }

    /// Counts `n` sources processed by cluster node `node` (a clustered run).
    pub fn add_by_node(&self, node: &str, n: u64) {
        *self
            .by_node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.to_owned())
            .or_default() += n;
    }

    /// The run of cluster node `node`.
    pub fn on_node(mut self, node: Option<&str>) -> Self {
        self.node = node.map(str::to_owned);
        self
    }

    pub fn stage(&self) -> Stage {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to `stage`; a finished run stays finished.
    pub fn set_stage(&self, stage: Stage) {
        let mut cur = self.stage.lock().unwrap_or_else(|e| e.into_inner());
        if cur.is_done() {
            return;
        }
        *cur = stage;
        if stage.is_done() {
            *self.ended.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((SystemTime::now(), self.started_at.elapsed()));
        }
    }

    pub fn set_source_total(&self, total: Option<u64>) {
        *self.source_total.lock().unwrap_or_else(|e| e.into_inner()) = total;
    }

    pub fn set_target_total(&self, total: Option<u64>) {
        *self.target_total.lock().unwrap_or_else(|e| e.into_inner()) = total;
    }

    pub fn elapsed(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// Records how long one step of kind `name` took.
    pub fn time(&self, name: &'static str, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let mut d = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let s = d.entry(name).or_default();
        if s.count == 0 || us < s.min {
            s.min = us;
        }
        s.max = s.max.max(us);
        s.count += 1;
        s.sum = s.sum.saturating_add(us);
        s.sum_sq += (us as f64) * (us as f64);
    }

    /// Records why the run failed as a whole (shown as `failureReason`).
    pub fn set_failure(&self, reason: &str) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
    }

    /// Asks the run to stop; returns false when it had already finished.
    pub fn cancel(&self) -> bool {
        if self.stage().is_done() {
            return false;
        }
        self.cancel.store(true, Ordering::SeqCst);
        self.set_stage(Stage::ActiveCanceling);
        self.cancel_notify.notify_waiters();
        true
    }

    pub fn is_canceled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Resolves when the run is canceled.
    pub async fn canceled(&self) {
        loop {
            let notified = self.cancel_notify.notified();
            if self.is_canceled() {
                return;
            }
            notified.await;
        }
    }

    /// Marks the run finished for waiters.
    pub fn finish(&self, stage: Stage) {
        self.set_stage(stage);
        self.done.send_replace(true);
    }

    /// Resolves when the run has finished.
    pub async fn wait(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// The run record, keys in IDM's order.
    pub fn to_json(&self) -> Value {
        let stage = self.stage();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let done_ok = stage == Stage::CompletedSuccess;
        let total = |t: &Mutex<Option<u64>>, processed: u64| -> String {
            match *t.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(n) => n.to_string(),
                None if done_ok => processed.to_string(),
                None => "?".into(),
            }
        };
        let source_processed = get(&c.source_processed);
        let target_processed = get(&c.target_processed);
        let links_processed = get(&c.links_processed);
        let mut situations = Map::new();
        for s in Situation::ALL {
            situations.insert(s.as_str().into(), json!(c.situation_count(s)));
        }
        let mut durations = Map::new();
        for (name, s) in self
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let mean = s.sum as f64 / s.count.max(1) as f64;
            let var = (s.sum_sq / s.count.max(1) as f64 - mean * mean).max(0.0);
            durations.insert(
                (*name).into(),
                json!({
                    "min": s.min / 1000, "max": s.max / 1000,
                    "mean": (mean / 1000.0).round() as u64,
                    "count": s.count, "sum": s.sum / 1000,
                    "stdDev": (var.sqrt() / 1000.0 * 1000.0).round() / 1000.0,
                }),
            );
        }
        let ended = *self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let (ended_text, duration) = match ended {
            Some((at, took)) => (iso8601(at), took.as_millis() as u64),
            None => (String::new(), self.started_at.elapsed().as_millis() as u64),
        };
        let mut out = Map::new();
        out.insert("_id".into(), json!(self.id));
        out.insert("mapping".into(), json!(self.mapping));
        out.insert("state".into(), json!(stage.state()));
        out.insert("stage".into(), json!(stage.name()));
        out.insert("stageDescription".into(), json!(stage.description()));
        out.insert(
            "progress".into(),
            json!({
                "source": {"existing": {"processed": source_processed,
                                        "total": total(&self.source_total, source_processed)}},
                "target": {"existing": {"processed": target_processed,
                                        "total": total(&self.target_total, target_processed)},
                           "created": get(&c.created), "unchanged": get(&c.unchanged),
                           "updated": get(&c.updated), "deleted": get(&c.deleted)},
                "links": {"existing": {"processed": links_processed,
                                       "total": if done_ok { links_processed.to_string() } else { "?".into() }},
                          "created": get(&c.links_created)},
            }),
        );
        out.insert("situationSummary".into(), Value::Object(situations));
        out.insert(
            "statusSummary".into(),
            json!({"SUCCESS": get(&c.success), "FAILURE": get(&c.failure)}),
        );
        out.insert("durationSummary".into(), Value::Object(durations));
        out.insert("parameters".into(), self.parameters.clone());
        out.insert("started".into(), json!(iso8601(self.started)));
        out.insert("ended".into(), json!(ended_text));
        out.insert("duration".into(), json!(duration));
        if let Some(reason) = &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            out.insert("failureReason".into(), json!(reason));
        }
        if let Some(node) = &self.node {
            out.insert("nodeId".into(), json!(node));
        }
        let by_node = self.by_node.lock().unwrap_or_else(|e| e.into_inner());
        if !by_node.is_empty() {
            out.insert("sourceProcessedByNode".into(), json!(*by_node));
        }
        Value::Object(out)
    }
}

/// `2012-11-18T08:48:00.031Z`.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_utc_with_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_353_228_480_031);
        assert_eq!(iso8601(t), "2012-11-18T08:48:00.031Z");
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&iso8601(leap)[..10], "2000-02-29");
    }

    #[test]
    fn a_pages_counters_add_up_in_the_run_with_its_node() {
        let page = Run::new("m", Value::Null).with_id("run-1");
        assert_eq!(page.id, "run-1");
        for _ in 0..3 {
            bump(&page.counters.source_processed);
            page.counters.situation(Situation::Absent);
        }
        bump(&page.counters.created);
        let run = Run::new("m", Value::Null);
        bump(&run.counters.source_processed);
        run.counters.add(&page.counters.to_json());
        run.counters.add(&page.counters.to_json());
        run.add_by_node("a", 3);
        run.add_by_node("b", 3);
        run.add_by_node("a", 1);
        assert_eq!(run.counters.source_processed.load(Ordering::Relaxed), 7);
        assert_eq!(run.counters.created.load(Ordering::Relaxed), 2);
        assert_eq!(run.counters.situation_count(Situation::Absent), 6);
        let v = run.to_json();
        assert_eq!(v["sourceProcessedByNode"], json!({"a": 4, "b": 3}));
        assert_eq!(v["situationSummary"]["ABSENT"], 6);
        // A local run's record has no per-node figures.
        assert!(page.to_json().get("sourceProcessedByNode").is_none());
    }

    #[test]
    fn record_has_idm_key_order_and_all_situations() {
        let run = Run::new("m", json!({}));
        run.counters.situation(Situation::Absent);
        run.time("sourceQuery", Duration::from_millis(3));
        let v = run.to_json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "mapping",
                "state",
                "stage",
                "stageDescription",
                "progress",
                "situationSummary",
                "statusSummary",
                "durationSummary",
                "parameters",
                "started",
                "ended",
                "duration"
            ]
        );
        assert_eq!(v["state"], "ACTIVE");
        assert_eq!(v["progress"]["source"]["existing"]["total"], "?");
        assert_eq!(v["situationSummary"].as_object().unwrap().len(), 15);
        assert_eq!(v["situationSummary"]["ABSENT"], 1);
        assert_eq!(v["durationSummary"]["sourceQuery"]["count"], 1);
        run.finish(Stage::CompletedSuccess);
        let v = run.to_json();
        assert_eq!(v["state"], "SUCCESS");
        assert_eq!(v["stageDescription"], "reconciliation completed.");
        assert_eq!(v["progress"]["source"]["existing"]["total"], "0");
        assert!(v["ended"].as_str().unwrap().ends_with('Z'));
        assert!(v.get("failureReason").is_none());
        // A finished run cannot be canceled or moved back.
        assert!(!run.cancel());
        assert_eq!(run.stage(), Stage::CompletedSuccess);

        let run = Run::new("m", json!({}));
        run.set_failure("why");
        run.finish(Stage::CompletedFailed);
        let v = run.to_json();
        assert_eq!(
            (&v["state"], &v["failureReason"]),
            (&json!("FAILED"), &json!("why"))
        );
        assert_eq!(
            v.as_object().unwrap().keys().next_back().unwrap(),
            "failureReason"
        );
    }
}
