//! `/openidm/config`: list, read, write and delete the conf files, with IDM's ids.
//! Writes are validated first (a file that would be rejected is never written), stored
//! atomically, and made live at once (the watcher would also pick them up).

use serde_json::{json, Map, Value};

use super::{not_supported, LocalRequest, LocalResponse};
use crate::config::{
    delete_config_file, factory_of, file_for_config_id, instance_name, lower_instance, pid_for,
    write_config_file,
};
use crate::crest::ResourceError;
use crate::state::Gateway;

pub fn handle(gw: &Gateway, req: &LocalRequest<'_>) -> Result<LocalResponse, ResourceError> {
    if req.segments.len() == 1 {
        return match *req.method {
            http::Method::GET => Ok(list(gw, req)),
            _ => Err(not_supported(req)),
        };
    }
    let id = req.segments[1..].join("/");
    let file_name = file_for_config_id(&id).ok_or_else(|| {
        ResourceError::bad_request(format!("'{id}' is not a valid configuration id"))
    })?;
    match *req.method {
        http::Method::GET => read(gw, req, &id),
        http::Method::PUT => put(gw, req, &id, &file_name),
        http::Method::DELETE => delete(gw, req, &id, &file_name),
        _ => Err(not_supported(req)),
    }
}

fn list(gw: &Gateway, req: &LocalRequest<'_>) -> LocalResponse {
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
    LocalResponse::json(
        200,
        &json!({"_id": "", "configurations": configurations}),
        req.pretty(),
    )
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

fn read(gw: &Gateway, req: &LocalRequest<'_>, id: &str) -> Result<LocalResponse, ResourceError> {
    let live = gw.live();
    let file = live.conf.files.get(id).ok_or_else(|| not_found(id))?;
    match &file.raw {
        Some(Value::Object(doc)) => Ok(LocalResponse::json(200, &with_id(id, doc), req.pretty())),
        _ => Err(ResourceError::internal(format!(
            "Configuration {id} cannot be read: {}",
            file.problems.join("; ")
        ))),
    }
}

fn put(
    gw: &Gateway,
    req: &LocalRequest<'_>,
    id: &str,
    file_name: &str,
) -> Result<LocalResponse, ResourceError> {
    let mut doc = req.json_object()?;
    doc.remove("_id");
    let doc_value = Value::Object(doc.clone());
    if let Some(name) = instance_name(id) {
        lower_instance(name, &doc_value).map_err(|problems| {
            ResourceError::bad_request(format!(
                "Configuration {id} is invalid: {}",
                problems.join("; ")
            ))
            .with_detail(json!({ "problems": problems }))
        })?;
    }
    let existed = gw.live().conf.files.contains_key(id) || gw.dirs.conf.join(file_name).exists();
    let mut bytes = serde_json::to_vec_pretty(&doc_value).unwrap_or_default();
    bytes.push(b'\n');
    write_config_file(&gw.dirs.conf, file_name, &bytes).map_err(|e| {
        ResourceError::internal(format!("Configuration {id} could not be written: {e}"))
    })?;
    gw.reload();
    let mut resp = LocalResponse::json(
        if existed { 200 } else { 201 },
        &with_id(id, &doc),
        req.pretty(),
    );
    if !existed {
        resp.location = Some(format!("/openidm/config/{id}"));
    }
    Ok(resp)
}

fn delete(
    gw: &Gateway,
    req: &LocalRequest<'_>,
    id: &str,
    file_name: &str,
) -> Result<LocalResponse, ResourceError> {
    let live = gw.live();
    let old = live.conf.files.get(id).ok_or_else(|| not_found(id))?;
    let body = match &old.raw {
        Some(Value::Object(doc)) => with_id(id, doc),
        _ => json!({ "_id": id }),
    };
    delete_config_file(&gw.dirs.conf, file_name).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_found(id),
        _ => ResourceError::internal(format!("Configuration {id} could not be deleted: {e}")),
    })?;
    gw.reload();
    Ok(LocalResponse::json(200, &body, req.pretty()))
}
