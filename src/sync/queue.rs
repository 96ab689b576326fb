//! The implicit-sync retry queue: one record per (mapping, source id) whose last push
//! failed, in the store under `sync/queue`, so it survives a restart. An entry names what
//! to push again, not what to write: a retry re-reads the source, so the latest state wins
//! and several failed writes of one object are one entry.
//!
//! Entry: `{"_id", "mapping", "sourceId", "operation", "attempts", "lastError",
//! "nextAttempt"}` (`nextAttempt` ISO 8601 UTC).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::run::iso8601;
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::query::SortKey;
use crate::repo::{Repo, RepoError, RepoQuery};

/// Resource of the queue entries.
pub const QUEUE_RESOURCE: &str = "sync/queue";
/// First retry delay; doubled at each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Longest `lastError` kept.
const MAX_ERROR_LEN: usize = 1000;
/// Due entries read per check (the rest follow at the next check): a long queue (a remote
/// down for hours) costs one indexed, bounded query per check, not a read of the queue.
const DUE_BATCH: usize = 1000;
/// The indexed property due entries are found and ordered by.
const NEXT_ATTEMPT: &str = "nextAttempt";

/// One queued push.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub mapping: String,
    pub source_id: String,
    pub operation: String,
    pub attempts: u64,
    pub next_attempt: String,
}

pub struct SyncQueue {
    repo: Arc<dyn Repo>,
    /// Ids of the stored entries (so a successful push costs no store access when nothing
    /// was queued for it).
    queued: Mutex<HashSet<String>>,
}

impl SyncQueue {
    pub fn new(repo: Arc<dyn Repo>) -> Self {
        Self {
            repo,
            queued: Mutex::new(HashSet::new()),
        }
    }

    /// Indexes `nextAttempt` and reads the stored entries' ids (at start-up).
    pub async fn load(&self) -> Result<usize, RepoError> {
        self.repo
            .set_indexes(QUEUE_RESOURCE, &[JsonPointer::parse(NEXT_ATTEMPT)])
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
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        queued.extend(page.results.into_iter().map(|o| o.id));
        Ok(queued.len())
    }

    fn is_queued(&self, id: &str) -> bool {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Records a failed push (a new entry, or one more attempt of the entry).
    pub async fn failed(
        &self,
        mapping: &str,
        source_id: &str,
        operation: &str,
        error: &str,
    ) -> Result<u64, RepoError> {
        let id = entry_id(mapping, source_id);
        let existing = self.repo.read(QUEUE_RESOURCE, &id).await?;
        let attempts = existing
            .as_ref()
            .and_then(|o| o.content.get("attempts"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            + 1;
        let mut error = error.to_owned();
        if error.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        let next = SystemTime::now() + backoff(attempts);
        let content = match json!({
            "mapping": mapping,
            "sourceId": source_id,
            "operation": operation,
            "attempts": attempts,
            "lastError": error,
            "nextAttempt": iso8601(next),
        }) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        match existing {
            Some(_) => {
                self.repo
                    .update(QUEUE_RESOURCE, &id, None, content, Default::default())
                    .await?;
            }
            None => {
                self.repo
                    .create(QUEUE_RESOURCE, &id, content, Default::default())
                    .await?;
            }
        }
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        Ok(attempts)
    }

    /// Removes the entry of (mapping, source id), if there is one.
    pub async fn done(&self, mapping: &str, source_id: &str) -> Result<(), RepoError> {
        let id = entry_id(mapping, source_id);
        if !self.is_queued(&id) {
            return Ok(());
        }
        match self.repo.delete(QUEUE_RESOURCE, &id, None).await {
            Ok(_) | Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        Ok(())
    }

    /// Entries whose next attempt is due at `now`, oldest first, at most [`DUE_BATCH`].
    pub async fn due(&self, now: SystemTime) -> Result<Vec<Entry>, RepoError> {
        if self
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return Ok(Vec::new());
        }
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
            .filter_map(|o| {
                let s = |k: &str| o.content.get(k).and_then(Value::as_str).map(str::to_owned);
                Some(Entry {
                    mapping: s("mapping")?,
                    source_id: s("sourceId")?,
                    operation: s("operation").unwrap_or_default(),
                    attempts: o
                        .content
                        .get("attempts")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                    next_attempt: s("nextAttempt").unwrap_or_default(),
                    id: o.id,
                })
            })
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
            .map(|o| {
                let mut v = Map::with_capacity(o.content.len() + 1);
                v.insert("_id".into(), Value::String(o.id));
                v.extend(o.content);
                Value::Object(v)
            })
            .collect())
    }

    pub async fn read(&self, id: &str) -> Result<Option<Value>, RepoError> {
        Ok(self.repo.read(QUEUE_RESOURCE, id).await?.map(|o| {
            let mut v = Map::with_capacity(o.content.len() + 1);
            v.insert("_id".into(), Value::String(o.id));
            v.extend(o.content);
            Value::Object(v)
        }))
    }
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

/// Delay before the next attempt after `attempts` failures.
pub fn backoff(attempts: u64) -> Duration {
    let shift = attempts.saturating_sub(1).min(20) as u32;
    FIRST_BACKOFF.saturating_mul(1u32 << shift).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(1000), MAX_BACKOFF);
        assert_eq!(backoff(0), FIRST_BACKOFF);
    }

    #[tokio::test]
    async fn due_entries_come_from_an_indexed_bounded_query_oldest_first() {
        let repo: Arc<dyn Repo> =
            Arc::new(crate::repo::sqlite::SqliteRepo::open_temporary().unwrap());
        let q = SyncQueue::new(repo.clone());
        assert_eq!(q.load().await.unwrap(), 0);
        // b fails twice (next attempt 1 s out), a and c once (0.5 s out).
        q.failed("m", "a", "update", "down").await.unwrap();
        q.failed("m", "b", "update", "down").await.unwrap();
        q.failed("m", "b", "update", "still down").await.unwrap();
        q.failed("m", "c", "create", "down").await.unwrap();
        let now = SystemTime::now();
        assert!(q.due(now).await.unwrap().is_empty());
        let soon: Vec<String> = q
            .due(now + Duration::from_millis(700))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.source_id)
            .collect();
        assert_eq!(soon, ["a", "c"]);
        let later = q.due(now + Duration::from_secs(2)).await.unwrap();
        assert_eq!(later.last().unwrap().source_id, "b");
        assert_eq!(later.last().unwrap().attempts, 2);
        // The listing filter is the store's.
        let f = crate::crest::filter::parse(r#"operation eq "create""#).unwrap();
        let listed = q.list(&f).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["sourceId"], "c");
        // A restarted queue knows its entries.
        let again = SyncQueue::new(repo);
        assert_eq!(again.load().await.unwrap(), 3);
        q.done("m", "a").await.unwrap();
        assert_eq!(q.list(&QueryFilter::True).await.unwrap().len(), 2);
    }

    #[test]
    fn entry_ids_are_stable_and_distinct() {
        assert_eq!(entry_id("m", "a"), entry_id("m", "a"));
        assert_ne!(entry_id("m", "a"), entry_id("ma", ""));
        assert_eq!(entry_id("m", "a/b c").len(), 32);
    }
}
