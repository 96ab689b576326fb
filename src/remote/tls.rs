//! The HTTP client used for token endpoints (and later the CREST client): rustls, platform
//! roots plus the trust anchors of `certs/`, no redirects (a token request must not be
//! replayed to another host), bounded timeouts.

use std::time::Duration;

use crate::config::Trust;

pub fn http_client(
    trust: &Trust,
    connect_timeout: Duration,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("idm-gateway/", env!("CARGO_PKG_VERSION")));
    for der in &trust.certificates {
        if let Ok(cert) = reqwest::Certificate::from_der(der) {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build()
}
