//! `external/rest?_action=call` (and `openidm.action("external/rest", "call", …)`): one
//! HTTP request to another service, answered as IDM answers it.
//!
//! The call names `url`, `method`, optional `headers` (name → value), `contentType` (when
//! no `Content-Type` header is given; default `application/json; charset=utf-8`), `body`
//! (a string; `base64: true` when it is base64 of the bytes to send), `authenticate`
//! (`{"type":"basic","user","password"}` or `{"type":"bearer","token"}`) and `forceWrap`.
//! A JSON answer is returned as is; any other answer, or every answer with `forceWrap`,
//! is wrapped as `{"headers": {name: [values]}, "code", "body"}` (`"base64": true` when
//! the body is not text). A 4xx/5xx answer is a CREST error with that status and the
//! wrapped answer as `detail`.
//!
//! `external.rest.json`: `connectionTimeout` and `socketTimeout` (default 10 s each),
//! `proxy.proxyUri`/`userName`/`password`; the gateway extra `allow` (see
//! [`super::ssrf`]). TLS trusts the platform roots plus `certs/*.pem`, host names always
//! verified. The host is resolved before the call and the connection goes to the checked
//! addresses only (no second DNS answer can move it); redirects are followed only to the
//! same scheme, host and port. Neither headers nor bodies are ever logged.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use url::{Host, Url};

use super::ssrf::{restricted, AllowList};
use super::{show, substituted, LastGood, REST_CONFIG};
use crate::config::duration::from_value as duration;
use crate::config::{Secret, Trust};
use crate::crest::{reason_phrase, Request, RequestHandler, ResourceError, Response};
use crate::state::Gateway;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// The largest answer read (gateway limit): a call is for API answers, not downloads.
const MAX_ANSWER: usize = 32 * 1024 * 1024;
const MAX_REDIRECTS: usize = 10;

/// `external.rest.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct RestConfig {
    pub connection_timeout: Duration,
    pub socket_timeout: Duration,
    pub proxy: Option<ProxyConfig>,
    pub allow: AllowList,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub uri: String,
    pub user_name: String,
    pub password: Secret,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            connection_timeout: DEFAULT_TIMEOUT,
            socket_timeout: DEFAULT_TIMEOUT,
            proxy: None,
            allow: AllowList::default(),
        }
    }
}

impl RestConfig {
    /// Parses the file. Settings IDM has and the gateway does not use (`reuseConnections`,
    /// `retryRequests`, `maxConnections`, `tlsVersion`, `hostnameVerifier`) are accepted
    /// and ignored, unresolved `&{…}` references in them included.
    pub fn parse(raw: &Value) -> Result<Self, Vec<String>> {
        let mut raw = raw.clone();
        if let Some(o) = raw.as_object_mut() {
            for ignored in [
                "reuseConnections",
                "retryRequests",
                "maxConnections",
                "tlsVersion",
                "hostnameVerifier",
            ] {
                o.remove(ignored);
            }
        }
        let doc = substituted(&raw)?;
        let Some(o) = doc.as_object() else {
            return Err(vec!["the file must contain a JSON object".into()]);
        };
        let mut problems = Vec::new();
        let mut c = RestConfig::default();
        let mut timeout = |key: &str, slot: &mut Duration| {
            if let Some(v) = o.get(key) {
                match duration(v, key) {
                    Ok(d) if !d.is_zero() => *slot = d,
                    Ok(_) => problems.push(format!("{key}: must be more than zero")),
                    Err(p) => problems.push(p),
                }
            }
        };
        timeout("connectionTimeout", &mut c.connection_timeout);
        timeout("socketTimeout", &mut c.socket_timeout);
        match o.get("proxy") {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                let uri = text("proxyUri");
                if !uri.is_empty() {
                    if let Err(e) = reqwest::Proxy::all(&uri) {
                        problems.push(format!("proxy/proxyUri: not a proxy URL: {e}"));
                    }
                    c.proxy = Some(ProxyConfig {
                        uri,
                        user_name: text("userName"),
                        password: Secret::new(text("password")),
                    });
                }
            }
            Some(_) => problems.push("proxy: must be an object".into()),
        }
        match o.get("allow") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                let mut entries = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => entries.push(s.to_owned()),
                        None => problems.push(format!("allow/{i}: must be a string")),
                    }
                }
                match AllowList::parse(&entries) {
                    Ok(list) => c.allow = list,
                    Err(p) => problems.extend(p),
                }
            }
            Some(_) => problems.push("allow: must be a list of strings".into()),
        }
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(problems)
        }
    }
}

/// How the call authenticates to the remote service.
enum CallAuth {
    Basic { user: String, password: String },
    Bearer(String),
}

/// One parsed `call`.
struct Call {
    url: Url,
    method: reqwest::Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Vec<u8>>,
    force_wrap: bool,
    auth: Option<CallAuth>,
}

impl Call {
    fn parse(body: &Map<String, Value>) -> Result<Self, ResourceError> {
        fn bad(m: impl Into<String>) -> ResourceError {
            ResourceError::bad_request(m)
        }
        let text = |k: &str| -> Result<Option<&str>, ResourceError> {
            match body.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(bad(format!("external/rest: '{k}' must be a string"))),
            }
        };
        let flag = |k: &str| -> Result<bool, ResourceError> {
            match body.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
                Some(_) => Err(bad(format!("external/rest: '{k}' must be true or false"))),
            }
        };
        let url_text = text("url")?.ok_or_else(|| bad("external/rest: 'url' is required"))?;
        let url = Url::parse(url_text)
            .map_err(|e| bad(format!("external/rest: 'url' is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad(
                "external/rest: 'url' must be an http or https URL with a host",
            ));
        }
        let method_text = text("method")?.unwrap_or("GET").to_ascii_uppercase();
        let method = match method_text.as_str() {
            "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" => {
                reqwest::Method::from_bytes(method_text.as_bytes()).map_err(|e| bad(e.to_string()))?
            }
            other => {
                return Err(bad(format!(
                    "external/rest: method '{other}' is not one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS"
                )))
            }
        };
        let mut headers = Vec::new();
        match body.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) => {
                for (name, value) in h {
                    let values: Vec<&str> = match value {
                        Value::String(s) => vec![s],
                        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                        _ => Vec::new(),
                    };
                    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        bad(format!("external/rest: '{name}' is not a header name"))
                    })?;
                    if values.is_empty() {
                        return Err(bad(format!(
                            "external/rest: header '{name}' must be a string"
                        )));
                    }
                    for v in values {
                        let v = HeaderValue::from_str(v).map_err(|_| {
                            bad(format!(
                                "external/rest: the value of header '{name}' is not valid"
                            ))
                        })?;
                        headers.push((header.clone(), v));
                    }
                }
            }
            Some(_) => return Err(bad("external/rest: 'headers' must be an object")),
        }
        let payload = match body.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone().into_bytes()),
            // Lenient: a JSON body given as JSON is sent as its text.
            Some(other) => Some(other.to_string().into_bytes()),
        };
        let payload = match (payload, flag("base64")?) {
            (Some(b), true) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(&b)
                    .map_err(|_| bad("external/rest: 'body' is not base64 (base64 is true)"))?,
            ),
            (p, _) => p,
        };
        if payload.is_some() && !headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
            let ct = text("contentType")?.unwrap_or(DEFAULT_CONTENT_TYPE);
            let ct = HeaderValue::from_str(ct)
                .map_err(|_| bad("external/rest: 'contentType' is not a valid media type"))?;
            headers.push((http::header::CONTENT_TYPE, ct));
        }
        let auth = match body.get("authenticate") {
            None | Some(Value::Null) => None,
            Some(Value::Object(a)) => {
                let field = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                match field("type").to_ascii_lowercase().as_str() {
                    "basic" => Some(CallAuth::Basic {
                        user: field("user"),
                        password: field("password"),
                    }),
                    "bearer" => Some(CallAuth::Bearer(field("token"))),
                    _ => {
                        return Err(bad(
                            "external/rest: 'authenticate/type' must be basic or bearer",
                        ))
                    }
                }
            }
            Some(_) => return Err(bad("external/rest: 'authenticate' must be an object")),
        };
        Ok(Self {
            url,
            method,
            headers,
            body: payload,
            force_wrap: flag("forceWrap")?,
            auth,
        })
    }

    /// `scheme://host:port` of the URL: what messages name (never path, query or user).
    fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

/// The `external/rest` handler.
pub struct RestHandler {
    gw: Arc<Gateway>,
    config: LastGood<RestConfig>,
    /// Clients of recent calls, so connections are reused (IDM's `reuseConnections`). A
    /// client is pinned to the addresses checked for it: the key holds them with the
    /// origin, the config and the trust, and the host is resolved and checked on every
    /// call before its client is looked up.
    clients: Mutex<HashMap<ClientKey, (Arc<RestConfig>, reqwest::Client)>>,
    /// The config without `external.rest.json` (one instance: part of the client key).
    defaults: Arc<RestConfig>,
}

/// Config identity (the entry holds the config, so the address is not reused while it
/// lives), trust fingerprint, origin, checked addresses.
type ClientKey = (usize, u64, String, Vec<SocketAddr>);

/// How many clients are kept (then the cache starts over).
const MAX_CLIENTS: usize = 64;

impl RestHandler {
    pub fn new(gw: Arc<Gateway>) -> Self {
        Self {
            gw,
            config: LastGood::default(),
            clients: Mutex::new(HashMap::new()),
            defaults: Arc::new(RestConfig::default()),
        }
    }

    async fn call(&self, call: Call) -> Result<Value, ResourceError> {
        let live = self.gw.live();
        let conf = self
            .config
            .get(&live.conf, REST_CONFIG, RestConfig::parse)
            .unwrap_or_else(|| self.defaults.clone());
        let origin = call.origin();
        let port = call.url.port_or_known_default().unwrap_or(80);
        let addrs = checked_addresses(&call.url, port, &conf).await?;
        let key: ClientKey = (
            Arc::as_ptr(&conf) as usize,
            live.conf.trust.fingerprint,
            origin.clone(),
            addrs.clone(),
        );
        let cached = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(c, _)| Arc::ptr_eq(c, &conf))
            .map(|(_, client)| client.clone());
        let client = match cached {
            Some(c) => c,
            None => {
                let c = self.client(&conf, &live.conf.trust, &call, &addrs)?;
                let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
                if clients.len() >= MAX_CLIENTS {
                    clients.clear();
                }
                clients.insert(key, (conf.clone(), c.clone()));
                c
            }
        };
        let mut request = client.request(call.method.clone(), call.url.clone());
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        match &call.auth {
            Some(CallAuth::Basic { user, password }) => {
                request = request.basic_auth(user, Some(password));
            }
            Some(CallAuth::Bearer(token)) => request = request.bearer_auth(token),
            None => {}
        }
        if let Some(body) = call.body {
            request = request.body(body);
        }
        let failed = |e: reqwest::Error| transport_error(&origin, &conf, e);
        let mut answer = request.send().await.map_err(failed)?;
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = answer.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(ResourceError::bad_gateway(format!(
                    "external/rest: the answer of {origin} is larger than {} MiB",
                    MAX_ANSWER >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let parsed = is_json(&content_type)
            .then(|| serde_json::from_slice::<Value>(&body).ok())
            .flatten();
        if (200..300).contains(&status) && !call.force_wrap {
            if let Some(v) = parsed {
                return Ok(v);
            }
        }
        let wrapped = wrap(status, &headers, &content_type, &body);
        if status >= 400 {
            let message = parsed
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{status} {} from {origin}", reason_phrase(status)));
            return Err(ResourceError::new(status, message).with_detail(wrapped));
        }
        Ok(wrapped)
    }

    /// A client for this one call: pinned to the checked addresses, no other name
    /// resolution, redirects only to the same origin.
    fn client(
        &self,
        conf: &RestConfig,
        trust: &Trust,
        call: &Call,
        addrs: &[SocketAddr],
    ) -> Result<reqwest::Client, ResourceError> {
        let origin = call.url.origin();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() < MAX_REDIRECTS && attempt.url().origin() == origin {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        // The gateway's builder (shared trust, no environment proxies), with this call's
        // timeouts, redirect policy and configured proxy.
        let mut builder = crate::tls::http_client_builder(trust)
            .connect_timeout(conf.connection_timeout)
            .read_timeout(conf.socket_timeout)
            .redirect(redirect);
        if let Some(Host::Domain(name)) = call.url.host() {
            builder = builder.resolve_to_addrs(name, addrs);
        }
        builder = match &conf.proxy {
            Some(p) => {
                let mut proxy = reqwest::Proxy::all(&p.uri).map_err(|_| {
                    ResourceError::internal("external/rest: proxy/proxyUri is not a proxy URL")
                })?;
                if !p.user_name.is_empty() {
                    proxy = proxy.basic_auth(&p.user_name, p.password.expose());
                }
                builder.proxy(proxy)
            }
            None => builder.dns_resolver(Arc::new(NoResolution)),
        };
        builder
            .build()
            .map_err(|e| ResourceError::internal(format!("external/rest: {}", root_cause(&e))))
    }
}

/// The resolver of call clients: every name the call may reach is pinned, so any other
/// lookup is refused.
struct NoResolution;

impl reqwest::dns::Resolve for NoResolution {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("'{}' was not checked for this call", name.as_str());
        Box::pin(async move { Err(message.into()) })
    }
}

/// The addresses of the URL's host that the call may connect to: all of them when the
/// host is allowed by name, else those that are public or allowed by address. A 403
/// saying why when none is left.
async fn checked_addresses(
    url: &Url,
    port: u16,
    conf: &RestConfig,
) -> Result<Vec<SocketAddr>, ResourceError> {
    let (name, addrs): (String, Vec<IpAddr>) = match url.host() {
        Some(Host::Ipv4(ip)) => (ip.to_string(), vec![IpAddr::V4(ip)]),
        Some(Host::Ipv6(ip)) => (format!("[{ip}]"), vec![IpAddr::V6(ip)]),
        Some(Host::Domain(d)) => {
            let lookup = tokio::net::lookup_host((d, port));
            let found = tokio::time::timeout(conf.connection_timeout, lookup)
                .await
                .map_err(|_| {
                    ResourceError::gateway_timeout(format!(
                        "external/rest: resolving '{d}' took longer than connectionTimeout ({})",
                        show(conf.connection_timeout)
                    ))
                })?
                .map_err(|e| {
                    ResourceError::bad_gateway(format!("external/rest: cannot resolve '{d}': {e}"))
                })?;
            let mut ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
            ips.dedup();
            if conf.allow.allows_host(d, port) {
                return Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect());
            }
            (format!("'{d}'"), ips)
        }
        None => {
            return Err(ResourceError::bad_request(
                "external/rest: 'url' has no host",
            ))
        }
    };
    let mut refused = BTreeMap::new();
    let mut allowed = Vec::new();
    for ip in addrs {
        match restricted(ip) {
            Some(why) if !conf.allow.allows_ip(ip) => {
                refused.insert(ip, why);
            }
            _ => allowed.push(SocketAddr::new(ip, port)),
        }
    }
    if allowed.is_empty() {
        let reasons: Vec<String> = refused
            .iter()
            .map(|(ip, why)| format!("{ip} is a {why} address"))
            .collect();
        return Err(ResourceError::forbidden(format!(
            "external/rest: calls to {name} are not allowed: {}; list it under \"allow\" in external.rest.json to allow it",
            if reasons.is_empty() {
                "it has no address".to_owned()
            } else {
                reasons.join(", ")
            }
        )));
    }
    Ok(allowed)
}

/// The CREST error of a call that got no answer; never the URL (its query may hold a
/// secret), never a header.
fn transport_error(origin: &str, conf: &RestConfig, e: reqwest::Error) -> ResourceError {
    let cause = root_cause(&e);
    if e.is_timeout() {
        let (what, limit) = if e.is_connect() {
            ("connect to", ("connectionTimeout", conf.connection_timeout))
        } else {
            ("get an answer from", ("socketTimeout", conf.socket_timeout))
        };
        return ResourceError::gateway_timeout(format!(
            "external/rest: could not {what} {origin} within {} ({})",
            limit.0,
            show(limit.1)
        ));
    }
    if e.is_connect() {
        return ResourceError::bad_gateway(format!(
            "external/rest: cannot connect to {origin}: {cause}"
        ));
    }
    ResourceError::bad_gateway(format!(
        "external/rest: the call to {origin} failed: {cause}"
    ))
}

/// The innermost message of an error chain (reqwest's own message names the URL).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    mime == "application/json" || mime.ends_with("+json")
}

fn is_text(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    mime.starts_with("text/")
        || mime.ends_with("json")
        || mime.ends_with("xml")
        || mime.ends_with("javascript")
        || mime == "application/x-www-form-urlencoded"
        || mime.is_empty()
}

/// IDM's wrapped answer: `{"headers": {Name: [values]}, "code", "body"[, "base64": true]}`.
fn wrap(status: u16, headers: &http::HeaderMap, content_type: &str, body: &[u8]) -> Value {
    let mut names: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let values = names
            .entry(title_case(name.as_str()))
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = values {
            list.push(Value::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    let mut out = json!({"headers": names, "code": status});
    let text = is_text(content_type)
        .then(|| std::str::from_utf8(body).ok())
        .flatten();
    match text {
        Some(t) => out["body"] = Value::String(t.to_owned()),
        None => {
            out["body"] = Value::String(base64::engine::general_purpose::STANDARD.encode(body));
            out["base64"] = Value::Bool(true);
        }
    }
    out
}

/// `content-type` → `Content-Type` (HTTP/1.1 and HTTP/2 give lower-case names).
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[async_trait::async_trait]
impl RequestHandler for RestHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let name = req.service_action(rest)?;
        if name != "call" {
            return Err(ResourceError::bad_request(format!(
                "Action {name} is not supported by openidm/external/rest (call)"
            )));
        }
        let call = Call::parse(req.body_object()?)?;
        Ok(Response::Action(Some(self.call(call).await?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idm_sample_file_parses() {
        let c = RestConfig::parse(&json!({
            "socketTimeout": "10 s",
            "connectionTimeout": "10 s",
            "reuseConnections": true,
            "retryRequests": true,
            "maxConnections": 64,
            "tlsVersion": "&{openidm.external.rest.tls.version}",
            "hostnameVerifier": "&{openidm.external.rest.hostnameVerifier}",
            "proxy": {"proxyUri": "", "userName": "", "password": ""}
        }))
        .unwrap();
        assert_eq!(c, RestConfig::default());
    }

    #[test]
    fn bad_files_name_their_problems() {
        let problems = RestConfig::parse(&json!({
            "socketTimeout": "soon",
            "connectionTimeout": 0,
            "allow": ["10.0.0.0/40", 7],
            "proxy": "x"
        }))
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("socketTimeout:")));
        assert!(problems.iter().any(|p| p.starts_with("allow/0:")));
    }

    #[test]
    fn answers_are_wrapped_as_idm_does() {
        let mut h = http::HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        let w = wrap(203, &h, "text/plain", b"hello");
        assert_eq!(
            w,
            json!({"headers": {"Content-Type": ["text/plain"], "Set-Cookie": ["a=1", "b=2"]},
                   "code": 203, "body": "hello"})
        );
        let w = wrap(200, &http::HeaderMap::new(), "image/png", &[0xff, 0, 1]);
        assert_eq!(w["body"], "/wAB");
        assert_eq!(w["base64"], true);
    }

    #[test]
    fn calls_are_checked() {
        let parse = |v: Value| Call::parse(v.as_object().unwrap()).map(|_| ());
        assert!(parse(json!({"url": "http://a.example/x", "method": "get"})).is_ok());
        for (bad, says) in [
            (json!({"method": "GET"}), "'url' is required"),
            (json!({"url": "ftp://a.example/"}), "http or https"),
            (
                json!({"url": "http://a.example", "method": "BREW"}),
                "method 'BREW'",
            ),
            (
                json!({"url": "http://a.example", "headers": []}),
                "'headers' must be",
            ),
            (
                json!({"url": "http://a.example", "body": "%%", "base64": true}),
                "not base64",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }
}
