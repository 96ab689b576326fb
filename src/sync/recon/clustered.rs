//! Clustered reconciliation (IDM's `"clusteredSourceReconEnabled": true` on a mapping): the
//! source phase of a full run is shared among the nodes of the cluster, page by page.
//!
//! * The node that starts the run (the coordinator) pages through the source ids (the
//!   source query with `_fields=_id`, paged by cookie) and writes one page task per page
//!   into the store ([`PAGES`]: `{runId, mapping, page, ids, state: "pending"}`), at most
//!   [`AHEAD`] not done at a time, so the queue stays small whatever the source's size.
//! * Every node (the coordinator too) runs a page worker: it claims a pending task (or one
//!   whose lease ran out: its node died) with a conditional write of `state: "claimed"`,
//!   its node and a lease it renews while it works; reads the page's sources, their links
//!   and linked targets; reconciles them exactly as a local run does; and marks the task
//!   `done` with its counters.
//! * The coordinator adds each done task's counters to the run (visible on `GET recon/<id>`
//!   while it runs, with IDM's `sourceProcessedByNode`), removes the task, and once every
//!   page is done runs the target phase itself.
//! * Cancelling (from any node) stops the coordinator, which removes the pages not started
//!   and waits (at most a lease) for those being worked on: each worker looks at its run
//!   every second and stops, then drops its page. A page whose worker died is taken again
//!   after its lease and correlates (targets may exist without their links). Done pages of
//!   a run whose coordinator died are swept by the workers.
//!
//! Not distributed: a run with `maxDeletes` (the limit must be counted in one place; such
//! a run's source phase stays on its node, with a log line), the target phase, and
//! `reconById`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use super::{object_id, Engine, Stop, IN_FLIGHT_PER_THREAD};
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::query::SortKey;
use crate::repo::{RepoError, RepoQuery, StoredObject};
use crate::sync::run::iso8601;

/// Resource of the page tasks.
pub const PAGES: &str = "recon/pages";
/// Pages queued and not done yet, per run.
const AHEAD: usize = 8;
/// Pages a node works on at once (two keep a node busy while one waits for its last
/// objects or its link batch).
pub const PAGES_PER_NODE: usize = 2;
/// How often the coordinator looks at its pages, and an idle worker for new ones.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a claim holds a page; renewed every third of it while the page is worked on.
pub const LEASE: Duration = Duration::from_secs(30);

const RUN_ID: &str = "runId";
const STATE: &str = "state";
const LEASE_FIELD: &str = "lease";

fn eq(field: &str, value: &str) -> QueryFilter {
    QueryFilter::Compare {
        field: JsonPointer::parse(field),
        op: CompareOp::Eq,
        value: FilterValue::String(value.to_owned()),
    }
}

fn query(filter: &QueryFilter, page_size: usize, ids_only: bool) -> RepoQuery<'_> {
    RepoQuery {
        ids_only,
        page_size,
        ..RepoQuery::all(filter, &[])
    }
}

/// The properties page tasks are found by.
pub async fn index(repo: &dyn crate::repo::Repo) -> Result<(), RepoError> {
    repo.set_indexes(
        PAGES,
        &[
            JsonPointer::parse(RUN_ID),
            JsonPointer::parse(STATE),
            JsonPointer::parse(LEASE_FIELD),
        ],
    )
    .await
}

/// A page task as a worker claimed it.
pub struct PageTask {
    pub id: String,
    pub rev: String,
    pub run_id: String,
    pub mapping: String,
    pub ids: Vec<String>,
    pub skip_correlation: bool,
}

impl PageTask {
    fn of(o: StoredObject) -> Option<Self> {
        let c = &o.content;
        Some(PageTask {
            run_id: c.get(RUN_ID)?.as_str()?.to_owned(),
            mapping: c.get("mapping")?.as_str()?.to_owned(),
            ids: c
                .get("ids")?
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            skip_correlation: c.get("skipCorrelation").and_then(Value::as_bool) == Some(true),
            id: o.id,
            rev: o.rev,
        })
    }
}

/// Claims a page task for `node`: a pending one, or one whose claim's lease ran out.
pub async fn claim(
    repo: &dyn crate::repo::Repo,
    node: &str,
) -> Result<Option<(PageTask, Map<String, Value>)>, RepoError> {
    let now = iso8601(SystemTime::now());
    let open = QueryFilter::Or(vec![
        eq(STATE, "pending"),
        QueryFilter::And(vec![
            eq(STATE, "claimed"),
            QueryFilter::Compare {
                field: JsonPointer::parse(LEASE_FIELD),
                op: CompareOp::Le,
                value: FilterValue::String(now),
            },
        ]),
    ]);
    let sort = [SortKey {
        field: JsonPointer::parse("_id"),
        ascending: true,
    }];
    let page = repo
        .query(
            PAGES,
            RepoQuery {
                sort: &sort,
                ..query(&open, 4, false)
            },
        )
        .await?;
    for o in page.results {
        let mut content = o.content.clone();
        // Taken from a worker that died (or stalled) mid-page: some of its targets may
        // exist without their links yet, so the page correlates whatever the run's start
        // said, or it would create them twice.
        if content.get(STATE).and_then(Value::as_str) == Some("claimed") {
            content.insert("skipCorrelation".into(), json!(false));
        }
        content.insert(STATE.into(), json!("claimed"));
        content.insert("nodeId".into(), json!(node));
        content.insert(
            LEASE_FIELD.into(),
            json!(iso8601(SystemTime::now() + LEASE)),
        );
        match repo
            .update(
                PAGES,
                &o.id,
                Some(&o.rev),
                content.clone(),
                Default::default(),
            )
            .await
        {
            Ok(claimed) => {
                return Ok(PageTask::of(claimed).map(|t| (t, content)));
            }
            Err(RepoError::RevisionMismatch { .. } | RepoError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Renews the claim of `task` (its `content` as claimed) every third of [`LEASE`] while
/// `work` runs, then stores its end (`done`, the counters of the page's shadow run) in
/// place of the claim. A claim lost meanwhile (another node took the page after a pause
/// longer than the lease) stores nothing: that node's outcome counts.
pub async fn work_on<F>(
    repo: &dyn crate::repo::Repo,
    task: &PageTask,
    mut content: Map<String, Value>,
    work: F,
) where
    F: std::future::Future<Output = (Value, Option<String>)>,
{
    let every = LEASE / 3;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut rev = Some(task.rev.clone());
    tokio::pin!(work);
    let (counters, failure) = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = renew.tick(), if rev.is_some() => {
                content.insert(LEASE_FIELD.into(), json!(iso8601(SystemTime::now() + LEASE)));
                let r = rev.take().unwrap_or_default();
                rev = match repo.update(PAGES, &task.id, Some(&r), content.clone(), Default::default()).await {
                    Ok(o) => Some(o.rev),
                    Err(RepoError::RevisionMismatch { .. } | RepoError::NotFound { .. }) => None,
                    Err(e) => {
                        tracing::warn!(page = %task.id, error = %e, "cannot renew the claim of a reconciliation page; retrying");
                        Some(r)
                    }
                };
            }
        }
    };
    let Some(rev) = rev else {
        tracing::warn!(page = %task.id, "a reconciliation page was taken by another node meanwhile");
        return;
    };
    content.insert(STATE.into(), json!("done"));
    content.insert("counters".into(), counters);
    content.remove("ids");
    if let Some(f) = failure {
        content.insert("failure".into(), json!(f));
    }
    if let Err(e) = repo
        .update(PAGES, &task.id, Some(&rev), content, Default::default())
        .await
    {
        tracing::error!(page = %task.id, error = %e,
            "cannot store the end of a reconciliation page; it is reconciled again after its lease");
    }
}

/// Gives a claimed page back (this node cannot work on it: its mapping is not here yet):
/// pending again, for any node.
pub async fn give_back(
    repo: &dyn crate::repo::Repo,
    task: &PageTask,
    mut content: Map<String, Value>,
) {
    content.insert(STATE.into(), json!("pending"));
    content.remove("nodeId");
    content.remove(LEASE_FIELD);
    if let Err(e) = repo
        .update(
            PAGES,
            &task.id,
            Some(&task.rev),
            content,
            Default::default(),
        )
        .await
    {
        tracing::warn!(page = %task.id, error = %e, "cannot give a reconciliation page back; it is taken again after its lease");
    }
}

/// Removes the done pages of runs no longer ACTIVE (`live` says, by run id): left by a
/// coordinator that died.
pub async fn sweep<F, Fut>(repo: &dyn crate::repo::Repo, live: F) -> Result<usize, RepoError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let done = eq(STATE, "done");
    let page = repo.query(PAGES, query(&done, 100, false)).await?;
    let mut checked: std::collections::HashMap<String, bool> = Default::default();
    let mut removed = 0;
    for o in page.results {
        let run = o
            .content
            .get(RUN_ID)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let alive = match checked.get(&run) {
            Some(a) => *a,
            None => {
                let a = live(run.clone()).await;
                checked.insert(run, a);
                a
            }
        };
        if !alive {
            drop_page(repo, &o.id).await;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes page task `id` (its run is over).
pub async fn drop_page(repo: &dyn crate::repo::Repo, id: &str) {
    match repo.delete(PAGES, id, None).await {
        Ok(_) | Err(RepoError::NotFound { .. }) => {}
        Err(e) => tracing::warn!(page = %id, error = %e, "cannot remove a reconciliation page"),
    }
}

impl Engine {
    /// The coordinator's source phase of a clustered run (see the module).
    pub(super) async fn clustered_source_phase(self: Arc<Self>) -> Result<(), Stop> {
        index(self.repo.as_ref())
            .await
            .map_err(|e| Stop::Failed(format!("cannot prepare the page queue: {e}")))?;
        let result = self.clone().queue_pages().await;
        let result = match result {
            Ok(()) => self.wait_pages().await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Pages not started are dropped; those being worked on stop within a second
            // (their worker finds the run over): the run ends after them, so a next run of
            // the mapping never overlaps them (at most a lease: a silent worker's page is
            // dropped by whoever takes it next).
            let until = tokio::time::Instant::now() + LEASE;
            while matches!(self.collect_pages(true).await, Ok(open) if open > 0)
                && tokio::time::Instant::now() < until
            {
                tokio::time::sleep(POLL).await;
            }
        }
        result
    }

    /// Writes the page tasks, at most [`AHEAD`] not done at a time.
    async fn queue_pages(self: Arc<Self>) -> Result<(), Stop> {
        let mut cookie: Option<String> = None;
        let mut first = true;
        let mut number = 0u64;
        let skip = self
            .skip_correlation
            .load(std::sync::atomic::Ordering::Relaxed);
        loop {
            while self.collect_pages(false).await? >= AHEAD {
                self.pause().await?;
            }
            let t = std::time::Instant::now();
            let page = self
                .query_page_fields(
                    &self.mapping.source,
                    &self.mapping.source_query,
                    self.mapping.page_size,
                    cookie.as_deref(),
                    first,
                    Some("_id"),
                )
                .await
                .map_err(|e| self.unreadable("source", e))?;
            self.run.time("sourceQuery", t.elapsed());
            if first {
                self.run.set_source_total(page.total);
                first = false;
            }
            let ids: Vec<Value> = page
                .results
                .iter()
                .filter_map(object_id)
                .map(Value::String)
                .collect();
            self.sources_seen
                .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::SeqCst);
            if !ids.is_empty() {
                let mut content = Map::new();
                content.insert(RUN_ID.into(), json!(self.run.id));
                content.insert("mapping".into(), json!(self.mapping.name));
                content.insert("page".into(), json!(number));
                content.insert("ids".into(), Value::Array(ids));
                content.insert("skipCorrelation".into(), json!(skip));
                content.insert(STATE.into(), json!("pending"));
                let id = format!("{}-{number:08}", self.run.id);
                self.repo
                    .create(PAGES, &id, content, Default::default())
                    .await
                    .map_err(|e| Stop::Failed(format!("cannot queue a source page: {e}")))?;
                number += 1;
            }
            match page.cookie.filter(|c| !c.is_empty()) {
                Some(c) => cookie = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// Waits until every page of the run is done.
    async fn wait_pages(&self) -> Result<(), Stop> {
        while self.collect_pages(false).await? > 0 {
            self.pause().await?;
        }
        Ok(())
    }

    /// One [`POLL`], cut short (with [`Stop::Canceled`]) by a cancel.
    async fn pause(&self) -> Result<(), Stop> {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = self.run.canceled() => {}
        }
        if self.run.is_canceled() {
            return Err(Stop::Canceled);
        }
        Ok(())
    }

    /// Adds the done pages' counters to the run and removes them; returns how many pages
    /// are not done. `all`: removes the pages not started too, and a page's failure no
    /// longer matters (the run is over).
    async fn collect_pages(&self, all: bool) -> Result<usize, Stop> {
        let of_run = eq(RUN_ID, &self.run.id);
        let page = self
            .repo
            .query(PAGES, query(&of_run, 0, false))
            .await
            .map_err(|e| Stop::Failed(format!("cannot read the source pages: {e}")))?;
        let mut open = 0;
        let mut failure = None;
        for o in page.results {
            let state = o.content.get(STATE).and_then(Value::as_str);
            if state != Some("done") {
                if all && state == Some("pending") {
                    drop_page(self.repo.as_ref(), &o.id).await;
                } else {
                    open += 1;
                }
                continue;
            }
            // Removed first: only the remover adds the page's counters.
            match self.repo.delete(PAGES, &o.id, Some(&o.rev)).await {
                Ok(_) => {}
                Err(RepoError::NotFound { .. } | RepoError::RevisionMismatch { .. }) => continue,
                Err(e) => return Err(Stop::Failed(format!("cannot remove a source page: {e}"))),
            }
            if let Some(c) = o.content.get("counters") {
                self.run.counters.add(c);
                let node = o
                    .content
                    .get("nodeId")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let n = c
                    .get("sourceProcessed")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                self.run.add_by_node(node, n);
            }
            if let Some(f) = o.content.get("failure").and_then(Value::as_str) {
                failure = Some(f.to_owned());
            }
        }
        self.save_now_and_then().await;
        match failure {
            Some(f) if !all => Err(Stop::Failed(f)),
            _ => Ok(open),
        }
    }

    /// A worker's share: reconciles the sources `ids` (one page) as a local run does, its
    /// links written in one batch at the end. Objects gone since the page was queued are
    /// skipped (the target phase sees their targets).
    pub async fn reconcile_page(self: Arc<Self>, ids: &[String]) -> Result<(), Stop> {
        let t = std::time::Instant::now();
        let mut sources = self
            .read_many(&self.mapping.source, ids)
            .await
            .map_err(|e| self.unreadable("source", e))?;
        self.run.time("sourceObjectQuery", t.elapsed());
        let mut links = self
            .links
            .by_sources(ids)
            .await
            .map_err(|e| Stop::Failed(format!("cannot read links: {e}")))?;
        let target_ids: Vec<String> = links.values().map(|l| l.target_id.clone()).collect();
        let mut targets = self
            .read_many(&self.mapping.target, &target_ids)
            .await
            .map_err(|e| self.unreadable("target", e))?;
        let in_flight = (self.mapping.task_threads * IN_FLIGHT_PER_THREAD)
            .min(self.mapping.page_size)
            .max(1);
        let workers = Arc::new(Semaphore::new(in_flight));
        let named = ids
            .iter()
            .filter_map(|id| sources.remove(id).map(|s| (id.clone(), s)));
        let deferred = self
            .process_sources(named, &mut links, &mut targets, &workers)
            .await?;
        self.write_links(deferred).await;
        // A limit on deletes is the mapping's on the coordinator; one here (config that
        // differs) stops the page, which fails the run rather than skipping sources.
        self.check_deletes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Repo;

    fn page(run: &str, state: &str, lease: Option<SystemTime>) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert(RUN_ID.into(), json!(run));
        c.insert("mapping".into(), json!("m"));
        c.insert("ids".into(), json!(["a", "b"]));
        c.insert("skipCorrelation".into(), json!(true));
        c.insert(STATE.into(), json!(state));
        if let Some(l) = lease {
            c.insert(LEASE_FIELD.into(), json!(iso8601(l)));
        }
        c
    }

    #[tokio::test]
    async fn pages_are_claimed_once_retaken_after_their_lease_and_swept_with_their_run() {
        let repo = crate::repo::sqlite::SqliteRepo::open_temporary().unwrap();
        index(&repo).await.unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        let earlier = SystemTime::now() - Duration::from_secs(60);
        for (id, c) in [
            ("r1-0", page("r1", "claimed", Some(later))),
            ("r1-1", page("r1", "claimed", Some(earlier))),
            ("r1-2", page("r1", "pending", None)),
        ] {
            repo.create(PAGES, id, c, Default::default()).await.unwrap();
        }
        // The live claim is left alone; the one whose worker went silent is taken first,
        // and correlates (its worker may have created targets without their links).
        let (retaken, content) = claim(&repo, "b").await.unwrap().unwrap();
        assert_eq!(retaken.id, "r1-1");
        assert!(!retaken.skip_correlation);
        assert_eq!(retaken.ids, ["a", "b"]);
        let (fresh, fresh_content) = claim(&repo, "b").await.unwrap().unwrap();
        assert_eq!(fresh.id, "r1-2");
        assert!(fresh.skip_correlation);
        assert!(claim(&repo, "c").await.unwrap().is_none());

        // Given back, it is anyone's again.
        give_back(&repo, &fresh, fresh_content).await;
        let (again, _) = claim(&repo, "c").await.unwrap().unwrap();
        assert_eq!(again.id, "r1-2");

        // Done, and its run over without collecting it: the sweep removes it; a live run's
        // done page stays for its coordinator.
        work_on(&repo, &retaken, content, async {
            (json!({"sourceProcessed": 2}), None)
        })
        .await;
        repo.create(PAGES, "r2-0", page("r2", "done", None), Default::default())
            .await
            .unwrap();
        let removed = sweep(&repo, |run| async move { run == "r2" })
            .await
            .unwrap();
        assert_eq!(removed, 1);
        assert!(repo.read(PAGES, "r1-1").await.unwrap().is_none());
        assert!(repo.read(PAGES, "r2-0").await.unwrap().is_some());
    }
}
