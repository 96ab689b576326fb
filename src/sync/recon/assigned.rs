//! The reconciliation engine's side of assignments ([`crate::sync::assignments`]): the
//! source's assignments written over the mapped object before a create or an update, and
//! what was applied kept on the link.

use serde_json::{Map, Value};

use super::Engine;
use crate::sync::assignments::{self, Applied};
use crate::sync::links::Link;

impl Engine {
    /// Applies the assignments of `source` to `mapped` (what goes to the target); `existing`
    /// is the target (none for a create), `link` its link, which says what the last sync
    /// applied.
    pub(super) fn assign(
        &self,
        source: &Value,
        existing: Option<&Value>,
        mapped: &mut Map<String, Value>,
        link: Option<&Link>,
    ) -> Result<Applied, String> {
        let previous = link.map_or(&Value::Null, |l| {
            assignments::of_link(&l.assignments, &self.mapping.name)
        });
        let applied = assignments::apply(&self.mapping.name, source, existing, mapped, previous)
            .map_err(|e| format!("mapping {}: {e}", self.mapping.name))?;
        for (name, value) in &applied.attributes {
            mapped.insert(name.clone(), value.clone());
        }
        Ok(applied)
    }

    /// The link field of a new link whose target got `applied`.
    pub(super) fn new_link_assignments(&self, applied: Applied) -> Value {
        assignments::on_link(&Value::Null, &self.mapping.name, applied.snapshot)
    }

    /// Records on `link` what the sync applied (a write only when it changed).
    pub(super) async fn keep_assignments(
        &self,
        link: &Link,
        applied: Applied,
    ) -> Result<(), String> {
        let before = assignments::of_link(&link.assignments, &self.mapping.name);
        if assignments::same_snapshot(before, &applied.snapshot) {
            return Ok(());
        }
        let all = assignments::on_link(&link.assignments, &self.mapping.name, applied.snapshot);
        self.links
            .set_assignments(link, &all)
            .await
            .map_err(|e| format!("cannot record the applied assignments on the link: {e}"))
    }
}
