//! `conf/router.json` filters (idm-model-and-scripts.md §3.5): `{"filters": [{"pattern",
//! "methods", "condition", "onRequest", "onResponse", "onFailure"}]}` around every routed
//! request, internal ones included (a filter's `condition` can tell them apart with
//! `context`).
//!
//! * `pattern`: a regular expression on the resource path (`managed/user/abc`, no
//!   `openidm/`); `methods`: any of create, read, update, delete, patch, query, action
//!   (absent: all).
//! * `condition` (a script, `request` and `context` bound) must return `true` for the filter
//!   to run.
//! * `onRequest` runs top-down with `request` (its `content` may be changed, and is then the
//!   request's body) and may throw to refuse the request with that error; `onResponse` runs
//!   bottom-up with `request` and `response` (changes to `response` are answered);
//!   `onFailure` with `exception` (`{code, reason, message, detail}`): a throw replaces the
//!   error. A throw in `onResponse` fails the request but does not undo what the handler did.
//!
//! A router.json that does not parse or compile is rejected when it is loaded; the last
//! good filters stay live. Without filters, requests pay one snapshot load and nothing more.

use std::sync::{Arc, Mutex};

use regex::Regex;
use serde_json::{Map, Value};

use super::endpoint::request_binding;
use super::{context_of, is_script, parse_script, Script, ScriptEngine};
use crate::crest::{FilterChain, Filters, Request, ResourceError, ResourceResponse, Response};
use crate::state::Gateway;

/// Config id of `router.json`.
pub const ROUTER_CONFIG: &str = "router";

const METHODS: [&str; 7] = [
    "create", "read", "update", "delete", "patch", "query", "action",
];

/// One entry of `filters`.
#[derive(Debug)]
pub struct FilterSpec {
    pattern: Regex,
    methods: Option<Vec<String>>,
    condition: Option<Script>,
    on_request: Option<Script>,
    on_response: Option<Script>,
    on_failure: Option<Script>,
}

/// Parses `router.json`.
pub fn parse_router(doc: &Value) -> Result<Vec<FilterSpec>, Vec<String>> {
    let items = match doc.get("filters") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(vec!["'filters' must be an array".into()]),
    };
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let any = Regex::new(".*").ok();
    for (i, item) in items.iter().enumerate() {
        let at = format!("filters[{i}]");
        let pattern = match item.get("pattern") {
            None | Some(Value::Null) => any.clone(),
            Some(Value::String(p)) => match Regex::new(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    problems.push(format!("{at}: 'pattern' is not a regular expression: {e}"));
                    None
                }
            },
            Some(_) => {
                problems.push(format!("{at}: 'pattern' must be a string"));
                None
            }
        };
        let methods = match item.get("methods") {
            None | Some(Value::Null) => None,
            Some(Value::Array(m)) => {
                let names: Vec<String> = m
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
                if names.len() != m.len() || names.iter().any(|n| !METHODS.contains(&n.as_str())) {
                    problems.push(format!(
                        "{at}: 'methods' must list some of {}",
                        METHODS.join(", ")
                    ));
                }
                Some(names)
            }
            Some(_) => {
                problems.push(format!("{at}: 'methods' must be an array"));
                None
            }
        };
        let mut script = |key: &str| -> Option<Script> {
            let v = item.get(key).filter(|v| !v.is_null())?;
            if !is_script(v) {
                problems.push(format!("{at}: '{key}' must be a script object"));
                return None;
            }
            parse_script(v, &format!("router {at}.{key}"))
                .map_err(|e| problems.push(e))
                .ok()
        };
        let condition = script("condition");
        let on_request = script("onRequest");
        let on_response = script("onResponse");
        let on_failure = script("onFailure");
        if let Some(pattern) = pattern {
            out.push(FilterSpec {
                pattern,
                methods,
                condition,
                on_request,
                on_response,
                on_failure,
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The router's filters, from the live `router.json`.
pub struct ScriptFilters {
    gw: Arc<Gateway>,
    engine: Arc<ScriptEngine>,
    /// The filters of the last good `router.json`, with its revision.
    cache: Mutex<(String, Arc<Vec<FilterSpec>>)>,
}

impl ScriptFilters {
    pub fn new(gw: Arc<Gateway>, engine: Arc<ScriptEngine>) -> Self {
        Self {
            gw,
            engine,
            cache: Mutex::new((String::new(), Arc::new(Vec::new()))),
        }
    }

    fn specs(&self) -> Arc<Vec<FilterSpec>> {
        let live = self.gw.live();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match live.conf.files.get(ROUTER_CONFIG) {
            None => {
                if !cache.1.is_empty() {
                    *cache = (String::new(), Arc::new(Vec::new()));
                }
            }
            Some(file) if file.rev != cache.0 && file.is_valid() => {
                if let Some(Ok(specs)) = file.raw.as_ref().map(parse_router) {
                    *cache = (file.rev.clone(), Arc::new(specs));
                }
            }
            Some(_) => {}
        }
        cache.1.clone()
    }
}

impl Filters for ScriptFilters {
    fn chain(&self, req: &Request) -> Option<Box<dyn FilterChain>> {
        let specs = self.specs();
        if specs.is_empty() {
            return None;
        }
        let path = req.path_string();
        let method = req.op.name();
        let matching: Vec<usize> = specs
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.pattern.is_match(&path)
                    && f.methods
                        .as_ref()
                        .is_none_or(|m| m.iter().any(|x| x == method))
            })
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() {
            return None;
        }
        Some(Box::new(Chain {
            engine: self.engine.clone(),
            specs,
            active: matching,
            context: context_of(&req.caller),
        }))
    }
}

struct Chain {
    engine: Arc<ScriptEngine>,
    specs: Arc<Vec<FilterSpec>>,
    /// The filters that apply, in order (after `on_request`: those whose condition held).
    active: Vec<usize>,
    context: Value,
}

impl Chain {
    async fn run(
        &self,
        script: &Script,
        vars: Vec<(&str, Value)>,
        read_back: &[&str],
    ) -> Result<super::Outcome, ResourceError> {
        let mut all: Vec<(String, Value)> = vec![("context".into(), self.context.clone())];
        all.extend(vars.into_iter().map(|(k, v)| (k.to_owned(), v)));
        Ok(self.engine.eval(script, all, read_back).await?)
    }
}

#[async_trait::async_trait]
impl FilterChain for Chain {
    async fn on_request(&mut self, req: &Request) -> Result<Option<Request>, ResourceError> {
        let mut changed: Option<Request> = None;
        let mut held = Vec::with_capacity(self.active.len());
        for &i in &self.active {
            let spec = &self.specs[i];
            let current = changed.as_ref().unwrap_or(req);
            let request = request_binding(current, &current.path_string());
            if let Some(cond) = &spec.condition {
                let out = self
                    .run(cond, vec![("request", request.clone())], &[])
                    .await?;
                if out.value != Value::Bool(true) {
                    continue;
                }
            }
            held.push(i);
            let Some(script) = &spec.on_request else {
                continue;
            };
            let mut out = self
                .run(script, vec![("request", request.clone())], &["request"])
                .await?;
            let content = out
                .vars
                .remove("request")
                .and_then(|mut r| r.get_mut("content").map(Value::take));
            if let Some(content) = content {
                if Some(&content) != request.get("content") {
                    let mut next = current.clone();
                    next.body = content;
                    changed = Some(next);
                }
            }
        }
        self.active = held;
        Ok(changed)
    }

    async fn on_result(
        &mut self,
        req: &Request,
        mut result: Result<Response, ResourceError>,
    ) -> Result<Response, ResourceError> {
        let request = request_binding(req, &req.path_string());
        for &i in self.active.iter().rev() {
            let spec = &self.specs[i];
            result = match result {
                Ok(resp) => match &spec.on_response {
                    Some(script) => {
                        let before = response_value(&resp);
                        let vars = vec![("request", request.clone()), ("response", before.clone())];
                        let mut out = self.run(script, vars, &["response"]).await?;
                        match out.vars.remove("response") {
                            Some(after) if after != before => Ok(replace(resp, after)),
                            _ => Ok(resp),
                        }
                    }
                    None => Ok(resp),
                },
                Err(e) => match &spec.on_failure {
                    Some(script) => {
                        let vars = vec![("request", request.clone()), ("exception", e.to_json())];
                        match self.run(script, vars, &[]).await {
                            Ok(_) => Err(e),
                            Err(thrown) => Err(thrown),
                        }
                    }
                    None => Err(e),
                },
            };
        }
        result
    }
}

/// What `onResponse` sees of an answer.
fn response_value(resp: &Response) -> Value {
    match resp {
        Response::Resource(r) | Response::Created(r) => r.to_json(),
        Response::Query(q) => q.to_json(),
        Response::Action(v) => v.clone().unwrap_or(Value::Null),
        Response::Json(_, v) => v.clone(),
        _ => Value::Null,
    }
}

/// The answer with `onResponse`'s changes.
fn replace(resp: Response, after: Value) -> Response {
    let resource = |r: &ResourceResponse, v: Value| {
        let content: Map<String, Value> = match v {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        ResourceResponse::new(r.id.clone(), r.rev.clone(), content)
    };
    match resp {
        Response::Resource(r) => Response::Resource(resource(&r, after)),
        Response::Created(r) => Response::Created(resource(&r, after)),
        Response::Query(mut q) => {
            if let Some(Value::Array(results)) = after.get("result") {
                q.results = results.clone();
            }
            Response::Query(q)
        }
        Response::Action(_) => Response::Action(Some(after)),
        Response::Json(code, _) => Response::Json(code, after),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn router_json_is_checked_when_loaded() {
        let ok = parse_router(&json!({"filters": [
            {"pattern": "^managed/user($|/.+)", "methods": ["create"],
             "onRequest": {"type": "text/javascript", "source": "request.content.x = 1;"}}]}))
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert!(parse_router(&json!({})).unwrap().is_empty());
        let bad = parse_router(&json!({"filters": [
            {"pattern": "(", "methods": ["fetch"],
             "onRequest": {"type": "text/javascript", "source": "request.("},
             "onResponse": "not a script"}]}))
        .unwrap_err();
        assert_eq!(bad.len(), 4, "{bad:#?}");
        assert!(bad.iter().any(|p| p.contains("line 1")), "{bad:#?}");
    }
}
