//! `/openidm/config`: list, query, read, write, patch and delete the conf files, with
//! IDM's ids. Writes are validated first (a file that would be rejected is never written),
//! stored atomically, and made live at once (the watcher would also pick them up).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::config::{factory_of, file_for_config_id, pid_for};
use crate::crest::{
    filter, patch, Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError,
    Response,
};
use crate::state::{validate_conf, Gateway};

pub struct ConfigHandler(pub Arc<Gateway>);

#[async_trait::async_trait]
impl RequestHandler for ConfigHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let gw = &self.0;
        if rest.is_empty() {
            return match &req.op {
                Operation::Read { .. } => Ok(list(gw)),
                Operation::Query(q) => query(gw, &q.kind),
                _ => Err(req.not_supported()),
            };
        }
        let id = rest.join("/");
        let (id, op) = match &req.op {
            // PUT + If-None-Match: * names the new config in its last segment.
            Operation::Create {
                new_id: Some(new_id),
            } => (format!("{id}/{new_id}"), &req.op),
            op => (id, op),
        };
        let file_name = file_for_config_id(&id).ok_or_else(|| {
            ResourceError::bad_request(format!("'{id}' is not a valid configuration id"))
        })?;
        match op {
            Operation::Read { .. } => read(gw, &id),
            Operation::Update { rev, .. } => {
                if rev.is_some() && !gw.live().conf.files.contains_key(&id) {
                    return Err(not_found(&id));
                }
                put(gw, &id, file_name, req.body_object()?.clone(), false).await
            }
            Operation::Create { .. } => {
                if gw.live().conf.files.contains_key(&id) {
                    return Err(ResourceError::new(
                        412,
                        format!("Configuration {id} already exists"),
                    ));
                }
                put(gw, &id, file_name, req.body_object()?.clone(), true).await
            }
            Operation::Patch { .. } => {
                let ops = patch::parse_patch(&req.body)?;
                let current = match read(gw, &id)? {
                    Response::Json(_, doc) => doc,
                    _ => return Err(not_found(&id)),
                };
                let mut doc = current;
                patch::apply_patch(&mut doc, &ops, true)?;
                let Value::Object(doc) = doc else {
                    return Err(ResourceError::bad_request(
                        "A configuration must be a JSON object",
                    ));
                };
                put(gw, &id, file_name, doc, false).await
            }
            Operation::Delete { .. } => delete(gw, &id, file_name).await,
            _ => Err(req.not_supported()),
        }
    }
}

fn list(gw: &Gateway) -> Response {
    let live = gw.live();
    let configurations: Vec<Value> = live
        .conf
        .files
        .iter()
        .map(|(id, file)| {
            let mut entry = Map::new();
            entry.insert("_id".into(), json!(id));
            entry.insert("pid".into(), json!(pid_for(id)));
            entry.insert("factoryPid".into(), json!(factory_of(id)));
            if !file.is_valid() {
                // Not in IDM's listing: tells the operator why a file is not live.
                entry.insert("problems".into(), json!(file.problems));
            }
            Value::Object(entry)
        })
        .collect();
    Response::Json(200, json!({"_id": "", "configurations": configurations}))
}

/// `GET /openidm/config?_queryFilter=…`: the config documents (with `_id`) that match.
fn query(gw: &Gateway, kind: &QueryKind) -> Result<Response, ResourceError> {
    let f = match kind {
        QueryKind::Filter(text) => {
            filter::parse(text).map_err(|e| filter::to_resource_error(text, &e))?
        }
        QueryKind::Id(id) if id == "query-all-ids" || id == "query-all" => {
            filter::QueryFilter::True
        }
        _ => {
            return Err(ResourceError::bad_request(
                "Configurations are queried with _queryFilter, query-all-ids or query-all",
            ))
        }
    };
    let live = gw.live();
    let results = live
        .conf
        .files
        .iter()
        .filter_map(|(id, file)| match &file.raw {
            Some(Value::Object(doc)) => Some(with_id(id, doc)),
            _ => None,
        })
        .filter(|doc| f.matches(doc))
        .collect();
    Ok(Response::Query(QueryResponse {
        results,
        ..Default::default()
    }))
}

fn with_id(id: &str, doc: &Map<String, Value>) -> Value {
    let mut out = Map::with_capacity(doc.len() + 1);
    out.insert("_id".into(), json!(id));
    for (k, v) in doc {
        if k != "_id" {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

fn not_found(id: &str) -> ResourceError {
    ResourceError::not_found(format!("No configuration exists for id {id}"))
}

fn read(gw: &Gateway, id: &str) -> Result<Response, ResourceError> {
    let live = gw.live();
    let file = live.conf.files.get(id).ok_or_else(|| not_found(id))?;
    match &file.raw {
        Some(Value::Object(doc)) => Ok(Response::Json(200, with_id(id, doc))),
        _ => Err(ResourceError::internal(format!(
            "Configuration {id} cannot be read: {}",
            file.problems.join("; ")
        ))),
    }
}

async fn put(
    gw: &Arc<Gateway>,
    id: &str,
    file_name: String,
    mut doc: Map<String, Value>,
    create: bool,
) -> Result<Response, ResourceError> {
    doc.remove("_id");
    let doc_value = Value::Object(doc.clone());
    validate_conf(id, &doc_value).map_err(|problems| {
        ResourceError::bad_request(format!(
            "Configuration {id} is invalid: {}",
            problems.join("; ")
        ))
        .with_detail(json!({ "problems": problems }))
    })?;
    let existed = gw.live().conf.files.contains_key(id) || gw.dirs.conf.join(&file_name).exists();
    let mut bytes = serde_json::to_vec_pretty(&doc_value).unwrap_or_default();
    bytes.push(b'\n');
    gw.write_conf_file(file_name, bytes).await.map_err(|e| {
        ResourceError::internal(format!("Configuration {id} could not be written: {e}"))
    })?;
    let body = with_id(id, &doc);
    if create || !existed {
        let content = match body {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        return Ok(Response::Created(crate::crest::ResourceResponse::new(
            id.to_owned(),
            None,
            content,
        )));
    }
    Ok(Response::Json(200, body))
}

async fn delete(gw: &Arc<Gateway>, id: &str, file_name: String) -> Result<Response, ResourceError> {
    let live = gw.live();
    let old = live.conf.files.get(id).ok_or_else(|| not_found(id))?;
    let body = match &old.raw {
        Some(Value::Object(doc)) => with_id(id, doc),
        _ => json!({ "_id": id }),
    };
    gw.delete_conf_file(file_name)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_found(id),
            _ => ResourceError::internal(format!("Configuration {id} could not be deleted: {e}")),
        })?;
    Ok(Response::Json(200, body))
}
