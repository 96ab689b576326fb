//! Resources answered by the gateway itself (everything under `/openidm` that is not a
//! remote instance): info, config, metrics. Handlers take a plain [`LocalRequest`] and return
//! a [`LocalResponse`] or a [`ResourceError`]; the HTTP edge writes either out. The CREST
//! router of the service layer replaces this dispatcher as it grows.

mod config;
mod info;

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;

use crate::auth::Caller;
use crate::crest::ResourceError;
use crate::state::Gateway;

pub use info::ping_body;

/// Largest request body a local resource accepts.
pub const MAX_LOCAL_BODY: usize = 1024 * 1024;

pub struct LocalRequest<'a> {
    pub method: &'a http::Method,
    /// Decoded path segments after `openidm`.
    pub segments: &'a [Cow<'a, str>],
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub caller: &'a Caller,
    pub body: Bytes,
}

impl LocalRequest<'_> {
    /// A query parameter, names compared case-insensitively as CREST does.
    pub fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        url::form_urlencoded::parse(self.query?.as_bytes())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn pretty(&self) -> bool {
        self.param("_prettyPrint").is_some_and(|v| v == "true")
    }

    /// The body as a JSON object, with CREST's errors for anything else.
    pub fn json_object(&self) -> Result<serde_json::Map<String, Value>, ResourceError> {
        if let Some(ct) = self.content_type {
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !mime.eq_ignore_ascii_case("application/json") {
                return Err(ResourceError::bad_request(format!(
                    "The request could not be processed because it specified the content-type '{ct}' when only the content-type 'application/json' and 'multipart/form-data' are supported"
                )));
            }
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(ResourceError::bad_request(
                "The request body must be a JSON object",
            )),
            Err(e) => Err(ResourceError::bad_request(format!(
                "The request body is not valid JSON: {e}"
            ))),
        }
    }
}

pub struct LocalResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub location: Option<String>,
}

impl LocalResponse {
    pub fn json(status: u16, value: &Value, pretty: bool) -> Self {
        let body = if pretty {
            serde_json::to_vec_pretty(value)
        } else {
            serde_json::to_vec(value)
        }
        .unwrap_or_default();
        Self {
            status,
            content_type: "application/json;charset=utf-8",
            body,
            location: None,
        }
    }
}

/// Dispatches a local request to its resource.
pub fn handle(gw: &Gateway, req: &LocalRequest<'_>) -> Result<LocalResponse, ResourceError> {
    let first = req.segments.first().map(|s| s.as_ref());
    match first {
        Some("info") => info::handle(req),
        Some("config") => {
            require_admin(req.caller)?;
            config::handle(gw, req)
        }
        Some("metrics") if req.segments.len() == 2 && req.segments[1] == "prometheus" => {
            if !(req.caller.is_admin() || req.caller.roles.iter().any(|r| r.ends_with("/metrics")))
            {
                return Err(ResourceError::forbidden("Access denied"));
            }
            if req.method != http::Method::GET {
                return Err(not_supported(req));
            }
            Ok(LocalResponse {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: gw.metrics.render(),
                location: None,
            })
        }
        _ => Err(ResourceError::not_found(format!(
            "Resource 'openidm/{}' not found",
            req.segments.join("/")
        ))),
    }
}

fn require_admin(caller: &Caller) -> Result<(), ResourceError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ResourceError::forbidden("Access denied"))
    }
}

pub(crate) fn not_supported(req: &LocalRequest<'_>) -> ResourceError {
    ResourceError::not_supported(format!(
        "Operation {} is not supported on resource 'openidm/{}'",
        req.method,
        req.segments.join("/")
    ))
}
