//! The relationship side of [`ObjectSet`]: deleting an object with its edges, the edge
//! writes of a create/update/patch, and the relationship fields of an answer.

use serde_json::{Map, Value};

use super::notify::{self, Event};
use super::write::{EdgeWrites, Plan};
use crate::crest::{Request, ResourceError, ResourceResponse};
use crate::events::ChangeKind;
use crate::managed::objects::{ObjectSet, MAX_WRITE_RETRIES};
use crate::managed::relationships as rels;
use crate::repo::{RepoError, StoredObject};

impl ObjectSet<'_> {
    /// Deletes the object and its relationships (both sides) in one transaction.
    pub(crate) async fn delete(
        &self,
        req: &Request,
        id: &str,
        rev: Option<&str>,
    ) -> Result<StoredObject, ResourceError> {
        for _ in 0..MAX_WRITE_RETRIES {
            let mut also = self.pending(&req.caller, id, ChangeKind::Delete);
            let mut edges = rels::write::EdgeWrites::default();
            if self.graph.is_some() {
                edges = rels::edges_of_object(self.repo, self.schema, id).await?;
                also.extend(edges.ops.iter().cloned());
            }
            match self
                .repo
                .delete_with(&self.schema.resource, id, rev, &also)
                .await
            {
                Ok(obj) => {
                    self.committed(id, &edges.touched, None, None);
                    return Ok(obj);
                }
                Err(e) => match self.edge_error(e, id) {
                    Some(err) => return Err(err),
                    None => continue,
                },
            }
        }
        Err(self.contention(id))
    }

    /// A failed write's answer; `None` when it lost a race on its edges (retry).
    pub(crate) fn edge_error(&self, e: RepoError, id: &str) -> Option<ResourceError> {
        match &e {
            RepoError::Unique { resource, .. }
            | RepoError::NotFound { resource, .. }
            | RepoError::RevisionMismatch { resource, .. }
                if resource == rels::store::EDGES =>
            {
                rels::write::edge_error(&e, &format!("{}/{id}", self.schema.resource))
            }
            _ => Some(self.store_error(e)),
        }
    }

    /// The edge writes of `plan` for object `id` written with `content` (`None`: the
    /// object itself is not written): the client's changes, and the conditional grants
    /// the content now matches.
    pub(crate) async fn edge_ops(
        &self,
        id: &str,
        plan: &Plan,
        content: Option<&Map<String, Value>>,
    ) -> Result<EdgeWrites, ResourceError> {
        let Some(graph) = self.graph else {
            return Ok(EdgeWrites::default());
        };
        let mut out = if plan.is_empty() {
            EdgeWrites::default()
        } else {
            rels::write::edge_ops(graph, self.repo, self.schema, id, plan).await?
        };
        if let (Some(content), Some(conditions)) = (content, self.conditions) {
            out.extend(
                rels::conditional::for_object(self.repo, conditions, self.schema, id, content)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Records what a committed write of object `id` notifies: its edge changes, the
    /// changed properties that pass notifications on, a changed condition. `before` and
    /// `after` are the stored contents (`None`: created / deleted).
    pub(crate) fn committed(
        &self,
        id: &str,
        edges: &[rels::store::Edge],
        before: Option<&Map<String, Value>>,
        after: Option<&Map<String, Value>>,
    ) {
        let conditional = self.schema.properties.iter().any(|p| p.conditional);
        if conditional {
            if let Some(c) = self.conditions {
                c.invalidate(&self.schema.resource);
            }
        }
        let Some(events) = self.events else {
            return;
        };
        events.extend(Event::edges(&self.schema.resource, id, edges));
        if after.is_none() {
            return;
        }
        let empty = Map::new();
        let (before, after) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
        for p in &self.schema.properties {
            if before.get(&p.name) == after.get(&p.name) {
                continue;
            }
            let at = rels::store::End::new(&self.schema.resource, id, Some(&p.name));
            if p.conditional {
                events.extend([Event::Condition(at.clone())]);
            }
            if !p.notify_relationships.is_empty() {
                events.extend([Event::Changed(at)]);
            }
        }
    }

    /// Stores recomputed derived properties of object `id` (a notification), as an update
    /// by the system: false when they did not change or the object is gone.
    pub(crate) async fn set_derived(
        &self,
        id: &str,
        values: Map<String, Value>,
    ) -> Result<bool, ResourceError> {
        let Some(existing) = self
            .repo
            .read(&self.schema.resource, id)
            .await
            .map_err(|e| self.store_error(e))?
        else {
            return Ok(false);
        };
        if !notify::differs(&existing.content, &values) {
            return Ok(false);
        }
        let req = notify::system_update(&self.schema.resource, id);
        let written = self
            .rewrite(&req, id, None, &Plan::default(), |existing| {
                let mut content = existing.content.clone();
                content.extend(values.clone());
                Ok(content)
            })
            .await?;
        Ok(written.is_some())
    }

    /// Takes the relationship properties out of a body (when they are stored as edges).
    pub(crate) fn take_relationships(&self, content: &mut Map<String, Value>) -> Plan {
        match self.graph {
            Some(_) => rels::write::take_from_body(self.schema, content),
            None => Plan::default(),
        }
    }

    /// A patch of relationship fields only: the edges change, the object does not (so
    /// concurrent adds to one role's members do not contend on the role).
    pub(crate) async fn patch_edges(
        &self,
        id: &str,
        rev: Option<&str>,
        plan: &Plan,
    ) -> Result<StoredObject, ResourceError> {
        for _ in 0..MAX_WRITE_RETRIES {
            let existing = self.read_existing(id).await?;
            if let Some(rev) = rev.filter(|r| *r != existing.rev) {
                return Err(self.rev_mismatch(id, rev));
            }
            let edges = self.edge_ops(id, plan, None).await?;
            match rels::write::commit(self.repo, edges.ops).await {
                Ok(()) => {
                    self.committed(id, &edges.touched, None, None);
                    return Ok(existing);
                }
                Err(e) => match self.edge_error(e, id) {
                    Some(err) => return Err(err),
                    None => continue,
                },
            }
        }
        Err(self.contention(id))
    }

    /// Adds the relationship fields the request asks for.
    pub(crate) async fn attach(
        &self,
        req: &Request,
        responses: &mut [ResourceResponse],
    ) -> Result<(), ResourceError> {
        let Some(graph) = self.graph else {
            return Ok(());
        };
        let wanted = rels::read::requested(self.schema, &req.fields);
        if wanted.is_empty() {
            return Ok(());
        }
        for resp in responses {
            rels::read::attach(
                graph,
                self.repo,
                self.schema,
                resp,
                &wanted,
                req.caller.is_internal(),
            )
            .await?;
        }
        Ok(())
    }
}
