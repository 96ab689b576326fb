//! The store handler (IDM's `RepositoryAuditEventHandler`): events in the embedded store,
//! resource `audit/<topic>` (IDM's `auditaccess`, `auditactivity`, … tables), so queries
//! and reads by id go through the store's `_queryFilter` translation.
//!
//! Runs on its own thread with a small runtime, and every write interval commits what is
//! queued in batches (one transaction each).

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::Receiver;

use super::{Event, Writer};
use crate::repo::{Repo, WriteOp};

/// Most events committed in one batch.
const BATCH: usize = 256;

/// Store resource of a topic's events.
pub fn resource(topic: &str) -> String {
    format!("audit/{topic}")
}

/// Writes events until the audit closes (or every sender is gone).
pub fn run(repo: Arc<dyn Repo>, mut rx: Receiver<Event>, writer: Writer) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the audit store handler");
            return;
        }
    };
    while let Some(batch) = writer.next_batch(&mut rx, BATCH) {
        let ops: Vec<WriteOp> = batch.into_iter().filter_map(op).collect();
        for r in rt.block_on(repo.batch(ops)) {
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot store an audit event; event lost");
            }
        }
    }
}

fn op(event: Event) -> Option<WriteOp> {
    let Ok(Value::Object(mut content)) = serde_json::from_str(&event.json) else {
        return None;
    };
    let id = match content.remove("_id") {
        Some(Value::String(id)) => id,
        _ => super::event::new_id(),
    };
    Some(WriteOp::Create {
        resource: resource(&event.topic),
        id,
        content,
        unique: Vec::new(),
    })
}
