//! `/openidm/audit/<topic>`: `GET ?_queryFilter=…` and `GET <topic>/<id>` read the events
//! of the `handlerForQueries` handler (the store: paged like any store query; a JSON file
//! handler: its current file, unpaged, as IDM's). Only administrators get here (the
//! router's authorizer, IDM's access rules).

use std::sync::Arc;

use serde_json::Value;

use super::{store, Audit, QuerySource};
use crate::crest::filter::{self, QueryFilter};
use crate::crest::{
    Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError, Response,
};
use crate::repo::RepoQuery;

pub struct AuditHandler(pub Arc<Audit>);

#[async_trait::async_trait]
impl RequestHandler for AuditHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let topic = match rest.first() {
            Some(t) if super::config::TOPICS.contains(&t.as_str()) || self.0.wants(t) => t,
            Some(t) => {
                return Err(ResourceError::not_found(format!(
                    "Audit topic '{t}' not found"
                )))
            }
            None => return Err(req.not_supported()),
        };
        let Some(source) = self.0.query_source() else {
            return Err(ResourceError::new(
                503,
                "No audit handler answers queries: set auditServiceConfig.handlerForQueries in audit.json to a running handler",
            ));
        };
        match (&rest[1..], &req.op) {
            ([], Operation::Query(q)) => {
                let f = query_filter(&q.kind)?;
                match &source {
                    QuerySource::Store(repo) => {
                        let page = repo
                            .query(&store::resource(topic), RepoQuery::page(&f, q))
                            .await?;
                        Ok(Response::Query(QueryResponse {
                            results: page.results.into_iter().map(with_id).collect(),
                            cookie: page.next_cookie,
                            policy: q.count_policy,
                            total: page.total,
                        }))
                    }
                    QuerySource::Files(dir) => {
                        let results = read_files(dir, topic)
                            .await?
                            .into_iter()
                            .filter(|e| f.matches(e))
                            .collect();
                        Ok(Response::Query(QueryResponse {
                            results,
                            ..Default::default()
                        }))
                    }
                }
            }
            ([id], Operation::Read { .. }) => {
                let found = match &source {
                    QuerySource::Store(repo) => {
                        repo.read(&store::resource(topic), id).await?.map(with_id)
                    }
                    QuerySource::Files(dir) => read_files(dir, topic)
                        .await?
                        .into_iter()
                        .find(|e| e.get("_id").and_then(Value::as_str) == Some(id)),
                };
                found.map(|v| Response::Json(200, v)).ok_or_else(|| {
                    ResourceError::not_found(format!("Audit event '{id}' not found in {topic}"))
                })
            }
            _ => Err(req.not_supported()),
        }
    }
}

async fn read_files(dir: &std::path::Path, topic: &str) -> Result<Vec<Value>, ResourceError> {
    let dir = dir.to_path_buf();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || super::file::read_events(&dir, &topic))
        .await
        .map_err(|_| ResourceError::internal("The audit log could not be read"))?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read the audit log file");
            ResourceError::internal("The audit log could not be read")
        })
}

fn with_id(o: crate::repo::StoredObject) -> Value {
    let mut v = serde_json::Map::with_capacity(o.content.len() + 1);
    v.insert("_id".into(), Value::String(o.id));
    v.extend(o.content);
    Value::Object(v)
}

/// IDM's audit queries are `_queryFilter` only.
fn query_filter(kind: &QueryKind) -> Result<QueryFilter, ResourceError> {
    match kind {
        QueryKind::Filter(text) => {
            filter::parse(text).map_err(|e| filter::to_resource_error(text, &e))
        }
        _ => Err(ResourceError::bad_request(
            "Audit events are queried with _queryFilter",
        )),
    }
}
