//! `/openidm/csv/...`: the template and the import records.
//!
//! | Request | Answer |
//! |---|---|
//! | `GET csv/template?resourceCollection=managed/<type>` | `{"_id":"template","header":"\"a\",\"b\""}`; with `_mimeType=text/csv` the header line as `text/csv` |
//! | `GET csv/metadata?_queryFilter=…` | the import records (paged like any query) |
//! | `GET csv/metadata/<id>` | one record |
//! | `DELETE csv/metadata/<id>` | removes the record, its failed rows and spool file (409 while it runs) |
//! | `POST csv/metadata/<id>?_action=cancel` | `{"status":"OK"}` (400 when it is not running) |
//! | `POST csv/metadata/<id>?_action=cleanup[&deleteErrorRecords=true]` | the record, spool file (and failed rows) removed |
//! | `POST csv/metadata?_action=cleanupList` | `{"importUUIDs":[…]}`: imports with something to clean up |

use std::sync::Arc;

use serde_json::{json, Value};

use super::meta::{self, Meta};
use super::{columns, template, CsvImports, FAILURES, METADATA};
use crate::crest::filter::{self, QueryFilter};
use crate::crest::{
    Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError, ResourceResponse,
    Response,
};
use crate::repo::{RepoError, RepoQuery, WriteOp};

pub struct CsvHandler(pub Arc<CsvImports>);

#[async_trait::async_trait]
impl RequestHandler for CsvHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let csv = &self.0;
        match (rest, &req.op) {
            ([t], Operation::Read { .. }) if t == "template" => csv.template(req),
            ([m], Operation::Query(q)) if m == "metadata" => csv.query(q).await,
            ([m], Operation::Action { name }) if m == "metadata" && name == "cleanupList" => {
                csv.cleanup_list().await
            }
            ([m, id], Operation::Read { .. }) if m == "metadata" => {
                let (o, _) = meta::read(csv.repo.as_ref(), id).await?;
                Ok(Response::Resource(resource(o)))
            }
            ([m, id], Operation::Delete { .. }) if m == "metadata" => csv.delete(id).await,
            ([m, id], Operation::Action { name }) if m == "metadata" => match name.as_str() {
                "cancel" => {
                    meta::read(csv.repo.as_ref(), id).await?;
                    if csv.cancel(id) {
                        Ok(Response::Action(Some(json!({"status": "OK"}))))
                    } else {
                        Err(ResourceError::bad_request(format!(
                            "Import '{id}' is not in progress"
                        )))
                    }
                }
                "cleanup" => {
                    let errors = req
                        .param("deleteErrorRecords")
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                    csv.cleanup(id, errors).await
                }
                other => Err(ResourceError::bad_request(format!(
                    "Action '{other}' is not supported on an import record; use cancel or cleanup"
                ))),
            },
            _ => Err(req.not_supported()),
        }
    }
}

fn resource(o: crate::repo::StoredObject) -> ResourceResponse {
    ResourceResponse::new(o.id, Some(o.rev), o.content)
}

impl CsvImports {
    fn template(&self, req: &Request) -> Result<Response, ResourceError> {
        let collection = req.required_param("resourceCollection")?;
        let live = self.gw.live();
        let (schema, name) = managed_type(&live, collection)?;
        let raw = columns::raw_properties(&live, name);
        let header = template::header_line(&template::columns(schema, raw.as_ref()));
        if req
            .param("_mimeType")
            .is_some_and(|m| m.trim_matches('\'').eq_ignore_ascii_case("text/csv"))
        {
            return Ok(Response::Raw {
                status: 200,
                content_type: "text/csv;charset=utf-8",
                body: format!("{header}\n").into_bytes(),
            });
        }
        let mut content = serde_json::Map::new();
        content.insert("header".into(), Value::String(header));
        Ok(Response::Resource(ResourceResponse::new(
            "template", None, content,
        )))
    }

    async fn query(&self, q: &crate::crest::QueryParams) -> Result<Response, ResourceError> {
        let text = match &q.kind {
            QueryKind::Filter(text) => text.as_str(),
            QueryKind::Id(id) if id == "query-all" || id == "query-all-ids" => "true",
            _ => {
                return Err(ResourceError::bad_request(
                    "Import records are queried with _queryFilter",
                ))
            }
        };
        let f = filter::parse(text).map_err(|e| filter::to_resource_error(text, &e))?;
        let page = self.repo.query(METADATA, RepoQuery::page(&f, q)).await?;
        Ok(Response::Query(QueryResponse {
            results: page.results.into_iter().map(meta::to_json).collect(),
            cookie: page.next_cookie,
            policy: q.count_policy,
            total: page.total,
        }))
    }

    async fn cleanup_list(&self) -> Result<Response, ResourceError> {
        let ids: Vec<String> = meta::all(self.repo.as_ref())
            .await?
            .into_iter()
            .filter(|(id, _, m)| m.needs_cleanup() && !self.is_running(id))
            .map(|(id, _, _)| id)
            .collect();
        Ok(Response::Action(Some(json!({ "importUUIDs": ids }))))
    }

    fn refuse_running(&self, id: &str, what: &str) -> Result<(), ResourceError> {
        if self.is_running(id) {
            return Err(ResourceError::new(
                409,
                format!("Import '{id}' is in progress: cancel it before {what}"),
            ));
        }
        Ok(())
    }

    async fn cleanup(&self, id: &str, errors: bool) -> Result<Response, ResourceError> {
        let (o, mut m) = meta::read(self.repo.as_ref(), id).await?;
        self.refuse_running(id, "cleaning it up")?;
        remove_spool(&self.spool_path(id)).await?;
        m.temp_records = 0;
        m.purged_temp_records = true;
        if errors {
            self.delete_failures(id).await?;
            m.purged_error_records = true;
        }
        let saved = meta::save(self.repo.as_ref(), id, Some(&o.rev), &m).await?;
        Ok(Response::Action(Some(meta::to_json(saved))))
    }

    async fn delete(&self, id: &str) -> Result<Response, ResourceError> {
        let (o, _) = meta::read(self.repo.as_ref(), id).await?;
        self.refuse_running(id, "deleting it")?;
        remove_spool(&self.spool_path(id)).await?;
        self.delete_failures(id).await?;
        let deleted = match self.repo.delete(METADATA, id, None).await {
            Err(RepoError::NotFound { .. }) => return Err(meta::not_found(id)),
            other => other?,
        };
        let mut m = Meta::from_stored(&deleted)?;
        m.import_deleted = true;
        m.temp_records = 0;
        m.purged_temp_records = true;
        m.purged_error_records = true;
        Ok(Response::Resource(ResourceResponse::new(
            o.id,
            Some(deleted.rev),
            m.to_content(),
        )))
    }

    /// Deletes the failed rows of `id`, a page at a time.
    async fn delete_failures(&self, id: &str) -> Result<(), ResourceError> {
        let f = failures_of(id);
        loop {
            let page = self
                .repo
                .query(
                    FAILURES,
                    RepoQuery {
                        page_size: 500,
                        ids_only: true,
                        ..RepoQuery::all(&f, &[])
                    },
                )
                .await?;
            if page.results.is_empty() {
                return Ok(());
            }
            let ops = page
                .results
                .into_iter()
                .map(|o| WriteOp::Delete {
                    resource: FAILURES.into(),
                    id: o.id,
                    rev: None,
                })
                .collect();
            for r in self.repo.batch(ops).await {
                match r {
                    Ok(_) | Err(RepoError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// The filter of the failed rows of import `id`.
pub(super) fn failures_of(id: &str) -> QueryFilter {
    let text = format!("importId eq {}", Value::String(id.to_owned()));
    filter::parse(&text).unwrap_or(QueryFilter::False)
}

async fn remove_spool(path: &std::path::Path) -> Result<(), ResourceError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot remove an import spool file");
            Err(ResourceError::internal(
                "The import's temporary file cannot be removed",
            ))
        }
    }
}

/// The schema of `managed/<type>`: 400 for another kind of collection, 404 for an unknown
/// type.
pub(super) fn managed_type<'a>(
    live: &'a crate::state::Live,
    collection: &'a str,
) -> Result<(&'a crate::managed::ObjectSchema, &'a str), ResourceError> {
    let collection = collection.trim_matches('/');
    let Some(name) = collection.strip_prefix("managed/") else {
        return Err(ResourceError::bad_request(format!(
            "'{collection}' is not a managed object collection (managed/<type>): bulk import is for managed objects"
        )));
    };
    live.managed
        .types
        .get(name)
        .map(|s| (s.as_ref(), name))
        .ok_or_else(|| {
            ResourceError::not_found(format!(
                "Managed object type '{name}' is not defined in managed.json"
            ))
        })
}
