//! A throw-away PKI for TLS tests (rcgen 0.13).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A server certificate issued by a [`TestPki`] CA.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivatePkcs8KeyDer<'static>,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(common_name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "idm-gateway tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self { cert, key }
    }

    fn issue(&self, names: &[&str]) -> ServerCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("valid DNS name")),
            })
            .collect();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().copied().unwrap_or("test"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// A self-signed test CA that issues server certificates, plus a second,
/// unrelated CA for "untrusted CA" tests.
pub struct TestPki {
    ca: Ca,
    other: Ca,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> Self {
        Self {
            ca: Ca::new("idm-gateway test CA"),
            other: Ca::new("unrelated test CA"),
        }
    }

    /// PEM of the CA that signs [`Self::server_cert`] certificates.
    pub fn ca_pem(&self) -> String {
        self.ca.cert.pem()
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.cert.der().clone()
    }

    /// PEM of a second CA that signed nothing the tests serve.
    pub fn other_ca_pem(&self) -> String {
        self.other.cert.pem()
    }

    /// (cert_pem, key_pem) for `names` (DNS names and/or IP addresses, e.g.
    /// `&["localhost", "127.0.0.1"]`), signed by the CA.
    pub fn server_cert(&self, names: &[&str]) -> (String, String) {
        let c = self.ca.issue(names);
        (c.cert_pem, c.key_pem)
    }

    /// Like [`Self::server_cert`] but with DER forms too.
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        self.ca.issue(names)
    }

    /// A certificate for `names` signed by the *unrelated* CA.
    pub fn untrusted_server_cert(&self, names: &[&str]) -> ServerCert {
        self.other.issue(names)
    }

    /// Writes the CA as `<dir>/<name>.pem` (e.g. into a gateway certs dir).
    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        write_pem(dir, name, &self.ca_pem())
    }

    /// Writes the unrelated CA as `<dir>/<name>.pem`.
    pub fn write_other_ca(&self, dir: &Path, name: &str) -> PathBuf {
        write_pem(dir, name, &self.other_ca_pem())
    }

    /// rustls server config for `localhost` + `127.0.0.1`, signed by the CA,
    /// ALPN `h2` then `http/1.1`.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_for(&["localhost", "127.0.0.1"])
    }

    pub fn server_config_for(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        rustls_server_config(&self.ca.issue(names), &[b"h2", b"http/1.1"])
    }

    /// Server config whose certificate chains to the unrelated CA.
    pub fn untrusted_server_config(&self) -> Arc<rustls::ServerConfig> {
        rustls_server_config(
            &self.other.issue(&["localhost", "127.0.0.1"]),
            &[b"h2", b"http/1.1"],
        )
    }

    /// A reqwest client trusting only this PKI's CA (no system roots).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(self.ca_pem().as_bytes()).expect("CA pem");
        super::client_builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
    }
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Builds a rustls (ring) server config for `cert` advertising `alpn`.
pub fn rustls_server_config(cert: &ServerCert, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert_der.clone()],
            PrivateKeyDer::Pkcs8(cert.key_der.clone_key()),
        )
        .expect("server cert/key");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
