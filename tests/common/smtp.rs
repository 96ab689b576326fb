//! `SmtpServer`: a real SMTP server (nodemailer's `smtp-server` npm package,
//! `tests/smtp/server.mjs`) run under node for the external/email tests. It records every
//! message it accepts: envelope, authenticated user, whether TLS was on, raw message.
//!
//! Needs `npm ci --prefix tests/smtp` to have been run once (`make test` does).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server is set up.
#[derive(Default, Clone)]
pub struct SmtpOptions {
    /// Required AUTH credentials.
    pub auth: Option<(String, String)>,
    /// PEM certificate and key: STARTTLS is offered (or implicit TLS with `secure`).
    pub tls: Option<(String, String)>,
    /// TLS from the first byte (SMTPS).
    pub secure: bool,
}

pub struct SmtpServer {
    child: Child,
    _stdin: Option<ChildStdin>,
    port: u16,
    messages: Arc<Mutex<Vec<Value>>>,
    _tmp: tempfile::TempDir,
}

fn smtp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp")
}

impl SmtpServer {
    /// Starts the server on a free loopback port; blocks until it printed READY.
    pub fn start(options: SmtpOptions) -> Self {
        let dir = smtp_dir();
        if !dir.join("node_modules/smtp-server/package.json").is_file() {
            panic!(
                "tests/smtp/node_modules is missing: run `npm ci --prefix tests/smtp` (in {})",
                env!("CARGO_MANIFEST_DIR")
            );
        }
        let tmp = tempfile::tempdir().expect("tempdir for smtp-server");
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_string());
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = super::free_port();
            let mut cmd = Command::new(&node);
            cmd.arg(dir.join("server.mjs"))
                .current_dir(&dir)
                .env("PORT", port.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some((user, pass)) = &options.auth {
                cmd.env("AUTH_USER", user).env("AUTH_PASS", pass);
            }
            if let Some((cert, key)) = &options.tls {
                let (c, k) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
                std::fs::write(&c, cert).unwrap();
                std::fs::write(&k, key).unwrap();
                cmd.env("TLS_CERT", &c).env("TLS_KEY", &k);
            }
            if options.secure {
                cmd.env("SECURE", "1");
            }
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn `{node}` (is Node.js installed?): {e}"));
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().expect("piped stdout");
            let stderr = child.stderr.take().expect("piped stderr");
            let messages = Arc::new(Mutex::new(Vec::new()));
            let (tx, rx) = mpsc::channel::<()>();
            let sink = messages.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("READY") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    } else if let Some(json) = line.strip_prefix("MESSAGE ") {
                        if let Ok(v) = serde_json::from_str(json) {
                            sink.lock().unwrap().push(v);
                        }
                    }
                }
            });
            let (etx, erx) = mpsc::channel::<String>();
            std::thread::spawn(move || {
                let mut all = String::new();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    all.push_str(&line);
                    all.push('\n');
                }
                let _ = etx.send(all);
            });
            match rx.recv_timeout(READY_TIMEOUT) {
                Ok(()) => {
                    return Self {
                        child,
                        _stdin: stdin,
                        port,
                        messages,
                        _tmp: tmp,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                    last_err = format!("{e:?}; stderr:\n{log}");
                    if !log.contains("EADDRINUSE") {
                        break;
                    }
                }
            }
        }
        panic!("smtp-server did not become ready: {last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages were accepted; then all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        super::eventually(timeout, || async { self.messages().len() >= n }).await;
        self.messages()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
