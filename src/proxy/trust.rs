//! Per-peer trust for remote TLS: platform roots plus `certs/*.pem`, as pingora's CA list.
//! Built once per trust fingerprint and shared by every peer.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use pingora::utils::tls::WrappedX509;

use crate::config::Trust;

pub type CaList = Arc<[WrappedX509]>;

#[derive(Default)]
pub struct CaCache {
    current: ArcSwapOption<(u64, Option<CaList>)>,
}

impl CaCache {
    /// `None` when `certs/` adds nothing: pingora's connector already trusts the platform
    /// roots.
    pub fn get(&self, trust: &Trust) -> Option<CaList> {
        if let Some(cached) = self.current.load().as_ref() {
            if cached.0 == trust.fingerprint {
                return cached.1.clone();
            }
        }
        let list = build(trust);
        self.current
            .store(Some(Arc::new((trust.fingerprint, list.clone()))));
        list
    }
}

fn build(trust: &Trust) -> Option<CaList> {
    if trust.certificates.is_empty() {
        return None;
    }
    let mut ders: Vec<Vec<u8>> = rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .map(|c| c.to_vec())
        .collect();
    ders.extend(trust.certificates.iter().cloned());
    let list: Vec<WrappedX509> = ders
        .into_iter()
        // WrappedX509::new panics on DER it cannot parse: check first.
        .filter(|der| x509_parser::parse_x509_certificate(der).is_ok())
        .map(|der| WrappedX509::new(der, pingora::utils::tls::parse_x509))
        .collect();
    Some(list.into())
}
