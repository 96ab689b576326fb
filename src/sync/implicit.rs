//! Implicit sync (IDM's liveSync from managed objects): a committed create, update or delete
//! of a managed object is pushed to the target of every mapping that has its collection as
//! source and `enableSync` on, with the reconciliation engine's one-object path (what
//! `reconById` does: re-read the source, the link, the target, assess the situation, apply
//! the mapping's policy). A delete finds no source, so its situation comes from the link
//! (SOURCE_MISSING when the linked target exists).
//!
//! * Off the caller's path: [`ImplicitSync::on_change`] only queues a job for a worker
//!   thread with its own runtime; the caller's write is never failed or delayed by a push.
//! * Ordering: pushes of one (mapping, source id) are serialised, and each re-reads the
//!   source, so the last push always carries the latest state.
//! * Failures: logged with mapping and id, counted in
//!   `idm_gateway_implicit_sync_failures_total{mapping}`, and recorded in the retry queue
//!   ([`super::queue`]) that the worker retries with backoff until a push succeeds.
//! * Loops: writes made by reconciliation or implicit sync carry a caller whose component
//!   names the mapping ([`sync_caller`]); such a write does not trigger the mapping that
//!   made it nor its reverse (target → source), so A→B and B→A sharing links do not bounce,
//!   while chains (A→B, then B→C) still flow.
//! * Sources: `managed/*`, and `system/*` objects written through REST (the system handler
//!   has the same hook); changes made in the resource itself come through liveSync
//!   ([`crate::system::service`]). `external/idm/…` sources are reconciliation only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::service::{MappingSource, SyncService};
use crate::crest::{Caller, ROLE_ADMIN};
use crate::managed::{Change, ChangeHook};

/// Component of the callers of sync writes: `sync/<mapping>`.
const SYNC_COMPONENT: &str = "sync/";
/// How often the worker looks for due retries.
const RETRY_TICK: Duration = Duration::from_millis(250);

/// The caller of the writes `mapping`'s reconciliation and implicit sync make: the
/// gateway itself, marked with the mapping (HTTP callers never have this component).
pub fn sync_caller(mapping: &str) -> Caller {
    Caller::new(
        "system",
        format!("{SYNC_COMPONENT}{mapping}"),
        vec![ROLE_ADMIN.into()],
    )
}

/// The mapping that made a write, when sync made it.
fn origin(caller: &Caller) -> Option<&str> {
    caller.component.strip_prefix(SYNC_COMPONENT)
}

/// One push to do.
#[derive(Debug)]
struct Job {
    mapping: String,
    source_id: String,
    operation: &'static str,
}

/// The [`ChangeHook`] given to `managed/*`.
pub struct ImplicitSync {
    mappings: MappingSource,
    jobs: mpsc::UnboundedSender<Job>,
}

impl ChangeHook for ImplicitSync {
    fn on_change(&self, change: &Change<'_>) {
        let all = (self.mappings)();
        let from = origin(&change.request.caller).and_then(|name| all.get(name));
        for m in all.iter() {
            if !m.enable_sync || m.source != change.resource {
                continue;
            }
            if let Some(o) = from {
                let same = o.name == m.name;
                let reverse = o.source == m.target && o.target == m.source;
                if same || reverse {
                    continue;
                }
            }
            let job = Job {
                mapping: m.name.clone(),
                source_id: change.id.to_owned(),
                operation: change.kind.as_str(),
            };
            if self.jobs.send(job).is_err() {
                tracing::warn!(mapping = %m.name, id = %change.id,
                    "implicit sync is stopped; the change is left to reconciliation");
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
                })
                .run(rx),
            )
        })
        .map_err(|e| format!("cannot start the implicit sync thread: {e}"))?;
    Ok(hook)
}

type KeyLock = Arc<tokio::sync::Mutex<()>>;

struct Worker {
    service: Arc<SyncService>,
    /// One lock per (mapping, source id) being pushed.
    locks: Mutex<HashMap<(String, String), KeyLock>>,
    /// One retry pass at a time.
    retrying: Arc<tokio::sync::Mutex<()>>,
}

impl Worker {
    async fn run(self: Arc<Self>, mut jobs: mpsc::UnboundedReceiver<Job>) {
        match self.service.queue().load().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "implicit sync retry queue loaded"),
            Err(e) => tracing::error!(error = %e, "cannot read the implicit sync retry queue"),
        }
        let mut tick = tokio::time::interval(RETRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let Some(job) = job else { break };
                    let w = self.clone();
                    tokio::spawn(async move {
                        w.push(&job.mapping, &job.source_id, job.operation).await;
                    });
                }
                _ = tick.tick() => {
                    if let Ok(guard) = self.retrying.clone().try_lock_owned() {
                        let w = self.clone();
                        tokio::spawn(async move {
                            w.retry_due().await;
                            drop(guard);
                        });
                    }
                }
            }
        }
    }

    /// Pushes every due queue entry again.
    async fn retry_due(&self) {
        let due = match self.service.queue().due(SystemTime::now()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the implicit sync retry queue");
                return;
            }
        };
        for entry in due {
            // The operation names the last change; a retry pushes the current state.
            let op = match entry.operation.as_str() {
                "create" => "create",
                "delete" => "delete",
                _ => "update",
            };
            tracing::debug!(mapping = %entry.mapping, id = %entry.source_id,
                attempts = entry.attempts, "implicit sync retry");
            self.push(&entry.mapping, &entry.source_id, op).await;
        }
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
    async fn push(&self, mapping: &str, source_id: &str, operation: &str) {
        let key = (mapping.to_owned(), source_id.to_owned());
        let lock = self.lock(&key);
        {
            let _one_at_a_time = lock.lock().await;
            self.push_locked(mapping, source_id, operation).await;
        }
        self.unlock(&key, lock);
    }

    async fn push_locked(&self, mapping: &str, source_id: &str, operation: &str) {
        let svc = &self.service;
        let queue = svc.queue();
        match svc.sync_one(mapping, source_id).await {
            Ok(()) => {
                if let Err(e) = queue.done(mapping, source_id).await {
                    tracing::error!(mapping = %mapping, id = %source_id, error = %e,
                        "cannot remove an implicit sync retry entry");
                }
            }
            Err(SyncOneError::Dropped(why)) => {
                tracing::info!(mapping = %mapping, id = %source_id, reason = %why,
                    "implicit sync dropped");
                let _ = queue.done(mapping, source_id).await;
            }
            Err(SyncOneError::Failed(error)) => {
                svc.metrics()
                    .implicit_sync_failures
                    .with_label_values(&[mapping])
                    .inc();
                match queue.failed(mapping, source_id, operation, &error).await {
                    Ok(attempts) => {
                        tracing::warn!(mapping = %mapping, id = %source_id, operation = operation,
                            attempts = attempts, error = %error,
                            "implicit sync failed; queued for retry")
                    }
                    Err(e) => tracing::error!(mapping = %mapping, id = %source_id,
                        error = %error, store_error = %e,
                        "implicit sync failed and cannot be queued for retry"),
                }
            }
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
