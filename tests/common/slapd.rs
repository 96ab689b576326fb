//! `Slapd`: a throwaway OpenLDAP server for the LDAP connector tests.
//!
//! Each instance lives in its own temp directory (slapd.conf, an mdb database, logs) and
//! listens on a free 127.0.0.1 port: suffix `dc=example,dc=com`, root DN
//! [`ROOT_DN`]/[`ROOT_PW`], schemas core/cosine/inetorgperson/nis, `ou=people` and
//! `ou=groups`, the `sssvlv` overlay (server side sort). It runs in the foreground
//! (`-d 0`) and is killed on drop.
//!
//! With [`SlapdBuilder::tls`] it also serves TLS with the given certificate and key (PEM):
//! ldaps on [`Slapd::ldaps_port`], and StartTLS on the plain port.
//!
//! Entries given to [`SlapdBuilder::entries`] are bulk-loaded with `slapadd` before the
//! server starts (thousands per second); [`Slapd::ldapadd`] adds to a running server.
//!
//! Needs `/usr/sbin/slapd` and ldap-utils: `make test` installs them. Missing binaries
//! fail the test (never skip it).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const ROOT_PW: &str = "adminSecret-9f2c";
pub const PEOPLE: &str = "ou=people,dc=example,dc=com";
pub const GROUPS: &str = "ou=groups,dc=example,dc=com";
/// The accesslog database's suffix (see [`SlapdBuilder::accesslog`]).
pub const ACCESSLOG: &str = "cn=accesslog";
/// A non-root principal whose searches slapd limits (see [`SlapdBuilder::size_limited`]).
pub const LIMITED_DN: &str = "cn=limited,dc=example,dc=com";
pub const LIMITED_PW: &str = "limitedSecret-31b7";

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn require(bin: &str) {
    assert!(
        Path::new(bin).exists() || which(bin),
        "{bin} is missing: the LDAP connector tests need OpenLDAP (slapd, ldap-utils); \
         run `make test` (it installs them with apt) instead of plain `cargo test`"
    );
}

fn which(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A running slapd.
pub struct Slapd {
    child: Option<Child>,
    port: u16,
    ldaps_port: Option<u16>,
    dir: tempfile::TempDir,
}

/// How to start a [`Slapd`].
#[derive(Default)]
pub struct SlapdBuilder {
    ldif: String,
    accesslog: bool,
    /// (certificate chain PEM, private key PEM).
    tls: Option<(String, String)>,
    size_limit: Option<usize>,
}

impl SlapdBuilder {
    /// Extra LDIF loaded with slapadd before start (after the base entries).
    pub fn ldif(mut self, ldif: &str) -> Self {
        self.ldif.push_str(ldif);
        if !self.ldif.ends_with("\n\n") {
            self.ldif.push('\n');
        }
        self
    }

    /// `n` inetOrgPerson entries `uid=<prefix><i>,ou=people` (cn "<prefix> <i>", sn "Sn<i>").
    pub fn people(self, prefix: &str, n: usize) -> Self {
        let ldif = people_ldif(prefix, 0..n);
        self.ldif(&ldif)
    }

    /// Runs the `accesslog` overlay: successful deletes are logged under
    /// [`ACCESSLOG`] (with the old entry), where liveSync finds them.
    pub fn accesslog(mut self) -> Self {
        self.accesslog = true;
        self
    }

    /// Serves TLS with `cert_pem` (the server certificate, optionally followed by its
    /// chain) and `key_pem`: ldaps on [`Slapd::ldaps_port`] and StartTLS on the plain port.
    pub fn tls(mut self, cert_pem: &str, key_pem: &str) -> Self {
        self.tls = Some((cert_pem.to_owned(), key_pem.to_owned()));
        self
    }

    /// Adds the principal [`LIMITED_DN`]/[`LIMITED_PW`] (it reads everything but
    /// passwords, like any bound user), whose searches return at most `entries` entries in
    /// every database (`limits dn.exact=… size=<entries>`, soft and hard, paged or not): a
    /// bigger search ends with sizeLimitExceeded.
    pub fn size_limited(mut self, entries: usize) -> Self {
        self.size_limit = Some(entries);
        self.ldif(&format!(
            "dn: {LIMITED_DN}\nobjectClass: top\nobjectClass: person\ncn: limited\n\
             sn: Limited\nuserPassword: {LIMITED_PW}\n\n"
        ))
    }

    pub fn start(self) -> Slapd {
        Slapd::start_with(
            &self.ldif,
            self.accesslog,
            self.tls.as_ref(),
            self.size_limit,
        )
    }
}

/// LDIF of inetOrgPerson entries `uid=<prefix><i>,ou=people`.
pub fn people_ldif(prefix: &str, range: std::ops::Range<usize>) -> String {
    let mut out = String::new();
    for i in range {
        out.push_str(&format!(
            "dn: uid={prefix}{i},{PEOPLE}\nobjectClass: top\nobjectClass: person\n\
             objectClass: organizationalPerson\nobjectClass: inetOrgPerson\nuid: {prefix}{i}\n\
             cn: {prefix} {i}\nsn: Sn{i}\nmail: {prefix}{i}@example.com\n\n"
        ));
    }
    out
}

impl Slapd {
    pub fn builder() -> SlapdBuilder {
        SlapdBuilder::default()
    }

    /// A server with the base entries only.
    pub fn start() -> Slapd {
        Self::start_with("", false, None, None)
    }

    fn start_with(
        extra_ldif: &str,
        accesslog: bool,
        tls: Option<&(String, String)>,
        size_limit: Option<usize>,
    ) -> Slapd {
        require(SLAPD);
        require(SLAPADD);
        let dir = tempfile::tempdir().expect("tempdir for slapd");
        for sub in ["data", "accesslog"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create slapd data dir");
        }
        let tls_files = tls.map(|(cert, key)| {
            let cert_path = dir.path().join("server.crt.pem");
            let key_path = dir.path().join("server.key.pem");
            std::fs::write(&cert_path, cert).expect("write slapd certificate");
            std::fs::write(&key_path, key).expect("write slapd key");
            (cert_path, key_path)
        });
        let conf = dir.path().join("slapd.conf");
        std::fs::write(
            &conf,
            slapd_conf(dir.path(), accesslog, tls_files.as_ref(), size_limit),
        )
        .expect("write slapd.conf");

        let mut ldif = base_ldif();
        ldif.push_str(extra_ldif);
        let ldif_path = dir.path().join("init.ldif");
        std::fs::write(&ldif_path, ldif).expect("write init.ldif");
        let out = Command::new(SLAPADD)
            .arg("-q")
            .arg("-b")
            .arg(SUFFIX)
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif_path)
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let mut last = String::new();
        for _attempt in 0..3 {
            let port = super::free_port();
            let ldaps_port = tls.map(|_| super::free_port());
            let mut urls = format!("ldap://127.0.0.1:{port}/");
            if let Some(p) = ldaps_port {
                urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
            }
            let log = std::fs::File::create(dir.path().join("slapd.log")).expect("slapd log");
            let child = Command::new(SLAPD)
                .arg("-d")
                .arg("0")
                .arg("-f")
                .arg(&conf)
                .arg("-h")
                .arg(urls)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn slapd");
            let mut child = child;
            if wait_ready(&mut child, port) && ldaps_port.is_none_or(|p| wait_ready(&mut child, p))
            {
                return Slapd {
                    child: Some(child),
                    port,
                    ldaps_port,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = std::fs::read_to_string(dir.path().join("slapd.log")).unwrap_or_default();
        }
        panic!("slapd did not become ready: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The ldaps port (a server started with [`SlapdBuilder::tls`]).
    pub fn ldaps_port(&self) -> u16 {
        self.ldaps_port.expect("slapd was started without TLS")
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What slapd logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Stops the server (the port then refuses connections).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `ldapadd` of `ldif` as the root DN, asserting success.
    pub fn ldapadd(&self, ldif: &str) {
        self.ldap_tool("ldapadd", ldif);
    }

    /// `ldapmodify` of `ldif` as the root DN, asserting success.
    pub fn ldapmodify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", ldif);
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) {
        require(tool);
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect("wait for tool");
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ldapsearch` (root DN, LDIF output without wrapping).
    pub fn ldapsearch(&self, base: &str, filter: &str, attrs: &[&str]) -> String {
        require("ldapsearch");
        let out = Command::new("ldapsearch")
            .args([
                "-x",
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-H",
                &self.url(),
                "-D",
                ROOT_DN,
                "-w",
                ROOT_PW,
                "-b",
                base,
                filter,
            ])
            .args(attrs)
            .output()
            .expect("run ldapsearch");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    false
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn slapd_conf(
    dir: &Path,
    accesslog: bool,
    tls: Option<&(PathBuf, PathBuf)>,
    size_limit: Option<usize>,
) -> String {
    // `limits` belongs to each database; the page limits (size.pr, size.prtotal) follow
    // the hard limit, so paging does not lift it either.
    let limits = match size_limit {
        Some(n) => format!("limits dn.exact=\"{LIMITED_DN}\" size={n}\n"),
        None => String::new(),
    };
    let tls = match tls {
        Some((cert, key)) => format!(
            "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
            cert.display(),
            key.display()
        ),
        None => String::new(),
    };
    let schema = |name: &str| format!("include /etc/ldap/schema/{name}.schema\n");
    let data: PathBuf = dir.join("data");
    let (log_db, log_overlay) = if accesslog {
        (
            format!(
                "moduleload accesslog\ndatabase mdb\nsuffix \"{ACCESSLOG}\"\nrootdn \"{ROOT_DN}\"\n\
                 directory {}\nindex entryCSN,reqStart eq\n{limits}",
                dir.join("accesslog").display()
            ),
            format!(
                "overlay accesslog\nlogdb \"{ACCESSLOG}\"\nlogops delete\nlogsuccess TRUE\n\
                 logold (objectClass=*)\nlogpurge 07+00:00 01+00:00\n"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        "{}{}{}{}\
pidfile {dir}/slapd.pid\n\
argsfile {dir}/slapd.args\n\
{tls}\
modulepath /usr/lib/ldap\n\
moduleload back_mdb\n\
moduleload sssvlv\n\
sizelimit unlimited\n\
{log_db}\
database mdb\n\
maxsize 104857600\n\
suffix \"{SUFFIX}\"\n\
rootdn \"{ROOT_DN}\"\n\
rootpw {ROOT_PW}\n\
directory {data}\n\
{limits}\
index objectClass eq\n\
index uid,cn eq\n\
index entryUUID eq\n\
index entryCSN eq\n\
access to attrs=userPassword by self write by anonymous auth by * none\n\
access to * by * read\n\
overlay sssvlv\n\
{log_overlay}",
        schema("core"),
        schema("cosine"),
        schema("inetorgperson"),
        schema("nis"),
        dir = dir.display(),
        data = data.display(),
    )
}

fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n\
         o: Example\ndc: example\n\n\
         dn: {PEOPLE}\nobjectClass: top\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {GROUPS}\nobjectClass: top\nobjectClass: organizationalUnit\nou: groups\n\n"
    )
}

/// A `provisioner.openicf-ldap` for `slapd` on `port`, accounts under [`SUFFIX`]. The bind
/// password reaches the gateway through `&{LDAP_BIND_PASSWORD}` only (set it to [`ROOT_PW`]).
pub fn ldap_provisioner(port: u16) -> serde_json::Value {
    serde_json::json!({
        "name": "ldap",
        "enabled": true,
        "connectorRef": {
            "bundleName": "org.forgerock.openicf.connectors.ldap-connector",
            "bundleVersion": "[1.4.0.0,1.6.0.0)",
            "connectorName": "org.identityconnectors.ldap.LdapConnector"
        },
        "configurationProperties": {
            "host": "127.0.0.1",
            "port": port,
            "ssl": false,
            "principal": ROOT_DN,
            "credentials": "&{LDAP_BIND_PASSWORD}",
            "baseContexts": [SUFFIX],
            "accountObjectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
            "accountUserNameAttributes": ["uid"],
            "uidAttribute": "entryUUID"
        },
        "operationTimeout": {"SEARCH": 10000, "GET": 5000},
        "objectTypes": {
            "account": {
                "$schema": "http://json-schema.org/draft-03/schema",
                "id": "__ACCOUNT__",
                "type": "object",
                "nativeType": "__ACCOUNT__",
                "properties": {
                    "dn": {"type": "string", "nativeName": "__NAME__", "nativeType": "string", "required": true},
                    "uid": {"type": "string", "nativeName": "uid", "nativeType": "string"},
                    "cn": {"type": "string", "nativeName": "cn", "nativeType": "string", "required": true},
                    "sn": {"type": "string", "nativeName": "sn", "nativeType": "string", "required": true},
                    "givenName": {"type": "string", "nativeName": "givenName", "nativeType": "string"},
                    "mail": {"type": "string", "nativeName": "mail", "nativeType": "string"},
                    "telephoneNumber": {"type": "string", "nativeName": "telephoneNumber", "nativeType": "string"},
                    "description": {"type": "string", "nativeName": "description", "nativeType": "string"},
                    "userPassword": {"type": "string", "nativeName": "__PASSWORD__",
                                     "nativeType": "JAVA_TYPE_GUARDEDSTRING",
                                     "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]}
                }
            }
        }
    })
}
