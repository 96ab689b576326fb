//! `RecordingUpstream`: a real HTTP/1.1 + HTTP/2 server (hyper 1) that
//! records every request it receives and answers predictable responses.
//!
//! Responses, chosen by the *end* of the request path (so any prefix such as
//! `/openidm/` works):
//! - `.../big?n=<bytes>`: streams `n` bytes of [`super::big_pattern_byte`] in
//!   64 KiB chunks, `application/octet-stream`, with Content-Length.
//! - `.../status/<code>`: that status with a small JSON body.
//! - anything else: 200 `application/json` describing the request
//!   (`method`, `uri`, `version`, `headers`, `bodyLen`, `bodySha256`) plus
//!   `Set-Cookie: upstream=secret` and `X-Upstream: recording`.
//!
//! A request whose `Authorization` is `Bearer <t>` for a token registered
//! with [`RecordingUpstream::reject_bearer`] gets 401 instead.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use super::ServerRuntime;

pub(crate) type RespBody = BoxBody<Bytes, Infallible>;

/// Size of the chunks `/big` streams.
pub const BIG_CHUNK: usize = 64 * 1024;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and raw query exactly as received (never scheme/authority).
    pub uri: String,
    /// Authority from the request target (HTTP/2 `:authority`, or an
    /// absolute-form HTTP/1.1 target); `Host` is in `headers` for HTTP/1.1.
    pub authority: Option<String>,
    /// `"HTTP/1.0"`, `"HTTP/1.1"` or `"HTTP/2.0"`.
    pub version: String,
    /// Lowercased names, in received order per name, repeats preserved.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// Lowercase hex SHA-256 of the body bytes received.
    pub body_sha256: String,
    /// False when the body stream ended with an error (client aborted).
    pub body_complete: bool,
    /// Whether the request came over TLS.
    pub tls: bool,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.split_once('?').map_or(&self.uri, |(p, _)| p)
    }

    /// Raw query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.uri.split_once('?').map(|(_, q)| q)
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    rejected_bearers: Mutex<HashSet<String>>,
    delay: Mutex<Duration>,
    extra_headers: Mutex<Vec<(String, String)>>,
    connections: AtomicUsize,
}

pub struct RecordingUpstream {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    rt: ServerRuntime,
}

impl RecordingUpstream {
    /// Plain HTTP (HTTP/1.1 and h2c prior knowledge) on 127.0.0.1:<free>.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Plain HTTP on 127.0.0.1:`port` (a port a test reserved, e.g. one a gateway was
    /// already told about while nothing listened there).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(None, super::bind_loopback_port(port))
    }

    /// HTTPS with `config` (use [`super::TestPki::server_config`], which
    /// offers ALPN `h2` and `http/1.1`).
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        Self::start_with(tls, super::bind_loopback())
    }

    fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        (std_listener, addr): (std::net::TcpListener, SocketAddr),
    ) -> Self {
        let rt = ServerRuntime::new("recording-upstream", 2);
        let listener = rt.tokio_listener(std_listener);
        let shared = Arc::new(Shared::default());
        let is_tls = tls.is_some();
        let accept_shared = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                accept_shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = accept_shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, shared, true).await;
                            }
                        }
                        None => serve(stream, shared, false).await,
                    }
                });
            }
        });
        Self {
            addr,
            tls: is_tls,
            shared,
            rt,
        }
    }

    /// Dies like a killed process: the listener and every connection close at once
    /// (requests in flight get no answer). What was recorded stays readable.
    pub fn kill(&mut self) {
        self.rt.shutdown();
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` (or `https://...`), no trailing slash.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/openidm/`, the usual `instanceUrl`.
    pub fn url(&self) -> String {
        format!("{}/openidm/", self.base_url())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Answer 401 to any request carrying `Authorization: Bearer <token>`.
    pub fn reject_bearer(&self, token: &str) {
        self.shared
            .rejected_bearers
            .lock()
            .unwrap()
            .insert(token.to_string());
    }

    pub fn clear_rejections(&self) {
        self.shared.rejected_bearers.lock().unwrap().clear();
    }

    /// Delay every response (after the request body was read) by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Add a header to every subsequent response (repeats allowed).
    pub fn add_response_header(&self, name: &str, value: &str) {
        self.shared
            .extra_headers
            .lock()
            .unwrap()
            .push((name.to_string(), value.to_string()));
    }

    /// Waits until at least `n` requests were recorded.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        super::eventually(timeout, || async { self.count() >= n }).await
    }
}

async fn serve<S>(stream: S, shared: Arc<Shared>, tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(req, shared.clone(), tls));
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    tls: bool,
) -> Result<Response<RespBody>, Infallible> {
    let (parts, mut body) = req.into_parts();

    let mut hasher = Sha256::new();
    let mut body_len = 0u64;
    let mut body_complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    body_len += data.len() as u64;
                    hasher.update(&data);
                }
            }
            Err(_) => {
                body_complete = false;
                break;
            }
        }
    }

    let rec = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        ),
        authority: parts.uri.authority().map(|a| a.to_string()),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
        body_sha256: super::hex(&hasher.finalize()),
        body_complete,
        tls,
    };
    shared.requests.lock().unwrap().push(rec.clone());

    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut resp = respond(&rec, &shared);
    for (n, v) in shared.extra_headers.lock().unwrap().iter() {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    Ok(resp)
}

fn json_response(status: StatusCode, body: &Value) -> Response<RespBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn respond(rec: &Recorded, shared: &Shared) -> Response<RespBody> {
    let rejected = shared.rejected_bearers.lock().unwrap();
    let is_rejected = rec.header_all("authorization").iter().any(|v| {
        v.strip_prefix("Bearer ")
            .is_some_and(|t| rejected.contains(t))
    });
    drop(rejected);
    if is_rejected {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"code": 401, "reason": "Unauthorized", "message": "Access Denied"}),
        );
    }

    let path = rec.path().trim_end_matches('/');
    let mut segments = path.rsplit('/');
    let last = segments.next().unwrap_or("");
    let before_last = segments.next().unwrap_or("");

    if last == "big" {
        let n = rec
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("n="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut resp = Response::new(PatternBody::new(n).boxed());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        resp.headers_mut()
            .insert("x-upstream", HeaderValue::from_static("recording"));
        return resp;
    }

    // `/redirect?to=<url>`: 302 to the (percent-decoded) `to`.
    if last == "redirect" {
        let to = rec
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("to="))
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::new()).boxed());
        *resp.status_mut() = StatusCode::FOUND;
        if let Ok(v) = HeaderValue::from_str(&to) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }

    if before_last == "status" {
        if let Some(status) = last
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            let code = status.as_u16();
            if status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
                || status.is_informational()
            {
                let mut resp = Response::new(Full::new(Bytes::new()).boxed());
                *resp.status_mut() = status;
                resp.headers_mut()
                    .insert("x-upstream", HeaderValue::from_static("recording"));
                return resp;
            }
            let mut resp = json_response(
                status,
                &json!({
                    "code": code,
                    "reason": status.canonical_reason().unwrap_or("Unknown"),
                    "message": format!("status {code} from recording upstream"),
                }),
            );
            resp.headers_mut()
                .insert("x-upstream", HeaderValue::from_static("recording"));
            return resp;
        }
    }

    let mut headers = Map::new();
    for (n, v) in &rec.headers {
        headers
            .entry(n.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .expect("array")
            .push(Value::String(v.clone()));
    }
    let mut resp = json_response(
        StatusCode::OK,
        &json!({
            "method": rec.method,
            "uri": rec.uri,
            "version": rec.version,
            "headers": headers,
            "bodyLen": rec.body_len,
            "bodySha256": rec.body_sha256,
        }),
    );
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("upstream=secret"),
    );
    resp.headers_mut()
        .insert("x-upstream", HeaderValue::from_static("recording"));
    resp
}

/// Streams `len` bytes of the `/big` pattern in [`BIG_CHUNK`] frames without
/// holding more than one chunk in memory.
struct PatternBody {
    offset: u64,
    len: u64,
}

impl PatternBody {
    fn new(len: u64) -> Self {
        Self { offset: 0, len }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let remaining = self.len - self.offset;
        if remaining == 0 {
            return Poll::Ready(None);
        }
        let n = remaining.min(BIG_CHUNK as u64);
        let start = self.offset;
        let chunk: Vec<u8> = (start..start + n).map(super::big_pattern_byte).collect();
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.offset)
    }
}
