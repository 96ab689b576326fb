//! Custom endpoints (idm-model-and-scripts.md §3.6): `conf/endpoint-<name>.json`, a script
//! object with an optional `context`, serves `/openidm/endpoint/<name>` with IDM's `request`
//! binding; the script's value is the answer (a query answers a list of objects).
//!
//! The files are read from the live conf snapshot; a file that does not compile was
//! rejected when it was loaded (see `state::validate_conf`) and its last good version
//! keeps serving here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use super::{context_of, parse_script, Script, ScriptEngine};
use crate::crest::query::CountPolicy;
use crate::crest::{
    Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError, ResourceResponse,
    Response,
};
use crate::state::Gateway;

/// Config ids of endpoint files: `endpoint/<name>`.
pub const ENDPOINT_FACTORY: &str = "endpoint";

/// A parsed endpoint file.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub script: Script,
    /// `context` ended with `/*`: paths below the endpoint are served too.
    pub below: bool,
}

/// Parses `endpoint-<name>.json`.
pub fn parse_endpoint(name: &str, doc: &Value) -> Result<Endpoint, Vec<String>> {
    let script = parse_script(doc, &format!("endpoint/{name}")).map_err(|e| vec![e])?;
    let below = match doc.get("context") {
        None | Some(Value::Null) => false,
        Some(Value::String(c)) => {
            let c = c.trim_start_matches('/');
            let base = c.strip_suffix("/*").unwrap_or(c);
            if base != format!("endpoint/{name}") {
                return Err(vec![format!(
                    "'context' '{c}' must be 'endpoint/{name}' or 'endpoint/{name}/*' (the file name says which endpoint it is)"
                )]);
            }
            c.ends_with("/*")
        }
        Some(other) => return Err(vec![format!("'context' must be a string, not {other}")]),
    };
    Ok(Endpoint { script, below })
}

/// The endpoint name of config id `endpoint/<name>`.
pub fn endpoint_name(config_id: &str) -> Option<&str> {
    config_id
        .strip_prefix(ENDPOINT_FACTORY)?
        .strip_prefix('/')
        .filter(|n| !n.is_empty())
}

/// IDM's `request` object of a script (endpoints, router filters).
pub fn request_binding(req: &Request, resource_path: &str) -> Value {
    let mut r = Map::new();
    r.insert("method".into(), json!(req.op.name()));
    r.insert("resourcePath".into(), json!(resource_path));
    r.insert("content".into(), req.body.clone());
    let params: Map<String, Value> = req
        .params
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    r.insert("additionalParameters".into(), Value::Object(params));
    r.insert("fields".into(), json!(req.fields));
    match &req.op {
        Operation::Create { new_id } => {
            r.insert("newResourceId".into(), json!(new_id));
        }
        Operation::Update { rev, .. } | Operation::Patch { rev } | Operation::Delete { rev } => {
            r.insert("revision".into(), json!(rev));
        }
        Operation::Action { name } => {
            r.insert("action".into(), json!(name));
        }
        Operation::Query(q) => {
            match &q.kind {
                QueryKind::Filter(f) => r.insert("queryFilter".into(), json!(f)),
                QueryKind::Id(id) => r.insert("queryId".into(), json!(id)),
                QueryKind::Expression(e) => r.insert("queryExpression".into(), json!(e)),
            };
            r.insert("pageSize".into(), json!(q.page_size));
            r.insert("pagedResultsOffset".into(), json!(q.offset));
            r.insert("pagedResultsCookie".into(), json!(q.cookie));
        }
        Operation::Read { .. } => {}
    }
    Value::Object(r)
}

pub struct EndpointHandler {
    pub gw: Arc<Gateway>,
    pub engine: Arc<ScriptEngine>,
    /// Parsed endpoints by name, with the revision of the file they came from; the last
    /// good one of a file that is now rejected.
    cache: Mutex<HashMap<String, (String, Arc<Endpoint>)>>,
}

impl EndpointHandler {
    pub fn new(gw: Arc<Gateway>, engine: Arc<ScriptEngine>) -> Self {
        Self {
            gw,
            engine,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn endpoint(&self, name: &str) -> Option<Arc<Endpoint>> {
        let live = self.gw.live();
        let file = live.conf.files.get(&format!("{ENDPOINT_FACTORY}/{name}"));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = file else {
            cache.remove(name);
            return None;
        };
        if let Some((rev, ep)) = cache.get(name) {
            if *rev == file.rev || !file.is_valid() {
                return Some(ep.clone());
            }
        }
        let ep = Arc::new(parse_endpoint(name, file.raw.as_ref()?).ok()?);
        cache.insert(name.to_owned(), (file.rev.clone(), ep.clone()));
        Some(ep)
    }
}

#[async_trait::async_trait]
impl RequestHandler for EndpointHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let not_found = || {
            ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            ))
        };
        let Some((name, below)) = rest.split_first() else {
            return Err(not_found());
        };
        let ep = self.endpoint(name).ok_or_else(not_found)?;
        if !below.is_empty() && !ep.below {
            return Err(not_found());
        }
        let request = request_binding(req, &below.join("/"));
        let vars = super::vars([("request", request), ("context", context_of(&req.caller))]);
        let out = self.engine.eval(&ep.script, vars, &[]).await?;
        answer(req, out.value)
    }
}

/// The script's value as the answer to the request's operation.
fn answer(req: &Request, value: Value) -> Result<Response, ResourceError> {
    Ok(match &req.op {
        Operation::Query(q) => {
            let results = match value {
                Value::Array(items) => items,
                Value::Object(mut o) => match o.remove("result") {
                    Some(Value::Array(items)) => items,
                    Some(other) => {
                        o.insert("result".into(), other);
                        vec![Value::Object(o)]
                    }
                    // One object: a list of one.
                    None => vec![Value::Object(o)],
                },
                Value::Null => Vec::new(),
                _ => {
                    return Err(ResourceError::internal(
                        "the endpoint's script must answer a query with a list of objects",
                    ))
                }
            };
            let total = (q.count_policy != CountPolicy::None).then_some(results.len() as u64);
            Response::Query(QueryResponse {
                results,
                cookie: None,
                policy: q.count_policy,
                total,
            })
        }
        Operation::Action { .. } => Response::Action(Some(value)),
        Operation::Create { .. } => match value {
            Value::Object(o) => {
                let id = o
                    .get("_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let rev = o.get("_rev").and_then(Value::as_str).map(str::to_owned);
                Response::Created(ResourceResponse::new(id, rev, o))
            }
            other => Response::Json(201, other),
        },
        _ => Response::Json(200, value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_files_are_parsed_with_their_context() {
        let doc = json!({"type": "text/javascript", "source": "request.method"});
        assert!(!parse_endpoint("echo", &doc).unwrap().below);
        let mut wild = doc.clone();
        wild["context"] = json!("endpoint/echo/*");
        assert!(parse_endpoint("echo", &wild).unwrap().below);
        wild["context"] = json!("endpoint/other/*");
        assert!(parse_endpoint("echo", &wild).unwrap_err()[0].contains("endpoint/echo"));
        let bad = json!({"type": "text/javascript", "source": "request.("});
        assert!(parse_endpoint("echo", &bad).unwrap_err()[0].contains("line 1"));
        assert_eq!(endpoint_name("endpoint/echo"), Some("echo"));
        assert_eq!(endpoint_name("endpoint/"), None);
        assert_eq!(endpoint_name("endpointx/echo"), None);
    }
}
