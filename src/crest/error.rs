//! `ResourceError`: every error the gateway itself produces, rendered in one place as
//! CREST JSON `{"code","reason","message"[,"detail"]}` (crest-wire.md §1).

use serde_json::{json, Map, Value};

/// A CREST error: HTTP status, a message that names the bad input, optional detail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {}: {message}", reason_phrase(*.code))]
pub struct ResourceError {
    pub code: u16,
    pub message: String,
    pub detail: Option<Value>,
}

impl ResourceError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Access Denied")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(501, message)
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(504, message)
    }

    /// The CREST JSON body, keys in CREST order: code, reason, message, detail.
    pub fn to_json(&self) -> Value {
        let mut body = Map::with_capacity(4);
        body.insert("code".into(), json!(self.code));
        body.insert("reason".into(), json!(reason_phrase(self.code)));
        let message = if self.message.is_empty() {
            reason_phrase(self.code)
        } else {
            self.message.as_str()
        };
        body.insert("message".into(), json!(message));
        if let Some(detail) = &self.detail {
            body.insert("detail".into(), detail.clone());
        }
        Value::Object(body)
    }

    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).unwrap_or_default()
    }
}

/// CREST reason phrases (`ResourceException.reason(code)`), exact strings.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Time-out",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        415 => "Unsupported Media Type",
        416 => "Requested range not satisfiable",
        417 => "Expectation Failed",
        428 => "Precondition Required",
        // Not one of CREST's: the gateway's edge answers it (headers too large), as Jetty does.
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Time-out",
        505 => "HTTP Version not supported",
        _ => "Resource Exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_crest_keys_in_order() {
        let e = ResourceError::not_found("Instance 'x' not found");
        let text = String::from_utf8(e.to_body()).unwrap();
        assert_eq!(
            text,
            r#"{"code":404,"reason":"Not Found","message":"Instance 'x' not found"}"#
        );
    }

    #[test]
    fn empty_message_falls_back_to_reason() {
        let e = ResourceError::new(412, "");
        assert_eq!(e.to_json()["message"], "Precondition Failed");
    }

    #[test]
    fn detail_is_last_and_optional() {
        let e = ResourceError::bad_request("bad").with_detail(json!({"a":1}));
        let text = String::from_utf8(e.to_body()).unwrap();
        assert!(text.ends_with(r#""detail":{"a":1}}"#), "{text}");
        assert_eq!(reason_phrase(418), "Resource Exception");
    }
}
