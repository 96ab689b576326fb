//! Why an exchange with a remote instance got no (complete) answer, and what the caller is
//! told: one set of failure classes, CREST errors and metric labels for the HTTP proxy
//! (which maps pingora's `ErrorType` to a class) and the remote CREST client (which maps
//! `reqwest::Error`). Messages name the instance, never a URL, a header or a credential.

use std::time::Duration;

use crate::crest::ResourceError;

use super::client::MAX_RESPONSE_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The remote refused the TCP connection.
    Refused,
    /// No connection within `connectTimeout`.
    ConnectTimeout,
    /// No (further) answer within `readTimeout`.
    ReadTimeout,
    /// The TLS handshake did not finish in time.
    TlsTimeout,
    /// The TLS handshake failed: certificate not trusted or not for the host.
    Tls,
    /// The remote's host name cannot be resolved.
    Unresolved,
    /// No route, no socket, or another failure to connect.
    Unreachable,
    /// The remote's answer is not valid HTTP.
    Protocol,
    /// The remote's answer is larger than [`MAX_RESPONSE_BYTES`].
    TooLarge,
    /// The connection broke before a complete answer.
    Broken,
    /// Every URL of the instance is down (its circuit is open).
    Unavailable,
}

impl UpstreamFailure {
    /// Every class, for tables and tests.
    pub const ALL: [UpstreamFailure; 11] = [
        Self::Refused,
        Self::ConnectTimeout,
        Self::ReadTimeout,
        Self::TlsTimeout,
        Self::Tls,
        Self::Unresolved,
        Self::Unreachable,
        Self::Protocol,
        Self::TooLarge,
        Self::Broken,
        Self::Unavailable,
    ];

    /// The CREST error for the caller (naming `instance`; the timeouts are the instance's
    /// `connectTimeout` and `readTimeout`) and the `kind` label of
    /// `idm_gateway_upstream_errors_total`.
    pub fn describe(
        self,
        instance: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> (ResourceError, &'static str) {
        use UpstreamFailure::*;
        let bad_gateway = ResourceError::bad_gateway;
        match self {
            Refused => (
                bad_gateway(format!("Remote instance '{instance}' refused the connection")),
                "connect_refused",
            ),
            ConnectTimeout => (
                ResourceError::gateway_timeout(format!(
                    "Remote instance '{instance}' did not accept a connection within {} ms",
                    connect_timeout.as_millis()
                )),
                "connect_timeout",
            ),
            ReadTimeout => (
                ResourceError::gateway_timeout(format!(
                    "Remote instance '{instance}' did not answer within {} ms",
                    read_timeout.as_millis()
                )),
                "read_timeout",
            ),
            TlsTimeout => (
                ResourceError::gateway_timeout(format!(
                    "TLS handshake with remote instance '{instance}' timed out"
                )),
                "tls_timeout",
            ),
            Tls => (
                bad_gateway(format!(
                    "TLS handshake with remote instance '{instance}' failed: its certificate is not trusted or does not match the host name"
                )),
                "tls",
            ),
            Unresolved => (
                bad_gateway(format!(
                    "The host of remote instance '{instance}' cannot be resolved"
                )),
                "resolve",
            ),
            Unreachable => (
                bad_gateway(format!("Remote instance '{instance}' cannot be reached")),
                "connect",
            ),
            Protocol => (
                bad_gateway(format!(
                    "Remote instance '{instance}' sent an invalid HTTP response"
                )),
                "protocol",
            ),
            TooLarge => (
                bad_gateway(format!(
                    "Remote instance '{instance}' sent a response larger than {MAX_RESPONSE_BYTES} bytes"
                )),
                "too_large",
            ),
            Broken => (
                bad_gateway(format!(
                    "The connection to remote instance '{instance}' failed before a complete response was received"
                )),
                "connection",
            ),
            Unavailable => (
                ResourceError::unavailable(format!("Remote instance '{instance}' is unavailable")),
                "unavailable",
            ),
        }
    }

    /// Whether the URL tried is down (its circuit counts a failure): nothing answered. One
    /// rule for the proxy and the remote client. `connecting`: the failure happened before
    /// the connection was established (nothing of the request sent), where a connection that
    /// breaks also means nothing is there to answer; once connected, a broken connection is
    /// the request's failure, not the URL's. A certificate that is not trusted, a slow or an
    /// invalid answer say the remote is there.
    pub fn url_is_down(self, connecting: bool) -> bool {
        match self {
            Self::Refused
            | Self::ConnectTimeout
            | Self::TlsTimeout
            | Self::Unreachable
            | Self::Unresolved => true,
            Self::Broken => connecting,
            Self::ReadTimeout | Self::Tls | Self::Protocol | Self::TooLarge | Self::Unavailable => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpstreamFailure::*;

    #[test]
    fn every_class_has_its_status_label_and_message() {
        let table = [
            (Refused, 502, "connect_refused", "Remote instance 'dc1' refused the connection"),
            (ConnectTimeout, 504, "connect_timeout", "Remote instance 'dc1' did not accept a connection within 1500 ms"),
            (ReadTimeout, 504, "read_timeout", "Remote instance 'dc1' did not answer within 30000 ms"),
            (TlsTimeout, 504, "tls_timeout", "TLS handshake with remote instance 'dc1' timed out"),
            (Tls, 502, "tls", "TLS handshake with remote instance 'dc1' failed: its certificate is not trusted or does not match the host name"),
            (Unresolved, 502, "resolve", "The host of remote instance 'dc1' cannot be resolved"),
            (Unreachable, 502, "connect", "Remote instance 'dc1' cannot be reached"),
            (Protocol, 502, "protocol", "Remote instance 'dc1' sent an invalid HTTP response"),
            (TooLarge, 502, "too_large", "Remote instance 'dc1' sent a response larger than 268435456 bytes"),
            (Broken, 502, "connection", "The connection to remote instance 'dc1' failed before a complete response was received"),
            (Unavailable, 503, "unavailable", "Remote instance 'dc1' is unavailable"),
        ];
        assert_eq!(table.len(), UpstreamFailure::ALL.len());
        for (failure, code, label, message) in table {
            let (error, kind) =
                failure.describe("dc1", Duration::from_millis(1500), Duration::from_secs(30));
            assert_eq!(
                (error.code, kind, error.message.as_str()),
                (code, label, message),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn labels_are_distinct() {
        let mut labels: Vec<&str> = UpstreamFailure::ALL
            .iter()
            .map(|f| f.describe("x", Duration::ZERO, Duration::ZERO).1)
            .collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), UpstreamFailure::ALL.len());
    }

    #[test]
    fn only_a_connection_that_was_never_made_marks_the_url_down() {
        let down = |connecting| -> Vec<UpstreamFailure> {
            UpstreamFailure::ALL
                .into_iter()
                .filter(|f| f.url_is_down(connecting))
                .collect()
        };
        assert_eq!(
            down(false),
            [Refused, ConnectTimeout, TlsTimeout, Unresolved, Unreachable]
        );
        // A connection that breaks while it is being made: nothing there answers.
        assert_eq!(
            down(true),
            [
                Refused,
                ConnectTimeout,
                TlsTimeout,
                Unresolved,
                Unreachable,
                Broken
            ]
        );
    }
}
