//! The relationship side of [`ObjectSet`]: deleting an object with its edges, the edge
//! writes of a create/update/patch, and the relationship fields of an answer.

use serde_json::{Map, Value};

use super::write::Plan;
use crate::crest::{Request, ResourceError, ResourceResponse};
use crate::events::ChangeKind;
use crate::managed::objects::{ObjectSet, MAX_WRITE_RETRIES};
use crate::managed::relationships as rels;
use crate::repo::{RepoError, StoredObject, WriteOp};

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
            if self.graph.is_some() {
                also.extend(rels::edges_of_object(self.repo, self.schema, id).await?);
            }
            match self
                .repo
                .delete_with(&self.schema.resource, id, rev, &also)
                .await
            {
                Ok(obj) => return Ok(obj),
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

    /// The edge writes of `plan` for object `id`.
    pub(crate) async fn edge_ops(
        &self,
        id: &str,
        plan: &Plan,
    ) -> Result<Vec<WriteOp>, ResourceError> {
        match self.graph {
            Some(graph) if !plan.is_empty() => {
                rels::write::edge_ops(graph, self.repo, self.schema, id, plan).await
            }
            _ => Ok(Vec::new()),
        }
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
            let ops = self.edge_ops(id, plan).await?;
            match rels::write::commit(self.repo, ops).await {
                Ok(()) => return Ok(existing),
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
