//! The CREST client of the internal router: `external/idm/<name>/<path>` answered by the
//! remote instance `<name>`, so internal callers (reconciliation, implicit sync) get from
//! `external/idm/dc2/managed/user` exactly what a local `managed/user` would answer.
//!
//! * Same registry, credentials and token cache as the HTTP proxy: the live registry is read
//!   at each request (reloads apply), Basic headers and [`TokenSource`]s are shared. A bearer
//!   request the remote answers 401 invalidates the token and is retried once with a new one.
//! * Same trust: platform roots plus `certs/*.pem`. One `reqwest::Client` (connection pool)
//!   per instance, rebuilt when the instance's `group_key` changes (URL, timeouts or trust).
//!   `connectTimeout` bounds connecting, `readTimeout` each read of the response. Proxies
//!   from the environment are not used, as on the HTTP path.
//! * The CREST request is mapped back to HTTP as CREST's HTTP adapter expects it
//!   ([`build_call`]), the answer back to a [`Response`] ([`map_response`]). Remote CREST
//!   errors keep their code and detail, the message prefixed with the instance name.
//! * Paging: [`QueryPager`] / [`query_pages`] follow `pagedResultsCookie` one page at a time
//!   through any [`Router`], so memory is bounded by the page size.
//!
//! [`TokenSource`]: super::TokenSource

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

use crate::config::InstanceConfig;
use crate::crest::http::strip_quotes;
use crate::crest::query::CountPolicy;
use crate::crest::Capability;
use crate::crest::{
    reason_phrase, Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError,
    ResourceResponse, Response, Router,
};
use crate::metrics::Metrics;

use super::{Credentials, Registry, RemoteInstance, UpstreamFailure};

/// `Accept-API-Version` sent when the request names no resource version.
pub const API_VERSION: &str = "protocol=2.1,resource=1.0";
/// Transaction id header (one id per request, the same on a retry).
pub const TRANSACTION_ID: &str = "x-forgerock-transactionid";
/// Largest response body accepted from a remote; a bigger one is a 502 (a page that big
/// means a page size nobody should use, or a remote that misbehaves).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Idle pooled connections to a remote are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE_PER_HOST: usize = 64;

/// Request parameters this client writes itself from the request model; an additional
/// parameter of the same name (case-insensitive) is not sent twice.
const GENERATED: &[&str] = &[
    "_queryFilter",
    "_queryId",
    "_queryExpression",
    "_pageSize",
    "_pagedResultsCookie",
    "_pagedResultsOffset",
    "_totalPagedResultsPolicy",
    "_sortKeys",
    "_fields",
    "_action",
    "_prettyPrint",
];

/// Characters escaped in one path segment sent to a remote.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'\\')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'^')
    .add(b'[')
    .add(b']')
    .add(b';')
    .add(b'+')
    .add(b'&')
    .add(b'=');

/// Characters escaped in a query parameter name or value: all but RFC 3986 unreserved.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

type RegistrySource = Arc<dyn Fn() -> Arc<Registry> + Send + Sync>;

/// The `external/idm` resource provider of the internal router.
pub struct RemoteHandler {
    registry: RegistrySource,
    metrics: Arc<Metrics>,
    /// Instance name → (its `group_key`, the pooled client built for it).
    clients: Mutex<HashMap<String, (u64, reqwest::Client)>>,
}

impl RemoteHandler {
    /// A handler over a source of registries (the gateway's live one, tests, tools).
    pub fn with_registry(
        registry: impl Fn() -> Arc<Registry> + Send + Sync + 'static,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            registry: Arc::new(registry),
            metrics,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The pooled client of `inst`, built on first use and whenever its settings changed.
    fn client(
        &self,
        inst: &RemoteInstance,
        registry: &Registry,
    ) -> Result<reqwest::Client, ResourceError> {
        let name = &inst.config.name;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((key, client)) = clients.get(name) {
            if *key == inst.group_key {
                return Ok(client.clone());
            }
        }
        let client = build_client(inst).map_err(|_| {
            ResourceError::internal(format!(
                "Cannot build the HTTP client for remote instance '{name}'"
            ))
        })?;
        // Forget clients of instances that are gone.
        clients.retain(|n, _| registry.get(n).is_some());
        clients.insert(name.clone(), (inst.group_key, client.clone()));
        Ok(client)
    }

    /// Sends `call` to `inst`'s first URL that is up, with one retry when a bearer token is
    /// rejected. A failed connect (nothing sent) moves on to the next URL, whatever the
    /// method; a GET or HEAD also moves on when the connection breaks before an answer.
    /// Every URL down: 503 at once (the proxy's circuit, shared).
    async fn execute(
        &self,
        inst: &RemoteInstance,
        client: &reqwest::Client,
        call: &Call,
        op: &Operation,
    ) -> Result<Response, ResourceError> {
        let cfg = &inst.config;
        let mut tried = 0u32;
        let mut failed: Option<ResourceError> = None;
        let txid = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .map_err(|_| ResourceError::internal("cannot form a transaction id"))?;
        let mut retried = false;
        loop {
            let Some(i) = inst.urls.pick(tried) else {
                return Err(
                    failed.unwrap_or_else(|| self.failure(cfg, UpstreamFailure::Unavailable))
                );
            };
            let url = format!("{}{}", inst.urls.url(i).base_url(), call.path_and_query);
            let (authorization, token) = match &inst.credentials {
                Credentials::Basic(value) => (value.clone(), None),
                Credentials::Bearer(source) => match source.token().await {
                    Ok(token) => (token.header.clone(), Some(token)),
                    Err(e) => {
                        self.count_error(cfg, "token");
                        return Err(ResourceError::bad_gateway(e.0));
                    }
                },
            };
            let mut builder = client
                .request(call.method.clone(), &url)
                .headers(call.headers.clone())
                .header(header::AUTHORIZATION, authorization)
                .header(TRANSACTION_ID, txid.clone());
            if let Some(body) = &call.body {
                builder = builder.body(body.clone());
            }
            let resp = match builder.send().await {
                Ok(resp) => {
                    inst.urls.mark_up(i);
                    resp
                }
                Err(e) => {
                    let (error, failure) = self.transport_error(cfg, &e);
                    if failure.url_is_down(e.is_connect()) {
                        inst.urls.mark_down(i);
                    }
                    let replayable = e.is_connect()
                        || (matches!(call.method, Method::GET | Method::HEAD)
                            && failure == UpstreamFailure::Broken);
                    tried |= super::url_bit(i);
                    if replayable && inst.urls.has_candidate(tried) {
                        inst.urls.count_failover();
                        failed = Some(error);
                        continue;
                    }
                    return Err(error);
                }
            };
            if resp.status() == http::StatusCode::UNAUTHORIZED {
                if let (Credentials::Bearer(source), Some(token)) = (&inst.credentials, &token) {
                    // The remote no longer accepts this token (revoked, key rotation).
                    source.invalidate(token);
                    if !retried {
                        retried = true;
                        continue;
                    }
                }
            }
            let status = resp.status().as_u16();
            let etag = resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(strip_quotes);
            let body = self.read_body(cfg, resp).await?;
            return map_response(op, &cfg.name, status, etag, &body);
        }
    }

    /// The whole body, at most [`MAX_RESPONSE_BYTES`].
    async fn read_body(
        &self,
        cfg: &InstanceConfig,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, ResourceError> {
        let hint = resp.content_length().unwrap_or(0) as usize;
        if hint > MAX_RESPONSE_BYTES {
            return Err(self.failure(cfg, UpstreamFailure::TooLarge));
        }
        let mut body = Vec::with_capacity(hint.min(1024 * 1024));
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(self.failure(cfg, UpstreamFailure::TooLarge));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(self.transport_error(cfg, &e).0),
            }
        }
    }

    /// The CREST error and the failure class of a failed exchange, counted and logged.
    fn transport_error(
        &self,
        cfg: &InstanceConfig,
        e: &reqwest::Error,
    ) -> (ResourceError, UpstreamFailure) {
        let failure = classify_transport(e);
        tracing::warn!(
            instance = %cfg.name,
            ?failure,
            error = %source_chain(e),
            "remote CREST request failed"
        );
        (self.failure(cfg, failure), failure)
    }

    /// The CREST error of `failure`, counted.
    fn failure(&self, cfg: &InstanceConfig, failure: UpstreamFailure) -> ResourceError {
        let (error, kind) = failure.describe(&cfg.name, cfg.connect_timeout, cfg.read_timeout);
        self.count_error(cfg, kind);
        error
    }

    fn count_error(&self, cfg: &InstanceConfig, kind: &str) {
        self.metrics
            .upstream_errors
            .with_label_values(&[&cfg.name, kind])
            .inc();
    }
}

#[async_trait::async_trait]
impl RequestHandler for RemoteHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let Some((name, path)) = rest.split_first() else {
            return Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            )));
        };
        let registry = (self.registry)();
        let inst = match registry.get(name) {
            Some(inst) if inst.config.enabled => inst.clone(),
            Some(_) => {
                return Err(ResourceError::not_found(format!(
                    "Remote instance '{name}' is disabled"
                )))
            }
            None => {
                return Err(ResourceError::not_found(format!(
                    "Remote instance '{name}' is not configured"
                )))
            }
        };
        let call = build_call(req, path)?;
        let client = self.client(&inst, &registry)?;
        let started = Instant::now();
        let result = self.execute(&inst, &client, &call, &req.op).await;
        if matches!(req.op, Operation::Query(_)) {
            self.metrics
                .remote_query_page
                .with_label_values(&[&inst.config.name])
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// A remote IDM's support of `in` is unconfirmed (it is IDM's own extension of CREST, and
    /// the filter travels in the URL): no, unless the instance's `queryFilterIn` says yes; the
    /// sync engine then falls back to `_id eq … or …`.
    fn supports(&self, capability: Capability, rest: &[String]) -> bool {
        let Some(name) = rest.first() else {
            return false;
        };
        let registry = (self.registry)();
        let Some(inst) = registry.get(name) else {
            return false;
        };
        match capability {
            Capability::InFilter => inst.config.query_filter_in,
        }
    }
}

/// The reqwest client of one instance: the gateway's builder (shared trust, no redirects,
/// no environment proxies), the instance's timeouts, pooled connections.
fn build_client(inst: &RemoteInstance) -> reqwest::Result<reqwest::Client> {
    let cfg = &inst.config;
    crate::tls::http_client_builder(&inst.trust)
        .connect_timeout(cfg.connect_timeout)
        .read_timeout(cfg.read_timeout)
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .build()
}

/// One HTTP request to a remote, without credentials and transaction id.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: Method,
    /// Relative to the instance's base URL: encoded path, then `?` and the query, if any.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
}

/// Maps a CREST request on `path` (the segments after the instance name) to the HTTP
/// request CREST's HTTP adapter turns back into the same request.
pub fn build_call(req: &Request, path: &[String]) -> Result<Call, ResourceError> {
    let mut segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let api_version = match &req.resource_version {
        Some(v) => HeaderValue::from_str(&format!("protocol=2.1,resource={v}"))
            .map_err(|_| ResourceError::bad_request("The resource version is not valid"))?,
        None => HeaderValue::from_static(API_VERSION),
    };
    headers.insert(HeaderName::from_static("accept-api-version"), api_version);
    headers.insert(
        HeaderName::from_static("x-requested-with"),
        HeaderValue::from_static("RemoteIDMProxy"),
    );

    let mut query = Query::default();
    let mut with_body = false;
    let method = match &req.op {
        Operation::Read { if_none_match } => {
            if let Some(rev) = if_none_match {
                headers.insert(header::IF_NONE_MATCH, quoted(rev)?);
            }
            Method::GET
        }
        Operation::Query(q) => {
            match &q.kind {
                QueryKind::Filter(f) => query.push("_queryFilter", f),
                QueryKind::Id(id) => query.push("_queryId", id),
                QueryKind::Expression(e) => query.push("_queryExpression", e),
            }
            if q.page_size > 0 {
                query.push("_pageSize", &q.page_size.to_string());
            }
            if let Some(cookie) = &q.cookie {
                query.push("_pagedResultsCookie", cookie);
            }
            if q.offset > 0 {
                query.push("_pagedResultsOffset", &q.offset.to_string());
            }
            if q.count_policy != CountPolicy::None {
                query.push("_totalPagedResultsPolicy", q.count_policy.as_str());
            }
            if !q.sort_keys.is_empty() {
                let keys: Vec<String> = q.sort_keys.iter().map(ToString::to_string).collect();
                query.push("_sortKeys", &keys.join(","));
            }
            Method::GET
        }
        Operation::Create { new_id: None } => {
            query.push("_action", "create");
            with_body = true;
            Method::POST
        }
        Operation::Create { new_id: Some(id) } => {
            segments.push(id);
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
            with_body = true;
            Method::PUT
        }
        Operation::Update { rev, upsert } => {
            match rev {
                Some(rev) => {
                    headers.insert(header::IF_MATCH, quoted(rev)?);
                }
                // Without If-Match, CREST's PUT creates when absent (upsert).
                None if !upsert => {
                    headers.insert(header::IF_MATCH, HeaderValue::from_static("*"));
                }
                None => {}
            }
            with_body = true;
            Method::PUT
        }
        Operation::Patch { rev } => {
            if let Some(rev) = rev {
                headers.insert(header::IF_MATCH, quoted(rev)?);
            }
            with_body = true;
            Method::PATCH
        }
        Operation::Delete { rev } => {
            if let Some(rev) = rev {
                headers.insert(header::IF_MATCH, quoted(rev)?);
            }
            Method::DELETE
        }
        Operation::Action { name } => {
            query.push("_action", name);
            with_body = true;
            Method::POST
        }
    };
    if !req.fields.is_empty() {
        query.push("_fields", &req.fields.join(","));
    }
    for (name, value) in req.params.iter() {
        if !GENERATED.iter().any(|g| g.eq_ignore_ascii_case(name)) {
            query.push(name, value);
        }
    }

    let mut path_and_query = String::with_capacity(64);
    for (i, seg) in segments.iter().enumerate() {
        let bare = seg.split(';').next().unwrap_or("");
        if seg.is_empty() || bare == "." || bare == ".." || seg.contains(['/', '\\']) {
            return Err(ResourceError::bad_request(
                "The request path contains a '.' or '..' segment (or an encoded '/' or '\\'), which is not allowed",
            ));
        }
        if i > 0 {
            path_and_query.push('/');
        }
        path_and_query.extend(utf8_percent_encode(seg, SEGMENT));
    }
    if !query.0.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&query.0);
    }
    let body = if with_body && !req.body.is_null() {
        Some(
            serde_json::to_vec(&req.body)
                .map_err(|_| ResourceError::bad_request("The request body cannot be sent"))?,
        )
    } else {
        None
    };
    Ok(Call {
        method,
        path_and_query,
        headers,
        body,
    })
}

/// A query string under construction, every name and value escaped.
#[derive(Default)]
struct Query(String);

impl Query {
    fn push(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.extend(utf8_percent_encode(name, QUERY));
        self.0.push('=');
        self.0.extend(utf8_percent_encode(value, QUERY));
    }
}

fn quoted(rev: &str) -> Result<HeaderValue, ResourceError> {
    HeaderValue::from_str(&format!("\"{rev}\"")).map_err(|_| {
        ResourceError::bad_request(format!("The revision '{rev}' is not a valid header value"))
    })
}

/// Maps a remote's answer to `op` back to the response a local handler would give.
/// `etag` is the unquoted `ETag`, when there was one.
pub fn map_response(
    op: &Operation,
    instance: &str,
    status: u16,
    etag: Option<String>,
    body: &[u8],
) -> Result<Response, ResourceError> {
    match status {
        304 => {
            let rev = etag
                .or_else(|| match op {
                    Operation::Read { if_none_match } => if_none_match.clone(),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(Response::NotModified { rev })
        }
        200..=299 => {
            if status == 204 || body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Response::Action(None));
            }
            let value: Value = serde_json::from_slice(body).map_err(|_| {
                ResourceError::bad_gateway(format!(
                    "Remote instance '{instance}' sent a response that is not JSON"
                ))
            })?;
            match op {
                Operation::Query(_) => {
                    if let Some(e) = query_failure(instance, &value) {
                        return Err(e);
                    }
                    query_response(value).ok_or_else(|| {
                        ResourceError::bad_gateway(format!(
                            "Remote instance '{instance}' sent a query response without a result list"
                        ))
                    })
                }
                Operation::Action { .. } => Ok(Response::Action(Some(value))),
                _ => Ok(match resource(value, etag) {
                    Ok(r) if status == 201 => Response::Created(r),
                    Ok(r) => Response::Resource(r),
                    Err(other) => Response::Json(status, other),
                }),
            }
        }
        400..=599 => Err(remote_error(instance, status, body)),
        _ => Err(ResourceError::bad_gateway(format!(
            "Remote instance '{instance}' answered with unexpected status {status}"
        ))),
    }
}

/// A resource from a JSON object with an `_id`; anything else is given back.
fn resource(value: Value, etag: Option<String>) -> Result<ResourceResponse, Value> {
    let Value::Object(mut obj) = value else {
        return Err(value);
    };
    let id = match obj.get("_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(Value::Object(obj)),
    };
    obj.shift_remove("_id");
    let rev = match obj.shift_remove("_rev") {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => etag,
    };
    Ok(ResourceResponse::new(id, rev, obj))
}

/// A query answer whose envelope carries an `error` member: CREST streams a query's results
/// and, when the query fails part-way, ends the envelope with the error instead of a clean
/// end. Its results are a fragment, never the answer: the whole page fails, with the
/// remote's code (502 when it gives none) and message.
fn query_failure(instance: &str, value: &Value) -> Option<ResourceError> {
    let error = value.get("error").filter(|e| !e.is_null())?;
    let code = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(502);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("no message");
    Some(ResourceError::new(
        code,
        format!("Remote instance '{instance}' failed part-way through a query page: {message}"),
    ))
}

/// The query envelope (`result`, `pagedResultsCookie`, `totalPagedResultsPolicy`,
/// `totalPagedResults`) as a page.
fn query_response(value: Value) -> Option<Response> {
    let Value::Object(mut obj) = value else {
        return None;
    };
    let Some(Value::Array(results)) = obj.shift_remove("result") else {
        return None;
    };
    let cookie = match obj.get("pagedResultsCookie") {
        Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
        _ => None,
    };
    let policy = match obj.get("totalPagedResultsPolicy").and_then(Value::as_str) {
        Some(p) if p.eq_ignore_ascii_case("EXACT") || p.eq_ignore_ascii_case("ESTIMATE") => {
            CountPolicy::Exact
        }
        _ => CountPolicy::None,
    };
    let total = obj
        .get("totalPagedResults")
        .and_then(Value::as_i64)
        .filter(|t| *t >= 0)
        .map(|t| t as u64);
    Some(Response::Query(QueryResponse {
        results,
        cookie,
        policy,
        total,
    }))
}

/// A remote's error: its status, its CREST message (prefixed with the instance) and detail.
fn remote_error(instance: &str, status: u16, body: &[u8]) -> ResourceError {
    let parsed: Option<Map<String, Value>> = match serde_json::from_slice(body) {
        Ok(Value::Object(obj)) => Some(obj),
        _ => None,
    };
    let message = parsed
        .as_ref()
        .and_then(|o| o.get("message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let message = match message {
        Some(m) => format!("Remote instance '{instance}': {m}"),
        None => format!(
            "Remote instance '{instance}' answered {status} {}",
            reason_phrase(status)
        ),
    };
    let mut err = ResourceError::new(status, message);
    if let Some(detail) = parsed
        .as_ref()
        .and_then(|o| o.get("detail"))
        .filter(|d| !d.is_null())
    {
        err = err.with_detail(detail.clone());
    }
    err
}

/// The failure class of a request that got no (complete) answer.
fn classify_transport(e: &reqwest::Error) -> UpstreamFailure {
    if e.is_timeout() {
        return if e.is_connect() {
            UpstreamFailure::ConnectTimeout
        } else {
            UpstreamFailure::ReadTimeout
        };
    }
    if !e.is_connect() {
        // hyper's parse errors ("invalid HTTP version parsed", "message head is too
        // large", ...): the remote's answer is not HTTP.
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let text = s.to_string();
            if (text.starts_with("invalid ") && text.ends_with(" parsed"))
                || text.starts_with("message head is too large")
            {
                return UpstreamFailure::Protocol;
            }
            source = s.source();
        }
        return UpstreamFailure::Broken;
    }
    let mut refused = false;
    let mut tls = false;
    let mut dns = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        let text = s.to_string().to_ascii_lowercase();
        tls |= text.contains("certificate") || text.contains("tls") || text.contains("handshake");
        dns |= text.contains("dns error") || text.contains("failed to lookup");
        source = s.source();
    }
    if refused {
        UpstreamFailure::Refused
    } else if tls {
        UpstreamFailure::Tls
    } else if dns {
        UpstreamFailure::Unresolved
    } else {
        UpstreamFailure::Unreachable
    }
}

/// The causes of `e`, without the URL reqwest puts at the top (no secret is in either,
/// but the causes are what an operator needs).
fn source_chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s.to_string());
        source = s.source();
    }
    if out.is_empty() {
        out = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connect error"
        } else {
            "request error"
        }
        .to_owned();
    }
    out
}

/// Pages through a query on any router path (local or `external/idm/…`), one page at a
/// time, following `pagedResultsCookie`:
///
/// ```ignore
/// let mut q = QueryParams::filter("true");
/// q.page_size = 500;
/// let req = Request::new(Operation::Query(Box::new(q)), "external/idm/dc2/managed/user", caller);
/// let mut pager = QueryPager::new(req)?;
/// while let Some(page) = pager.next_page(&router).await? {
///     for obj in page.results { /* … */ }
/// }
/// ```
///
/// Each call makes one request; only the current page is held. With `page_size` 0 the
/// query is answered in one page. Paging ends when a page has no cookie; a cookie equal
/// to the one just sent is a 500 (paging would never end).
pub struct QueryPager {
    request: Request,
    done: bool,
    pages: u64,
}

impl QueryPager {
    /// `request` must be a query; its cookie and offset, if any, say where to start.
    pub fn new(request: Request) -> Result<Self, ResourceError> {
        if !matches!(request.op, Operation::Query(_)) {
            return Err(ResourceError::bad_request(format!(
                "Paging needs a query request, not {}",
                request.op.name()
            )));
        }
        Ok(Self {
            request,
            done: false,
            pages: 0,
        })
    }

    /// Pages fetched so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The next page, or `None` after the last one. An error ends paging.
    pub async fn next_page(
        &mut self,
        router: &Router,
    ) -> Result<Option<QueryResponse>, ResourceError> {
        if self.done {
            return Ok(None);
        }
        let result = router.handle(&self.request).await;
        let page = match result {
            Ok(Response::Query(page)) => page,
            Ok(_) => {
                self.done = true;
                return Err(ResourceError::internal(format!(
                    "The query of 'openidm/{}' did not answer a query result",
                    self.request.path_string()
                )));
            }
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        self.pages += 1;
        let Operation::Query(q) = &mut self.request.op else {
            unreachable!("checked in new")
        };
        match (&page.cookie, q.page_size) {
            (Some(next), size) if size > 0 => {
                if q.cookie.as_ref() == Some(next) {
                    self.done = true;
                    return Err(ResourceError::internal(format!(
                        "The query of 'openidm/{}' returned the same paged results cookie twice; paging stopped",
                        self.request.path_string()
                    )));
                }
                q.cookie = Some(next.clone());
                q.offset = 0;
            }
            _ => self.done = true,
        }
        Ok(Some(page))
    }
}

/// Runs `request` (a query) page by page through `router`, handing each page to
/// `on_page`, which answers whether to go on. Returns the number of objects seen.
pub async fn query_pages<F, Fut>(
    router: &Router,
    request: Request,
    mut on_page: F,
) -> Result<u64, ResourceError>
where
    F: FnMut(QueryResponse) -> Fut,
    Fut: Future<Output = Result<bool, ResourceError>>,
{
    let mut pager = QueryPager::new(request)?;
    let mut seen = 0u64;
    while let Some(page) = pager.next_page(router).await? {
        seen += page.results.len() as u64;
        if !on_page(page).await? {
            break;
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests;
