//! Proxy failures → CREST errors naming the instance, and requests pingora refused before
//! the gateway saw them → CREST errors, in one place.

use std::time::Duration;

use pingora::{Error, ErrorSource, ErrorType};

use crate::crest::ResourceError;
use crate::remote::UpstreamFailure;

/// The CREST error for a failed proxy attempt and a short kind for the metric label, or
/// `None` when the caller is gone (nothing to answer). The timeouts are the instance's.
pub fn classify_upstream_error(
    e: &Error,
    instance: &str,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Option<(ResourceError, &'static str)> {
    if matches!(e.esource(), ErrorSource::Downstream) {
        return match e.etype() {
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => None,
            _ => Some((body_read_error(e), "downstream")),
        };
    }
    if let ErrorType::HTTPStatus(code) = e.etype() {
        return Some((ResourceError::new(*code, ""), "status"));
    }
    Some(upstream_failure(e.etype()).describe(instance, connect_timeout, read_timeout))
}

/// The failure class of a pingora error on the way to or from a remote instance.
pub fn upstream_failure(etype: &ErrorType) -> UpstreamFailure {
    use ErrorType::*;
    match etype {
        ConnectRefused => UpstreamFailure::Refused,
        ConnectTimedout => UpstreamFailure::ConnectTimeout,
        ReadTimedout | WriteTimedout => UpstreamFailure::ReadTimeout,
        TLSHandshakeTimedout => UpstreamFailure::TlsTimeout,
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup => {
            UpstreamFailure::Tls
        }
        ConnectNoRoute | BindError | SocketError | ConnectError | ConnectProxyFailure => {
            UpstreamFailure::Unreachable
        }
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => {
            UpstreamFailure::Protocol
        }
        _ => UpstreamFailure::Broken,
    }
}

/// What pingora says (its error context) when it refuses a request's header, and what the
/// caller is told. pingora's contexts are matched, never echoed: some carry the request's
/// bytes, which may hold credentials.
const REFUSED_HEADERS: [(&str, u16, &str); 9] = [
    (
        "Request header larger than",
        431,
        "The request's header section is too large",
    ),
    (
        "HTTP/1.0 requests cannot include Transfer-Encoding",
        400,
        "An HTTP/1.0 request cannot carry a Transfer-Encoding header",
    ),
    (
        "non-chunked final Transfer-Encoding",
        400,
        "The request's last transfer coding must be chunked",
    ),
    (
        "invalid Transfer-Encoding",
        400,
        "The request's Transfer-Encoding header is invalid",
    ),
    (
        "invalid Content-Length",
        400,
        "The request's Content-Length header is invalid",
    ),
    (
        "Content-Length",
        400,
        "The request's Content-Length header is invalid",
    ),
    (
        "multiple Host",
        400,
        "The request carries more than one Host header",
    ),
    (
        "Host header differs",
        400,
        "The request's Host header differs from its target's authority",
    ),
    (
        "userinfo in",
        400,
        "The request's Host or target must not carry user information",
    ),
];

/// The message for a header pingora refused without one of the reasons above: a request
/// line or header httparse could not parse, or a target no URI can hold.
const MALFORMED: &str = "The request line or a request header is not valid HTTP/1.1";

fn request_timeout() -> ResourceError {
    ResourceError::new(408, "The request was not received in time")
}

/// The CREST error for a request body that could not be read: one that stopped arriving
/// is the caller's timeout (408), anything else a bad request.
pub fn body_read_error(e: &Error) -> ResourceError {
    match e.etype() {
        ErrorType::ReadTimedout => request_timeout(),
        _ => ResourceError::bad_request("The request could not be read"),
    }
}

/// The CREST error for a failure before any remote instance was chosen (in the gateway's
/// own phases): the gateway's error, never one "of remote instance ''".
pub fn classify_local_error(e: &Error) -> Option<(ResourceError, &'static str)> {
    if matches!(e.esource(), ErrorSource::Downstream) {
        return match e.etype() {
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => None,
            _ => Some((body_read_error(e), "downstream")),
        };
    }
    let error = classify_request_error(e)
        .unwrap_or_else(|| ResourceError::new(500, "The gateway could not complete the request"));
    Some((error, "gateway"))
}

/// The CREST error for a request pingora refused before the gateway's phases ran (its
/// header could not be read or validated, or a CONNECT), or `None` when the caller is gone.
pub fn classify_request_error(e: &Error) -> Option<ResourceError> {
    use ErrorType::*;
    match e.etype() {
        InvalidHTTPHeader => {
            let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or("");
            let (code, message) = REFUSED_HEADERS
                .iter()
                .find(|(prefix, _, _)| context.starts_with(prefix))
                .map(|(_, code, message)| (*code, *message))
                .unwrap_or((400, MALFORMED));
            Some(ResourceError::new(code, message))
        }
        ReadTimedout => Some(request_timeout()),
        HTTPStatus(405) => Some(ResourceError::new(
            405,
            "The gateway does not support the CONNECT method",
        )),
        HTTPStatus(code) => Some(ResourceError::new(*code, "")),
        _ => None,
    }
}

#[cfg(test)]
mod local_tests {
    use super::*;

    #[test]
    fn failures_before_an_instance_is_chosen_are_the_gateways() {
        for etype in [
            ErrorType::H1Error,
            ErrorType::InternalError,
            ErrorType::InvalidHTTPHeader,
        ] {
            let e = Error::new(etype);
            let (error, kind) = classify_local_error(&e).unwrap();
            assert!(
                !error.message.contains("Remote instance"),
                "{}",
                error.message
            );
            assert_eq!(kind, "gateway");
        }
        let mut gone = Error::new(ErrorType::ConnectionClosed);
        gone.esource = ErrorSource::Downstream;
        assert!(classify_local_error(&gone).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS_5: Duration = Duration::from_secs(5);
    const SECS_30: Duration = Duration::from_secs(30);

    #[test]
    fn pingora_error_types_map_to_failure_classes() {
        use ErrorType::*;
        for (t, failure) in [
            (ConnectRefused, UpstreamFailure::Refused),
            (ConnectTimedout, UpstreamFailure::ConnectTimeout),
            (ReadTimedout, UpstreamFailure::ReadTimeout),
            (WriteTimedout, UpstreamFailure::ReadTimeout),
            (TLSHandshakeTimedout, UpstreamFailure::TlsTimeout),
            (TLSHandshakeFailure, UpstreamFailure::Tls),
            (InvalidCert, UpstreamFailure::Tls),
            (HandshakeError, UpstreamFailure::Tls),
            (ConnectNoRoute, UpstreamFailure::Unreachable),
            (ConnectError, UpstreamFailure::Unreachable),
            (SocketError, UpstreamFailure::Unreachable),
            (InvalidHTTPHeader, UpstreamFailure::Protocol),
            (H1Error, UpstreamFailure::Protocol),
            (H2Error, UpstreamFailure::Protocol),
            (ConnectionClosed, UpstreamFailure::Broken),
            (ReadError, UpstreamFailure::Broken),
            (WriteError, UpstreamFailure::Broken),
        ] {
            assert_eq!(upstream_failure(&t), failure, "{t:?}");
            // The proxy's answer is the shared one for the class.
            let (err, kind) =
                classify_upstream_error(&up(t.clone()), "dc1", SECS_5, SECS_30).unwrap();
            let (want, want_kind) = failure.describe("dc1", SECS_5, SECS_30);
            assert_eq!(
                (err.code, err.message, kind),
                (want.code, want.message, want_kind),
                "{t:?}"
            );
        }
        let (err, kind) =
            classify_upstream_error(&up(HTTPStatus(413)), "dc1", SECS_5, SECS_30).unwrap();
        assert_eq!((err.code, kind), (413, "status"));
    }

    fn up(t: ErrorType) -> Box<Error> {
        let mut e = Error::new(t);
        e.as_up();
        e
    }

    #[test]
    fn kinds_map_to_status_and_name_the_instance() {
        for (t, code) in [
            (ErrorType::ConnectRefused, 502),
            (ErrorType::ConnectTimedout, 504),
            (ErrorType::ReadTimedout, 504),
            (ErrorType::TLSHandshakeFailure, 502),
            (ErrorType::InvalidCert, 502),
            (ErrorType::ConnectionClosed, 502),
            (ErrorType::InvalidHTTPHeader, 502),
        ] {
            let (err, _) = classify_upstream_error(&up(t.clone()), "dc1", SECS_5, SECS_30).unwrap();
            assert_eq!(err.code, code, "{t:?}");
            assert!(err.message.contains("'dc1'"), "{}", err.message);
        }
    }

    #[test]
    fn a_vanished_caller_gets_nothing() {
        let mut e = Error::new(ErrorType::WriteError);
        e.as_down();
        assert!(classify_upstream_error(&e, "x", SECS_5, SECS_30).is_none());
    }

    #[test]
    fn refused_requests_map_to_crest_errors_without_echoing_the_request() {
        let explain = |t: ErrorType, context: &'static str| {
            let mut e = Error::explain(t, context);
            e.as_down();
            e
        };
        for (e, code, message) in [
            (
                explain(
                    ErrorType::InvalidHTTPHeader,
                    "Request header larger than 1048575",
                ),
                431,
                "too large",
            ),
            (
                explain(
                    ErrorType::InvalidHTTPHeader,
                    "buf: GET /?password=secret HTTP/1.1",
                ),
                400,
                "not valid HTTP/1.1",
            ),
            (
                explain(
                    ErrorType::InvalidHTTPHeader,
                    "invalid uri /?password=secret\"",
                ),
                400,
                "not valid HTTP/1.1",
            ),
            (
                explain(
                    ErrorType::InvalidHTTPHeader,
                    "invalid Content-Length header",
                ),
                400,
                "Content-Length",
            ),
            (
                explain(
                    ErrorType::InvalidHTTPHeader,
                    "Content-Length 99 exceeds the platform maximum",
                ),
                400,
                "Content-Length",
            ),
            (
                explain(
                    ErrorType::InvalidHTTPHeader,
                    "HTTP/1.0 requests cannot include Transfer-Encoding header",
                ),
                400,
                "HTTP/1.0",
            ),
            (
                explain(
                    ErrorType::InvalidHTTPHeader,
                    "non-chunked final Transfer-Encoding",
                ),
                400,
                "chunked",
            ),
            (
                explain(ErrorType::InvalidHTTPHeader, "multiple Host header fields"),
                400,
                "Host",
            ),
            (
                explain(ErrorType::ReadTimedout, "timeout: 60s"),
                408,
                "in time",
            ),
            (
                explain(ErrorType::HTTPStatus(405), "CONNECT"),
                405,
                "CONNECT",
            ),
        ] {
            let err = classify_request_error(&e).unwrap();
            assert_eq!(err.code, code, "{e}");
            assert!(err.message.contains(message), "{e}: {}", err.message);
            assert!(!err.message.contains("secret"), "{}", err.message);
        }
    }

    #[test]
    fn a_caller_gone_before_its_header_was_read_gets_nothing() {
        for t in [ErrorType::ConnectionClosed, ErrorType::ReadError] {
            let mut e = Error::new(t);
            e.as_down();
            assert!(classify_request_error(&e).is_none());
        }
    }

    #[test]
    fn a_slow_request_body_is_a_408() {
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.as_down();
        let (err, _) = classify_upstream_error(&e, "dc1", SECS_5, SECS_30).unwrap();
        assert_eq!(err.code, 408);
    }
}
