//! The implicit-sync queue: one record per (mapping, source id) with a push to do, in the
//! store under `sync/queue`.
//!
//! * Durable before acknowledged: a managed write commits its rows ([`SyncQueue::row`]) in
//!   the same store transaction as itself, so a crash never loses an acknowledged push; a
//!   row leaves the queue only when its push is done (or given up).
//! * An entry names what to push, not what to write: a push re-reads the source, so the
//!   latest state wins and several writes of one object are one entry. A push removes the
//!   entry only if it is still the revision the push read: a write made meanwhile keeps it.
//! * Bounded retries, IDM's `queuedSync` of the mapping: `maxRetries` (default
//!   [`DEFAULT_MAX_RETRIES`], negative retries for ever), `retryDelay` in ms (default 1000,
//!   doubled at each failure up to [`MAX_BACKOFF`]) and `postRetryAction` (`logged-ignore`,
//!   IDM's default, or `dead-letter-queue`). Every mapping's implicit sync is queued in this
//!   gateway, so `queuedSync.enabled` changes nothing.
//!
//! * In a cluster, an entry is claimed by one node (`node`): the node whose write queued
//!   it pushes it at once; the retry check of any node claims a due entry first (a
//!   conditional write of `node` and a new `nextAttempt` lease), so exactly one node pushes
//!   it. A dead node's claims are released by the survivor that detects it
//!   ([`crate::cluster::NodeRecovery`]), or expire with their lease.
//!
//! Entry: `{"_id", "mapping", "sourceId", "operation", "attempts", "lastError",
//! "nextAttempt", "node"}` (`nextAttempt` ISO 8601 UTC).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::run::iso8601;
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::query::SortKey;
use crate::events::{FailurePolicy, PostRetryAction};
use crate::repo::{Repo, RepoError, RepoQuery, WriteOp};

/// Resource of the queue entries.
pub const QUEUE_RESOURCE: &str = "sync/queue";
/// Retries of a failing push when the mapping's `queuedSync` does not say.
pub const DEFAULT_MAX_RETRIES: u64 = 5;
/// First retry delay when the mapping's `queuedSync` has no `retryDelay` (IDM's default).
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(1000);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a new entry waits before the retry check takes it: its own push normally runs
/// at once and removes it; the check only picks up entries whose push was lost.
pub const LEASE: Duration = Duration::from_secs(10);
/// Longest `lastError` kept.
const MAX_ERROR_LEN: usize = 1000;
/// Due entries read per check (the rest follow at the next check): a long queue (a remote
/// down for hours) costs one indexed, bounded query per check, not a read of the queue.
const DUE_BATCH: usize = 1000;
/// The claiming node's id.
const NODE: &str = "node";
/// The indexed property due entries are found and ordered by.
const NEXT_ATTEMPT: &str = "nextAttempt";

/// One queued push, as read (with the revision a removal must match).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub rev: String,
    pub mapping: String,
    pub source_id: String,
    pub operation: String,
    pub attempts: u64,
    pub next_attempt: String,
    /// The cluster node that claimed it (none: written before entries named one).
    pub node: Option<String>,
}

/// A mapping's retry settings (`queuedSync`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub failure: FailurePolicy,
    pub retry_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            failure: FailurePolicy {
                max_retries: Some(DEFAULT_MAX_RETRIES),
                post_retry: PostRetryAction::LoggedIgnore,
            },
            retry_delay: DEFAULT_RETRY_DELAY,
        }
    }
}

impl RetryPolicy {
    /// The `queuedSync` of a mapping as written (`raw`).
    pub fn of_mapping(raw: &Value) -> Result<RetryPolicy, String> {
        let d = RetryPolicy::default();
        let doc = raw.get("queuedSync");
        let failure =
            FailurePolicy::parse(doc, d.failure.clone()).map_err(|e| format!("queuedSync: {e}"))?;
        let failure = match doc.and_then(|q| q.get("maxRetries")) {
            // A queuedSync without maxRetries keeps the bounded default.
            None => FailurePolicy {
                max_retries: d.failure.max_retries,
                ..failure
            },
            Some(_) => failure,
        };
        let retry_delay = match doc.and_then(|q| q.get("retryDelay")) {
            None | Some(Value::Null) => d.retry_delay,
            Some(v) => Duration::from_millis(v.as_u64().ok_or_else(|| {
                format!("queuedSync: retryDelay must be a number of milliseconds, not {v}")
            })?),
        };
        Ok(RetryPolicy {
            failure,
            retry_delay,
        })
    }

    /// Delay before the next attempt after `attempts` failures.
    pub fn backoff(&self, attempts: u64) -> Duration {
        let shift = attempts.saturating_sub(1).min(20) as u32;
        self.retry_delay
            .saturating_mul(1u32 << shift)
            .min(MAX_BACKOFF)
    }
}

/// What became of a failed push.
#[derive(Debug, Clone, PartialEq)]
pub enum Failed {
    /// To retry; the failures so far.
    Retry(u64),
    /// Retries used up: the caller applies the post-retry action, then removes the entry.
    GiveUp(u64),
    /// A newer change owns the entry now (its push follows).
    Superseded,
}

pub struct SyncQueue {
    repo: Arc<dyn Repo>,
    /// This node's id in the cluster.
    node: std::sync::OnceLock<String>,
    /// How long a claim holds an entry ([`LEASE`]); a push renews it every third of it.
    lease: Duration,
}

impl SyncQueue {
    pub fn new(repo: Arc<dyn Repo>) -> Self {
        Self {
            repo,
            node: Default::default(),
            lease: LEASE,
        }
    }

    /// Names this node's claims; set once, before the first entry is written.
    pub fn set_node(&self, id: &str) {
        let _ = self.node.set(id.to_owned());
    }

    pub fn node(&self) -> Option<&str> {
        self.node.get().map(String::as_str)
    }

    /// Whether `e` is this node's to push: its own claim, or an entry without a node (which
    /// it claims first, see [`Self::holds`]); not another node's claim.
    pub fn is_mine(&self, e: &Entry) -> bool {
        e.node.is_none() || e.node.as_deref() == self.node()
    }

    /// Whether this node holds `e` for a while yet: its claim, with more than half its
    /// lease left (a push started now renews it before it runs out). An entry this node
    /// does not hold is claimed before it is pushed: one without a node (from before
    /// claims, or released from a dead node), or whose lease ran out (another node's
    /// retry check may be claiming it).
    pub fn holds(&self, e: &Entry) -> bool {
        e.node.as_deref() == self.node()
            && e.next_attempt > iso8601(SystemTime::now() + self.lease / 2)
    }

    /// Runs `work`, the push of `e` (which this node holds), keeping the claim: the lease
    /// is renewed every third of its length, so no other node's retry check takes the
    /// entry while the push runs, however long it takes. Returns the work's output and
    /// the entry as last renewed; `None` when a change came meanwhile (the entry is the
    /// newer change's, whose own push follows: this push must not remove it).
    pub async fn hold<T>(
        &self,
        e: Entry,
        work: impl std::future::Future<Output = T>,
    ) -> (T, Option<Entry>) {
        let every = self.lease / 3;
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held = Some(e);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return (out, held),
                _ = renew.tick(), if held.is_some() => {
                    let Some(e) = held.take() else { continue };
                    held = match self.claim(&e).await {
                        Ok(renewed) => renewed,
                        Err(err) => {
                            tracing::warn!(mapping = %e.mapping, id = %e.source_id, error = %err,
                                "cannot renew the lease of an implicit sync queue entry being pushed; retrying");
                            Some(e)
                        }
                    };
                    if held.is_none() {
                        tracing::debug!("an implicit sync queue entry changed during its push");
                    }
                }
            }
        }
    }

    /// Claims `e` for this node: a new lease from now, if nobody changed it since it was
    /// read. `None`: another node (or a write) got there first.
    pub async fn claim(&self, e: &Entry) -> Result<Option<Entry>, RepoError> {
        let Some(current) = self.repo.read(QUEUE_RESOURCE, &e.id).await? else {
            return Ok(None);
        };
        if current.rev != e.rev {
            return Ok(None);
        }
        let mut content = current.content;
        let lease = iso8601(SystemTime::now() + self.lease);
        content.insert(NEXT_ATTEMPT.into(), json!(lease));
        if let Some(node) = self.node() {
            content.insert(NODE.into(), json!(node));
        }
        Ok(self
            .replace(e, content)
            .await?
            .and_then(|o| entry(o.id, o.rev, &o.content)))
    }

    /// Releases the claims of (dead) node `node`: its entries are due at once, for any
    /// node's next retry check. Returns how many.
    pub async fn release(&self, node: &str) -> Result<usize, RepoError> {
        let of_node = QueryFilter::Compare {
            field: JsonPointer::parse(NODE),
            op: CompareOp::Eq,
            value: FilterValue::String(node.to_owned()),
        };
        let page = self
            .repo
            .query(QUEUE_RESOURCE, query(&of_node, &[], 0))
            .await?;
        let mut released = 0;
        for o in page.results {
            let mut content = o.content;
            content.remove(NODE);
            content.insert(NEXT_ATTEMPT.into(), json!(iso8601(SystemTime::now())));
            match self
                .repo
                .update(
                    QUEUE_RESOURCE,
                    &o.id,
                    Some(&o.rev),
                    content,
                    Default::default(),
                )
                .await
            {
                Ok(_) => released += 1,
                Err(RepoError::RevisionMismatch { .. } | RepoError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }

    /// Indexes `nextAttempt` and counts the stored entries (at start-up).
    pub async fn load(&self) -> Result<usize, RepoError> {
        self.repo
            .set_indexes(
                QUEUE_RESOURCE,
                &[JsonPointer::parse(NEXT_ATTEMPT), JsonPointer::parse(NODE)],
            )
            .await?;
        let page = self
            .repo
            .query(
                QUEUE_RESOURCE,
                RepoQuery {
                    ids_only: true,
                    ..query(&QueryFilter::True, &[], 0)
                },
            )
            .await?;
        Ok(page.results.len())
    }

    /// The write that queues a push of (mapping, source id), to commit with the change,
    /// claimed by `node` (the node making the change).
    pub fn row(mapping: &str, source_id: &str, operation: &str, node: Option<&str>) -> WriteOp {
        let mut content = object(json!({
            "mapping": mapping,
            "sourceId": source_id,
            "operation": operation,
            "attempts": 0,
            "nextAttempt": iso8601(SystemTime::now() + LEASE),
        }));
        if let Some(node) = node {
            content.insert(NODE.into(), json!(node));
        }
        WriteOp::Put {
            resource: QUEUE_RESOURCE.into(),
            id: entry_id(mapping, source_id),
            content,
        }
    }

    /// The entry of (mapping, source id), if one is queued.
    pub async fn get(&self, mapping: &str, source_id: &str) -> Result<Option<Entry>, RepoError> {
        let id = entry_id(mapping, source_id);
        Ok(self
            .repo
            .read(QUEUE_RESOURCE, &id)
            .await?
            .and_then(|o| entry(o.id, o.rev, &o.content)))
    }

    /// Records a failed push of `e`: one more attempt and the next one's time, unless the
    /// retries are used up.
    pub async fn failed(
        &self,
        e: &Entry,
        error: &str,
        policy: &RetryPolicy,
    ) -> Result<Failed, RepoError> {
        let attempts = e.attempts + 1;
        if policy.failure.exhausted(attempts) {
            return Ok(Failed::GiveUp(attempts));
        }
        // A failed entry waits for its next attempt unclaimed: any node's retry check
        // claims it then.
        let content = object(json!({
            "mapping": e.mapping,
            "sourceId": e.source_id,
            "operation": e.operation,
            "attempts": attempts,
            "lastError": truncate(error),
            "nextAttempt": iso8601(SystemTime::now() + policy.backoff(attempts)),
        }));
        Ok(match self.replace(e, content).await? {
            Some(_) => Failed::Retry(attempts),
            None => Failed::Superseded,
        })
    }

    /// Replaces `e` with `content` if no change came since it was read (`None` otherwise,
    /// or if it is gone).
    async fn replace(
        &self,
        e: &Entry,
        content: Map<String, Value>,
    ) -> Result<Option<crate::repo::StoredObject>, RepoError> {
        match self
            .repo
            .update(
                QUEUE_RESOURCE,
                &e.id,
                Some(&e.rev),
                content,
                Default::default(),
            )
            .await
        {
            Ok(o) => Ok(Some(o)),
            Err(RepoError::RevisionMismatch { .. } | RepoError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Removes `e` if no change came since it was read.
    pub async fn done(&self, e: &Entry) -> Result<(), RepoError> {
        match self.repo.delete(QUEUE_RESOURCE, &e.id, Some(&e.rev)).await {
            Ok(_) | Err(RepoError::NotFound { .. } | RepoError::RevisionMismatch { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Removes an entry by id (`DELETE sync/queue/<id>`); answers it as it was.
    pub async fn remove(&self, id: &str) -> Result<Option<Value>, RepoError> {
        match self.repo.delete(QUEUE_RESOURCE, id, None).await {
            Ok(o) => Ok(Some(with_id(o.id, o.content))),
            Err(RepoError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Entries whose next attempt is due at `now`, oldest first, at most [`DUE_BATCH`].
    pub async fn due(&self, now: SystemTime) -> Result<Vec<Entry>, RepoError> {
        let now = iso8601(now);
        let due = QueryFilter::Compare {
            field: JsonPointer::parse(NEXT_ATTEMPT),
            op: CompareOp::Le,
            value: FilterValue::String(now.clone()),
        };
        let page = self
            .repo
            .query(QUEUE_RESOURCE, query(&due, &by_next_attempt(), DUE_BATCH))
            .await?;
        Ok(page
            .results
            .into_iter()
            .filter_map(|o| entry(o.id, o.rev, &o.content))
            .filter(|e| e.next_attempt <= now)
            .collect())
    }

    /// Every entry matching `filter` (evaluated by the store), as JSON (`_id` first),
    /// oldest next attempt first.
    pub async fn list(&self, filter: &QueryFilter) -> Result<Vec<Value>, RepoError> {
        let page = self
            .repo
            .query(QUEUE_RESOURCE, query(filter, &by_next_attempt(), 0))
            .await?;
        Ok(page
            .results
            .into_iter()
            .map(|o| with_id(o.id, o.content))
            .collect())
    }

    pub async fn read(&self, id: &str) -> Result<Option<Value>, RepoError> {
        Ok(self
            .repo
            .read(QUEUE_RESOURCE, id)
            .await?
            .map(|o| with_id(o.id, o.content)))
    }
}

fn entry(id: String, rev: String, c: &Map<String, Value>) -> Option<Entry> {
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(Entry {
        mapping: s("mapping")?,
        source_id: s("sourceId")?,
        operation: s("operation").unwrap_or_default(),
        attempts: c.get("attempts").and_then(Value::as_u64).unwrap_or(0),
        next_attempt: s(NEXT_ATTEMPT).unwrap_or_default(),
        node: s(NODE),
        id,
        rev,
    })
}

fn with_id(id: String, content: Map<String, Value>) -> Value {
    let mut v = Map::with_capacity(content.len() + 1);
    v.insert("_id".into(), Value::String(id));
    v.extend(content);
    Value::Object(v)
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `error`, cut to [`MAX_ERROR_LEN`] bytes on a character boundary.
pub fn truncate(error: &str) -> String {
    let mut error = error.to_owned();
    if error.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
    }
    error
}

fn query<'a>(filter: &'a QueryFilter, sort: &'a [SortKey], page_size: usize) -> RepoQuery<'a> {
    RepoQuery {
        filter,
        sort,
        page_size,
        cookie: None,
        offset: 0,
        count: Default::default(),
        ids_only: false,
    }
}

fn by_next_attempt() -> [SortKey; 1] {
    [SortKey {
        field: JsonPointer::parse(NEXT_ATTEMPT),
        ascending: true,
    }]
}

/// The entry id of (mapping, source id): stable, and safe in a URL whatever the id is.
pub fn entry_id(mapping: &str, source_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(mapping.as_bytes());
    h.update([0]);
    h.update(source_id.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policies_come_from_queued_sync() {
        let d = RetryPolicy::default();
        assert_eq!(d.failure.max_retries, Some(DEFAULT_MAX_RETRIES));
        let p = |v: Value| RetryPolicy::of_mapping(&json!({"queuedSync": v}));
        assert_eq!(RetryPolicy::of_mapping(&json!({})), Ok(d.clone()));
        assert_eq!(p(json!({"enabled": true})), Ok(d));
        let q =
            p(json!({"maxRetries": 2, "retryDelay": 50, "postRetryAction": "dead-letter-queue"}))
                .unwrap();
        assert_eq!(q.failure.max_retries, Some(2));
        assert_eq!(q.failure.post_retry, PostRetryAction::DeadLetterQueue);
        assert_eq!(q.retry_delay, Duration::from_millis(50));
        assert_eq!(
            p(json!({"maxRetries": -1})).unwrap().failure.max_retries,
            None
        );
        assert!(p(json!({"retryDelay": "1s"})).is_err());
        assert!(p(json!({"postRetryAction": "drop"})).is_err());
    }

    #[test]
    fn backoff_doubles_from_the_retry_delay_and_is_capped() {
        let d = RetryPolicy::default();
        assert_eq!(d.backoff(0), Duration::from_secs(1));
        assert_eq!(d.backoff(1), Duration::from_secs(1));
        assert_eq!(d.backoff(2), Duration::from_secs(2));
        assert_eq!(d.backoff(4), Duration::from_secs(8));
        assert_eq!(d.backoff(1000), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn a_due_entry_is_claimed_by_one_node_and_a_dead_nodes_claims_are_released() {
        let repo: Arc<dyn Repo> =
            Arc::new(crate::repo::sqlite::SqliteRepo::open_temporary().unwrap());
        let (a, b) = (SyncQueue::new(repo.clone()), SyncQueue::new(repo.clone()));
        a.set_node("a");
        b.set_node("b");
        a.load().await.unwrap();
        for id in ["x", "y"] {
            for r in repo
                .batch(vec![SyncQueue::row("m", id, "update", a.node())])
                .await
            {
                r.unwrap();
            }
        }
        let later = SystemTime::now() + LEASE * 2;
        let seen_by_a = a.due(later).await.unwrap();
        let seen_by_b = b.due(later).await.unwrap();
        assert!(seen_by_a.iter().all(|e| a.is_mine(e) && !b.is_mine(e)));
        // Both retry checks see x due; the first claim wins, the other finds it taken.
        let x_a = seen_by_a.iter().find(|e| e.source_id == "x").unwrap();
        let x_b = seen_by_b.iter().find(|e| e.source_id == "x").unwrap();
        let claimed = b.claim(x_b).await.unwrap().expect("b's claim lands");
        assert_eq!(claimed.node.as_deref(), Some("b"));
        assert!(b.is_mine(&claimed));
        assert!(a.claim(x_a).await.unwrap().is_none());
        // A dies: its claim on y is released (due now, unclaimed); b's claim on x stays.
        assert_eq!(b.release("a").await.unwrap(), 1);
        let due_now = b
            .due(SystemTime::now() + Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(due_now.len(), 1, "{due_now:?}");
        assert_eq!(due_now[0].source_id, "y");
        assert_eq!(due_now[0].node, None);
        assert!(b.claim(&due_now[0]).await.unwrap().is_some());
        // The push of the claimed entry removes it by its new revision.
        b.done(&claimed).await.unwrap();
        assert!(b.get("m", "x").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_long_push_keeps_its_claim_and_unclaimed_entries_are_not_held() {
        let repo: Arc<dyn Repo> =
            Arc::new(crate::repo::sqlite::SqliteRepo::open_temporary().unwrap());
        let (mut a, mut b) = (SyncQueue::new(repo.clone()), SyncQueue::new(repo.clone()));
        a.set_node("a");
        b.set_node("b");
        a.lease = Duration::from_millis(300);
        b.lease = Duration::from_millis(300);
        a.load().await.unwrap();
        for (id, node) in [("x", a.node()), ("y", None)] {
            for r in repo
                .batch(vec![SyncQueue::row("m", id, "update", node)])
                .await
            {
                r.unwrap();
            }
        }
        // The writer holds its fresh entry; nobody holds one without a node (released from
        // a dead node, or written before claims): it is claimed before any push.
        let x = a.get("m", "x").await.unwrap().unwrap();
        let y = a.get("m", "y").await.unwrap().unwrap();
        assert!(a.holds(&x) && !b.holds(&x));
        assert!(!a.holds(&y) && !b.holds(&y));
        let x = a.claim(&x).await.unwrap().unwrap();

        // A's push outlasts its lease several times; b's retry check keeps trying to take
        // the entry meanwhile and never can.
        let stolen = std::sync::atomic::AtomicUsize::new(0);
        let thief = async {
            let until = tokio::time::Instant::now() + Duration::from_millis(1500);
            while tokio::time::Instant::now() < until {
                for e in b.due(SystemTime::now()).await.unwrap() {
                    if e.source_id == "x" && b.claim(&e).await.unwrap().is_some() {
                        stolen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let push = a.hold(x, tokio::time::sleep(Duration::from_millis(1500)));
        let (((), held), ()) = tokio::join!(push, thief);
        assert_eq!(stolen.load(std::sync::atomic::Ordering::SeqCst), 0);
        let held = held.expect("the claim is still a's");
        assert_eq!(held.node.as_deref(), Some("a"));
        a.done(&held).await.unwrap();
        assert!(a.get("m", "x").await.unwrap().is_none());

        // A change during the push: the entry is the change's, the push must not remove it.
        let y = a.claim(&y).await.unwrap().unwrap();
        let change = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for r in repo
                .batch(vec![SyncQueue::row("m", "y", "update", b.node())])
                .await
            {
                r.unwrap();
            }
        };
        let push = a.hold(y, tokio::time::sleep(Duration::from_millis(400)));
        let ((_, held), ()) = tokio::join!(push, change);
        assert!(held.is_none());
        assert_eq!(
            a.get("m", "y").await.unwrap().unwrap().node.as_deref(),
            Some("b")
        );
    }

    #[tokio::test]
    async fn entries_are_durable_rows_removed_only_by_the_push_that_read_them() {
        let repo: Arc<dyn Repo> =
            Arc::new(crate::repo::sqlite::SqliteRepo::open_temporary().unwrap());
        let q = SyncQueue::new(repo.clone());
        assert_eq!(q.load().await.unwrap(), 0);
        for (id, op) in [("a", "update"), ("b", "update"), ("c", "create")] {
            for r in repo.batch(vec![SyncQueue::row("m", id, op, None)]).await {
                r.unwrap();
            }
        }
        // New rows wait for their own push: the retry check takes them after the lease.
        let now = SystemTime::now();
        assert!(q.due(now).await.unwrap().is_empty());
        assert_eq!(q.due(now + LEASE * 2).await.unwrap().len(), 3);

        // A failure counts and backs off; a policy of one retry gives up at the second.
        let policy = RetryPolicy {
            failure: FailurePolicy {
                max_retries: Some(1),
                post_retry: PostRetryAction::LoggedIgnore,
            },
            retry_delay: Duration::from_millis(100),
        };
        let b = q.get("m", "b").await.unwrap().unwrap();
        assert_eq!(
            q.failed(&b, "down", &policy).await.unwrap(),
            Failed::Retry(1)
        );
        let b = q.get("m", "b").await.unwrap().unwrap();
        assert_eq!(b.attempts, 1);
        let soon: Vec<String> = q
            .due(SystemTime::now() + Duration::from_millis(500))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.source_id)
            .collect();
        assert_eq!(soon, ["b"]);
        assert_eq!(
            q.failed(&b, "down", &policy).await.unwrap(),
            Failed::GiveUp(2)
        );

        // A change after the read keeps the entry: the push that read it removes nothing.
        let a = q.get("m", "a").await.unwrap().unwrap();
        for r in repo
            .batch(vec![SyncQueue::row("m", "a", "update", None)])
            .await
        {
            r.unwrap();
        }
        q.done(&a).await.unwrap();
        assert!(q.get("m", "a").await.unwrap().is_some());
        assert_eq!(
            q.failed(&a, "down", &policy).await.unwrap(),
            Failed::Superseded
        );
        let a = q.get("m", "a").await.unwrap().unwrap();
        q.done(&a).await.unwrap();
        assert!(q.get("m", "a").await.unwrap().is_none());

        // The listing filter is the store's; a restarted queue finds its entries.
        let f = crate::crest::filter::parse(r#"operation eq "create""#).unwrap();
        let listed = q.list(&f).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["sourceId"], "c");
        assert_eq!(SyncQueue::new(repo).load().await.unwrap(), 2);
        let c = listed[0]["_id"].as_str().unwrap();
        assert_eq!(q.remove(c).await.unwrap().unwrap()["sourceId"], "c");
        assert_eq!(q.remove(c).await.unwrap(), None);
    }

    #[test]
    fn entry_ids_are_stable_and_distinct() {
        assert_eq!(entry_id("m", "a"), entry_id("m", "a"));
        assert_ne!(entry_id("m", "a"), entry_id("ma", ""));
        assert_eq!(entry_id("m", "a/b c").len(), 32);
    }
}
