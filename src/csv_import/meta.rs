//! The import record (`csv/metadata/<importId>`), in IDM's field names, with two gateway
//! extras: `uniqueProperty` (what the upload correlated on) and `interrupted` (the gateway
//! stopped while the import ran).

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::METADATA;
use crate::crest::filter::QueryFilter;
use crate::crest::ResourceError;
use crate::repo::{Repo, RepoError, RepoQuery, StoredObject};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The CSV header, as uploaded.
    pub header: Vec<String>,
    pub filename: String,
    /// `managed/<type>`.
    pub resource_path: String,
    pub unique_property: Vec<String>,
    /// Rows of the file (known before the first row is imported).
    pub total: u64,
    /// Rows imported: `created + updated + unchanged`.
    pub success: u64,
    pub failure: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub begin: String,
    /// Set when the import stopped (done, cancelled or interrupted).
    pub end: Option<String>,
    pub cancelled: bool,
    pub interrupted: bool,
    pub import_deleted: bool,
    /// Rows not imported that are still held (in the spool file).
    pub temp_records: u64,
    pub purged_temp_records: bool,
    pub purged_error_records: bool,
    pub auth_id: String,
    pub authz_component: String,
    /// The cluster node running the import (gateway extra): a restart interrupts only its
    /// own imports, a dead node's are interrupted by the survivor that detects it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Meta {
    pub fn processed(&self) -> u64 {
        self.success + self.failure
    }

    /// Rows left to import while the spool file is held.
    pub fn pending(&self) -> u64 {
        self.total.saturating_sub(self.processed())
    }

    /// Marks an import stopped by a restart.
    pub fn interrupt(&mut self, spool_exists: bool) {
        self.end = Some(now());
        self.interrupted = true;
        self.temp_records = if spool_exists { self.pending() } else { 0 };
        self.purged_temp_records = !spool_exists;
    }

    pub fn to_content(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    pub fn from_stored(o: &StoredObject) -> Result<Meta, ResourceError> {
        serde_json::from_value(Value::Object(o.content.clone())).map_err(|e| {
            tracing::error!(import = %o.id, error = %e, "unreadable import record");
            ResourceError::internal(format!("The import record '{}' is unreadable", o.id))
        })
    }

    /// Whether `cleanup` has anything to remove.
    pub fn needs_cleanup(&self) -> bool {
        !self.purged_temp_records || (self.failure > 0 && !self.purged_error_records)
    }
}

/// The record as a resource: `_id`, `_rev`, then the fields.
pub fn to_json(o: StoredObject) -> Value {
    let mut v = Map::with_capacity(o.content.len() + 2);
    v.insert("_id".into(), Value::String(o.id));
    v.insert("_rev".into(), Value::String(o.rev));
    v.extend(o.content);
    Value::Object(v)
}

pub fn not_found(id: &str) -> ResourceError {
    ResourceError::not_found(format!("Import '{id}' not found"))
}

/// Reads import `id` (404 when there is none).
pub async fn read(repo: &dyn Repo, id: &str) -> Result<(StoredObject, Meta), ResourceError> {
    let o = repo
        .read(METADATA, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let m = Meta::from_stored(&o)?;
    Ok((o, m))
}

/// Creates or replaces the record of `id` (`rev`: only over that revision).
pub async fn save(
    repo: &dyn Repo,
    id: &str,
    rev: Option<&str>,
    m: &Meta,
) -> Result<StoredObject, ResourceError> {
    let content = m.to_content();
    let result = match rev {
        None => repo.create(METADATA, id, content, Default::default()).await,
        Some(rev) => {
            repo.update(METADATA, id, Some(rev), content, Default::default())
                .await
        }
    };
    result.map_err(|e| match e {
        RepoError::NotFound { .. } => not_found(id),
        e => e.into(),
    })
}

/// Every import record (few: one per upload), streamed from the store.
pub async fn all(repo: &dyn Repo) -> Result<Vec<(String, String, Meta)>, ResourceError> {
    let filter = QueryFilter::True;
    let mut stream = repo
        .query_stream(METADATA, RepoQuery::all(&filter, &[]))
        .await?;
    let mut out = Vec::new();
    while let Some(o) = stream.next().await {
        let o = o?;
        out.push((o.id.clone(), o.rev.clone(), Meta::from_stored(&o)?));
    }
    Ok(out)
}
