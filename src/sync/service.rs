//! [`SyncService`]: starts, tracks, cancels and stores reconciliation runs, and answers the
//! link questions of `sync?_action=getLinkedResources`. The REST handlers are thin shells
//! over it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::implicit::SyncOneError;
use super::links::LinkStore;
use super::mapping::{Mapping, Mappings};
use super::queue::SyncQueue;
use super::recon::{
    clustered, save_run, AuditAs, Engine, Scope, Stop, CANCEL_REQUESTS, RUN_RESOURCE,
};
use super::run::{iso8601, Run, Stage};
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};
use crate::crest::query::SortKey;
use crate::crest::{Caller, Operation, Request, ResourceError, Response, Router};
use crate::metrics::Metrics;
use crate::repo::{Repo, RepoError, RepoQuery};

/// The live mappings.
pub type MappingSource = Arc<dyn Fn() -> Arc<Mappings> + Send + Sync>;

/// The run record's node (gateway extra).
const NODE_ID: &str = "nodeId";
/// How often a page worker removes the done pages of runs that ended without collecting
/// them.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// One record per mapping with a full reconciliation running, in any node of the cluster
/// (gateway extra): `{"runId", "nodeId", "started"}`.
pub const RECON_SLOTS: &str = "recon/slots";

/// Key order of a stored run record (crest-wire.md §7).
const RUN_KEYS: [&str; 13] = [
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
    "duration",
];

pub struct SyncService {
    repo: Arc<dyn Repo>,
    /// Set once the router that mounts this service's handlers exists (a weak reference:
    /// the router owns the handlers).
    router: OnceLock<Weak<Router>>,
    mappings: MappingSource,
    metrics: Arc<Metrics>,
    active: Mutex<HashMap<String, Arc<Run>>>,
    /// Implicit-sync pushes to do.
    queue: SyncQueue,
    /// Per mapping: a full run holds it exclusively, one-object pushes (implicit sync,
    /// liveSync, `reconById`) share it, so a run and a push never assess the same source
    /// at once (no twin targets).
    runs: KeyedLocks<String, tokio::sync::RwLock<()>>,
    /// Per (mapping, source id): one-object pushes of one source one at a time.
    objects: KeyedLocks<(String, String), tokio::sync::Mutex<()>>,
    /// Link types checked for duplicates since start ([`LinkStore::remove_duplicates`]).
    deduped: tokio::sync::Mutex<HashSet<String>>,
    /// Runs the mappings' scripts.
    scripts: OnceLock<Arc<crate::script::ScriptEngine>>,
    /// `recon` audit events (start and summary of each run).
    audit: OnceLock<Arc<crate::audit::Audit>>,
    /// This node's id in the cluster, stored with its runs.
    node: OnceLock<String>,
    /// The store is shared by a cluster ([`Self::set_clustered`]).
    clustered: std::sync::atomic::AtomicBool,
}

/// Locks by key, dropped from the map when nobody holds or waits for them.
struct KeyedLocks<K, L> {
    map: Mutex<HashMap<K, Arc<L>>>,
}

impl<K: std::hash::Hash + Eq + Clone, L: Default> KeyedLocks<K, L> {
    fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Arc<L> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Forgets `key`'s lock if only the map and `lock` (about to be dropped) hold it.
    fn release(&self, key: &K, lock: Arc<L>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&lock) == 2 {
            map.remove(key);
        }
    }
}

impl SyncService {
    pub fn new(repo: Arc<dyn Repo>, mappings: MappingSource, metrics: Arc<Metrics>) -> Self {
        Self {
            queue: SyncQueue::new(repo.clone()),
            repo,
            router: OnceLock::new(),
            mappings,
            metrics,
            active: Mutex::new(HashMap::new()),
            runs: KeyedLocks::new(),
            objects: KeyedLocks::new(),
            deduped: Default::default(),
            scripts: OnceLock::new(),
            audit: OnceLock::new(),
            node: OnceLock::new(),
            clustered: Default::default(),
        }
    }

    /// The store is shared by a cluster: mappings with `clusteredSourceReconEnabled` share
    /// their source phase among the nodes, and this node works on their pages
    /// ([`Self::page_worker`]).
    pub fn set_clustered(&self) {
        self.clustered
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Works on the source pages of clustered runs (any node's) until `drain` starts:
    /// [`clustered::PAGES_PER_NODE`] pages at a time, the next claimed as soon as one ends
    /// while there are any.
    pub async fn page_worker(self: Arc<Self>, drain: crate::lifecycle::Drain) {
        let Some(node) = self.node().map(str::to_owned) else {
            return;
        };
        if let Err(e) = clustered::index(self.repo.as_ref()).await {
            tracing::error!(error = %e, "cannot index the reconciliation pages; retrying at each look");
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(clustered::PAGES_PER_NODE));
        let mut swept = tokio::time::Instant::now();
        while !drain.is_draining() {
            if swept.elapsed() >= SWEEP_EVERY {
                swept = tokio::time::Instant::now();
                let me = self.clone();
                let live = move |run: String| {
                    let me = me.clone();
                    async move { me.run_is_live(&run).await.unwrap_or(true) }
                };
                match clustered::sweep(self.repo.as_ref(), live).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(pages = n, "done pages of ended reconciliations removed")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot sweep the reconciliation pages"),
                }
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            match clustered::claim(self.repo.as_ref(), &node).await {
                Ok(Some((task, content))) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.work_page(task, content).await;
                        drop(slot);
                    });
                }
                Ok(None) => tokio::time::sleep(clustered::POLL).await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the reconciliation pages");
                    tokio::time::sleep(clustered::POLL * 5).await;
                }
            }
        }
        // Draining: the pages in flight end (and are stored) before the runtime goes.
        let _ = slots.acquire_many(clustered::PAGES_PER_NODE as u32).await;
    }

    /// Whether run `id` is ACTIVE with no cancel request (`None`: the store failed).
    async fn run_is_live(&self, id: &str) -> Option<bool> {
        let run = self.repo.read(RUN_RESOURCE, id).await.ok()?;
        let active = run.is_some_and(|r| r.content.get("state") == Some(&json!("ACTIVE")));
        let canceled = self.repo.read(CANCEL_REQUESTS, id).await.ok()?.is_some();
        Some(active && !canceled)
    }

    /// Reconciles one claimed page of a clustered run (if the run is still ACTIVE) and
    /// stores its counters for the run's node.
    async fn work_page(self: &Arc<Self>, task: clustered::PageTask, content: Map<String, Value>) {
        match self.run_is_live(&task.run_id).await {
            Some(true) => {}
            Some(false) => {
                clustered::drop_page(self.repo.as_ref(), &task.id).await;
                return;
            }
            None => {
                tracing::error!(page = %task.id, "cannot read the run of a reconciliation page");
                return;
            }
        }
        let engine = self.mapping(&task.mapping).and_then(|(all, m)| {
            let links = self.link_store(&all, &m)?;
            Ok((self.router()?, links, m))
        });
        let (router, links, m) = match engine {
            Ok(parts) => parts,
            Err(e) => {
                // Not here yet (a mapping written over REST reaches this node within a
                // second): another node, or this one later, takes the page.
                tracing::warn!(page = %task.id, mapping = %task.mapping, error = %e.message,
                    "a reconciliation page of a mapping this node cannot run is given back");
                clustered::give_back(self.repo.as_ref(), &task, content).await;
                tokio::time::sleep(clustered::POLL * 2).await;
                return;
            }
        };
        let shadow = Arc::new(
            Run::new(&task.mapping, Value::Null)
                .with_id(&task.run_id)
                .on_node(self.node()),
        );
        let engine = self.engine(router, links, &m, &shadow, AuditAs::Recon);
        engine.set_skip_correlation(task.skip_correlation);
        // The run cancelled or ended elsewhere stops the page within a second.
        let me = self.clone();
        let (watched, run_id) = (shadow.clone(), task.run_id.clone());
        let watcher = crate::sync::recon::Aborting(tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if me.run_is_live(&run_id).await == Some(false) {
                    watched.cancel();
                    return;
                }
            }
        }));
        let work = async {
            let failure = match engine.clone().reconcile_page(&task.ids).await {
                Ok(()) | Err(Stop::Canceled) => None,
                Err(Stop::Failed(why)) => Some(why),
            };
            (shadow.counters.to_json(), failure)
        };
        clustered::work_on(self.repo.as_ref(), &task, content, work).await;
        drop(watcher);
        // Its run is over (cancelled, failed, or its coordinator died): nobody collects
        // the page.
        if shadow.is_canceled() || self.run_is_live(&task.run_id).await == Some(false) {
            clustered::drop_page(self.repo.as_ref(), &task.id).await;
        }
    }

    /// Names this node's runs (`nodeId`); set once, before the first run.
    pub fn set_node(&self, id: &str) {
        let _ = self.node.set(id.to_owned());
        self.queue.set_node(id);
    }

    fn node(&self) -> Option<&str> {
        self.node.get().map(String::as_str)
    }

    /// At the first use of a link type since start, removes the duplicate links older
    /// versions could leave (each removal logged), so the one-link-per-end rule holds.
    async fn check_links(&self, links: &LinkStore) -> Result<(), ResourceError> {
        let mut done = self.deduped.lock().await;
        if done.contains(links.resource()) {
            return Ok(());
        }
        links.ensure_indexes().await.map_err(store_error)?;
        let removed = links.remove_duplicates().await.map_err(store_error)?;
        for l in &removed {
            tracing::warn!(links = %links.resource(), link = %l.id, source = %l.source_id,
                target = %l.target_id,
                "removed a duplicate link (one link per source and per target; the first is kept)");
        }
        done.insert(links.resource().to_owned());
        Ok(())
    }

    pub fn repo(&self) -> &dyn Repo {
        self.repo.as_ref()
    }

    /// Runs `work` on one source object of `mapping`, serialised with full runs of the
    /// mapping and with other one-object work on the same source.
    async fn serialised<T>(
        &self,
        mapping: &str,
        source_id: &str,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let run_key = mapping.to_owned();
        let run_lock = self.runs.get(&run_key);
        let obj_key = (mapping.to_owned(), source_id.to_owned());
        let obj_lock = self.objects.get(&obj_key);
        let out = {
            let _no_full_run = run_lock.read().await;
            let _one_at_a_time = obj_lock.lock().await;
            work.await
        };
        self.objects.release(&obj_key, obj_lock);
        self.runs.release(&run_key, run_lock);
        out
    }

    /// A reconciliation engine for one run of `m` (a push of one object: `how` is
    /// [`AuditAs::Sync`]).
    fn engine(
        &self,
        router: Arc<Router>,
        links: LinkStore,
        m: &Arc<Mapping>,
        run: &Arc<Run>,
        how: AuditAs,
    ) -> Arc<Engine> {
        Arc::new(
            Engine::new(
                router,
                self.repo.clone(),
                links,
                m.clone(),
                run.clone(),
                self.metrics.clone(),
            )
            .with_scripts(self.scripts.get().cloned())
            .with_audit(self.audit.get().cloned(), how)
            .with_cluster(self.clustered.load(std::sync::atomic::Ordering::Relaxed)),
        )
    }

    /// The script engine, once set.
    pub fn script_engine(&self) -> Option<Arc<crate::script::ScriptEngine>> {
        self.scripts.get().cloned()
    }

    /// The engine the mappings' scripts run on.
    pub fn set_scripts(&self, engine: Arc<crate::script::ScriptEngine>) {
        let _ = self.scripts.set(engine);
    }

    pub fn set_audit(&self, audit: Arc<crate::audit::Audit>) {
        let _ = self.audit.set(audit);
    }

    pub fn set_router(&self, router: &Arc<Router>) {
        let _ = self.router.set(Arc::downgrade(router));
    }

    fn router(&self) -> Result<Arc<Router>, ResourceError> {
        self.router
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| ResourceError::unavailable("the gateway is starting or stopping"))
    }

    pub fn mappings(&self) -> Arc<Mappings> {
        (self.mappings)()
    }

    pub fn mapping_source(&self) -> MappingSource {
        self.mappings.clone()
    }

    pub fn queue(&self) -> &SyncQueue {
        &self.queue
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Implicit sync of one source object: the engine's `reconById` path, without a stored
    /// run record. `Dropped` when the mapping is gone or no longer implicit-synced.
    pub async fn sync_one(&self, mapping: &str, source_id: &str) -> Result<(), SyncOneError> {
        let all = self.mappings();
        let Some(m) = all.get(mapping).cloned() else {
            return Err(SyncOneError::Dropped(format!(
                "mapping '{mapping}' is not defined"
            )));
        };
        if !m.enable_sync {
            return Err(SyncOneError::Dropped(format!(
                "mapping '{mapping}' has enableSync false"
            )));
        }
        let fail = |e: ResourceError| SyncOneError::Failed(e.to_string());
        let links = self.link_store(&all, &m).map_err(fail)?;
        self.check_links(&links).await.map_err(fail)?;
        let router = self.router().map_err(fail)?;
        let run = Arc::new(Run::new(
            &m.name,
            json!({"sourceIds": [source_id], "implicitSync": true}),
        ));
        let engine = self.engine(router, links, &m, &run, AuditAs::Sync);
        let stage = self
            .serialised(
                &m.name,
                source_id,
                engine.clone().execute(Scope::One(source_id.to_owned())),
            )
            .await;
        let failures = run
            .counters
            .failure
            .load(std::sync::atomic::Ordering::Relaxed);
        if stage == Stage::CompletedSuccess && failures == 0 {
            return Ok(());
        }
        Err(SyncOneError::Failed(engine.last_error().unwrap_or_else(
            || format!("the push ended {}", stage.state()),
        )))
    }

    /// At start-up: indexes the run records, and marks this node's runs a stop cut off
    /// (still ACTIVE) as FAILED; runs of other nodes sharing the store are theirs (a dead
    /// node's are failed by the survivor that detects it). Returns how many were marked.
    pub async fn recover(&self) -> Result<usize, RepoError> {
        self.repo
            .set_indexes(
                RUN_RESOURCE,
                &[
                    JsonPointer::parse("state"),
                    JsonPointer::parse("started"),
                    JsonPointer::parse(NODE_ID),
                ],
            )
            .await?;
        // Records written before runs named their node are this node's too.
        let mine = match self.node() {
            Some(node) => QueryFilter::Or(vec![
                eq(NODE_ID, node),
                QueryFilter::Not(Box::new(QueryFilter::Present(JsonPointer::parse(NODE_ID)))),
            ]),
            None => QueryFilter::True,
        };
        self.fail_active(mine, "reconciliation cut off by a stop marked FAILED")
            .await
    }

    /// Marks the ACTIVE runs matching `which` FAILED, except runs of this process (it served
    /// before it owned the store, during an upgrade).
    async fn fail_active(&self, which: QueryFilter, why: &str) -> Result<usize, RepoError> {
        let filter = QueryFilter::And(vec![eq("state", "ACTIVE"), which]);
        let page = self
            .repo
            .query(RUN_RESOURCE, RepoQuery::all(&filter, &[]))
            .await?;
        let mut marked = 0;
        for obj in page.results {
            if self.live(&obj.id).is_some() {
                continue;
            }
            let mut content = obj.content;
            let mapping = content.get("mapping").cloned().unwrap_or_default();
            let stage = Stage::CompletedFailed;
            content.insert("state".into(), json!(stage.state()));
            content.insert("stage".into(), json!(stage.name()));
            content.insert("stageDescription".into(), json!(stage.description()));
            content.insert("ended".into(), json!(iso8601(SystemTime::now())));
            match self
                .repo
                .update(
                    RUN_RESOURCE,
                    &obj.id,
                    Some(&obj.rev),
                    content,
                    Default::default(),
                )
                .await
            {
                Ok(_) => {}
                // Its node saved it meanwhile (it is alive after all) or it was deleted.
                Err(RepoError::RevisionMismatch { .. } | RepoError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
            let _ = self.repo.delete(CANCEL_REQUESTS, &obj.id, None).await;
            tracing::warn!(run = %obj.id, mapping = %mapping, "{why}");
            marked += 1;
        }
        Ok(marked)
    }

    fn mapping(&self, name: &str) -> Result<(Arc<Mappings>, Arc<Mapping>), ResourceError> {
        let all = self.mappings();
        let m = all.get(name).cloned().ok_or_else(|| {
            ResourceError::bad_request(format!(
                "Mapping '{name}' is not defined (conf/sync.json or conf/mapping-{name}.json)"
            ))
        })?;
        Ok((all, m))
    }

    /// The links of `mapping`, oriented: a mapping sharing the links of its reverse mapping
    /// reads them the other way round.
    fn link_store(&self, all: &Mappings, m: &Mapping) -> Result<LinkStore, ResourceError> {
        let reversed = match &m.links {
            None => false,
            Some(other) => {
                let o = all.get(other).ok_or_else(|| {
                    ResourceError::bad_request(format!(
                        "Mapping '{}' shares the links of mapping '{other}', which is not defined",
                        m.name
                    ))
                })?;
                o.source == m.target && o.target == m.source
            }
        };
        Ok(LinkStore::new(self.repo.clone(), m.link_type(), reversed))
    }

    /// Starts a run of `mapping` (all sources, or one source id) in the background.
    pub async fn start(
        self: &Arc<Self>,
        mapping: &str,
        source_id: Option<String>,
    ) -> Result<Arc<Run>, ResourceError> {
        self.start_with(mapping, source_id, RunOverrides::default())
            .await
    }

    /// [`Self::start`] with the mapping settings a recon request's body overrides.
    pub async fn start_with(
        self: &Arc<Self>,
        mapping: &str,
        source_id: Option<String>,
        overrides: RunOverrides,
    ) -> Result<Arc<Run>, ResourceError> {
        let (all, m) = self.mapping(mapping)?;
        let m = overrides.apply(m);
        let links = self.link_store(&all, &m)?;
        self.check_links(&links).await?;
        let router = self.router()?;
        let mut parameters = Map::new();
        if let Some(id) = &source_id {
            parameters.insert("sourceIds".into(), json!([id]));
        }
        parameters.insert(
            "sourceQuery".into(),
            json!({"resourceName": m.source, "_queryFilter": m.source_query}),
        );
        parameters.insert(
            "targetQuery".into(),
            json!({"resourceName": m.target, "_queryFilter": m.target_query}),
        );
        if let Some(v) = overrides.allow_empty_source_set {
            parameters.insert("allowEmptySourceSet".into(), json!(v));
        }
        if let Some(v) = overrides.run_target_phase {
            parameters.insert("runTargetPhase".into(), json!(v));
        }
        let run = Arc::new(Run::new(&m.name, Value::Object(parameters)).on_node(self.node()));
        {
            let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            if source_id.is_none() {
                if let Some(other) = active
                    .values()
                    .find(|r| r.mapping == m.name && r.parameters.get("sourceIds").is_none())
                {
                    return Err(already_running(&m.name, &other.id));
                }
            }
            active.insert(run.id.clone(), run.clone());
        }
        save_run(self.repo.as_ref(), &run).await;
        // One full reconciliation of a mapping at a time in the whole cluster.
        let slot = match source_id {
            Some(_) => None,
            None => match self.take_slot(&m.name, &run.id).await {
                Ok(rev) => Some(rev),
                Err(e) => {
                    self.active
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&run.id);
                    let _ = self.repo.delete(RUN_RESOURCE, &run.id, None).await;
                    return Err(e);
                }
            },
        };
        let engine = self.engine(router, links, &m, &run, AuditAs::Recon);
        let scope = match source_id {
            Some(id) => Scope::One(id),
            None => Scope::All,
        };
        watch_cancel_requests(self.repo.clone(), run.clone());
        let service = self.clone();
        tracing::info!(mapping = %m.name, run = %run.id, "reconciliation started");
        if let Some(audit) = self.audit.get() {
            audit.recon("start", &run.id, &m.name, "SUCCESS", run.to_json());
        }
        tokio::spawn(async move {
            let name = engine.mapping.name.clone();
            let stage = match scope {
                Scope::One(id) => {
                    let work = engine.clone().execute(Scope::One(id.clone()));
                    service.serialised(&name, &id, work).await
                }
                Scope::All => {
                    let lock = service.runs.get(&name);
                    let stage = {
                        let _exclusive = lock.write().await;
                        engine.clone().execute(Scope::All).await
                    };
                    service.runs.release(&name, lock);
                    stage
                }
            };
            let run = &engine.run;
            run.set_stage(stage);
            engine.save().await;
            if let Some(rev) = &slot {
                service.release_slot(&engine.mapping.name, rev).await;
            }
            if run.is_canceled() {
                let _ = service.repo.delete(CANCEL_REQUESTS, &run.id, None).await;
            }
            service
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&run.id);
            let name = &engine.mapping.name;
            service
                .metrics
                .recon_runs
                .with_label_values(&[name, stage.state()])
                .inc();
            service
                .metrics
                .recon_duration
                .with_label_values(&[name])
                .observe(run.elapsed().as_secs_f64());
            tracing::info!(mapping = %name, run = %run.id, state = stage.state(),
                duration_ms = run.elapsed().as_millis() as u64, "reconciliation finished");
            run.finish(stage);
            if let Some(audit) = service.audit.get() {
                let status = if stage.state() == "SUCCESS" {
                    "SUCCESS"
                } else {
                    "FAILURE"
                };
                audit.recon("summary", &run.id, name, status, run.to_json());
            }
        });
        Ok(run)
    }

    /// Takes the cluster-wide slot of a full reconciliation of `mapping` for run `run_id`
    /// (whose ACTIVE record is stored already): a record in [`RECON_SLOTS`] created only if
    /// there is none. A slot whose run is no longer ACTIVE (ended without releasing it: its
    /// node died and a survivor failed the run, or stopped at the wrong moment) is taken
    /// over. Returns the slot's revision, to release it; 409 while another run holds it.
    async fn take_slot(&self, mapping: &str, run_id: &str) -> Result<String, ResourceError> {
        let mut content = Map::new();
        content.insert("runId".into(), json!(run_id));
        content.insert(NODE_ID.into(), json!(self.node()));
        content.insert("started".into(), json!(iso8601(SystemTime::now())));
        for _ in 0..3 {
            match self
                .repo
                .create(RECON_SLOTS, mapping, content.clone(), Default::default())
                .await
            {
                Ok(o) => return Ok(o.rev),
                Err(RepoError::AlreadyExists { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
            let Some(held) = self
                .repo
                .read(RECON_SLOTS, mapping)
                .await
                .map_err(store_error)?
            else {
                continue;
            };
            let other = held
                .content
                .get("runId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let other_run = self
                .repo
                .read(RUN_RESOURCE, other)
                .await
                .map_err(store_error)?;
            if other_run.is_some_and(|r| r.content.get("state") == Some(&json!("ACTIVE"))) {
                return Err(already_running(mapping, other));
            }
            tracing::info!(mapping = %mapping, run = %other,
                "the reconciliation slot of a run that ended without releasing it is taken over");
            match self
                .repo
                .delete(RECON_SLOTS, mapping, Some(&held.rev))
                .await
            {
                Ok(_) | Err(RepoError::NotFound { .. } | RepoError::RevisionMismatch { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ResourceError::new(
            409,
            format!("A reconciliation of mapping '{mapping}' is being started on another node"),
        ))
    }

    /// Gives back the slot taken by [`Self::take_slot`] (if still the one taken), retried
    /// for a while when the store fails (a slot left behind would hold the mapping while
    /// its run record says ACTIVE).
    async fn release_slot(&self, mapping: &str, rev: &str) {
        let mut wait = std::time::Duration::from_millis(250);
        for attempt in 1..=8 {
            match self.repo.delete(RECON_SLOTS, mapping, Some(rev)).await {
                Ok(_) | Err(RepoError::NotFound { .. } | RepoError::RevisionMismatch { .. }) => {
                    return
                }
                Err(e) => tracing::error!(mapping = %mapping, error = %e, attempt,
                    "cannot release the reconciliation slot; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(10));
        }
    }

    /// Asks an active run to stop: at once if it runs in this process, otherwise through a
    /// cancel request in the store, which the node running it reads within a second.
    pub async fn cancel(&self, id: &str) -> Result<(), ResourceError> {
        if let Some(run) = self.live(id) {
            return if run.cancel() {
                Ok(())
            } else {
                Err(not_active(id))
            };
        }
        let stored = self
            .repo
            .read(RUN_RESOURCE, id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(id))?;
        if stored.content.get("state").and_then(Value::as_str) != Some("ACTIVE") {
            return Err(not_active(id));
        }
        let mut request = Map::new();
        request.insert("requestedBy".into(), json!(self.node().unwrap_or_default()));
        request.insert("requested".into(), json!(iso8601(SystemTime::now())));
        match self
            .repo
            .create(CANCEL_REQUESTS, id, request, Default::default())
            .await
        {
            Ok(_) | Err(RepoError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    fn live(&self, id: &str) -> Option<Arc<Run>> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every stored run, oldest first, active ones with their live counters.
    pub async fn list(&self) -> Result<Vec<Value>, ResourceError> {
        let sort = [SortKey {
            field: JsonPointer::parse("started"),
            ascending: true,
        }];
        let page = self
            .repo
            .query(RUN_RESOURCE, RepoQuery::all(&QueryFilter::True, &sort))
            .await
            .map_err(store_error)?;
        Ok(page
            .results
            .into_iter()
            .map(|obj| match self.live(&obj.id) {
                Some(run) => run.to_json(),
                None => ordered(&obj.id, obj.content),
            })
            .collect())
    }

    pub async fn get(&self, id: &str) -> Result<Value, ResourceError> {
        if let Some(run) = self.live(id) {
            return Ok(run.to_json());
        }
        match self
            .repo
            .read(RUN_RESOURCE, id)
            .await
            .map_err(store_error)?
        {
            Some(obj) => Ok(ordered(&obj.id, obj.content)),
            None => Err(not_found(id)),
        }
    }

    /// Deletes a finished run's record.
    pub async fn delete(&self, id: &str) -> Result<Value, ResourceError> {
        if self.live(id).is_some() {
            return Err(ResourceError::new(
                409,
                format!("Reconciliation run '{id}' is active; cancel it first"),
            ));
        }
        match self.repo.delete(RUN_RESOURCE, id, None).await {
            Ok(obj) => Ok(ordered(&obj.id, obj.content)),
            Err(RepoError::NotFound { .. }) => Err(not_found(id)),
            Err(e) => Err(store_error(e)),
        }
    }

    /// `getLinkedResources`: the objects linked to `resource_name` (`managed/user/<id>`) by
    /// every mapping that has its collection as source or target.
    pub async fn linked_resources(&self, resource_name: &str) -> Result<Value, ResourceError> {
        let trimmed = resource_name.trim_matches('/');
        let Some((collection, id)) = trimmed
            .rsplit_once('/')
            .filter(|(c, i)| !c.is_empty() && !i.is_empty())
        else {
            return Err(ResourceError::bad_request(format!(
                "'{resource_name}' is not a resource name like managed/user/<id>"
            )));
        };
        let all = self.mappings();
        let router = self.router()?;
        let caller = Arc::new(Caller::system());
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for m in all.iter() {
            let as_source = m.source == collection;
            let as_target = m.target == collection;
            if !as_source && !as_target {
                continue;
            }
            let Ok(links) = self.link_store(&all, m) else {
                continue;
            };
            links.ensure_indexes().await.map_err(store_error)?;
            let mut found = Vec::new();
            if as_source {
                if let Some(l) = links.by_source(id).await.map_err(store_error)? {
                    found.push((m.target.clone(), l.target_id));
                }
            }
            if as_target {
                if let Some(l) = links.by_target(id).await.map_err(store_error)? {
                    found.push((m.source.clone(), l.source_id));
                }
            }
            for (resource, other) in found {
                let name = format!("{resource}/{other}");
                if !seen.insert((m.link_type().to_owned(), name.clone())) {
                    continue;
                }
                let mut req = Request::new(
                    Operation::Read {
                        if_none_match: None,
                    },
                    &resource,
                    caller.clone(),
                );
                req.path.push(other.clone());
                let content = match router.handle(&req).await {
                    Ok(Response::Resource(r)) => r.to_json(),
                    Ok(Response::Json(_, v)) => v,
                    _ => Value::Null,
                };
                out.push(json!({
                    "resourceName": name,
                    "content": content,
                    "linkQualifier": "default",
                    "linkType": m.link_type(),
                }));
            }
        }
        Ok(Value::Array(out))
    }
}

/// Mapping settings a recon request's body overrides for one run, as IDM allows
/// (idm-model-and-scripts.md §4.2): `{"allowEmptySourceSet": true, "runTargetPhase": false}`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunOverrides {
    pub allow_empty_source_set: Option<bool>,
    pub run_target_phase: Option<bool>,
}

impl RunOverrides {
    /// From a request body (`null` or absent: none); a setting that is not a boolean is a 400.
    pub fn from_body(body: &Value) -> Result<RunOverrides, ResourceError> {
        let flag = |key: &str| match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ResourceError::bad_request(format!(
                "'{key}' in the reconciliation request must be true or false"
            ))),
        };
        if !(body.is_null() || body.is_object()) {
            return Err(ResourceError::bad_request(
                "the body of a reconciliation request must be a JSON object",
            ));
        }
        Ok(RunOverrides {
            allow_empty_source_set: flag("allowEmptySourceSet")?,
            run_target_phase: flag("runTargetPhase")?,
        })
    }

    /// `mapping` with these settings in place (itself when there are none).
    fn apply(self, mapping: Arc<Mapping>) -> Arc<Mapping> {
        if self == RunOverrides::default() {
            return mapping;
        }
        let mut m = (*mapping).clone();
        if let Some(v) = self.allow_empty_source_set {
            m.allow_empty_source_set = v;
        }
        if let Some(v) = self.run_target_phase {
            m.run_target_phase = v;
        }
        Arc::new(m)
    }
}

/// A stored record with `_id` first and IDM's key order.
fn ordered(id: &str, mut content: Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("_id".into(), json!(id));
    for key in &RUN_KEYS[1..] {
        if let Some(v) = content.remove(*key) {
            out.insert((*key).into(), v);
        }
    }
    out.extend(content);
    Value::Object(out)
}

/// How often a run looks for a cancel request from another node.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Cancels `run` when another cluster node leaves a cancel request for it (one read a
/// second while it is active; a wait on a slow resource is cut short like a local cancel).
fn watch_cancel_requests(repo: Arc<dyn Repo>, run: Arc<Run>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = run.wait() => return,
                _ = tokio::time::sleep(CANCEL_POLL) => {}
            }
            if let Ok(Some(request)) = repo.read(CANCEL_REQUESTS, &run.id).await {
                let by = request
                    .content
                    .get("requestedBy")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if run.cancel() {
                    tracing::info!(run = %run.id, requested_by = %by,
                        "reconciliation canceled from another cluster node");
                }
                return;
            }
        }
    });
}

fn not_active(id: &str) -> ResourceError {
    ResourceError::bad_request(format!("Reconciliation run '{id}' is not active"))
}

fn eq(field: &str, value: &str) -> QueryFilter {
    QueryFilter::Compare {
        field: JsonPointer::parse(field),
        op: CompareOp::Eq,
        value: FilterValue::String(value.to_owned()),
    }
}

/// A dead node's ACTIVE runs are failed by the survivor that detected it, and its claims
/// on the implicit-sync queue released.
#[async_trait::async_trait]
impl crate::cluster::NodeRecovery for SyncService {
    fn what(&self) -> &'static str {
        "reconciliation runs and implicit-sync queue claims"
    }

    async fn recover_node(&self, node: &str) -> Result<usize, String> {
        let runs = self
            .fail_active(
                eq(NODE_ID, node),
                "reconciliation of a dead cluster node marked FAILED",
            )
            .await
            .map_err(|e| e.to_string())?;
        let claims = self.queue.release(node).await.map_err(|e| e.to_string())?;
        if claims > 0 {
            tracing::warn!(node = %node, entries = claims,
                "implicit sync queue entries of a dead cluster node released");
        }
        Ok(runs + claims)
    }
}

fn not_found(id: &str) -> ResourceError {
    ResourceError::not_found(format!("Reconciliation run '{id}' not found"))
}

fn already_running(mapping: &str, run: &str) -> ResourceError {
    ResourceError::new(
        409,
        format!("A reconciliation of mapping '{mapping}' is already running: {run}"),
    )
}

fn store_error(e: RepoError) -> ResourceError {
    tracing::error!(error = %e, "sync store failure");
    ResourceError::internal("The store failed to process the request")
}

/// liveSync of system objects pushes each changed object through every mapping whose
/// source is its object type and whose `enableSync` is on.
#[async_trait::async_trait]
impl crate::events::ChangeSink for SyncService {
    async fn push(&self, resource: &str, id: &str) -> Result<(), String> {
        let all = self.mappings();
        for m in all.iter() {
            if !m.enable_sync || m.source != resource {
                continue;
            }
            match self.sync_one(&m.name, id).await {
                Ok(()) | Err(SyncOneError::Dropped(_)) => {}
                Err(SyncOneError::Failed(e)) => return Err(format!("mapping {}: {e}", m.name)),
            }
        }
        Ok(())
    }
}
