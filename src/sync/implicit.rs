//! Implicit sync (IDM's liveSync from managed objects): a committed create, update or delete
//! of a managed object is pushed to the target of every mapping that has its collection as
//! source and `enableSync` on, with the reconciliation engine's one-object path (what
//! `reconById` does: re-read the source, the link, the target, assess the situation, apply
//! the mapping's policy). A delete finds no source, so its situation comes from the link
//! (SOURCE_MISSING when the linked target exists).
//!
//! * Durable: before a write, [`ImplicitSync::pending`] gives the queue rows
//!   ([`super::queue`]) the store commits with it; a push removes its row when done. At
//!   start the worker pushes every row left behind, so a crash loses no acknowledged push.
//! * Off the caller's path: [`ImplicitSync::on_change`] only hands the push to a worker
//!   thread with its own runtime; the caller's write is never failed or delayed by a push.
//!   At most [`MAX_PUSHES`] pushes run at once.
//! * Ordering: pushes of one (mapping, source id) are serialised (with reconciliation of the
//!   same mapping too, [`SyncService::sync_one`]), and each re-reads the source, so the
//!   last push always carries the latest state.
//! * Failures: logged with mapping and id, counted in
//!   `idm_gateway_implicit_sync_failures_total{mapping}`, and retried with backoff as the
//!   mapping's `queuedSync` says; once its retries are used up, the push is logged
//!   (`logged-ignore`) or stored in the dead-letter queue (`dead-letter-queue`) and leaves the
//!   queue. A failing push never holds up the others.
//! * Loops: writes made by reconciliation or implicit sync carry a caller whose component
//!   names the mapping ([`sync_caller`]); such a write does not trigger the mapping that
//!   made it nor its reverse (target → source), so A→B and B→A sharing links do not bounce,
//!   while chains (A→B, then B→C) still flow.
//! * Sources: `managed/*`, and `system/*` objects written through REST (the system handler
//!   has the same hook); changes made in the resource itself come through liveSync
//!   (the system service's). `external/idm/…` sources are reconciliation only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use super::mapping::Mapping;
use super::queue::{Entry, Failed, RetryPolicy, SyncQueue, LEASE};
use super::run::iso8601;
use super::service::{MappingSource, SyncService};
use crate::crest::Caller;
use crate::events::{dead_letter, Change, ChangeHook, ChangeKind, PostRetryAction};
use crate::repo::WriteOp;

/// Component of the callers of sync writes: `sync/<mapping>`.
const SYNC_COMPONENT: &str = "sync/";
/// How often the worker looks for due retries.
const RETRY_TICK: Duration = Duration::from_millis(250);
/// Pushes running at once.
pub const MAX_PUSHES: usize = 8;

/// The caller of the writes `mapping`'s reconciliation and implicit sync make: the
/// gateway itself, marked with the mapping (HTTP callers never have this component).
pub fn sync_caller(mapping: &str) -> Caller {
    Caller::system_as(format!("{SYNC_COMPONENT}{mapping}"))
}

/// The mapping that made a write, when sync made it.
fn origin(caller: &Caller) -> Option<&str> {
    caller.component.strip_prefix(SYNC_COMPONENT)
}

/// One push to do: the worker reads its queue entry.
#[derive(Debug)]
struct Job {
    mapping: String,
    source_id: String,
}

/// The [`ChangeHook`] given to `managed/*` and `system/*`.
pub struct ImplicitSync {
    mappings: MappingSource,
    jobs: mpsc::UnboundedSender<Job>,
    /// This node's id: its writes' queue entries are its claims.
    node: Option<String>,
}

impl ImplicitSync {
    /// The mappings a write of `resource` by `caller` is pushed through.
    fn mappings_for(&self, resource: &str, caller: &Caller) -> Vec<Arc<Mapping>> {
        let all = (self.mappings)();
        let from = origin(caller).and_then(|name| all.get(name));
        all.iter()
            .filter(|m| m.enable_sync && m.source == resource)
            .filter(|m| {
                from.is_none_or(|o| {
                    let same = o.name == m.name;
                    let reverse = o.source == m.target && o.target == m.source;
                    !same && !reverse
                })
            })
            .cloned()
            .collect()
    }
}

impl ChangeHook for ImplicitSync {
    fn pending(&self, resource: &str, id: &str, kind: ChangeKind, caller: &Caller) -> Vec<WriteOp> {
        self.mappings_for(resource, caller)
            .iter()
            .map(|m| SyncQueue::row(&m.name, id, kind.as_str(), self.node.as_deref()))
            .collect()
    }

    fn on_change(&self, change: &Change<'_>) {
        for m in self.mappings_for(change.resource, &change.request.caller) {
            let job = Job {
                mapping: m.name.clone(),
                source_id: change.id.to_owned(),
            };
            if self.jobs.send(job).is_err() {
                tracing::warn!(mapping = %m.name, id = %change.id,
                    "implicit sync is stopped; the queued push runs at the next start");
            }
        }
    }
}

/// Starts the implicit-sync worker (its own thread and runtime) and returns the hook to
/// give to `managed/*`. The worker stops when the hook is dropped.
pub fn start(service: Arc<SyncService>) -> Result<Arc<ImplicitSync>, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let hook = Arc::new(ImplicitSync {
        mappings: service.mapping_source(),
        jobs: tx,
        node: service.queue().node().map(str::to_owned),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("implicit-sync")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the implicit sync runtime: {e}"))?;
    std::thread::Builder::new()
        .name("implicit-sync".into())
        .spawn(move || {
            rt.block_on(
                Arc::new(Worker {
                    service,
                    locks: Mutex::new(HashMap::new()),
                    retrying: Default::default(),
                    slots: Arc::new(Semaphore::new(MAX_PUSHES)),
                })
                .run(rx),
            )
        })
        .map_err(|e| format!("cannot start the implicit sync thread: {e}"))?;
    Ok(hook)
}

type KeyLock = Arc<tokio::sync::Mutex<()>>;

/// Why a push runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A change was just committed, or the gateway starts: push whatever the entry says.
    Now,
    /// The retry check: push only if the entry is (still) due.
    Retry,
}

struct Worker {
    service: Arc<SyncService>,
    /// One lock per (mapping, source id) being pushed.
    locks: Mutex<HashMap<(String, String), KeyLock>>,
    /// One retry pass at a time.
    retrying: Arc<tokio::sync::Mutex<()>>,
    /// Bounds the pushes running at once.
    slots: Arc<Semaphore>,
}

impl Worker {
    async fn run(self: Arc<Self>, mut jobs: mpsc::UnboundedReceiver<Job>) {
        match self.service.queue().load().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                entries = n,
                "implicit sync queue loaded; pushing what is left"
            ),
            Err(e) => tracing::error!(error = %e, "cannot read the implicit sync queue"),
        }
        // What a stop left behind: every entry, including those still under their lease.
        if let Ok(guard) = self.retrying.clone().try_lock_owned() {
            let w = self.clone();
            tokio::spawn(async move {
                w.pass(SystemTime::now() + LEASE, Trigger::Now).await;
                drop(guard);
            });
        }
        let mut tick = tokio::time::interval(RETRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let Some(job) = job else { break };
                    let w = self.clone();
                    tokio::spawn(async move {
                        w.push(&job.mapping, &job.source_id, Trigger::Now).await;
                    });
                }
                _ = tick.tick() => {
                    if let Ok(guard) = self.retrying.clone().try_lock_owned() {
                        let w = self.clone();
                        tokio::spawn(async move {
                            w.pass(SystemTime::now(), Trigger::Retry).await;
                            drop(guard);
                        });
                    }
                }
            }
        }
    }

    /// Pushes every entry due at `until`, [`MAX_PUSHES`] at a time.
    async fn pass(self: &Arc<Self>, until: SystemTime, trigger: Trigger) {
        let due = match self.service.queue().due(until).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the implicit sync queue");
                return;
            }
        };
        let mut running = tokio::task::JoinSet::new();
        let queue = self.service.queue();
        for entry in due {
            // At start-up, what another live node claimed is its to push (its lease
            // expires if it dies).
            if trigger == Trigger::Now && !queue.is_mine(&entry) {
                continue;
            }
            let w = self.clone();
            running.spawn(async move {
                w.push(&entry.mapping, &entry.source_id, trigger).await;
            });
        }
        while running.join_next().await.is_some() {}
    }

    fn lock(&self, key: &(String, String)) -> KeyLock {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    fn unlock(&self, key: &(String, String), lock: KeyLock) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this task hold it: nobody waits.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(key);
        }
    }

    /// One push of (mapping, source id), serialised with the others of the same key.
    async fn push(&self, mapping: &str, source_id: &str, trigger: Trigger) {
        let Ok(_slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let key = (mapping.to_owned(), source_id.to_owned());
        let lock = self.lock(&key);
        {
            let _one_at_a_time = lock.lock().await;
            self.push_locked(mapping, source_id, trigger).await;
        }
        self.unlock(&key, lock);
    }

    async fn push_locked(&self, mapping: &str, source_id: &str, trigger: Trigger) {
        let svc = &self.service;
        let queue = svc.queue();
        let entry = match queue.get(mapping, source_id).await {
            Ok(Some(e)) => e,
            // Done by an earlier push (which read the latest state).
            Ok(None) => return,
            Err(e) => {
                tracing::error!(mapping = %mapping, id = %source_id, error = %e,
                    "cannot read the implicit sync queue; the push waits for the next check");
                return;
            }
        };
        let entry = match trigger {
            Trigger::Retry if entry.next_attempt > iso8601(SystemTime::now()) => {
                return; // failed meanwhile: it waits for its next attempt
            }
            // A change another node made since: that node pushes it.
            Trigger::Now if !queue.is_mine(&entry) => return,
            // This node's change, its lease fresh: nobody else may take it.
            _ if queue.holds(&entry) => entry,
            // Due, unclaimed or its lease running out: one node pushes it, the one whose
            // claim lands.
            _ => match queue.claim(&entry).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(mapping = %mapping, id = %source_id, error = %e,
                        "cannot claim an implicit sync queue entry; the push waits for the next check");
                    return;
                }
            },
        };
        let (outcome, held) = queue.hold(entry, svc.sync_one(mapping, source_id)).await;
        // A change came during the push: the entry is that change's, pushed by its node.
        let Some(entry) = held else { return };
        let error = match outcome {
            Ok(()) => None,
            Err(SyncOneError::Dropped(why)) => {
                tracing::info!(mapping = %mapping, id = %source_id, reason = %why,
                    "implicit sync dropped");
                None
            }
            Err(SyncOneError::Failed(error)) => Some(error),
        };
        let Some(error) = error else {
            if let Err(e) = queue.done(&entry).await {
                tracing::error!(mapping = %mapping, id = %source_id, error = %e,
                    "cannot remove an implicit sync queue entry");
            }
            return;
        };
        svc.metrics()
            .implicit_sync_failures
            .with_label_values(&[mapping])
            .inc();
        let policy = svc
            .mappings()
            .get(mapping)
            .map(|m| m.retry.clone())
            .unwrap_or_default();
        match queue.failed(&entry, &error, &policy).await {
            Ok(Failed::Retry(attempts)) => tracing::warn!(mapping = %mapping, id = %source_id,
                operation = %entry.operation, attempts, error = %error,
                "implicit sync failed; queued for retry"),
            Ok(Failed::Superseded) => {}
            Ok(Failed::GiveUp(attempts)) => self.give_up(&entry, attempts, &error, &policy).await,
            Err(e) => tracing::error!(mapping = %mapping, id = %source_id,
                error = %error, store_error = %e,
                "implicit sync failed and cannot be queued for retry"),
        }
    }

    /// The post-retry action of a push whose retries are used up; the entry leaves the
    /// queue (the next change of the object, or a reconciliation, syncs it).
    async fn give_up(&self, entry: &Entry, attempts: u64, error: &str, policy: &RetryPolicy) {
        let queue = self.service.queue();
        match &policy.failure.post_retry {
            PostRetryAction::Script(script) => {
                let failure = json!({
                    "mapping": entry.mapping,
                    "sourceId": entry.source_id,
                    "operation": entry.operation,
                    "attempts": attempts,
                });
                let engine = self.service.script_engine();
                match PostRetryAction::run_script(script, engine.as_deref(), failure, error).await {
                    Ok(()) => tracing::error!(mapping = %entry.mapping, id = %entry.source_id,
                        attempts, error = %error,
                        "implicit sync gave up after its retries; the postRetryAction script ran"),
                    Err(e) => {
                        // Kept in the queue: the next check tries the push (and the script) again.
                        tracing::error!(mapping = %entry.mapping, id = %entry.source_id,
                            error = %e, "the postRetryAction script failed; the push stays queued");
                        return;
                    }
                }
            }
            PostRetryAction::LoggedIgnore => {
                tracing::error!(mapping = %entry.mapping, id = %entry.source_id,
                    operation = %entry.operation, attempts, error = %error,
                    "implicit sync gave up after its retries (logged-ignore)");
            }
            PostRetryAction::DeadLetterQueue => {
                let record = match json!({
                    "mapping": entry.mapping,
                    "sourceId": entry.source_id,
                    "operation": entry.operation,
                    "attempts": attempts,
                    "failureCause": super::queue::truncate(error),
                    "failed": iso8601(SystemTime::now()),
                }) {
                    serde_json::Value::Object(m) => m,
                    _ => Default::default(),
                };
                match dead_letter(self.service.repo(), &entry.mapping, record).await {
                    Ok(id) => tracing::error!(mapping = %entry.mapping, id = %entry.source_id,
                        attempts, error = %error, dead_letter = %id,
                        "implicit sync gave up after its retries; stored in the dead-letter queue"),
                    Err(e) => {
                        // Kept in the queue: the next check tries again.
                        tracing::error!(mapping = %entry.mapping, id = %entry.source_id,
                            error = %e, "cannot store a dead letter; the push stays queued");
                        return;
                    }
                }
            }
        }
        if let Err(e) = queue.done(entry).await {
            tracing::error!(mapping = %entry.mapping, id = %entry.source_id, error = %e,
                "cannot remove an implicit sync queue entry");
        }
    }
}

/// Why one push did not succeed.
#[derive(Debug)]
pub enum SyncOneError {
    /// Nothing to retry: the mapping is gone, or no longer implicit-synced.
    Dropped(String),
    /// To retry.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_callers_name_their_mapping() {
        let c = sync_caller("u2o");
        assert!(c.is_admin());
        assert_eq!(origin(&c), Some("u2o"));
        assert_eq!(origin(&Caller::system()), None);
    }
}
