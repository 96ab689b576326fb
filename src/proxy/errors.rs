//! Proxy failures → CREST errors naming the instance, in one place.

use pingora::{Error, ErrorSource, ErrorType};

use crate::crest::ResourceError;

/// The CREST error for a failed proxy attempt and a short kind for the metric label, or
/// `None` when the caller is gone (nothing to answer).
pub fn classify_upstream_error(
    e: &Error,
    instance: &str,
    connect_ms: u128,
    read_ms: u128,
) -> Option<(ResourceError, &'static str)> {
    use ErrorType::*;
    if matches!(e.esource(), ErrorSource::Downstream) {
        return match e.etype() {
            ReadError | WriteError | ConnectionClosed => None,
            _ => Some((
                ResourceError::bad_request("The request could not be read"),
                "downstream",
            )),
        };
    }
    let out = match e.etype() {
        ConnectRefused => (
            ResourceError::bad_gateway(format!("Remote instance '{instance}' refused the connection")),
            "connect_refused",
        ),
        ConnectTimedout => (
            ResourceError::gateway_timeout(format!(
                "Remote instance '{instance}' did not accept a connection within {connect_ms} ms"
            )),
            "connect_timeout",
        ),
        ReadTimedout | WriteTimedout => (
            ResourceError::gateway_timeout(format!(
                "Remote instance '{instance}' did not answer within {read_ms} ms"
            )),
            "read_timeout",
        ),
        TLSHandshakeTimedout => (
            ResourceError::gateway_timeout(format!(
                "TLS handshake with remote instance '{instance}' timed out"
            )),
            "tls_timeout",
        ),
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup => (
            ResourceError::bad_gateway(format!(
                "TLS handshake with remote instance '{instance}' failed: its certificate is not trusted or does not match the host name"
            )),
            "tls",
        ),
        ConnectNoRoute | BindError | SocketError | ConnectError | ConnectProxyFailure => (
            ResourceError::bad_gateway(format!("Remote instance '{instance}' cannot be reached")),
            "connect",
        ),
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => (
            ResourceError::bad_gateway(format!(
                "Remote instance '{instance}' sent an invalid HTTP response"
            )),
            "protocol",
        ),
        HTTPStatus(code) => (ResourceError::new(*code, ""), "status"),
        _ => (
            ResourceError::bad_gateway(format!(
                "The connection to remote instance '{instance}' failed before a complete response was received"
            )),
            "connection",
        ),
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let (err, _) = classify_upstream_error(&up(t.clone()), "dc1", 5000, 30000).unwrap();
            assert_eq!(err.code, code, "{t:?}");
            assert!(err.message.contains("'dc1'"), "{}", err.message);
        }
    }

    #[test]
    fn a_vanished_caller_gets_nothing() {
        let mut e = Error::new(ErrorType::WriteError);
        e.as_down();
        assert!(classify_upstream_error(&e, "x", 1, 1).is_none());
    }
}
