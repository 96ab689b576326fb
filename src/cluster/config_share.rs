//! Config written over REST, shared through the store (IDM keeps config in the repository
//! in a cluster): a node that writes or deletes a conf file over REST (`config/…`,
//! `scheduler/job/…`) stores its bytes (or a deletion) in `cluster/config`; every node
//! polls that resource twice a second and writes what changed into its own conf
//! directory, where the usual reload makes it live. At start-up a node applies every
//! stored file before it serves. A poll and a REST edit on the same node run one at a
//! time (the edit from its local write to its publishing), so a poll never writes a
//! version it read before the edit over the edit.
//!
//! Files edited by hand stay per node until the same config is written over REST again:
//! the stored version of a config written over REST wins at a node's next start. Used
//! with a shared store (PostgreSQL) only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::crest::filter::QueryFilter;
use crate::repo::{Repo, RepoError, RepoQuery};
use crate::state::{ConfShare, Gateway};
use crate::sync::run::iso8601;

/// Resource of the shared conf files, by file name.
pub const SHARED_CONFIG: &str = "cluster/config";
/// How often a node looks for conf files other nodes wrote.
const POLL: Duration = Duration::from_millis(500);

pub struct SharedConfig {
    repo: Arc<dyn Repo>,
    gw: Weak<Gateway>,
    node: String,
    /// Revision of each shared file this node has applied or written.
    applied: Mutex<HashMap<String, String>>,
    /// A poll and a REST edit (local write, then publishing) one at a time.
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl SharedConfig {
    pub fn new(repo: Arc<dyn Repo>, gw: &Arc<Gateway>, node: &str) -> Self {
        SharedConfig {
            repo,
            gw: Arc::downgrade(gw),
            node: node.to_owned(),
            applied: Mutex::new(HashMap::new()),
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies every shared file whose revision this node has not applied yet. Returns the
    /// files that changed here.
    pub async fn poll(&self) -> Result<Vec<String>, RepoError> {
        let _one = self.gate.lock().await;
        let page = self
            .repo
            .query(
                SHARED_CONFIG,
                RepoQuery {
                    ids_only: true,
                    ..RepoQuery::all(&QueryFilter::True, &[])
                },
            )
            .await?;
        let mut changed = Vec::new();
        for head in page.results {
            if self.applied().get(&head.id) == Some(&head.rev) {
                continue;
            }
            let Some(rec) = self.repo.read(SHARED_CONFIG, &head.id).await? else {
                continue;
            };
            let Some(gw) = self.gw.upgrade() else {
                return Ok(changed);
            };
            let deleted = rec.content.get("deleted").and_then(Value::as_bool) == Some(true);
            let bytes = (!deleted).then(|| {
                rec.content
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec()
            });
            let file = rec.id.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                gw.apply_shared_conf_file(&file, bytes.as_deref())
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            match outcome {
                Ok(did) => {
                    if did {
                        let by = rec.content.get("node").and_then(Value::as_str);
                        tracing::info!(file = %rec.id, written_by = ?by, deleted,
                            "conf file written over REST on another node applied");
                        changed.push(rec.id.clone());
                    }
                    self.applied().insert(rec.id, rec.rev);
                }
                // Retried at the next poll.
                Err(e) => tracing::error!(file = %rec.id, error = %e,
                    "cannot apply a conf file shared by another node"),
            }
        }
        Ok(changed)
    }

    /// Polls until `drain` starts.
    pub async fn run(self: Arc<Self>, drain: crate::lifecycle::Drain) {
        while !drain.is_draining() {
            tokio::time::sleep(POLL).await;
            if let Err(e) = self.poll().await {
                tracing::error!(error = %e, "cannot read the shared conf files");
            }
        }
    }
}

#[async_trait::async_trait]
impl ConfShare for SharedConfig {
    async fn exclusive(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.gate.clone().lock_owned().await
    }

    async fn publish(&self, file_name: &str, bytes: Option<&[u8]>) -> Result<(), String> {
        let mut content = Map::new();
        content.insert("file".into(), json!(file_name));
        match bytes {
            Some(b) => {
                let text = std::str::from_utf8(b)
                    .map_err(|_| "a conf file must be UTF-8 text".to_owned())?;
                content.insert("content".into(), json!(text));
                content.insert("deleted".into(), json!(false));
            }
            None => {
                content.insert("deleted".into(), json!(true));
            }
        }
        content.insert("node".into(), json!(self.node));
        content.insert("written".into(), json!(iso8601(SystemTime::now())));
        let stored = match self
            .repo
            .update(
                SHARED_CONFIG,
                file_name,
                None,
                content.clone(),
                Default::default(),
            )
            .await
        {
            Err(RepoError::NotFound { .. }) => match self
                .repo
                .create(
                    SHARED_CONFIG,
                    file_name,
                    content.clone(),
                    Default::default(),
                )
                .await
            {
                Err(RepoError::AlreadyExists { .. }) => {
                    self.repo
                        .update(SHARED_CONFIG, file_name, None, content, Default::default())
                        .await
                }
                other => other,
            },
            other => other,
        }
        .map_err(|e| e.to_string())?;
        self.applied().insert(stored.id, stored.rev);
        Ok(())
    }
}
