//! Trust material of every outgoing TLS connection (proxy peers, the remote CREST client,
//! token endpoints, health checks, rsFilter, `external/rest`, `external/email`, the LDAP
//! connector): the platform roots plus the anchors of `certs/*.pem`.
//!
//! * The platform roots are loaded once per process.
//! * [`TrustMaterial`] (the accepted anchors and a rustls [`ClientConfig`] on ring) is built
//!   once per trust change, keyed by [`Trust::fingerprint`], and shared: callers ask
//!   [`material`] whenever they build a client, never per request or per connection.
//! * [`http_client_builder`] is the one reqwest builder: this TLS config, no environment
//!   proxies, no redirects, the gateway's user agent. Callers add timeouts, pools, a
//!   redirect policy or a configured proxy.
//!
//! Server names are always verified; there is no way to turn verification off. pingora's
//! CA list is derived from [`TrustMaterial::anchors`] in `proxy::trust` (pingora types stay
//! in `proxy/`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::config::{fingerprint_of, Trust};

/// The `User-Agent` of every HTTP request the gateway makes itself.
pub const USER_AGENT: &str = concat!("idm-gateway/", env!("CARGO_PKG_VERSION"));

/// How many trust generations the process-wide cache keeps: the current one and those
/// still used by clients built before a reload.
const KEPT: usize = 4;

/// What one trust generation gives to TLS clients.
pub struct TrustMaterial {
    fingerprint: u64,
    anchors: Arc<[CertificateDer<'static>]>,
    client_config: Arc<ClientConfig>,
}

impl TrustMaterial {
    fn build(roots: &[CertificateDer<'static>], trust: &Trust, fingerprint: u64) -> Self {
        let mut store = RootCertStore::empty();
        let mut anchors = Vec::with_capacity(roots.len() + trust.certificates.len());
        let extra = trust
            .certificates
            .iter()
            .map(|der| CertificateDer::from(der.clone()));
        // Certificates rustls refuses (unsupported or malformed) are skipped, here and by
        // every client built from `anchors`.
        for cert in roots.iter().cloned().chain(extra) {
            if store.add(cert.clone()).is_ok() {
                anchors.push(cert);
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(store)
            .with_no_client_auth();
        Self {
            fingerprint,
            anchors: anchors.into(),
            client_config: Arc::new(client_config),
        }
    }

    /// The [`Trust::fingerprint`] this material was built for.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The platform roots, then the certificates of `certs/`, each accepted by rustls.
    pub fn anchors(&self) -> &[CertificateDer<'static>] {
        &self.anchors
    }

    /// A rustls client config (ring) trusting [`Self::anchors`].
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.client_config
    }
}

/// Trust material by fingerprint, the most recent first.
pub struct TrustCache {
    roots: fn() -> &'static [CertificateDer<'static>],
    entries: Mutex<Vec<Arc<TrustMaterial>>>,
    builds: AtomicU64,
}

impl Default for TrustCache {
    fn default() -> Self {
        Self::with_roots(platform_roots)
    }
}

impl TrustCache {
    /// A cache over another set of platform roots (tests).
    pub fn with_roots(roots: fn() -> &'static [CertificateDer<'static>]) -> Self {
        Self {
            roots,
            entries: Mutex::new(Vec::with_capacity(KEPT)),
            builds: AtomicU64::new(0),
        }
    }

    /// The material of `trust`, built when its fingerprint is new. The lock is held while
    /// building, so concurrent callers of a new trust build it once.
    pub fn get(&self, trust: &Trust) -> Arc<TrustMaterial> {
        let key = key(trust);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = entries.iter().position(|m| m.fingerprint == key) {
            let found = entries.remove(i);
            entries.insert(0, found.clone());
            return found;
        }
        let built = Arc::new(TrustMaterial::build((self.roots)(), trust, key));
        self.builds.fetch_add(1, Ordering::Relaxed);
        entries.insert(0, built.clone());
        entries.truncate(KEPT);
        built
    }

    /// How many materials this cache has built.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}

/// The cache key: the fingerprint, or for a trust put together by hand without one (a
/// test's certificates and fingerprint 0), the fingerprint of its certificates.
fn key(trust: &Trust) -> u64 {
    if trust.fingerprint == 0 && !trust.certificates.is_empty() {
        fingerprint_of(&trust.certificates, &trust.problems)
    } else {
        trust.fingerprint
    }
}

/// The platform roots, loaded once per process.
pub fn platform_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "cannot load a platform root certificate");
        }
        loaded.certs
    })
}

/// The process-wide material of `trust`.
pub fn material(trust: &Trust) -> Arc<TrustMaterial> {
    static CACHE: OnceLock<TrustCache> = OnceLock::new();
    CACHE.get_or_init(TrustCache::default).get(trust)
}

/// The rustls client config of `trust` (clients that speak TLS themselves: LDAP).
pub fn client_config(trust: &Trust) -> Arc<ClientConfig> {
    material(trust).client_config().clone()
}

/// The gateway's reqwest builder: rustls with the shared config of `trust`, no proxies
/// from the environment (`HTTP_PROXY` and the like are not a configuration), no redirects
/// (a credential must not be replayed to another host), the gateway's user agent,
/// `TCP_NODELAY`. Callers add timeouts, pool settings, a redirect policy or a proxy.
pub fn http_client_builder(trust: &Trust) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_preconfigured_tls(ClientConfig::clone(material(trust).client_config()))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .tcp_nodelay(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_der(name: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn trust_of(certificates: Vec<Vec<u8>>) -> Trust {
        Trust {
            fingerprint: fingerprint_of(&certificates, &[]),
            certificates,
            ..Default::default()
        }
    }

    fn test_roots() -> &'static [CertificateDer<'static>] {
        static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
        ROOTS.get_or_init(|| vec![CertificateDer::from(ca_der("platform root"))])
    }

    #[test]
    fn material_is_built_once_per_fingerprint() {
        let cache = TrustCache::with_roots(test_roots);
        let a = trust_of(vec![ca_der("a")]);
        let first = cache.get(&a);
        let again = cache.get(&a.clone());
        assert!(Arc::ptr_eq(&first, &again));
        assert!(Arc::ptr_eq(first.client_config(), again.client_config()));
        assert_eq!(cache.builds(), 1);
        // The platform roots first, then `certs/`.
        assert_eq!(first.anchors().len(), 2);
        assert_eq!(first.anchors()[0], test_roots()[0]);
        assert_eq!(first.anchors()[1].as_ref(), a.certificates[0].as_slice());
    }

    #[test]
    fn a_trust_change_builds_new_material_and_the_old_one_stays_cached() {
        let cache = TrustCache::with_roots(test_roots);
        let a = trust_of(vec![ca_der("a")]);
        let b = trust_of(vec![ca_der("a2"), ca_der("b")]);
        let (ma, mb) = (cache.get(&a), cache.get(&b));
        assert!(!Arc::ptr_eq(&ma, &mb));
        assert_eq!(mb.anchors().len(), 3);
        assert_eq!(cache.builds(), 2);
        // A client built before the change still finds its generation.
        assert!(Arc::ptr_eq(&cache.get(&a), &ma));
        assert_eq!(cache.builds(), 2);
        // Beyond the kept generations the oldest is built again.
        for i in 0..KEPT {
            cache.get(&trust_of(vec![ca_der(&format!("c{i}"))]));
        }
        assert!(!Arc::ptr_eq(&cache.get(&a), &ma));
    }

    #[test]
    fn a_hand_made_trust_without_fingerprint_is_keyed_by_its_certificates() {
        let cache = TrustCache::with_roots(test_roots);
        let none = cache.get(&Trust::default());
        let hand = |der: Vec<u8>| Trust {
            certificates: vec![der],
            ..Default::default()
        };
        let (x, y) = (cache.get(&hand(ca_der("x"))), cache.get(&hand(ca_der("y"))));
        assert_eq!(none.anchors().len(), 1);
        assert!(!Arc::ptr_eq(&none, &x));
        assert!(!Arc::ptr_eq(&x, &y));
        assert_ne!(x.anchors()[1], y.anchors()[1]);
    }

    #[test]
    fn certificates_rustls_refuses_are_skipped() {
        let cache = TrustCache::with_roots(test_roots);
        let good = ca_der("good");
        let m = cache.get(&trust_of(vec![vec![1, 2, 3], good.clone()]));
        assert_eq!(m.anchors().len(), 2);
        assert_eq!(m.anchors()[1].as_ref(), good.as_slice());
    }
}
