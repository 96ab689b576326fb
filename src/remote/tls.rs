//! The HTTP client used for token endpoints (and later the CREST client): rustls, platform
//! roots plus the trust anchors of `certs/`, no redirects (a token request must not be
//! replayed to another host), bounded timeouts. And the bare rustls [`ClientConfig`] with
//! the same trust, for clients that speak TLS themselves (the LDAP connector).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::config::Trust;

pub fn http_client(
    trust: &Trust,
    connect_timeout: Duration,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        // `HTTP_PROXY`-style variables of the environment are not a configuration.
        .no_proxy()
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

/// The platform roots, loaded once per process (as reqwest and ldap3 do).
fn platform_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "cannot load a platform root certificate");
        }
        loaded.certs
    })
}

/// A rustls client config (ring) trusting the platform roots plus every certificate of
/// `certs/`. Server names are verified as usual; there is no way to turn verification off.
pub fn rustls_client_config(trust: &Trust) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    // Certificates the store refuses (e.g. unsupported or malformed) are skipped.
    roots.add_parsable_certificates(platform_roots().iter().cloned());
    roots.add_parsable_certificates(
        trust
            .certificates
            .iter()
            .map(|der| CertificateDer::from(der.clone())),
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}
