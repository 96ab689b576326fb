//! Extra trust anchors for remote TLS: every certificate in `certs/*.pem` (the server's own
//! certificate excluded). They are added to the platform roots, never replace them.
//!
//! Each file is a unit, with the last-good rule of conf files: a file that cannot be used
//! (not PEM, a certificate that is not X.509, no certificate at all: a half-written file
//! looks like one of these) is reported and its last good certificates stay trusted; a
//! file broken from the start defines nothing. Files are read through symlinks (a
//! Kubernetes Secret volume).

use std::collections::BTreeMap;
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
    /// Changes whenever the set of certificates (or of problems) changes; part of the
    /// upstream pool key.
    pub fingerprint: u64,
    /// The certificates in use from each file, by file name (the last good ones for a
    /// file with problems).
    pub files: BTreeMap<String, Vec<Vec<u8>>>,
}

impl Trust {
    /// Reads `dir`; `prev` gives the last good certificates of files that are now broken.
    pub fn load(dir: &Path, exclude: &[PathBuf], prev: &Trust) -> Self {
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
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match read_file(&path) {
                Ok(certs) => {
                    trust.files.insert(name, certs);
                }
                Err(problem) => {
                    trust
                        .problems
                        .push(format!("{}: {problem}", path.display()));
                    if let Some(last_good) = prev.files.get(&name) {
                        trust.files.insert(name, last_good.clone());
                    }
                }
            }
        }
        trust.certificates = trust.files.values().flatten().cloned().collect();
        trust.fingerprint = fingerprint_of(&trust.certificates, &trust.problems);
        trust
    }
}

/// The fingerprint of a set of certificates and problems. An empty, clean directory is
/// fingerprint 0, like `Trust::default()`.
pub fn fingerprint_of(certificates: &[Vec<u8>], problems: &[String]) -> u64 {
    if certificates.is_empty() && problems.is_empty() {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    certificates.hash(&mut h);
    problems.hash(&mut h);
    h.finish()
}

/// The certificates of one PEM file, or why the file cannot be used.
fn read_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect())
        .map_err(|e| format!("unreadable PEM ({e})"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    certs
        .into_iter()
        .map(|cert| match x509_parser::parse_x509_certificate(&cert) {
            Ok(_) => Ok(cert.to_vec()),
            Err(e) => Err(format!("not an X.509 certificate ({e})")),
        })
        .collect()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (a, b) = (ca_pem("a"), ca_pem("b"));
        std::fs::write(dir.join("a.pem"), &a).unwrap();
        std::fs::write(dir.join("b.pem"), &b).unwrap();
        let good = Trust::load(dir, &[], &Trust::default());
        assert!(good.problems.is_empty(), "{:?}", good.problems);
        assert_eq!(good.certificates.len(), 2);

        // Each way a file can break while the directory is being changed: the file's
        // last good certificates stay trusted, and the problem is reported.
        for broken in [
            "-----BEGIN CERTIFICATE-----\nnot base64 at all\n".to_owned(),
            a[..a.len() / 2].to_owned(),
            String::new(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
        ] {
            std::fs::write(dir.join("a.pem"), &broken).unwrap();
            let next = Trust::load(dir, &[], &good);
            assert_eq!(next.problems.len(), 1, "{broken:?}: {:?}", next.problems);
            assert!(next.problems[0].contains("a.pem"), "{:?}", next.problems);
            assert!(next.certificates == good.certificates, "{broken:?}");
            assert_ne!(
                next.fingerprint, good.fingerprint,
                "the problem is a change"
            );
            // Broken from the start: the file defines nothing.
            let fresh = Trust::load(dir, &[], &Trust::default());
            assert_eq!(fresh.certificates.len(), 1, "{broken:?}");
        }

        // A good change is applied; a removed file takes its certificates away.
        std::fs::write(dir.join("a.pem"), &b).unwrap();
        let changed = Trust::load(dir, &[], &good);
        assert!(changed.problems.is_empty());
        assert_eq!(changed.certificates.len(), 2);
        assert_ne!(changed.certificates, good.certificates);
        std::fs::remove_file(dir.join("a.pem")).unwrap();
        let removed = Trust::load(dir, &[], &changed);
        assert_eq!(removed.certificates.len(), 1);
    }
}
