//! `FakeTokenEndpoint`: an in-process OAuth2 token endpoint with switchable
//! behaviour, recording what clients send (auth header, form).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;

use super::upstream::RespBody;
use super::ServerRuntime;

/// How the fake endpoint answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenMode {
    /// 200 with a fresh `tok-<n>` Bearer token valid `ttl_secs`.
    Ok { ttl_secs: u64 },
    /// That status with an OAuth2-style JSON error body.
    Status(u16),
    /// Waits this long, then answers like `Ok { ttl_secs: 3600 }`.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Garbage,
}

/// One request received by the fake token endpoint.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub uri: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
    /// The body decoded as `application/x-www-form-urlencoded`.
    pub form: Vec<(String, String)>,
}

impl TokenRequest {
    pub fn form_value(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `(client_id, client_secret)` from `Authorization: Basic ...`, with the
    /// RFC 6749 §2.3.1 form-url-decoding of each part applied.
    pub fn basic_credentials(&self) -> Option<(String, String)> {
        decode_basic(self.authorization.as_deref()?)
    }

    /// Requested scopes (`scope` form field split on spaces).
    pub fn scopes(&self) -> Vec<String> {
        self.form_value("scope")
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Decodes an `Authorization: Basic` value into (user, password).
pub fn decode_basic(authorization: &str) -> Option<(String, String)> {
    let b64 = authorization
        .strip_prefix("Basic ")
        .or_else(|| authorization.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((dec(id), dec(secret)))
}

struct Shared {
    mode: Mutex<TokenMode>,
    requests: Mutex<Vec<TokenRequest>>,
    issued: Mutex<Vec<String>>,
}

pub struct FakeTokenEndpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _rt: ServerRuntime,
}

impl FakeTokenEndpoint {
    /// Starts in `Ok { ttl_secs: 3600 }` mode.
    pub fn start() -> Self {
        Self::start_with(TokenMode::Ok { ttl_secs: 3600 })
    }

    pub fn start_with(mode: TokenMode) -> Self {
        let rt = ServerRuntime::new("fake-token", 1);
        let (std_listener, addr) = super::bind_loopback();
        let listener = rt.tokio_listener(std_listener);
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            requests: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, shared.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            shared,
            _rt: rt,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/token`
    pub fn token_endpoint(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn set_mode(&self, mode: TokenMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn mode(&self) -> TokenMode {
        self.shared.mode.lock().unwrap().clone()
    }

    /// Requests received so far (any mode).
    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> Option<TokenRequest> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    pub fn last_authorization(&self) -> Option<String> {
        self.last_request().and_then(|r| r.authorization)
    }

    pub fn last_form(&self) -> Vec<(String, String)> {
        self.last_request().map(|r| r.form).unwrap_or_default()
    }

    /// Tokens issued so far, oldest first (`tok-1`, `tok-2`, ...).
    pub fn issued(&self) -> Vec<String> {
        self.shared.issued.lock().unwrap().clone()
    }

    pub fn last_token(&self) -> Option<String> {
        self.shared.issued.lock().unwrap().last().cloned()
    }

    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let request = TokenRequest {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string()),
        authorization: header_str(header::AUTHORIZATION),
        content_type: header_str(header::CONTENT_TYPE),
        form: url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect(),
        body,
    };
    let scope = request.form_value("scope").map(str::to_string);
    shared.requests.lock().unwrap().push(request);

    let mode = shared.mode.lock().unwrap().clone();
    let ttl = match mode {
        TokenMode::Ok { ttl_secs } => ttl_secs,
        TokenMode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            3600
        }
        TokenMode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error = if status.is_client_error() {
                "invalid_client"
            } else {
                "server_error"
            };
            return Ok(json_resp(
                status,
                json!({
                    "error": error,
                    "error_description": format!("fake token endpoint answers {code}"),
                }),
            ));
        }
        TokenMode::Garbage => {
            let mut resp =
                Response::new(Full::new(Bytes::from_static(b"<html>not json{{{")).boxed());
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return Ok(resp);
        }
    };

    let token = {
        let mut issued = shared.issued.lock().unwrap();
        let token = format!("tok-{}", issued.len() + 1);
        issued.push(token.clone());
        token
    };
    let mut body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
    });
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    Ok(json_resp(StatusCode::OK, body))
}

fn json_resp(status: StatusCode, body: serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
