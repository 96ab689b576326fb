//! Bulk import of managed objects from CSV files (IDM's bulk import service).
//!
//! * `GET /openidm/csv/template?resourceCollection=managed/<type>`: a header row from the
//!   type's schema ([`template`]).
//! * `POST /upload/csv/managed/<type>?uniqueProperty=a[,b]`: `multipart/form-data` files,
//!   streamed to spool files in the data directory ([`upload`]); each becomes one import
//!   that runs in the background ([`run`]), row by row through the router, so policies,
//!   triggers, encryption, relationships and implicit sync apply as for REST writes.
//! * `/openidm/csv/metadata[/<id>]`: the import records (query, read, delete, `cancel`,
//!   `cleanup`, `cleanupList`) ([`handler`]), stored in the repo under [`METADATA`].
//! * `GET /export/csvImportFailures/<id>`: the failed rows as CSV ([`export`]), stored under
//!   [`FAILURES`].
//!
//! Memory does not grow with the file: the upload is written to disk as it arrives, and
//! the import reads the spool file a batch of rows at a time. A gateway that stops during
//! an import marks it `interrupted` at its next start.

pub mod columns;
pub mod export;
pub mod handler;
mod meta;
mod run;
pub mod template;
pub mod upload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::crest::{ResourceError, Router};
use crate::repo::Repo;
use crate::state::Gateway;

pub use handler::CsvHandler;
pub use meta::Meta;

/// Repo resource of the import records.
pub const METADATA: &str = "csv/metadata";
/// Repo resource of the failed rows (`<importId>-<recordNumber>`).
pub const FAILURES: &str = "csv/failures";
/// Default limit of one upload request's body (gateway extra: `--max-upload-bytes`).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// What a running import is told from outside.
#[derive(Default)]
struct Control {
    cancelled: AtomicBool,
}

/// The bulk import service: shared by the HTTP edge (upload, export) and the CREST handler.
pub struct CsvImports {
    gw: Arc<Gateway>,
    repo: Arc<dyn Repo>,
    router: OnceLock<Weak<Router>>,
    /// Where uploads are spooled (`<data>/csv-import/<importId>.csv`).
    spool_dir: PathBuf,
    max_upload: u64,
    /// Imports running in this process.
    running: Mutex<HashMap<String, Arc<Control>>>,
    /// The runtime imports run on (their own: a long import never competes with the
    /// request threads' scheduling).
    runtime: tokio::runtime::Handle,
    /// This node's id in the cluster, stored with its imports.
    node: OnceLock<String>,
}

impl CsvImports {
    /// Creates the spool directory and the imports' runtime.
    pub fn new(
        gw: Arc<Gateway>,
        repo: Arc<dyn Repo>,
        data_dir: &std::path::Path,
        max_upload: u64,
    ) -> Result<Arc<Self>, String> {
        let spool_dir = data_dir.join("csv-import");
        std::fs::create_dir_all(&spool_dir)
            .map_err(|e| format!("cannot create {}: {e}", spool_dir.display()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("csv-import")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the import runtime: {e}"))?;
        let runtime = rt.handle().clone();
        std::thread::Builder::new()
            .name("csv-import".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("cannot start the import thread: {e}"))?;
        Ok(Arc::new(Self {
            gw,
            repo,
            router: OnceLock::new(),
            spool_dir,
            max_upload,
            running: Mutex::new(HashMap::new()),
            runtime,
            node: OnceLock::new(),
        }))
    }

    /// Names this node's imports; set once, before the first upload.
    pub fn set_node(&self, id: &str) {
        let _ = self.node.set(id.to_owned());
    }

    /// Marks the unfinished imports of `node` (all nodes: `None`) interrupted; returns
    /// how many. `spool_here`: their spool files are on this node's disk.
    async fn interrupt_unfinished(
        &self,
        node: Option<&str>,
        spool_here: bool,
    ) -> Result<Vec<String>, ResourceError> {
        let mut marked = Vec::new();
        for (id, rev, mut m) in meta::all(self.repo.as_ref()).await? {
            if m.end.is_some() || self.is_running(&id) {
                continue;
            }
            if let Some(node) = node {
                // Records from before imports named their node belong to every node.
                if m.node_id.as_deref().is_some_and(|n| n != node) {
                    continue;
                }
            }
            m.interrupt(spool_here && self.spool_path(&id).exists());
            meta::save(self.repo.as_ref(), &id, Some(&rev), &m).await?;
            marked.push(id);
        }
        Ok(marked)
    }

    pub fn set_router(&self, router: &Arc<Router>) {
        let _ = self.router.set(Arc::downgrade(router));
    }

    fn router(&self) -> Option<Arc<Router>> {
        self.router.get().and_then(Weak::upgrade)
    }

    fn spool_path(&self, id: &str) -> PathBuf {
        self.spool_dir.join(format!("{id}.csv"))
    }

    fn is_running(&self, id: &str) -> bool {
        self.lock_running().contains_key(id)
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Control>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks a running import to stop after its current row; false if it is not running.
    fn cancel(&self, id: &str) -> bool {
        match self.lock_running().get(id) {
            Some(control) => {
                control.cancelled.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// At start-up: imports a previous process left running are marked interrupted (their
    /// spool files stay until `cleanup`), and spool files no record names are removed.
    ///
    /// `clean_spool` is false when this process already serves (an upgrade's deferred
    /// recovery): an upload being spooled has no record yet. Imports this process runs are
    /// left alone.
    pub async fn recover(&self, clean_spool: bool) -> Result<(), ResourceError> {
        let by_import = [crate::crest::filter::JsonPointer(vec!["importId".into()])];
        self.repo.set_indexes(FAILURES, &by_import).await?;
        let node = self.node.get().map(String::as_str);
        for id in self.interrupt_unfinished(node, true).await? {
            tracing::warn!(import = %id, "CSV import interrupted by a restart");
        }
        let known: std::collections::HashSet<String> = meta::all(self.repo.as_ref())
            .await?
            .into_iter()
            .map(|(id, ..)| format!("{id}.csv"))
            .collect();
        if !clean_spool {
            return Ok(());
        }
        if let Ok(dir) = std::fs::read_dir(&self.spool_dir) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// A dead node's unfinished imports are marked interrupted by the survivor that detected
/// it (their spool files were on the dead node's disk).
#[async_trait::async_trait]
impl crate::cluster::NodeRecovery for CsvImports {
    fn what(&self) -> &'static str {
        "CSV imports"
    }

    async fn recover_node(&self, node: &str) -> Result<usize, String> {
        let marked = self
            .interrupt_unfinished(Some(node), false)
            .await
            .map_err(|e| e.message.clone())?;
        for id in &marked {
            tracing::warn!(import = %id, node = %node, "CSV import of a dead cluster node interrupted");
        }
        Ok(marked.len())
    }
}
