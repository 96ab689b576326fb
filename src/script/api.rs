//! What a script can reach: IDM's `openidm` (the router, and encryption), `identityServer`
//! and `logger`. Nothing else: no file system, no network but through `openidm.*` (and
//! with it `external/rest`).
//!
//! `openidm.*` requests are made as the gateway itself (internal callers see private and
//! encrypted values, as in IDM) and are mapped exactly like HTTP requests
//! ([`crate::crest::http::request_from_http`]), so a script's `_queryFilter`, `_fields`,
//! paging and `Accept-API-Version` (the fourth argument, seed 002) mean what they mean over
//! REST.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use http::{HeaderMap, HeaderValue, Method};
use rquickjs::function::{Opt, Rest};
use rquickjs::{Ctx, Exception, Function, Object, Value};
use serde_json::{Map, Value as Json};

use super::runner::{to_js, to_json, CurrentScript};
use crate::crest::http::{request_from_http, HttpRequest};
use crate::crest::{Caller, Operation, ResourceError, Response, Router};

/// IDM's `openidm.encrypt/decrypt/isEncrypted/hash/isHashed/matches`.
pub trait Secrets: Send + Sync {
    fn encrypt(
        &self,
        value: &Json,
        cipher: Option<&str>,
        alias: Option<&str>,
    ) -> Result<Json, String>;
    fn decrypt(&self, value: &Json) -> Result<Json, String>;
    fn is_encrypted(&self, value: &Json) -> bool;
    fn hash(&self, value: &Json, algorithm: Option<&str>) -> Result<Json, String>;
    fn is_hashed(&self, value: &Json) -> bool;
    fn matches(&self, plain: &str, hashed: &Json) -> bool;
}

/// The gateway's side of the script API, shared by every runtime.
pub struct Host {
    router: OnceLock<Weak<Router>>,
    secrets: OnceLock<Arc<dyn Secrets>>,
    /// The runtime `openidm.*` calls run their I/O on.
    io: tokio::runtime::Handle,
    project: PathBuf,
}

impl Host {
    pub fn new(io: tokio::runtime::Handle, project: PathBuf) -> Self {
        Self {
            router: OnceLock::new(),
            secrets: OnceLock::new(),
            io,
            project,
        }
    }

    /// The router `openidm.*` calls go through (held weakly: the router owns handlers that
    /// own the engine).
    pub fn set_router(&self, router: &Arc<Router>) {
        let _ = self.router.set(Arc::downgrade(router));
    }

    pub fn set_secrets(&self, secrets: Arc<dyn Secrets>) {
        let _ = self.secrets.set(secrets);
    }

    /// Makes one request through the router and waits for it (on the script's thread).
    pub fn call(&self, req: crate::crest::Request) -> Result<Response, ResourceError> {
        let router =
            self.router.get().and_then(Weak::upgrade).ok_or_else(|| {
                ResourceError::unavailable("the router is not available to scripts")
            })?;
        let _rt = self.io.enter();
        futures_executor::block_on(async move {
            match router.handle(&req).await? {
                // Internal requests are not streamed, but a handler may still answer so.
                Response::Stream(s) => collect_stream(s).await.map(Response::Query),
                other => Ok(other),
            }
        })
    }

    fn secrets(&self) -> Result<&Arc<dyn Secrets>, ResourceError> {
        self.secrets
            .get()
            .ok_or_else(|| ResourceError::unavailable("encryption is not configured"))
    }
}

async fn collect_stream(
    s: crate::crest::QueryStream,
) -> Result<crate::crest::QueryResponse, ResourceError> {
    let mut body = s
        .take_body()
        .ok_or_else(|| ResourceError::internal("the query answer was already read"))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next_chunk().await {
        bytes.extend_from_slice(&chunk);
    }
    let doc: Json = serde_json::from_slice(&bytes)
        .map_err(|e| ResourceError::internal(format!("unreadable query answer: {e}")))?;
    if let Some(err) = doc.get("error") {
        return Err(ResourceError::internal(format!("the query failed: {err}")));
    }
    Ok(crate::crest::QueryResponse {
        results: doc["result"].as_array().cloned().unwrap_or_default(),
        ..Default::default()
    })
}

/// Installs `openidm`, `identityServer` and `logger` on a new context.
pub fn install<'js>(
    ctx: &Ctx<'js>,
    current: &CurrentScript,
    host: &Arc<Host>,
) -> rquickjs::Result<()> {
    let g = ctx.globals();
    let openidm = Object::new(ctx.clone())?;
    for op in [
        "create", "read", "update", "patch", "delete", "query", "action",
    ] {
        let host = host.clone();
        let f = json_function(ctx, move |args| router_call(&host, op, args))?;
        openidm.set(op, f)?;
    }
    install_crypto(ctx, &openidm, host)?;
    g.set("openidm", openidm)?;
    g.set("identityServer", identity_server(ctx, host)?)?;
    g.set("logger", logger(ctx, current)?)?;
    Ok(())
}

fn install_crypto<'js>(
    ctx: &Ctx<'js>,
    openidm: &Object<'js>,
    host: &Arc<Host>,
) -> rquickjs::Result<()> {
    type Op = fn(&dyn Secrets, &[Json]) -> Result<Json, String>;
    let ops: [(&str, Op); 6] = [
        ("encrypt", |s, a| {
            s.encrypt(arg(a, 0), arg(a, 1).as_str(), arg(a, 2).as_str())
        }),
        ("decrypt", |s, a| s.decrypt(arg(a, 0))),
        ("isEncrypted", |s, a| {
            Ok(Json::Bool(s.is_encrypted(arg(a, 0))))
        }),
        ("hash", |s, a| s.hash(arg(a, 0), arg(a, 1).as_str())),
        ("isHashed", |s, a| Ok(Json::Bool(s.is_hashed(arg(a, 0))))),
        ("matches", |s, a| {
            let plain = match arg(a, 0) {
                Json::String(p) => p.clone(),
                other => other.to_string(),
            };
            Ok(Json::Bool(s.matches(&plain, arg(a, 1))))
        }),
    ];
    for (name, op) in ops {
        let host = host.clone();
        let f = json_function(ctx, move |args| {
            // The value or the algorithm the script gave is at fault: 400.
            host.secrets()
                .and_then(|s| op(s.as_ref(), args).map_err(ResourceError::bad_request))
        })?;
        openidm.set(name, f)?;
    }
    Ok(())
}

/// A JavaScript function whose arguments arrive as JSON and whose errors are thrown as
/// IDM's exceptions.
fn json_function<'js>(
    ctx: &Ctx<'js>,
    f: impl Fn(&[Json]) -> Result<Json, ResourceError> + 'static,
) -> rquickjs::Result<Function<'js>> {
    Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, args: Rest<Value<'js>>| -> rquickjs::Result<Value<'js>> {
            let args = args
                .0
                .into_iter()
                .map(|a| to_json(&ctx, a))
                .collect::<rquickjs::Result<Vec<_>>>()?;
            match f(&args) {
                Ok(v) => to_js(&ctx, &v),
                Err(e) => Err(throw_resource_error(&ctx, &e)),
            }
        },
    )
}

fn arg(args: &[Json], i: usize) -> &Json {
    args.get(i).unwrap_or(&Json::Null)
}

/// Throws `e` as an `Error` carrying IDM's `code`, `reason`, `message` and `detail`, so a
/// script can catch it and look, and an uncaught one ends the run with the same status.
fn throw_resource_error(ctx: &Ctx<'_>, e: &ResourceError) -> rquickjs::Error {
    let build = || -> rquickjs::Result<Exception<'_>> {
        let ex = Exception::from_message(ctx.clone(), &e.message)?;
        ex.as_object().set("code", e.code)?;
        ex.as_object()
            .set("reason", crate::crest::reason_phrase(e.code))?;
        if let Some(d) = &e.detail {
            ex.as_object().set("detail", to_js(ctx, d)?)?;
        }
        Ok(ex)
    };
    match build() {
        Ok(ex) => ex.throw(),
        Err(err) => err,
    }
}

/// Adds a script's additional-parameters object to the request parameters.
fn merge(params: &mut Map<String, Json>, v: &Json) {
    if let Some(m) = v.as_object() {
        params.extend(m.clone());
    }
}

/// `openidm.<op>(…)` with IDM's argument order, as the equivalent HTTP request.
fn router_call(host: &Host, op: &str, a: &[Json]) -> Result<Json, ResourceError> {
    let resource = a.first().and_then(Json::as_str).ok_or_else(|| {
        ResourceError::bad_request(format!(
            "openidm.{op}: the first argument must be a resource name"
        ))
    })?;
    let mut params = Map::new();
    let fields;
    let mut body = Json::Null;
    let mut if_match = None;
    let mut if_none_match = None;
    let mut path = resource.to_owned();
    let method = match op {
        "create" => {
            body = arg(a, 2).clone();
            merge(&mut params, arg(a, 3));
            fields = arg(a, 4);
            match arg(a, 1).as_str() {
                Some(id) if !id.is_empty() => {
                    path = format!("{resource}/{id}");
                    if_none_match = Some("*".to_owned());
                    Method::PUT
                }
                _ => {
                    params.insert("_action".into(), "create".into());
                    Method::POST
                }
            }
        }
        "read" => {
            merge(&mut params, arg(a, 1));
            fields = arg(a, 2);
            Method::GET
        }
        "update" | "patch" | "delete" => {
            if_match = arg(a, 1).as_str().map(str::to_owned);
            if op == "delete" {
                merge(&mut params, arg(a, 2));
                fields = arg(a, 3);
            } else {
                body = arg(a, 2).clone();
                merge(&mut params, arg(a, 3));
                fields = arg(a, 4);
            }
            match op {
                "update" => Method::PUT,
                "patch" => Method::PATCH,
                _ => Method::DELETE,
            }
        }
        "query" => {
            merge(&mut params, arg(a, 1));
            fields = arg(a, 2);
            Method::GET
        }
        _ => {
            let action = arg(a, 1).as_str().ok_or_else(|| {
                ResourceError::bad_request(
                    "openidm.action: the second argument must be an action name",
                )
            })?;
            params.insert("_action".into(), action.into());
            body = arg(a, 2).clone();
            merge(&mut params, arg(a, 3));
            fields = arg(a, 4);
            Method::POST
        }
    };
    let mut headers = HeaderMap::new();
    if let Some(version) = params.remove("Accept-API-Version") {
        let v = version
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| version.to_string());
        headers.insert(
            "accept-api-version",
            HeaderValue::from_str(&v).map_err(|_| {
                ResourceError::bad_request("Accept-API-Version is not a header value")
            })?,
        );
    }
    for (h, v) in [("if-match", if_match), ("if-none-match", if_none_match)] {
        if let Some(v) = v {
            let v = if v == "*" { v } else { format!("\"{v}\"") };
            headers.insert(
                h,
                HeaderValue::from_str(&v)
                    .map_err(|_| ResourceError::bad_request("bad revision"))?,
            );
        }
    }
    match fields {
        Json::Array(list) => {
            let list: Vec<&str> = list.iter().filter_map(Json::as_str).collect();
            params.insert("_fields".into(), list.join(",").into());
        }
        Json::String(s) => {
            params.insert("_fields".into(), s.clone().into());
        }
        _ => {}
    }
    let query = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            match v {
                Json::String(s) => q.append_pair(k, s),
                Json::Null => continue,
                other => q.append_pair(k, &other.to_string()),
            };
        }
        q.finish()
    };
    let segments = crate::crest::split_path(&path);
    if segments.iter().any(|s| s == "." || s == "..") {
        return Err(ResourceError::bad_request(format!(
            "openidm.{op}: the resource name '{resource}' has dot segments"
        )));
    }
    let body_bytes = if body.is_null() {
        Vec::new()
    } else {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        serde_json::to_vec(&body).map_err(|e| ResourceError::bad_request(e.to_string()))?
    };
    let mut req = request_from_http(
        HttpRequest {
            method: &method,
            segments,
            query: (!query.is_empty()).then_some(query.as_str()),
            headers: &headers,
            body: &body_bytes,
        },
        Arc::new(Caller::system()),
    )?;
    req.streamed = false;
    if op == "update" {
        if let Operation::Update { upsert, .. } = &mut req.op {
            *upsert = false;
        }
    }
    match host.call(req) {
        Ok(resp) => Ok(response_json(resp)),
        Err(e) if e.code == 404 && op == "read" => Ok(Json::Null),
        Err(e) => Err(e),
    }
}

/// The JSON a script receives for a response.
fn response_json(resp: Response) -> Json {
    match resp {
        Response::Resource(r) | Response::Created(r) => r.to_json(),
        Response::Query(q) => q.to_json(),
        Response::Action(v) => v.unwrap_or(Json::Null),
        Response::Json(_, v) => v,
        Response::NotModified { .. } | Response::Stream(_) => Json::Null,
        Response::Raw { body, .. } => Json::String(String::from_utf8_lossy(&body).into_owned()),
    }
}

fn identity_server<'js>(ctx: &Ctx<'js>, host: &Arc<Host>) -> rquickjs::Result<Object<'js>> {
    let o = Object::new(ctx.clone())?;
    o.set(
        "getProperty",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             name: String,
             default: Opt<Value<'js>>,
             substitute: Opt<bool>|
             -> rquickjs::Result<Value<'js>> {
                let mut value = match (property(&name), default.0) {
                    (Some(v), _) => Json::String(v),
                    (None, Some(d)) => to_json(&ctx, d)?,
                    (None, None) => Json::Null,
                };
                if substitute.0.unwrap_or(false) {
                    crate::config::substitute::substitute(&mut value, &|n: &str| property(n));
                }
                to_js(&ctx, &value)
            },
        )?,
    )?;
    for (f, dir) in [
        ("getInstallLocation", install_dir()),
        ("getProjectLocation", host.project.clone()),
        ("getWorkingLocation", host.project.clone()),
    ] {
        let dir = dir.display().to_string();
        o.set(f, Function::new(ctx.clone(), move || dir.clone())?)?;
    }
    Ok(o)
}

/// IDM's boot properties come from the environment here: `openidm.port.http` is looked up
/// as given, then as `OPENIDM_PORT_HTTP`.
fn property(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| {
        let env: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        std::env::var(env).ok()
    })
}

fn install_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default()
}

fn logger<'js>(ctx: &Ctx<'js>, current: &CurrentScript) -> rquickjs::Result<Object<'js>> {
    let o = Object::new(ctx.clone())?;
    for level in ["trace", "debug", "info", "warn", "error"] {
        let current = current.clone();
        o.set(
            level,
            Function::new(
                ctx.clone(),
                move |ctx: Ctx<'js>, args: Rest<Value<'js>>| -> rquickjs::Result<()> {
                    let mut parts = args.0.into_iter();
                    let first = parts.next();
                    let text = |v: Value<'js>| -> String {
                        match v.as_string() {
                            Some(s) => s.to_string().unwrap_or_default(),
                            None => to_json(&ctx, v).map(|j| j.to_string()).unwrap_or_default(),
                        }
                    };
                    let mut msg = first.map(text).unwrap_or_default();
                    // SLF4J's `{}` placeholders, filled in order.
                    for a in parts {
                        match msg.find("{}") {
                            Some(at) => msg.replace_range(at..at + 2, &text(a)),
                            None => break,
                        }
                    }
                    let script = current.get();
                    match level {
                        "trace" => tracing::trace!(target: "script", script = %script, "{msg}"),
                        "debug" => tracing::debug!(target: "script", script = %script, "{msg}"),
                        "info" => tracing::info!(target: "script", script = %script, "{msg}"),
                        "warn" => tracing::warn!(target: "script", script = %script, "{msg}"),
                        _ => tracing::error!(target: "script", script = %script, "{msg}"),
                    }
                    Ok(())
                },
            )?,
        )?;
    }
    Ok(o)
}
