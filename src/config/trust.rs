//! Extra trust anchors for remote TLS: every certificate in `certs/*.pem` (the server's own
//! certificate excluded). They are added to the platform roots, never replace them.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// DER certificates, in file-name order.
    pub certificates: Vec<Vec<u8>>,
    /// Files that could not be used, and why.
    pub problems: Vec<String>,
    /// Changes whenever the set of certificates changes; part of the upstream pool key.
    pub fingerprint: u64,
}

impl Trust {
    pub fn load(dir: &Path, exclude: &[PathBuf]) -> Self {
        let mut trust = Trust::default();
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "pem"))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .filter(|p| !exclude.iter().any(|x| same_file(x, p)))
                .collect(),
            Err(_) => Vec::new(),
        };
        paths.sort();
        for path in paths {
            let certs: Result<Vec<CertificateDer<'static>>, _> =
                CertificateDer::pem_file_iter(&path).and_then(|it| it.collect());
            match certs {
                Ok(certs) => {
                    for cert in certs {
                        match x509_parser::parse_x509_certificate(&cert) {
                            Ok(_) => trust.certificates.push(cert.to_vec()),
                            Err(e) => trust.problems.push(format!(
                                "{}: not an X.509 certificate ({e})",
                                path.display()
                            )),
                        }
                    }
                }
                Err(e) => trust
                    .problems
                    .push(format!("{}: unreadable PEM ({e})", path.display())),
            }
        }
        // An empty, clean directory is fingerprint 0, like `Trust::default()`.
        if !trust.certificates.is_empty() || !trust.problems.is_empty() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            trust.certificates.hash(&mut h);
            trust.problems.hash(&mut h);
            trust.fingerprint = h.finish();
        }
        trust
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
