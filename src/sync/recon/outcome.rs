//! What became of each object of a run: counted in the run, the metric and the log, and
//! audited (a `recon` entry or a `sync` event) from one place, [`Engine::record`], which
//! every outcome of every phase passes, failures included.

use super::super::run::bump;
use super::super::situation::{Action, Situation};
use super::Engine;

/// Which audit topic an engine's outcomes go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAs {
    /// `recon` entries of a reconciliation run.
    Recon,
    /// `sync` events of an implicit sync or liveSync push.
    Sync,
}

/// The object an outcome is about: the phase that handled it, and the ids known.
#[derive(Clone, Copy)]
pub(super) struct Subject<'a> {
    /// `source` or `target`.
    phase: &'static str,
    source: Option<&'a str>,
    target: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub(super) fn source(id: &'a str, target: Option<&'a str>) -> Self {
        Self {
            phase: "source",
            source: Some(id),
            target,
        }
    }

    pub(super) fn target(id: &'a str, source: Option<&'a str>) -> Self {
        Self {
            phase: "target",
            source,
            target: Some(id),
        }
    }

    /// The id the phase handled (for logs).
    fn id(&self) -> &'a str {
        match self.phase {
            "source" => self.source.unwrap_or_default(),
            _ => self.target.unwrap_or_default(),
        }
    }
}

impl Engine {
    /// The last failure's reason, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn note_error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    }

    /// A failure before any situation could be assessed.
    pub(super) fn failed_early(&self, id: &str, error: &str) {
        self.note_error(error);
        bump(&self.run.counters.failure);
        tracing::warn!(mapping = %self.mapping.name, run = %self.run.id, id = %id, error = %error,
            "reconciliation of one object failed");
    }

    pub(super) fn record(
        &self,
        subject: Subject<'_>,
        situation: Situation,
        action: Action,
        result: Result<(), String>,
    ) {
        let id = subject.id();
        if let Some((audit, how)) = &self.audit {
            let full = |resource: &str, id: Option<&str>| {
                id.filter(|i| !i.is_empty())
                    .map(|i| format!("{resource}/{i}"))
            };
            let run_id = self.run.id.as_str();
            audit.sync_entry(&crate::audit::SyncEntry {
                recon_id: (*how == AuditAs::Recon).then_some(run_id),
                transaction_id: run_id,
                user: &self.caller.user,
                mapping: &self.mapping.name,
                situation: situation.as_str(),
                action: action.as_str(),
                reconciling: subject.phase,
                source_object_id: full(&self.mapping.source, subject.source),
                target_object_id: full(&self.mapping.target, subject.target),
                error: result.as_ref().err().map(String::as_str),
            });
        }
        self.run.counters.situation(situation);
        self.metrics
            .recon_objects
            .with_label_values(&[&self.mapping.name, situation.as_str(), action.as_str()])
            .inc();
        match result {
            Ok(()) => bump(&self.run.counters.success),
            Err(error) => {
                self.note_error(&error);
                bump(&self.run.counters.failure);
                tracing::warn!(mapping = %self.mapping.name, run = %self.run.id, id = %id,
                    situation = situation.as_str(), action = action.as_str(), error = %error,
                    "reconciliation of one object failed");
            }
        }
    }
}
