//! `/openidm/scheduler/job` (IDM 7) and `/openidm/scheduler` (legacy): list, read, create,
//! replace and delete jobs, and `?_action=trigger|pause|resume`. Jobs are the
//! `conf/schedule-<id>.json` files: a write is validated first, stored atomically and made
//! live at once.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::job::SCHEDULE_FACTORY;
use super::service::{not_found, Scheduler};
use crate::config::file_for_config_id;
use crate::crest::{
    filter, Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError,
    ResourceResponse, Response,
};
use crate::state::{validate_conf, Gateway};

/// Keys the REST API adds to a job; dropped from a written body.
const COMPUTED: [&str; 5] = ["_id", "nextRunDate", "previousRunDate", "paused", "running"];

pub struct SchedulerHandler {
    pub gw: Arc<Gateway>,
    pub scheduler: Arc<Scheduler>,
}

#[async_trait::async_trait]
impl RequestHandler for SchedulerHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        match (rest, &req.op) {
            ([], Operation::Query(q)) => self.query(&q.kind),
            ([], Operation::Create { new_id }) => {
                let id = new_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                self.put(&id, req, true).await
            }
            ([], Operation::Action { name }) => match name.as_str() {
                "create" => {
                    let id = uuid::Uuid::new_v4().to_string();
                    self.put(&id, req, true).await
                }
                "validateQuartzCronExpression" => {
                    let expr = req
                        .body
                        .get("cronExpression")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            ResourceError::bad_request(
                                "The body must name the expression: {\"cronExpression\": \"0 0/1 * * * ?\"}",
                            )
                        })?;
                    Ok(Response::Json(
                        200,
                        json!({"valid": super::job::parse_cron(expr).is_ok()}),
                    ))
                }
                "listCurrentlyExecutingJobs" => Ok(Response::Json(
                    200,
                    Value::Array(self.scheduler.executing()),
                )),
                "pauseJobs" | "resumeJobs" => {
                    self.scheduler
                        .set_all_paused(name == "pauseJobs")
                        .await?;
                    Ok(Response::Json(200, json!({"success": true})))
                }
                other => Err(ResourceError::bad_request(format!(
                    "Action '{other}' is not supported on the scheduler: create, validateQuartzCronExpression, listCurrentlyExecutingJobs, pauseJobs or resumeJobs"
                ))),
            },
            ([which], Operation::Read { .. })
                if which == "acquiredTriggers" || which == "waitingTriggers" =>
            {
                Ok(Response::Json(
                    200,
                    self.scheduler.trigger_lists(which == "acquiredTriggers").await?,
                ))
            }
            ([id], Operation::Read { .. }) => self
                .scheduler
                .get(id)
                .map(|v| Response::Json(200, v))
                .ok_or_else(|| not_found(id)),
            ([id], Operation::Update { .. }) => self.put(id, req, false).await,
            ([id], Operation::Create { new_id: None }) => self.put(id, req, true).await,
            ([id], Operation::Delete { .. }) => self.delete(id).await,
            ([id], Operation::Action { name }) => match name.as_str() {
                "trigger" => Ok(Response::Json(200, self.scheduler.trigger(id).await?)),
                "pause" => Ok(Response::Json(
                    200,
                    self.scheduler.set_paused(id, true).await?,
                )),
                "resume" => Ok(Response::Json(
                    200,
                    self.scheduler.set_paused(id, false).await?,
                )),
                other => Err(ResourceError::bad_request(format!(
                    "Action '{other}' is not supported on a job: trigger, pause or resume"
                ))),
            },
            _ => Err(req.not_supported()),
        }
    }
}

impl SchedulerHandler {
    fn query(&self, kind: &QueryKind) -> Result<Response, ResourceError> {
        let f = filter::of_listing_query(kind, "Jobs")?;
        let results = self
            .scheduler
            .list()
            .into_iter()
            .filter(|j| f.matches(j))
            .collect();
        Ok(Response::Query(QueryResponse {
            results,
            ..Default::default()
        }))
    }

    async fn put(&self, id: &str, req: &Request, create: bool) -> Result<Response, ResourceError> {
        let config_id = format!("{SCHEDULE_FACTORY}/{id}");
        let file_name = file_for_config_id(&config_id)
            .ok_or_else(|| ResourceError::bad_request(format!("'{id}' is not a valid job id")))?;
        let mut doc: Map<String, Value> = req.body_object()?.clone();
        for key in COMPUTED {
            doc.remove(key);
        }
        let existed =
            self.scheduler.get(id).is_some() || self.gw.dirs.conf.join(&file_name).exists();
        if create && existed {
            return Err(ResourceError::new(
                412,
                format!("Schedule '{id}' already exists"),
            ));
        }
        let doc = Value::Object(doc);
        validate_conf(&config_id, &doc).map_err(|problems| {
            ResourceError::bad_request(format!("Schedule {id} is invalid: {}", problems.join("; ")))
                .with_detail(json!({ "problems": problems }))
        })?;
        let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        bytes.push(b'\n');
        self.gw
            .write_conf_file(file_name, bytes)
            .await
            .map_err(|e| {
                ResourceError::internal(format!("Schedule {id} could not be written: {e}"))
            })?;
        self.scheduler.wake();
        let view = self.scheduler.get(id).ok_or_else(|| {
            ResourceError::internal(format!("Schedule {id} was written but is not live"))
        })?;
        if existed {
            return Ok(Response::Json(200, view));
        }
        let content = match view {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Ok(Response::Created(ResourceResponse::new(
            id.to_owned(),
            None,
            content,
        )))
    }

    async fn delete(&self, id: &str) -> Result<Response, ResourceError> {
        let config_id = format!("{SCHEDULE_FACTORY}/{id}");
        let file_name = file_for_config_id(&config_id).ok_or_else(|| not_found(id))?;
        let before = self.scheduler.get(id);
        if before.is_none() && !self.gw.dirs.conf.join(&file_name).exists() {
            return Err(not_found(id));
        }
        self.gw
            .delete_conf_file(file_name)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => not_found(id),
                _ => ResourceError::internal(format!("Schedule {id} could not be deleted: {e}")),
            })?;
        self.scheduler.wake();
        Ok(Response::Json(
            200,
            before.unwrap_or_else(|| json!({ "_id": id })),
        ))
    }
}

/// `/openidm/scheduler/trigger`: the stored triggers of persisted jobs, IDM's shape
/// (`?_queryFilter=…`, `trigger/<id>`). Read only.
pub struct TriggerHandler(pub Arc<Scheduler>);

#[async_trait::async_trait]
impl RequestHandler for TriggerHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        match (rest, &req.op) {
            ([], Operation::Query(q)) => {
                let f = filter::of_listing_query(&q.kind, "Triggers")?;
                let results = self
                    .0
                    .triggers()
                    .await?
                    .into_iter()
                    .filter(|t| f.matches(t))
                    .collect();
                Ok(Response::Query(QueryResponse {
                    results,
                    ..Default::default()
                }))
            }
            ([id], Operation::Read { .. }) => self
                .0
                .triggers()
                .await?
                .into_iter()
                .find(|t| t["_id"] == id.as_str())
                .map(|t| Response::Json(200, t))
                .ok_or_else(|| ResourceError::not_found(format!("Trigger '{id}' not found"))),
            _ => Err(req.not_supported()),
        }
    }
}
