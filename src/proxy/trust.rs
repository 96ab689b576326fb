//! Per-peer trust for remote TLS: the shared anchors of [`crate::tls`] (platform roots plus
//! `certs/*.pem`) as pingora's CA list. Built once per trust fingerprint and shared by
//! every peer; the check per request is one atomic load and a comparison.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use pingora::utils::tls::WrappedX509;

use crate::config::Trust;
use crate::tls::TrustMaterial;

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
        let list = if trust.certificates.is_empty() {
            None
        } else {
            Some(ca_list(&crate::tls::material(trust)))
        };
        self.current
            .store(Some(Arc::new((trust.fingerprint, list.clone()))));
        list
    }
}

/// pingora's CA list of `material`'s anchors.
fn ca_list(material: &TrustMaterial) -> CaList {
    material
        .anchors()
        .iter()
        // WrappedX509::new panics on DER it cannot parse: check first.
        .filter(|der| x509_parser::parse_x509_certificate(der).is_ok())
        .map(|der| WrappedX509::new(der.to_vec(), pingora::utils::tls::parse_x509))
        .collect::<Vec<_>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust_with_ca(name: &str) -> Trust {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificates = vec![params.self_signed(&key).unwrap().der().to_vec()];
        Trust {
            fingerprint: crate::config::fingerprint_of(&certificates, &[]),
            certificates,
            ..Default::default()
        }
    }

    #[test]
    fn the_ca_list_is_built_once_per_trust_and_ends_with_certs() {
        let cache = CaCache::default();
        assert!(cache.get(&Trust::default()).is_none());
        let a = trust_with_ca("a");
        let first = cache.get(&a).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(&a).unwrap()));
        let last = first.last().unwrap();
        assert_eq!(
            last.borrow_raw_cert().as_slice(),
            a.certificates[0].as_slice()
        );

        let b = trust_with_ca("b");
        let other = cache.get(&b).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(
            other.last().unwrap().borrow_raw_cert().as_slice(),
            b.certificates[0].as_slice()
        );
    }
}
