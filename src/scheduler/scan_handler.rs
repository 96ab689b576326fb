//! `/openidm/taskscanner` (IDM's REST API of the task scanner): `GET` lists the runs
//! (`{"tasks": […]}`), `GET taskscanner/<id>` reads one, `POST ?_action=execute&name=<job>`
//! starts a run of a `taskscanner` schedule now, `POST taskscanner/<id>?_action=cancel`
//! stops one.

use std::sync::Arc;

use serde_json::{json, Value};

use super::scanner::TaskScanner;
use crate::crest::{
    filter, Operation, QueryResponse, Request, RequestHandler, ResourceError, Response,
};

pub struct TaskScannerHandler(pub Arc<TaskScanner>);

#[async_trait::async_trait]
impl RequestHandler for TaskScannerHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let scanner = &self.0;
        match (rest, &req.op) {
            ([], Operation::Read { .. }) => {
                Ok(Response::Json(200, json!({ "tasks": scanner.list() })))
            }
            ([], Operation::Query(q)) => {
                let f = filter::of_listing_query(&q.kind, "Task scans")?;
                let results: Vec<Value> =
                    scanner.list().into_iter().filter(|t| f.matches(t)).collect();
                Ok(Response::Query(QueryResponse {
                    results,
                    ..Default::default()
                }))
            }
            ([], Operation::Action { name }) if name == "execute" => {
                let job = req.required_param("name")?;
                let run = scanner.execute(job).await?;
                Ok(Response::Action(Some(json!({ "_id": run.id }))))
            }
            ([id], Operation::Read { .. }) => scanner
                .get(id)
                .map(|r| Response::Json(200, r.to_json()))
                .ok_or_else(|| ResourceError::not_found(format!("Task scan '{id}' not found"))),
            ([id], Operation::Action { name }) if name == "cancel" => {
                let status = if scanner.cancel(id)? {
                    "SUCCESS"
                } else {
                    "FAILURE"
                };
                Ok(Response::Action(Some(
                    json!({ "_id": id, "action": "cancel", "status": status }),
                )))
            }
            ([], Operation::Action { name }) | ([_], Operation::Action { name }) => {
                Err(ResourceError::bad_request(format!(
                    "Action '{name}' is not supported: execute (on taskscanner, with name) or cancel (on taskscanner/<id>)"
                )))
            }
            _ => Err(req.not_supported()),
        }
    }
}
