//! A throwaway PostgreSQL server for the store's tests: one per test process (initdb in a
//! temporary directory, a free loopback port), a fresh database per store opened. A
//! watchdog shell stops the server and removes its directory when the test process ends.
//!
//! The server comes from the PostgreSQL binaries in `/usr/lib/postgresql/<version>/bin`
//! (`.ci/run` installs them). Without them [`open`] says so and gives `None` (the test is
//! skipped); with them, any failure to start fails the test.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::PgRepo;
use crate::repo::contract::Store;

struct Server {
    port: u16,
    dir: PathBuf,
    /// DER of the CA that signed the server's certificate (for 127.0.0.1): TLS is on.
    ca: Vec<u8>,
    /// The watchdog shell: runs as long as this process, reaped by init after.
    _watchdog: std::process::Child,
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();

fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Shell words running `bin/name` as the postgres user when we are root (PostgreSQL
/// refuses to run as root).
fn as_server_user(bin: &std::path::Path, name: &str, root: bool) -> String {
    let path = shell_quote(&bin.join(name).display().to_string());
    if root {
        format!("runuser -u postgres -- {path}")
    } else {
        path
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn start() -> Option<Server> {
    let Some(bin) = binaries() else {
        eprintln!(
            "SKIPPED: no PostgreSQL binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql); the PostgreSQL store tests did not run"
        );
        return None;
    };
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("idm-gateway-pgrepo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("creating the PostgreSQL test directory");
    if root {
        let ok = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .expect("chown")
            .success();
        assert!(ok, "chown of the PostgreSQL test directory");
    }
    let data = dir.join("data");
    let initdb = format!(
        "{} -D {} -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null",
        as_server_user(&bin, "initdb", root),
        shell_quote(&data.display().to_string())
    );
    let out = Command::new("sh")
        .args(["-c", &initdb])
        .output()
        .expect("initdb");
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TLS on (plain connections stay allowed): a CA of our own and a certificate for
    // 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([
        127, 0, 0, 1,
    ]))];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    std::fs::write(data.join("server.crt"), cert.pem()).expect("server.crt");
    std::fs::write(data.join("server.key"), key.serialize_pem()).expect("server.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("server.key mode");
    }
    if root {
        let ok = Command::new("chown")
            .args(["postgres"])
            .arg(data.join("server.crt"))
            .arg(data.join("server.key"))
            .status()
            .expect("chown")
            .success();
        assert!(ok, "chown of the server's key");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("a free port")
        .port();
    // The server runs in the background of a watchdog that stops it (and removes the
    // directory) once this process is gone.
    let script = format!(
        "{postgres} -D {data} -p {port} -h 127.0.0.1 -k {dir} -c fsync=off -c max_connections=200 -c ssl=on >{dir}/log 2>&1 &
         while kill -0 {me} 2>/dev/null; do sleep 1; done
         {pg_ctl} stop -D {data} -m immediate >/dev/null 2>&1
         rm -rf {dir}",
        postgres = as_server_user(&bin, "postgres", root),
        pg_ctl = as_server_user(&bin, "pg_ctl", root),
        data = shell_quote(&data.display().to_string()),
        dir = shell_quote(&dir.display().to_string()),
        me = std::process::id(),
    );
    let watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting PostgreSQL");
    Some(Server {
        port,
        dir,
        ca: ca.der().to_vec(),
        _watchdog: watchdog,
    })
}

/// Connection settings of a database of the test server.
pub(crate) fn config(port: u16, db: &str) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user("postgres").dbname(db);
    cfg
}

/// The CA (DER) the shared test server's certificate chains to; `None` without PostgreSQL.
pub(crate) fn server_ca() -> Option<Vec<u8>> {
    SERVER.get_or_init(start).as_ref().map(|s| s.ca.clone())
}

/// A fresh, empty database on the shared test server: its name and the server's port.
/// `None` when PostgreSQL is not installed.
pub(crate) async fn fresh_database() -> Option<(u16, String)> {
    let server = SERVER.get_or_init(start).as_ref()?;
    let db = format!("t_{}", uuid::Uuid::new_v4().simple());
    let cfg = config(server.port, "postgres");
    for _ in 0..300 {
        if let Ok((client, conn)) = cfg.connect(tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE \"{db}\""))
                .await
                .expect("creating a test database");
            return Some((server.port, db));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(server.dir.join("log")).unwrap_or_default();
    panic!("the test PostgreSQL did not start:\n{log}");
}

/// A store on a fresh database, for the shared contract tests.
pub(crate) async fn open() -> Option<Store> {
    let (port, db) = fresh_database().await?;
    let repo = PgRepo::with_config(config(port, &db))
        .await
        .expect("opening the store on PostgreSQL");
    let limits = repo.clone();
    Some(Store {
        repo: Arc::new(repo),
        set_limit: Box::new(move |d| limits.set_query_time_limit(d)),
    })
}
