//! The cluster: gateways sharing one store know each other through heartbeats kept in the
//! store, as IDM's cluster service does (`repo/cluster/states`).
//!
//! * Each node writes its own state record (`cluster/states/<instanceId>`) at start-up and
//!   every `instanceCheckInInterval` (a "check-in"), and marks it down with a `shutdown`
//!   time when it stops cleanly.
//! * Every node looks at the others at each check-in (on its own task, so a long recovery
//!   never delays this node's heartbeat). A node is silent when its record has not changed
//!   for `instanceTimeout` as measured by the looking node's own monotonic clock (clocks of
//!   different hosts may disagree; the records' timestamps only serve the REST view). A
//!   silent node is taken over by the first node that claims its record (a conditional write on the
//!   record's revision, so exactly one survivor recovers it): its ACTIVE reconciliation runs
//!   are marked FAILED, its scheduler triggers and queue claims released (each
//!   [`NodeRecovery`]), then its record is marked down with IDM's `recovery` object. A
//!   recovery left half done by a survivor that died too is taken over again after
//!   `instanceRecoveryTimeout`.
//! * `GET /openidm/cluster?_queryFilter=…` and `cluster/<id>` show the nodes as IDM does
//!   (`instanceId`, `state` running/processing-down/down, `startup`, `shutdown`,
//!   `recovery`); a node silent for `instanceTimeout` is shown down before anyone recovered
//!   it.
//!
//! Config: IDM's `conf/cluster.json` (all durations in ms, numbers or strings); it is read
//! at start-up. `instanceId` defaults to `&{openidm.node.id}`, which is `--node-id`
//! (`IDM_GATEWAY_NODE_ID`, default the host name).
//!
//! Must not: know what a node's work is; the services that own it recover it through
//! [`NodeRecovery`].

pub mod config_share;
pub mod handler;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::crest::filter::QueryFilter;
use crate::repo::{Repo, RepoError, RepoQuery, WriteOp};
use crate::sync::run::iso8601;

pub use config_share::SharedConfig;
pub use handler::ClusterHandler;

/// IDM's config id of `conf/cluster.json`.
pub const CLUSTER_CONFIG: &str = "cluster";

/// Resource of the node state records (IDM: `repo/cluster/states`).
pub const STATES: &str = "cluster/states";

/// How often the heartbeat loop looks at the drain flag.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Stored `state` values, IDM's.
const RUNNING: i64 = 1;
const PROCESSING_DOWN: i64 = 2;
const DOWN: i64 = 3;

/// IDM's `conf/cluster.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub instance_id: String,
    /// Silence after which another node takes this one for dead.
    pub instance_timeout: Duration,
    /// How long a recovery may take before another node starts it again.
    pub recovery_timeout: Duration,
    /// Heartbeat period.
    pub check_in_interval: Duration,
    /// Delay before the first periodic check-in.
    pub check_in_offset: Duration,
    /// `false`: no failure detection or recovery (the node still checks in), as IDM.
    pub enabled: bool,
}

impl ClusterConfig {
    /// IDM's defaults for `node_id`.
    pub fn defaults(node_id: &str) -> Self {
        ClusterConfig {
            instance_id: node_id.to_owned(),
            instance_timeout: Duration::from_millis(30_000),
            recovery_timeout: Duration::from_millis(30_000),
            check_in_interval: Duration::from_millis(5_000),
            check_in_offset: Duration::ZERO,
            enabled: true,
        }
    }

    /// Reads `conf/cluster.json` (IDM's defaults when there is none); `&{openidm.node.id}`
    /// is `node_id`, other `&{…}` references come from the environment.
    pub fn load(conf_dir: &Path, node_id: &str) -> Result<Self, String> {
        let path = conf_dir.join("cluster.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::defaults(node_id))
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
        Self::parse(&doc, node_id).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(doc: &Value, node_id: &str) -> Result<Self, String> {
        let mut doc = doc.clone();
        let problems = crate::config::substitute::substitute(&mut doc, &|name| {
            if name == "openidm.node.id" {
                Some(node_id.to_owned())
            } else {
                std::env::var(name).ok()
            }
        });
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let Value::Object(map) = doc else {
            return Err("the cluster config must be a JSON object".into());
        };
        let mut out = Self::defaults(node_id);
        for (key, v) in &map {
            match key.as_str() {
                "instanceId" => {
                    let id = v.as_str().map(str::trim).unwrap_or_default();
                    if id.is_empty() {
                        return Err("instanceId must be a non-empty string".into());
                    }
                    out.instance_id = id.to_owned();
                }
                "instanceTimeout" => out.instance_timeout = millis(key, v)?,
                "instanceRecoveryTimeout" => out.recovery_timeout = millis(key, v)?,
                "instanceCheckInInterval" => out.check_in_interval = millis(key, v)?,
                "instanceCheckInOffset" => out.check_in_offset = millis(key, v)?,
                "enabled" => {
                    out.enabled = match v {
                        Value::Bool(b) => *b,
                        Value::String(s) if s == "true" || s == "false" => s == "true",
                        _ => return Err("enabled must be true or false".into()),
                    }
                }
                _ => {} // IDM's other keys (and comments) are accepted and unused
            }
        }
        if out.check_in_interval.is_zero() {
            return Err("instanceCheckInInterval must be above 0".into());
        }
        // A node's check-ins are seen at this node's own check-ins: two intervals may pass
        // between two changes seen of a live node.
        if out.instance_timeout <= out.check_in_interval * 2 {
            return Err(format!(
                "instanceTimeout ({} ms) must be longer than twice instanceCheckInInterval ({} ms), or live nodes would be taken for dead",
                out.instance_timeout.as_millis(),
                out.check_in_interval.as_millis()
            ));
        }
        Ok(out)
    }
}

/// A duration in ms, as a number or a string of digits (OpenIDM stored strings).
fn millis(key: &str, v: &Value) -> Result<Duration, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.map(Duration::from_millis)
        .ok_or_else(|| format!("{key} must be a whole number of milliseconds, got {v}"))
}

/// Work a node leaves behind when it dies, taken over by the survivor that detected it.
#[async_trait::async_trait]
pub trait NodeRecovery: Send + Sync {
    /// What this recovers, for the log (`reconciliation runs`).
    fn what(&self) -> &'static str;
    /// Takes over `node`'s work; returns how many items were recovered.
    async fn recover_node(&self, node: &str) -> Result<usize, String>;
}

pub struct Cluster {
    config: ClusterConfig,
    repo: Arc<dyn Repo>,
    /// This process's start (the record's `startup`).
    startup: String,
    recoveries: Mutex<Vec<Arc<dyn NodeRecovery>>>,
    /// Nodes by state as last seen (`idm_gateway_cluster_nodes`).
    gauge: Option<prometheus::IntGaugeVec>,
    /// Each other node's record revision as last seen, and since when (this process's
    /// clock): how long a node has been silent.
    seen: Mutex<HashMap<String, (String, Instant)>>,
    /// One detection pass at a time.
    detecting: Arc<tokio::sync::Mutex<()>>,
}

/// Milliseconds since the epoch (the records' `timestamp`).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Cluster {
    pub fn new(
        config: ClusterConfig,
        repo: Arc<dyn Repo>,
        gauge: Option<prometheus::IntGaugeVec>,
    ) -> Self {
        Cluster {
            config,
            repo,
            startup: iso8601(SystemTime::now()),
            recoveries: Mutex::new(Vec::new()),
            gauge,
            seen: Mutex::new(HashMap::new()),
            detecting: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.config.instance_id
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Adds a service whose work a dead node's survivor takes over.
    pub fn on_node_down(&self, r: Arc<dyn NodeRecovery>) {
        self.recoveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    fn own_record(&self, now: i64) -> Map<String, Value> {
        let Value::Object(m) = json!({
            "instanceId": self.config.instance_id,
            "state": RUNNING,
            "timestamp": now,
            "startup": self.startup,
            "shutdown": "",
        }) else {
            unreachable!("a JSON object literal")
        };
        m
    }

    /// Writes this node's record as running (at start-up): a previous record of the same
    /// id (a crash, a restart) is replaced.
    pub async fn register(&self) -> Result<(), RepoError> {
        let put = WriteOp::Put {
            resource: STATES.into(),
            id: self.config.instance_id.clone(),
            content: self.own_record(now_ms()),
        };
        for r in self.repo.batch(vec![put]).await {
            r?;
        }
        tracing::info!(node = %self.config.instance_id, "cluster node registered");
        Ok(())
    }

    /// The heartbeat: this node's record gets the current time. A record another node
    /// marked down meanwhile (this node was silent too long) is taken back, with a warning:
    /// its runs were failed and its claims released by that node.
    pub async fn check_in(&self) -> Result<(), RepoError> {
        let id = &self.config.instance_id;
        let Some(current) = self.repo.read(STATES, id).await? else {
            return self.register().await;
        };
        let state = current.content.get("state").and_then(Value::as_i64);
        if state != Some(RUNNING) {
            let by = current
                .content
                .get("recovery")
                .and_then(|r| r.get("recoveredBy"))
                .and_then(Value::as_str)
                .unwrap_or("another node");
            tracing::warn!(node = %id, recovered_by = %by,
                "this node was silent longer than instanceTimeout and was taken for down; \
                 its reconciliation runs were marked FAILED and its claims released. Checking in again");
        }
        match self
            .repo
            .update(
                STATES,
                id,
                Some(&current.rev),
                self.own_record(now_ms()),
                Default::default(),
            )
            .await
        {
            // Another node wrote the record between the read and the write: the next
            // check-in sees what it wrote.
            Ok(_) | Err(RepoError::RevisionMismatch { .. }) => Ok(()),
            Err(RepoError::NotFound { .. }) => self.register().await,
            Err(e) => Err(e),
        }
    }

    /// Marks this node down after a clean stop (IDM: `shutdown` set, no `recovery`).
    pub async fn leave(&self) -> Result<(), RepoError> {
        let mut record = self.own_record(now_ms());
        record.insert("state".into(), json!(DOWN));
        record.insert("shutdown".into(), json!(iso8601(SystemTime::now())));
        let put = WriteOp::Put {
            resource: STATES.into(),
            id: self.config.instance_id.clone(),
            content: record,
        };
        for r in self.repo.batch(vec![put]).await {
            r?;
        }
        tracing::info!(node = %self.config.instance_id, "cluster node left");
        Ok(())
    }

    async fn records(&self) -> Result<Vec<crate::repo::StoredObject>, RepoError> {
        Ok(self
            .repo
            .query(STATES, RepoQuery::all(&QueryFilter::True, &[]))
            .await?
            .results)
    }

    /// Finds nodes silent for `instanceTimeout` (or whose recovery was left half done for
    /// `instanceRecoveryTimeout`) and recovers each one this node manages to claim.
    /// Returns the ids recovered.
    pub async fn detect(&self) -> Result<Vec<String>, RepoError> {
        if !self.config.enabled {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut recovered = Vec::new();
        let records = self.records().await?;
        let unchanged = self.unchanged_for(&records);
        for rec in records {
            if rec.id == self.config.instance_id {
                continue;
            }
            let c = &rec.content;
            let state = c.get("state").and_then(Value::as_i64).unwrap_or(DOWN);
            let silent = unchanged.get(&rec.id).copied().unwrap_or_default();
            let recovery = c.get("recovery").and_then(Value::as_object);
            let attempts = recovery
                .and_then(|r| r.get("recoveryAttempts"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let due = match state {
                RUNNING => silent > self.config.instance_timeout,
                PROCESSING_DOWN => silent > self.config.recovery_timeout,
                _ => false,
            };
            if !due {
                continue;
            }
            // Claim it: only one survivor's conditional write succeeds.
            let mut claimed = c.clone();
            claimed.insert("state".into(), json!(PROCESSING_DOWN));
            let detected = recovery
                .and_then(|r| r.get("detectedDown"))
                .cloned()
                .unwrap_or_else(|| json!(iso8601(SystemTime::now())));
            claimed.insert(
                "recovery".into(),
                json!({
                    "recoveredBy": self.config.instance_id,
                    "recoveryAttempts": attempts + 1,
                    "recoveryStarted": iso8601(SystemTime::now()),
                    "recoveryStartedMillis": now,
                    "detectedDown": detected,
                }),
            );
            let claim = match self
                .repo
                .update(STATES, &rec.id, Some(&rec.rev), claimed, Default::default())
                .await
            {
                Ok(o) => o,
                Err(RepoError::RevisionMismatch { .. } | RepoError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            tracing::warn!(node = %rec.id, silent_ms = silent.as_millis() as u64, recovered_by = %self.config.instance_id,
                "cluster node silent longer than instanceTimeout: taken for down, recovering its work");
            if self.recover(&rec.id).await {
                let mut done = claim.content;
                done.insert("state".into(), json!(DOWN));
                if let Some(Value::Object(r)) = done.get_mut("recovery") {
                    r.insert("recoveryFinished".into(), json!(iso8601(SystemTime::now())));
                }
                match self
                    .repo
                    .update(STATES, &rec.id, Some(&claim.rev), done, Default::default())
                    .await
                {
                    // The node came back meanwhile (it checked in): its record is its own.
                    Ok(_)
                    | Err(RepoError::RevisionMismatch { .. } | RepoError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                recovered.push(rec.id.clone());
            }
        }
        Ok(recovered)
    }

    /// How long each record of `records` has been unchanged (same revision), as seen by
    /// this process: from the first time it saw that revision. Forgets records gone.
    fn unchanged_for(&self, records: &[crate::repo::StoredObject]) -> HashMap<String, Duration> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|id, _| records.iter().any(|r| &r.id == id));
        records
            .iter()
            .map(|r| {
                let (rev, since) = seen
                    .entry(r.id.clone())
                    .or_insert_with(|| (r.rev.clone(), now));
                if *rev != r.rev {
                    *rev = r.rev.clone();
                    *since = now;
                }
                (r.id.clone(), now - *since)
            })
            .collect()
    }

    /// Runs every recovery for `node`; false if one failed (the record stays in recovery
    /// and is taken over again after `instanceRecoveryTimeout`).
    async fn recover(&self, node: &str) -> bool {
        let all: Vec<_> = self
            .recoveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut ok = true;
        for r in all {
            match r.recover_node(node).await {
                Ok(n) => tracing::info!(node = %node, recovered = n, what = r.what(),
                    "dead node's work recovered"),
                Err(e) => {
                    ok = false;
                    tracing::error!(node = %node, what = r.what(), error = %e,
                        "cannot recover a dead node's work; another attempt follows after instanceRecoveryTimeout");
                }
            }
        }
        ok
    }

    /// Every node as `GET /openidm/cluster` shows it, by id.
    pub async fn list(&self) -> Result<Vec<Value>, RepoError> {
        let now = now_ms();
        let mut nodes: Vec<Value> = self
            .records()
            .await?
            .into_iter()
            .map(|r| self.view(&r.id, &r.content, now))
            .collect();
        nodes.sort_by(|a, b| a["instanceId"].as_str().cmp(&b["instanceId"].as_str()));
        Ok(nodes)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Value>, RepoError> {
        Ok(self
            .repo
            .read(STATES, id)
            .await?
            .map(|r| self.view(&r.id, &r.content, now_ms())))
    }

    /// Ids of the nodes seen running (checked in within `instanceTimeout`).
    pub async fn running(&self) -> Result<Vec<String>, RepoError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|n| n["state"] == "running")
            .filter_map(|n| n["instanceId"].as_str().map(str::to_owned))
            .collect())
    }

    /// IDM's view of a record.
    fn view(&self, id: &str, c: &Map<String, Value>, now: i64) -> Value {
        let stored = c.get("state").and_then(Value::as_i64).unwrap_or(DOWN);
        let silent = now - c.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
        let state = match stored {
            RUNNING if silent > self.config.instance_timeout.as_millis() as i64 => "down",
            RUNNING => "running",
            PROCESSING_DOWN => "processing-down",
            _ => "down",
        };
        let mut out = Map::new();
        out.insert("_id".into(), json!(id));
        out.insert(
            "instanceId".into(),
            c.get("instanceId").cloned().unwrap_or(json!(id)),
        );
        out.insert("state".into(), json!(state));
        for key in ["startup", "shutdown"] {
            out.insert(key.into(), c.get(key).cloned().unwrap_or(json!("")));
        }
        if let Some(Value::Object(r)) = c.get("recovery") {
            let mut r = r.clone();
            r.remove("recoveryStartedMillis");
            out.insert("recovery".into(), Value::Object(r));
        }
        Value::Object(out)
    }

    fn count_states(&self, nodes: &[Value]) {
        let Some(g) = &self.gauge else { return };
        for state in ["running", "processing-down", "down"] {
            let n = nodes.iter().filter(|v| v["state"] == state).count();
            g.with_label_values(&[state]).set(n as i64);
        }
    }

    /// The heartbeat loop: registers, then checks in and looks for dead nodes every
    /// `instanceCheckInInterval` until `drain` starts, when the node leaves.
    pub async fn run(self: Arc<Self>, drain: crate::lifecycle::Drain) {
        if let Err(e) = self.register().await {
            tracing::error!(error = %e, "cannot register this cluster node; retrying at each check-in");
        }
        tokio::time::sleep(self.config.check_in_offset).await;
        let mut next = tokio::time::Instant::now();
        loop {
            // The drain flag is looked at often: a stopping node leaves before the process
            // ends, however long its check-in interval.
            while tokio::time::Instant::now() < next {
                if drain.is_draining() {
                    if let Err(e) = self.leave().await {
                        tracing::error!(error = %e, "cannot mark this cluster node down");
                    }
                    return;
                }
                let left = next - tokio::time::Instant::now();
                tokio::time::sleep(left.min(DRAIN_POLL)).await;
            }
            next = (next + self.config.check_in_interval).max(tokio::time::Instant::now());
            if drain.is_draining() {
                continue;
            }
            if let Err(e) = self.check_in().await {
                tracing::error!(error = %e, "cluster check-in failed");
                continue;
            }
            // Detection and recovery on their own task: a long recovery must not hold up
            // this node's next check-in (it would be taken for dead itself).
            if let Ok(one) = self.detecting.clone().try_lock_owned() {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.detect().await {
                        tracing::error!(error = %e, "cannot look for dead cluster nodes");
                    }
                    match me.list().await {
                        Ok(nodes) => me.count_states(&nodes),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the cluster node states")
                        }
                    }
                    drop(one);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
