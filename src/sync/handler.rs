//! REST shells over [`SyncService`]:
//!
//! * `recon` (IDM's recon endpoint): `POST ?_action=recon&mapping=X[&waitForCompletion=true]`,
//!   `POST ?_action=reconById&mapping=X&id=Y` (a body `{"allowEmptySourceSet": …,
//!   "runTargetPhase": …}` overrides the mapping's settings for the run, as in IDM), `GET`
//!   (list), `GET <id>`,
//!   `POST <id>?_action=cancel`, `DELETE <id>`.
//! * `sync`: `GET sync/mappings?_queryFilter=…` (processing order), `GET sync/mappings/<name>`,
//!   `GET sync/queue?_queryFilter=…`, `GET sync/queue/<id>` and `DELETE sync/queue/<id>`
//!   (implicit-sync pushes to do), `POST ?_action=getLinkedResources&resourceName=…`.
//! * `repo/synchronisation/deadLetterQueue/<name>` (IDM's URL of the dead-letter queue of a
//!   provisioner; here also of a mapping's implicit sync): `GET ?_queryFilter=…`,
//!   `GET <id>`, `DELETE <id>`.
//!
//! Who may call them is the router's authorizer's business (administrators).

use std::sync::Arc;

use serde_json::{json, Value};

use super::service::{RunOverrides, SyncService};
use crate::crest::filter::{self, QueryFilter};
use crate::crest::{
    Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError, Response,
};
use crate::events::DEAD_LETTER_QUEUE;
use crate::repo::{Repo, RepoError, RepoQuery};

/// `/openidm/recon`.
pub struct ReconHandler(pub Arc<SyncService>);

#[async_trait::async_trait]
impl RequestHandler for ReconHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let svc = &self.0;
        match (rest, &req.op) {
            ([], Operation::Action { name }) if name == "recon" || name == "reconById" => {
                let mapping = req.required_param("mapping")?;
                let source_id = if name == "reconById" {
                    Some(req.required_param("id")?.to_owned())
                } else {
                    None
                };
                let wait = req
                    .param("waitForCompletion")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                let overrides = RunOverrides::from_body(&req.body)?;
                let run = svc.start_with(mapping, source_id, overrides).await?;
                if wait {
                    run.wait().await;
                }
                Ok(Response::Action(Some(
                    json!({"_id": run.id, "state": run.stage().state()}),
                )))
            }
            ([], Operation::Action { name }) => Err(ResourceError::bad_request(format!(
                "Action '{name}' is not supported on resource 'openidm/recon'; use recon or reconById"
            ))),
            ([], Operation::Read { .. }) => Ok(Response::Json(
                200,
                json!({"reconciliations": svc.list().await?}),
            )),
            ([id], Operation::Read { .. }) => Ok(Response::Json(200, svc.get(id).await?)),
            ([id], Operation::Action { name }) if name == "cancel" => {
                svc.cancel(id).await?;
                Ok(Response::Action(Some(
                    json!({"_id": id, "action": "cancel", "status": "INITIATED"}),
                )))
            }
            ([id], Operation::Delete { .. }) => Ok(Response::Json(200, svc.delete(id).await?)),
            _ => Err(req.not_supported()),
        }
    }
}

/// `/openidm/sync`.
pub struct SyncHandler(pub Arc<SyncService>);

#[async_trait::async_trait]
impl RequestHandler for SyncHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let svc = &self.0;
        match (rest, &req.op) {
            ([], Operation::Action { name }) if name == "getLinkedResources" => {
                let resource = req.required_param("resourceName")?;
                Ok(Response::Action(Some(
                    svc.linked_resources(resource).await?,
                )))
            }
            ([m], Operation::Query(q)) if m == "mappings" => {
                let text = match &q.kind {
                    QueryKind::Filter(text) => text.as_str(),
                    QueryKind::Id(id) if id == "query-all" || id == "query-all-ids" => "true",
                    _ => {
                        return Err(ResourceError::bad_request(
                            "Mappings are queried with _queryFilter",
                        ))
                    }
                };
                let f = filter::parse(text).map_err(|e| filter::to_resource_error(text, &e))?;
                let results: Vec<Value> = svc
                    .mappings()
                    .iter()
                    .map(|m| m.raw.clone())
                    .filter(|raw| f.matches(raw))
                    .collect();
                Ok(Response::Query(QueryResponse {
                    results,
                    ..Default::default()
                }))
            }
            ([q], Operation::Query(query)) if q == "queue" => {
                let f = query_filter(&query.kind, "The sync queue")?;
                let results = svc.queue().list(&f).await.map_err(queue_error)?;
                Ok(Response::Query(QueryResponse {
                    results,
                    ..Default::default()
                }))
            }
            ([q, id], Operation::Delete { .. }) if q == "queue" => svc
                .queue()
                .remove(id)
                .await
                .map_err(queue_error)?
                .map(|v| Response::Json(200, v))
                .ok_or_else(|| {
                    ResourceError::not_found(format!("Sync queue entry '{id}' not found"))
                }),
            ([q, id], Operation::Read { .. }) if q == "queue" => svc
                .queue()
                .read(id)
                .await
                .map_err(queue_error)?
                .map(|v| Response::Json(200, v))
                .ok_or_else(|| {
                    ResourceError::not_found(format!("Sync queue entry '{id}' not found"))
                }),
            ([m, name], Operation::Read { .. }) if m == "mappings" => svc
                .mappings()
                .get(name)
                .map(|m| Response::Json(200, m.raw.clone()))
                .ok_or_else(|| ResourceError::not_found(format!("Mapping '{name}' not found"))),
            _ => Err(req.not_supported()),
        }
    }
}

/// `/openidm/repo/synchronisation/deadLetterQueue`: the changes liveSync or implicit sync
/// gave up on (`postRetryAction: dead-letter-queue`).
pub struct DeadLetterHandler(pub Arc<dyn Repo>);

#[async_trait::async_trait]
impl RequestHandler for DeadLetterHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let resource = |name: &str| format!("{DEAD_LETTER_QUEUE}/{name}");
        match (rest, &req.op) {
            ([name], Operation::Query(query)) => {
                let f = query_filter(&query.kind, "The dead-letter queue")?;
                let page = self
                    .0
                    .query(&resource(name), RepoQuery::all(&f, &query.sort_keys))
                    .await
                    .map_err(queue_error)?;
                Ok(Response::Query(QueryResponse {
                    results: page.results.into_iter().map(with_id).collect(),
                    ..Default::default()
                }))
            }
            ([name, id], Operation::Read { .. }) => self
                .0
                .read(&resource(name), id)
                .await
                .map_err(queue_error)?
                .map(|o| Response::Json(200, with_id(o)))
                .ok_or_else(|| dead_letter_not_found(name, id)),
            ([name, id], Operation::Delete { .. }) => {
                match self.0.delete(&resource(name), id, None).await {
                    Ok(o) => Ok(Response::Json(200, with_id(o))),
                    Err(RepoError::NotFound { .. }) => Err(dead_letter_not_found(name, id)),
                    Err(e) => Err(queue_error(e)),
                }
            }
            _ => Err(req.not_supported()),
        }
    }
}

fn dead_letter_not_found(name: &str, id: &str) -> ResourceError {
    ResourceError::not_found(format!(
        "Dead letter '{id}' not found in the queue of '{name}'"
    ))
}

fn with_id(o: crate::repo::StoredObject) -> Value {
    let mut v = serde_json::Map::with_capacity(o.content.len() + 1);
    v.insert("_id".into(), Value::String(o.id));
    v.extend(o.content);
    Value::Object(v)
}

/// The filter of a query given by `_queryFilter` (or `query-all`).
fn query_filter(kind: &QueryKind, what: &str) -> Result<QueryFilter, ResourceError> {
    let text = match kind {
        QueryKind::Filter(text) => text.as_str(),
        QueryKind::Id(id) if id == "query-all" || id == "query-all-ids" => "true",
        _ => {
            return Err(ResourceError::bad_request(format!(
                "{what} is queried with _queryFilter"
            )))
        }
    };
    filter::parse(text).map_err(|e| filter::to_resource_error(text, &e))
}

fn queue_error(e: crate::repo::RepoError) -> ResourceError {
    tracing::error!(error = %e, "sync queue store failure");
    ResourceError::internal("The store failed to process the request")
}
