//! The reconciliation engine: one run of one mapping, every source and target read and
//! written through the [`Router`] (so `managed/*` and `external/idm/<name>/…` are the same
//! to it), links through [`LinkStore`].
//!
//! * **Source phase**: source pages (`_pageSize` + cookie); per page one link query and one
//!   batched read of the linked targets (`_id in […]`, one query per page on this gateway's
//!   resources, `or`-ed `_id eq` chunks on a remote); then each source, with up to
//!   100 × `taskThreads` in flight (at most the page): qualification, correlation when
//!   unlinked, situation, the policy's action. The links the page creates are written after
//!   it in one batch ([`LinkStore::apply`], one commit), after the target writes they belong
//!   to, while the next page is processed; until committed, their targets count as linked
//!   for the next page's correlations. Pages are read ahead of their processing (up to
//!   [`READ_AHEAD`] waiting; the page queries one after the other, each page's links and
//!   targets in a task of its own); targets that pages processed meanwhile wrote are read
//!   again before a page is processed.
//! * **Target phase**: target pages; per page one link query by target id and one batched
//!   existence check of the linked sources, read ahead as in the source phase. A
//!   target whose source exists was handled by the source phase; the others are UNASSIGNED,
//!   SOURCE_MISSING or TARGET_IGNORED. Nothing is remembered between pages, so memory grows
//!   with the page size (a few pages), not with the object count.
//! * A page that cannot be read (source, target or links) ends the run FAILED before anything
//!   of that page is acted on: an unreachable source never looks like deleted sources. A
//!   partial answer is unreadable too: a page whose envelope carries CREST's mid-stream
//!   `error`, or a by-id read that comes back with a paging cookie (it was meant to be
//!   whole), fails the page instead of making the objects left out look missing.
//!   A single object that fails (an EXCEPTION action included) is counted
//!   (`statusSummary.FAILURE`), logged with its id, and the run goes on with the next.
//! * Guards against wiping a target: a full run whose source query finds nothing fails
//!   before the target phase unless `allowEmptySourceSet` (IDM); a run that would delete
//!   more than `maxDeletes` targets (gateway extra) refuses the next delete and stops. The
//!   reason is the run's `failureReason`.
//! * Batched reads by id use `_id in […]` only where the resource says it supports it
//!   ([`Router::supports`]); elsewhere `_id eq … or …` chunks.
//! * An update writes only the mapped properties (and assigned attributes, see
//!   [`crate::sync::assignments`]) that differ, so an unchanged re-run writes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod assigned;
pub mod clustered;
mod outcome;
mod resources;
mod scripted;

pub use outcome::AuditAs;
use outcome::Subject;

use scripted::Event;

use super::hooks;
use super::links::{Link, LinkStore, NewLink};
use super::mapping::Mapping;
use super::run::{bump, Run, Stage};
use super::situation::{assess_source, assess_target, Action, Situation, SourceFacts, TargetFacts};
use crate::crest::filter::JsonPointer;
use crate::crest::{Caller, ResourceError, Router};
use crate::metrics::Metrics;
use crate::repo::Repo;

/// Objects of a page in flight per `taskThreads` (bounded by the page size): the work is
/// mostly waiting for the store or a remote, and the store's group commit needs many
/// concurrent writes to fill its batches.
const IN_FLIGHT_PER_THREAD: usize = 100;
/// Pages read ahead of the one being processed (each of at most the page size).
const READ_AHEAD: usize = 2;
/// How often the stored run record is refreshed while the run is active.
/// Cancel requests for runs of another node (`recon/<id>?_action=cancel` on a node that
/// does not run it), by run id.
pub const CANCEL_REQUESTS: &str = "sync/reconCancelRequests";

const SAVE_EVERY: Duration = Duration::from_secs(1);
/// An object's failure when `maxDeletes` refused its delete.
const REFUSED_DELETE: &str = "the delete was refused: the run reached its maxDeletes";
/// Resource of the stored run records.
pub const RUN_RESOURCE: &str = "recon/run";

/// Why a run stopped early.
#[derive(Debug)]
pub enum Stop {
    Canceled,
    Failed(String),
}

/// What a run covers.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    /// `reconById`: one source id, no target phase.
    One(String),
}

/// An object whose outcome waits for its link write (done once per page, in one batch).
struct Deferred {
    id: String,
    situation: Situation,
    action: Action,
    link: NewLink,
    /// For the `onLink` hook.
    source: Option<Value>,
}

/// A source page as the source phase reads it.
struct SourcePage {
    page: Page,
    /// By source id.
    links: HashMap<String, Link>,
    /// The linked targets that exist, by id.
    targets: HashMap<String, Value>,
    /// Pages processed when the targets were read.
    read_after: usize,
}

/// A target page as the target phase reads it.
struct TargetPage {
    page: Page,
    /// By target id.
    links: HashMap<String, Link>,
    /// The linked sources that exist.
    sources: HashSet<String>,
}

/// Which objects a phase pages through.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Source,
    Target,
}

/// A task stopped when dropped.
pub struct Aborting(pub tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pages of a phase, read ahead ([`Engine::read_ahead`]); dropping it stops the reads.
struct ReadAhead<T> {
    pages: tokio::sync::mpsc::Receiver<Prefetch<T>>,
    _producer: Aborting,
    /// The last page had a cookie.
    more: bool,
}

impl<T: Send + 'static> ReadAhead<T> {
    /// The next page, `None` after the last.
    async fn next(&mut self, engine: &Engine) -> Result<Option<T>, Stop>
    where
        T: HasPage,
    {
        if engine.run.is_canceled() {
            return Err(Stop::Canceled);
        }
        match self.pages.recv().await {
            Some(pending) => {
                let page = pending.wait().await?;
                self.more = page.page().cookie.as_deref().is_some_and(|c| !c.is_empty());
                Ok(Some(page))
            }
            None if self.more => Err(Stop::Failed("the page reader stopped early".into())),
            None => Ok(None),
        }
    }
}

trait HasPage {
    fn page(&self) -> &Page;
}

impl HasPage for SourcePage {
    fn page(&self) -> &Page {
        &self.page
    }
}

impl HasPage for TargetPage {
    fn page(&self) -> &Page {
        &self.page
    }
}

/// A page being read by its own task while earlier ones are processed; dropping it (the
/// run ends early) stops the read.
struct Prefetch<T>(tokio::task::JoinHandle<Result<T, Stop>>);

impl<T: Send + 'static> Prefetch<T> {
    fn spawn(read: impl std::future::Future<Output = Result<T, Stop>> + Send + 'static) -> Self {
        Self(tokio::spawn(read))
    }

    async fn wait(mut self) -> Result<T, Stop> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) => Err(Stop::Failed(format!("reading a page failed: {e}"))),
        }
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One query page, whatever handler answered it.
struct Page {
    results: Vec<Value>,
    cookie: Option<String>,
    total: Option<u64>,
}

pub struct Engine {
    pub router: Arc<Router>,
    pub repo: Arc<dyn Repo>,
    pub links: LinkStore,
    pub mapping: Arc<Mapping>,
    pub run: Arc<Run>,
    pub metrics: Arc<Metrics>,
    caller: Arc<Caller>,
    /// Correlation is skipped (no candidates) when the target set was empty at the start and
    /// `correlateEmptyTargetSet` is false.
    skip_correlation: std::sync::atomic::AtomicBool,
    /// Targets correlated in the current page: their links are written at the end of the
    /// page, so a second source finding the same target sees it as linked meanwhile.
    claimed: std::sync::Mutex<HashSet<String>>,
    /// Targets of the links being written (the previous page's, see [`Self::source_pages`]).
    linking: std::sync::Mutex<HashSet<String>>,
    /// Targets the source phase updated or deleted, with the page (its number) that did,
    /// for the pages read ahead (see [`Self::refresh_targets`]).
    touched: std::sync::Mutex<HashMap<String, usize>>,
    /// Pages of the current phase processed.
    pages_done: std::sync::atomic::AtomicUsize,
    last_save: std::sync::Mutex<Instant>,
    /// The last failure's reason (implicit sync records it in its retry queue).
    last_error: std::sync::Mutex<Option<String>>,
    /// Source objects the source queries returned.
    sources_seen: std::sync::atomic::AtomicU64,
    /// Target deletes asked for, and those `maxDeletes` refused.
    deletes: std::sync::atomic::AtomicU64,
    refused_deletes: std::sync::atomic::AtomicU64,
    /// Runs the mapping's scripts (see [`scripted`]).
    scripts: Option<Arc<crate::script::ScriptEngine>>,
    /// The `context` binding of those scripts.
    script_context: Arc<Value>,
    /// Where each object's outcome is audited: the `recon` topic for a run, `sync` for an
    /// implicit sync or liveSync push (see [`Engine::with_audit`]).
    audit: Option<(Arc<crate::audit::Audit>, AuditAs)>,
    /// The store is shared by a cluster: a mapping with `clusteredSourceReconEnabled`
    /// shares its source phase among the nodes (see [`clustered`]).
    clustered: bool,
}

impl Engine {
    pub fn new(
        router: Arc<Router>,
        repo: Arc<dyn Repo>,
        links: LinkStore,
        mapping: Arc<Mapping>,
        run: Arc<Run>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let caller = Arc::new(super::implicit::sync_caller(&mapping.name));
        let script_context = Arc::new(crate::script::context_of(&caller));
        Self {
            scripts: None,
            script_context,
            router,
            repo,
            links,
            mapping,
            run,
            metrics,
            caller,
            skip_correlation: Default::default(),
            claimed: Default::default(),
            touched: Default::default(),
            pages_done: Default::default(),
            linking: Default::default(),
            last_save: std::sync::Mutex::new(Instant::now()),
            last_error: Default::default(),
            sources_seen: Default::default(),
            deletes: Default::default(),
            refused_deletes: Default::default(),
            audit: None,
            clustered: false,
        }
    }

    /// The store is shared by a cluster (see [`clustered`]).
    pub fn with_cluster(mut self, clustered: bool) -> Self {
        self.clustered = clustered;
        self
    }

    /// Whether correlation is skipped: set by the coordinator of a clustered run for the
    /// workers of its pages.
    pub fn set_skip_correlation(&self, skip: bool) {
        self.skip_correlation
            .store(skip, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this run's source phase is shared among the nodes.
    fn shares_source_phase(&self) -> bool {
        if !(self.clustered && self.mapping.clustered) {
            return false;
        }
        if self.mapping.max_deletes.is_some() {
            tracing::info!(mapping = %self.mapping.name, run = %self.run.id,
                "clusteredSourceReconEnabled with maxDeletes: the source phase runs on this node, where the deletes are counted");
            return false;
        }
        true
    }

    /// Audits each object's outcome (`recon` entries or `sync` events).
    pub fn with_audit(mut self, audit: Option<Arc<crate::audit::Audit>>, how: AuditAs) -> Self {
        self.audit = audit.map(|a| (a, how));
        self
    }

    /// Runs to the end and returns the final stage.
    pub async fn execute(self: Arc<Self>, scope: Scope) -> Stage {
        let full = matches!(scope, Scope::All);
        let result = match scope {
            Scope::All => self.clone().full().await,
            Scope::One(id) => self.clone().one(&id).await,
        };
        if full {
            self.result_hook().await;
        }
        // A delete refused by the guard stops the run whatever else happened.
        let result = result.and_then(|()| self.check_deletes());
        match result {
            Ok(()) if self.run.is_canceled() => Stage::CompletedCanceled,
            Ok(()) => Stage::CompletedSuccess,
            Err(Stop::Canceled) => Stage::CompletedCanceled,
            Err(Stop::Failed(reason)) => {
                self.note_error(&reason);
                self.run.set_failure(&reason);
                tracing::error!(mapping = %self.mapping.name, run = %self.run.id, reason = %reason,
                    "reconciliation failed");
                Stage::CompletedFailed
            }
        }
    }

    /// Stores the run record.
    pub async fn save(&self) {
        save_run(self.repo.as_ref(), &self.run).await;
        *self.last_save.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    async fn save_now_and_then(&self) {
        let due = self
            .last_save
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= SAVE_EVERY;
        if due {
            self.save().await;
        }
    }

    async fn full(self: Arc<Self>) -> Result<(), Stop> {
        self.links
            .ensure_indexes()
            .await
            .map_err(|e| Stop::Failed(format!("cannot prepare the link store: {e}")))?;
        self.run.set_stage(Stage::ActiveQueryEntries);
        if self.mapping.correlation.is_some() && !self.mapping.correlate_empty_target_set {
            let probe = self
                .query_page(
                    &self.mapping.target,
                    &self.mapping.target_query,
                    1,
                    None,
                    false,
                )
                .await
                .map_err(|e| self.unreadable("target", e))?;
            self.skip_correlation.store(
                probe.results.is_empty(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.run.set_stage(Stage::ActiveReconcilingSource);
        let started = Instant::now();
        if self.shares_source_phase() {
            self.clone().clustered_source_phase().await?;
        } else {
            self.clone().source_phase().await?;
        }
        self.run.time("sourcePhase", started.elapsed());
        self.check_deletes()?;
        if self.sources_seen.load(std::sync::atomic::Ordering::SeqCst) == 0
            && !self.mapping.allow_empty_source_set
            && !self.run.is_canceled()
        {
            return Err(Stop::Failed(format!(
                "Cannot reconcile from an empty data source, unless allowEmptySourceSet is true. \
                 Mapping '{}': the source query of {} found no objects, so the run stopped \
                 before the target phase and changed nothing; set allowEmptySourceSet to true \
                 in the mapping or in the recon request to reconcile an empty source",
                self.mapping.name, self.mapping.source
            )));
        }
        if self.mapping.run_target_phase && !self.run.is_canceled() {
            self.run.set_stage(Stage::ActiveReconcilingTarget);
            let started = Instant::now();
            self.clone().target_phase().await?;
            self.run.time("targetPhase", started.elapsed());
        }
        Ok(())
    }

    /// The query of one page of a phase's objects (the target phase asks for ids only
    /// unless it needs whole targets for validTarget).
    async fn query_phase_page(
        self: Arc<Self>,
        phase: Phase,
        cookie: Option<String>,
        first: bool,
    ) -> Result<Page, Stop> {
        let t = Instant::now();
        let (resource, filter, fields, what, timer) = match phase {
            Phase::Source => (
                &self.mapping.source,
                &self.mapping.source_query,
                None,
                "source",
                "sourceQuery",
            ),
            Phase::Target => (
                &self.mapping.target,
                &self.mapping.target_query,
                self.mapping.valid_target.is_none().then_some("_id"),
                "target",
                "targetQuery",
            ),
        };
        let page = self
            .query_page_fields(
                resource,
                filter,
                self.mapping.page_size,
                cookie.as_deref(),
                first,
                fields,
            )
            .await
            .map_err(|e| self.unreadable(what, e))?;
        self.run.time(timer, t.elapsed());
        Ok(page)
    }

    /// Reads the pages of a phase ahead of their processing: the queries one after the
    /// other (each needs the cookie of the one before), the rest of each page (`complete`:
    /// links, linked objects) in a task of its own, so the two run at once. The receiver gets
    /// the pages in order, at most [`READ_AHEAD`] of them waiting.
    fn read_ahead<T, C, F>(self: &Arc<Self>, phase: Phase, complete: C) -> ReadAhead<T>
    where
        T: Send + 'static,
        C: Fn(Arc<Self>, Page, usize) -> F + Send + 'static,
        F: std::future::Future<Output = Result<T, Stop>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let engine = self.clone();
        let producer = tokio::spawn(async move {
            let mut cookie = None;
            let mut first = true;
            loop {
                let read = engine
                    .clone()
                    .query_phase_page(phase, cookie.take(), first)
                    .await;
                first = false;
                let page = match read {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Prefetch::spawn(async move { Err(e) })).await;
                        return;
                    }
                };
                let next = page.cookie.clone().filter(|c| !c.is_empty());
                let done = engine.pages_done.load(std::sync::atomic::Ordering::SeqCst);
                let read = complete(engine.clone(), page, done);
                if tx.send(Prefetch::spawn(read)).await.is_err() {
                    return;
                }
                match next {
                    Some(c) => cookie = Some(c),
                    None => return,
                }
            }
        });
        ReadAhead {
            pages: rx,
            _producer: Aborting(producer),
            more: true,
        }
    }

    /// The links of a source page and its linked targets; `done`: pages processed when the
    /// targets were read (the writes of later pages may be missing from them).
    async fn complete_source_page(
        self: Arc<Self>,
        page: Page,
        done: usize,
    ) -> Result<SourcePage, Stop> {
        let ids: Vec<String> = page.results.iter().filter_map(object_id).collect();
        let t = Instant::now();
        let links = self
            .links
            .by_sources(&ids)
            .await
            .map_err(|e| Stop::Failed(format!("cannot read links: {e}")))?;
        self.run.time("sourceLinkQuery", t.elapsed());
        let target_ids: Vec<String> = links.values().map(|l| l.target_id.clone()).collect();
        let t = Instant::now();
        let targets = self
            .read_many(&self.mapping.target, &target_ids)
            .await
            .map_err(|e| self.unreadable("target", e))?;
        self.run.time("targetObjectQuery", t.elapsed());
        Ok(SourcePage {
            page,
            links,
            targets,
            read_after: done,
        })
    }

    async fn source_phase(self: Arc<Self>) -> Result<(), Stop> {
        let mut writing = None;
        let result = self.clone().source_pages(&mut writing).await;
        // Never abandoned: the targets of these links are written.
        if let Some(w) = writing {
            let _ = w.await;
        }
        result
    }

    /// The source pages; each page's links are written while the next page is processed
    /// (`writing`: the write in flight, at most one).
    async fn source_pages(
        self: Arc<Self>,
        writing: &mut Option<tokio::task::JoinHandle<()>>,
    ) -> Result<(), Stop> {
        let in_flight = (self.mapping.task_threads * IN_FLIGHT_PER_THREAD)
            .min(self.mapping.page_size)
            .max(1);
        let workers = Arc::new(Semaphore::new(in_flight));
        let mut pages = self.read_ahead(Phase::Source, Self::complete_source_page);
        let mut first = true;
        while let Some(SourcePage {
            page,
            mut links,
            mut targets,
            read_after,
        }) = pages.next(&self).await?
        {
            if first {
                self.run.set_source_total(page.total);
                first = false;
            }
            self.sources_seen.fetch_add(
                page.results.len() as u64,
                std::sync::atomic::Ordering::SeqCst,
            );
            self.refresh_targets(&mut targets, read_after).await?;

            let named = page.results.into_iter().filter_map(|source| match object_id(&source) {
                Some(id) => Some((id, source)),
                None => {
                    bump(&self.run.counters.failure);
                    tracing::warn!(mapping = %self.mapping.name, "source object without an _id skipped");
                    None
                }
            });
            let deferred = self
                .process_sources(named, &mut links, &mut targets, &workers)
                .await?;
            if let Some(w) = writing.take() {
                let _ = w.await;
            }
            // The next page's correlations see this page's targets as linked: claimed ones
            // through `linking` until their links are committed, then through the store.
            *self.linking.lock().unwrap_or_else(|e| e.into_inner()) =
                deferred.iter().map(|d| d.link.target_id.clone()).collect();
            self.claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            let engine = self.clone();
            *writing = Some(tokio::spawn(async move {
                engine.write_links(deferred).await;
                engine
                    .linking
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }));
            self.pages_done
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.save_now_and_then().await;
            self.check_deletes()?;
        }
        Ok(())
    }

    /// Processes `sources` (id, object) with their links and linked targets (taken out of
    /// `links` and `targets`), at most `workers` at a time, until `maxDeletes` refuses a
    /// delete; returns the outcomes waiting for their link write ([`Self::write_links`]).
    async fn process_sources(
        self: &Arc<Self>,
        sources: impl Iterator<Item = (String, Value)>,
        links: &mut HashMap<String, Link>,
        targets: &mut HashMap<String, Value>,
        workers: &Arc<Semaphore>,
    ) -> Result<Vec<Deferred>, Stop> {
        let mut tasks = JoinSet::new();
        for (id, source) in sources {
            if self.deletes_refused() || self.run.is_canceled() {
                break;
            }
            let link = links.remove(&id);
            let target = link.as_ref().and_then(|l| targets.remove(&l.target_id));
            let permit = workers
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Stop::Canceled)?;
            let engine = self.clone();
            tasks.spawn(async move {
                let deferred = engine.process_source(&id, Some(source), link, target).await;
                drop(permit);
                deferred
            });
        }
        let mut deferred = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Some(d)) => deferred.push(d),
                Ok(None) => {}
                // A task that panicked: its object failed, the others go on.
                Err(e) => {
                    bump(&self.run.counters.failure);
                    self.note_error(&format!("processing a source failed: {e}"));
                }
            }
        }
        Ok(deferred)
    }

    /// Reads again the targets of a page read ahead that pages processed since (`read_after`
    /// and later) wrote; one gone since is dropped.
    async fn refresh_targets(
        &self,
        targets: &mut HashMap<String, Value>,
        read_after: usize,
    ) -> Result<(), Stop> {
        let stale: Vec<String> = {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            // Later pages were read after the pages before `read_after`: forgotten.
            touched.retain(|_, page| *page >= read_after);
            targets
                .keys()
                .filter(|id| touched.contains_key(*id))
                .cloned()
                .collect()
        };
        if stale.is_empty() {
            return Ok(());
        }
        let mut fresh = self
            .read_many(&self.mapping.target, &stale)
            .await
            .map_err(|e| self.unreadable("target", e))?;
        for id in stale {
            match fresh.remove(&id) {
                Some(t) => targets.insert(id, t),
                None => targets.remove(&id),
            };
        }
        Ok(())
    }

    /// The links of a target page and which of the linked sources exist.
    async fn complete_target_page(
        self: Arc<Self>,
        page: Page,
        _done: usize,
    ) -> Result<TargetPage, Stop> {
        let ids: Vec<String> = page.results.iter().filter_map(object_id).collect();
        let t = Instant::now();
        let links = self
            .links
            .by_targets(&ids)
            .await
            .map_err(|e| Stop::Failed(format!("cannot read links: {e}")))?;
        self.run.time("targetLinkQuery", t.elapsed());
        let source_ids: Vec<String> = links.values().map(|l| l.source_id.clone()).collect();
        let t = Instant::now();
        // Only whether each linked source still exists.
        let sources = self
            .read_many_fields(&self.mapping.source, &source_ids, Some("_id"))
            .await
            .map_err(|e| self.unreadable("source", e))?;
        self.run.time("sourceObjectQuery", t.elapsed());
        Ok(TargetPage {
            page,
            links,
            sources: sources.into_keys().collect(),
        })
    }

    async fn target_phase(self: Arc<Self>) -> Result<(), Stop> {
        let workers = Arc::new(Semaphore::new(self.mapping.task_threads));
        // Pages are read ahead: processing a page only deletes its own targets and links.
        let mut pages = self.read_ahead(Phase::Target, Self::complete_target_page);
        let mut first = true;
        while let Some(TargetPage {
            page,
            mut links,
            sources,
        }) = pages.next(&self).await?
        {
            if first {
                self.run.set_target_total(page.total);
                first = false;
            }

            let mut tasks = JoinSet::new();
            // Most targets are their source's (handled by the source phase); the others
            // are assessed here, without a task, `validTarget` in one go for the page.
            let mut open = Vec::new();
            for target in page.results {
                let Some(id) = object_id(&target) else {
                    continue;
                };
                bump(&self.run.counters.target_processed);
                let link = links.remove(&id);
                let source_exists = link
                    .as_ref()
                    .is_some_and(|l| sources.contains(&l.source_id));
                if link.is_none() || !source_exists {
                    open.push((id, target, link, source_exists));
                }
            }
            let targets: Vec<&Value> = open.iter().map(|(_, t, _, _)| t).collect();
            let verdicts = self.targets_qualify(&targets).await;
            for ((id, target, link, source_exists), qualifies) in open.into_iter().zip(verdicts) {
                if self.deletes_refused() {
                    break;
                }
                let qualifies = match qualifies {
                    Ok(q) => q,
                    Err(e) => {
                        self.failed_early(&id, &e);
                        continue;
                    }
                };
                let Some(situation) = self.assess_target(qualifies, link.is_some(), source_exists)
                else {
                    continue;
                };
                let permit = workers
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Stop::Canceled)?;
                let engine = self.clone();
                tasks.spawn(async move {
                    engine.process_target(target, link, situation).await;
                    drop(permit);
                });
            }
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done {
                    bump(&self.run.counters.failure);
                    self.note_error(&format!("processing a target failed: {e}"));
                }
            }
            self.save_now_and_then().await;
            self.check_deletes()?;
        }
        Ok(())
    }

    /// Takes one target delete under `maxDeletes`: false when it is refused (the run then
    /// stops, see [`Self::check_deletes`]).
    fn may_delete(&self) -> bool {
        let Some(max) = self.mapping.max_deletes else {
            return true;
        };
        if self
            .deletes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            < max
        {
            return true;
        }
        self.refused_deletes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        false
    }

    fn deletes_refused(&self) -> bool {
        self.refused_deletes
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    }

    /// The run's end when `maxDeletes` refused a delete.
    fn check_deletes(&self) -> Result<(), Stop> {
        let refused = self
            .refused_deletes
            .load(std::sync::atomic::Ordering::SeqCst);
        if refused == 0 {
            return Ok(());
        }
        Err(Stop::Failed(format!(
            "Mapping '{}': maxDeletes is {} and this run would delete more targets of {}; \
             {refused} delete(s) refused and the run stopped",
            self.mapping.name,
            self.mapping.max_deletes.unwrap_or_default(),
            self.mapping.target
        )))
    }

    /// `reconById`: the source may be gone (SOURCE_MISSING, LINK_ONLY, ALL_GONE).
    async fn one(self: Arc<Self>, id: &str) -> Result<(), Stop> {
        self.links
            .ensure_indexes()
            .await
            .map_err(|e| Stop::Failed(format!("cannot prepare the link store: {e}")))?;
        self.run.set_stage(Stage::ActiveReconcilingSource);
        let source = self
            .read_many(&self.mapping.source, &[id.to_owned()])
            .await
            .map_err(|e| self.unreadable("source", e))?
            .remove(id);
        let link = self
            .links
            .by_source(id)
            .await
            .map_err(|e| Stop::Failed(format!("cannot read links: {e}")))?;
        let target = match &link {
            Some(l) => self
                .read_many(&self.mapping.target, std::slice::from_ref(&l.target_id))
                .await
                .map_err(|e| self.unreadable("target", e))?
                .remove(&l.target_id),
            None => None,
        };
        self.run.set_source_total(Some(1));
        let deferred = self.process_source(id, source, link, target).await;
        self.write_links(deferred.into_iter().collect()).await;
        Ok(())
    }

    fn unreadable(&self, what: &str, e: ResourceError) -> Stop {
        if self.run.is_canceled() {
            return Stop::Canceled;
        }
        let resource = if what == "source" {
            &self.mapping.source
        } else {
            &self.mapping.target
        };
        Stop::Failed(format!("the {what} {resource} cannot be queried: {e}"))
    }

    /// The link writes of one page in one batch, then the outcome of their objects.
    ///
    /// A crash between a target write and the batch leaves targets without links (never a
    /// link without its target, never a link to the wrong target): the next run finds them
    /// with the correlation query (FOUND → UPDATE + LINK); without a correlation query they
    /// are created again and the orphans show up as UNASSIGNED in the target phase.
    async fn write_links(&self, deferred: Vec<Deferred>) {
        if deferred.is_empty() {
            return;
        }
        let t = Instant::now();
        let changes: Vec<NewLink> = deferred.iter().map(|d| d.link.clone()).collect();
        let results = self.links.apply(&changes).await;
        self.run.time("linkWrite", t.elapsed());
        for (d, result) in deferred.into_iter().zip(results) {
            let mut result = result.map(|_| ()).map_err(|e| e.to_string());
            if result.is_ok() {
                bump(&self.run.counters.links_created);
                if let Some(script) = &self.mapping.hooks.on_link {
                    let e = Event {
                        situation: d.situation,
                        source_id: &d.id,
                        source: d.source.as_ref(),
                        target_id: Some(&d.link.target_id),
                    };
                    let target = json!({"_id": d.link.target_id});
                    result = self
                        .hook(script, &e, Some(&target), None, false)
                        .await
                        .map(drop);
                }
            }
            let subject = Subject::source(&d.id, Some(&d.link.target_id));
            self.record(subject, d.situation, d.action, result);
        }
    }

    /// One source: assess, act, count. An outcome that needs a new link is returned
    /// instead, to be recorded by [`Self::write_links`].
    async fn process_source(
        &self,
        id: &str,
        source: Option<Value>,
        link: Option<Link>,
        target: Option<Value>,
    ) -> Option<Deferred> {
        if self.run.is_canceled() {
            return None;
        }
        if source.is_some() {
            bump(&self.run.counters.source_processed);
        }
        if link.is_some() {
            bump(&self.run.counters.links_processed);
        }
        let m = &self.mapping;
        let correlate = link.is_none()
            && m.correlation.is_some()
            && !self
                .skip_correlation
                .load(std::sync::atomic::Ordering::Relaxed);
        let prepared = match self.prepare(&source, &target, correlate).await {
            Ok(p) => p,
            Err(e) => {
                self.failed_early(id, &e);
                return None;
            }
        };
        let qualifies = prepared.qualifies;
        let mapped = prepared.mapped;
        let mut facts = SourceFacts {
            source_exists: source.is_some(),
            qualifies,
            linked: link.is_some(),
            linked_target_exists: target.is_some(),
            candidates: 0,
            candidate_linked: false,
        };
        let mut target = target;
        if source.is_some() && mapped.is_some() && link.is_none() {
            let t = Instant::now();
            let found = self.correlate(prepared.correlate).await;
            self.run.time("correlationQuery", t.elapsed());
            match found {
                Ok(mut candidates) => {
                    facts.candidates = candidates.len();
                    if candidates.len() == 1 {
                        let candidate = candidates.remove(0);
                        match object_id(&candidate) {
                            // Before the store: a link leaves `linking` once committed.
                            Some(cid) => {
                                match (self.is_linking(&cid), self.links.by_target(&cid).await) {
                                    (linking, Ok(l)) => {
                                        let claimed = !self
                                            .claimed
                                            .lock()
                                            .unwrap_or_else(|e| e.into_inner())
                                            .insert(cid);
                                        facts.candidate_linked = linking || l.is_some() || claimed;
                                    }
                                    (_, Err(e)) => {
                                        self.failed_early(id, &e.to_string());
                                        return None;
                                    }
                                }
                            }
                            None => {
                                self.failed_early(id, "a correlated target has no _id");
                                return None;
                            }
                        }
                        target = Some(candidate);
                    }
                }
                Err(e) => {
                    self.failed_early(id, &format!("correlation query failed: {e}"));
                    return None;
                }
            }
        }
        let situation = assess_source(facts);
        let (action, policy) = match self
            .decide(situation, source.as_ref(), target.as_ref())
            .await
        {
            Ok(decided) => decided,
            Err(e) => {
                let target_id = target.as_ref().and_then(object_id);
                let subject = Subject::source(id, target_id.as_deref());
                self.record(subject, situation, situation.default_action(), Err(e));
                return None;
            }
        };
        let mut result = self
            .apply_source(
                situation,
                action,
                id,
                source.as_ref(),
                mapped,
                link,
                target.as_ref(),
            )
            .await;
        let target_id = target.as_ref().and_then(object_id);
        if result.is_ok() {
            let e = Event {
                situation,
                source_id: id,
                source: source.as_ref(),
                target_id: target_id.as_deref(),
            };
            if let Err(err) = self.post_action(&e, action, policy, target.as_ref()).await {
                result = Err(err);
            }
        }
        match result {
            Ok(Some(link)) => Some(Deferred {
                id: id.to_owned(),
                situation,
                action,
                link,
                source,
            }),
            Ok(None) => {
                let subject = Subject::source(id, target_id.as_deref());
                self.record(subject, situation, action, Ok(()));
                None
            }
            Err(e) => {
                let subject = Subject::source(id, target_id.as_deref());
                self.record(subject, situation, action, Err(e));
                None
            }
        }
    }

    fn is_linking(&self, target_id: &str) -> bool {
        self.linking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(target_id)
    }

    /// Notes a target written by the source phase (see [`Self::refresh_targets`]).
    fn touch(&self, target_id: &str) {
        let page = self.pages_done.load(std::sync::atomic::Ordering::SeqCst);
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target_id.to_owned(), page);
    }

    /// Acts; a link to create is returned, not written (see [`Self::write_links`]).
    #[allow(clippy::too_many_arguments)]
    async fn apply_source(
        &self,
        situation: Situation,
        action: Action,
        id: &str,
        source: Option<&Value>,
        mapped: Option<Map<String, Value>>,
        link: Option<Link>,
        target: Option<&Value>,
    ) -> Result<Option<NewLink>, String> {
        let target_id = target.and_then(object_id);
        let new_link = |target_id: &str, replaces: Option<Link>, assignments: Value| NewLink {
            source_id: id.to_owned(),
            target_id: target_id.to_owned(),
            replaces,
            assignments,
        };
        let event = Event {
            situation,
            source_id: id,
            source,
            target_id: target_id.as_deref(),
        };
        let hooks = &self.mapping.hooks;
        let c = &self.run.counters;
        match action {
            Action::Create => {
                if target.is_some() {
                    return Err(format!(
                        "{}: CREATE is not possible, the target exists",
                        situation.as_str()
                    ));
                }
                let Some(source) = source else {
                    return Err("CREATE is not possible without a source".into());
                };
                let mut body = match mapped {
                    Some(m) => m,
                    None => self.map_now(source, None).await?,
                };
                // A new target: nothing the old link's target had applies to it.
                let applied = self.assign(source, None, &mut body, None)?;
                if let Some(script) = &hooks.on_create {
                    let t = Value::Object(body);
                    body = match self.hook(script, &event, Some(&t), None, true).await? {
                        Some(Value::Object(changed)) => changed,
                        _ => return Err("onCreate left no target object".into()),
                    };
                }
                let t = Instant::now();
                let created = self.create_target(body).await.map_err(|e| e.to_string())?;
                self.run.time("createTargetObject", t.elapsed());
                bump(&c.created);
                Ok(Some(new_link(
                    &created,
                    link,
                    self.new_link_assignments(applied),
                )))
            }
            Action::Update => {
                let (Some(target), Some(tid), Some(source)) = (target, &target_id, source) else {
                    return Err(format!(
                        "{}: UPDATE needs a source and a target",
                        situation.as_str()
                    ));
                };
                let mut mapped = match mapped {
                    Some(m) => m,
                    None => self.map_now(source, Some(target)).await?,
                };
                let applied = self.assign(source, Some(target), &mut mapped, link.as_ref())?;
                let ops = match &hooks.on_update {
                    None => self.changes(mapped, target, &applied.attributes),
                    Some(script) => {
                        let new = hooks::merged(target, &mapped);
                        match self
                            .hook(script, &event, Some(&new), Some(target), true)
                            .await?
                        {
                            Some(changed) => hooks::diff_ops(target, &changed),
                            None => return Err("onUpdate left no target object".into()),
                        }
                    }
                };
                if ops.is_empty() {
                    bump(&c.unchanged);
                } else {
                    self.touch(tid);
                    let t = Instant::now();
                    self.patch_target(tid, ops)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.run.time("updateTargetObject", t.elapsed());
                    bump(&c.updated);
                }
                match &link {
                    Some(l) => {
                        self.keep_assignments(l, applied).await?;
                        Ok(None)
                    }
                    None => Ok(Some(new_link(
                        tid,
                        None,
                        self.new_link_assignments(applied),
                    ))),
                }
            }
            Action::Delete => {
                if let Some(tid) = &target_id {
                    if !self.may_delete() {
                        return Err(REFUSED_DELETE.to_owned());
                    }
                    if let Some(script) = &hooks.on_delete {
                        self.hook(script, &event, target, target, false).await?;
                    }
                    self.touch(tid);
                    let t = Instant::now();
                    self.delete_object(&self.mapping.target, tid)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.run.time("deleteTargetObject", t.elapsed());
                    bump(&c.deleted);
                }
                self.unlink(link.as_ref(), &event, target).await?;
                Ok(None)
            }
            Action::Link => {
                let Some(tid) = &target_id else {
                    return Err(format!("{}: LINK needs a target", situation.as_str()));
                };
                Ok(link.is_none().then(|| new_link(tid, None, Value::Null)))
            }
            Action::Unlink => {
                self.unlink(link.as_ref(), &event, target).await?;
                Ok(None)
            }
            Action::Exception => Err(format!(
                "situation {} is handled as an EXCEPTION",
                situation.as_str()
            )),
            Action::Ignore | Action::Report | Action::NoReport | Action::Async => Ok(None),
        }
    }

    /// Deletes `link` (if any) and runs `onUnlink`.
    async fn unlink(
        &self,
        link: Option<&Link>,
        event: &Event<'_>,
        target: Option<&Value>,
    ) -> Result<(), String> {
        let Some(l) = link else {
            return Ok(());
        };
        self.links.delete(l).await.map_err(|e| e.to_string())?;
        if let Some(script) = &self.mapping.hooks.on_unlink {
            let event = Event {
                target_id: Some(&l.target_id),
                ..*event
            };
            self.hook(script, &event, target, None, false).await?;
        }
        Ok(())
    }

    /// The situation of a target no source handled, `None` when there is nothing to do (or
    /// the run is canceled).
    fn assess_target(
        &self,
        qualifies: bool,
        linked: bool,
        source_exists: bool,
    ) -> Option<Situation> {
        if self.run.is_canceled() {
            return None;
        }
        assess_target(TargetFacts {
            qualifies,
            linked,
            linked_source_exists: source_exists,
        })
    }

    /// One target no source handled, in `situation`.
    async fn process_target(&self, target: Value, link: Option<Link>, situation: Situation) {
        if self.run.is_canceled() {
            return;
        }
        if link.is_some() {
            bump(&self.run.counters.links_processed);
        }
        let Some(id) = object_id(&target) else {
            return;
        };
        let source_id = link
            .as_ref()
            .map(|l| l.source_id.clone())
            .unwrap_or_default();
        let subject = Subject::target(&id, Some(&source_id));
        let (action, policy) = match self.decide(situation, None, Some(&target)).await {
            Ok(decided) => decided,
            Err(e) => {
                self.record(subject, situation, situation.default_action(), Err(e));
                return;
            }
        };
        let event = Event {
            situation,
            source_id: &source_id,
            source: None,
            target_id: Some(&id),
        };
        let mut result = match action {
            Action::Delete if !self.may_delete() => Err(REFUSED_DELETE.to_owned()),
            Action::Delete => self.delete_target(&event, &target, link.as_ref()).await,
            Action::Unlink => self.unlink(link.as_ref(), &event, Some(&target)).await,
            Action::Exception => Err(format!(
                "situation {} is handled as an EXCEPTION",
                situation.as_str()
            )),
            Action::Create | Action::Update | Action::Link => Err(format!(
                "{}: {} is not possible for a target without a source",
                situation.as_str(),
                action.as_str()
            )),
            Action::Ignore | Action::Report | Action::NoReport | Action::Async => Ok(()),
        };
        if result.is_ok() {
            result = self
                .post_action(&event, action, policy, Some(&target))
                .await;
        }
        self.record(subject, situation, action, result);
    }

    /// The target phase's DELETE: `onDelete`, the delete, then the link and `onUnlink`.
    async fn delete_target(
        &self,
        event: &Event<'_>,
        target: &Value,
        link: Option<&Link>,
    ) -> Result<(), String> {
        if let Some(script) = &self.mapping.hooks.on_delete {
            self.hook(script, event, Some(target), Some(target), false)
                .await?;
        }
        let id = event.target_id.unwrap_or_default();
        self.delete_object(&self.mapping.target, id)
            .await
            .map_err(|e| e.to_string())?;
        bump(&self.run.counters.deleted);
        self.unlink(link, event, Some(target)).await
    }

    /// Replace operations for the mapped properties and the `assigned` attributes whose value
    /// differs from the target's (assigned multi-values compared as sets).
    fn changes(
        &self,
        mapped: Map<String, Value>,
        target: &Value,
        assigned: &Map<String, Value>,
    ) -> Vec<Value> {
        let mapped = Value::Object(mapped);
        let mut ops = Vec::new();
        for p in &self.mapping.properties {
            let tokens = p.target.tokens();
            if tokens.first().is_some_and(|t| t == "_id")
                || matches!(tokens, [one] if assigned.contains_key(one))
            {
                continue;
            }
            let Some(want) = p.target.resolve(&mapped) else {
                continue; // excluded by its condition
            };
            let have = p.target.resolve(target).unwrap_or(&Value::Null);
            if !same_value(want, have) {
                ops.push(
                    json!({"operation": "replace", "field": p.target.to_string(),
                                "value": want}),
                );
            }
        }
        for (name, want) in assigned {
            let have = target.get(name).unwrap_or(&Value::Null);
            if !same_value(want, have) && !super::assignments::same_values(want, have) {
                let field = JsonPointer(vec![name.clone()]).to_string();
                ops.push(json!({"operation": "replace", "field": field, "value": want}));
            }
        }
        ops
    }
}

fn object_id(v: &Value) -> Option<String> {
    v.get("_id").and_then(Value::as_str).map(str::to_owned)
}

/// Equal as JSON, numbers by value, `null` and absent alike.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Stores (creates or replaces) the record of `run`.
pub async fn save_run(repo: &dyn Repo, run: &Run) {
    let Value::Object(mut content) = run.to_json() else {
        return;
    };
    content.remove("_id");
    let result = match repo
        .update(
            RUN_RESOURCE,
            &run.id,
            None,
            content.clone(),
            Default::default(),
        )
        .await
    {
        Err(crate::repo::RepoError::NotFound { .. }) => repo
            .create(RUN_RESOURCE, &run.id, content, Default::default())
            .await
            .map(|_| ()),
        other => other.map(|_| ()),
    };
    if let Err(e) = result {
        tracing::error!(run = %run.id, error = %e, "cannot store the reconciliation run");
    }
}
