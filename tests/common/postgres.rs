//! A throwaway PostgreSQL server for tests of the gateway on the PostgreSQL store: initdb
//! in a temporary directory, a free loopback port, trust authentication for `postgres`
//! (and a password user), stopped by its data directory when dropped.
//!
//! The binaries come from `/usr/lib/postgresql/<version>/bin` (`.ci/run` installs them).
//! [`PgServer::start`] gives `None` (the caller skips, saying so) only when they are absent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Child,
    pub port: u16,
    as_postgres: bool,
}

fn command(bin: &Path, name: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(name));
        c
    } else {
        Command::new(bin.join(name))
    }
}

impl PgServer {
    pub fn start() -> Option<PgServer> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        versions.sort();
        let Some(bin) = versions.pop() else {
            eprintln!("SKIPPED: no PostgreSQL binaries in /usr/lib/postgresql/*/bin");
            return None;
        };
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::Builder::new()
            .prefix("idm-gateway-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown of the PostgreSQL test directory");
        }
        let data = dir.path().join("data");
        let out = command(&bin, "initdb", as_postgres)
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Password authentication on TCP, so a wrong password is refused.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        let port = super::free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        if as_postgres {
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status();
        }
        let child = command(&bin, "postgres", as_postgres)
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-h",
                "127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres");
        Some(PgServer {
            dir,
            bin,
            child,
            port,
            as_postgres,
        })
    }

    /// Runs SQL as the superuser (waiting for the server to accept connections).
    pub async fn exec(&self, sql: &str) {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        for _ in 0..150 {
            if let Ok((client, conn)) = cfg.connect(tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                client.batch_execute(sql).await.expect("test SQL");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = command(&self.bin, "pg_ctl", self.as_postgres)
            .arg("stop")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}
