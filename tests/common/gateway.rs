//! `Gateway`: runs the real `idm-gateway` binary against temp dirs.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The built-in admin user.
pub const ADMIN_USER: &str = "openidm-admin";
/// Admin password used unless the builder overrides it.
pub const DEFAULT_ADMIN_PASSWORD: &str = "openidm-admin";
/// How long `start()` waits for `GET /openidm/info/ping` to answer 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const PING_PATH: &str = "/openidm/info/ping";

const BIN: &str = env!("CARGO_BIN_EXE_idm-gateway");

/// `external.idm-<name>.json` content for a basic-auth remote instance.
pub fn basic_instance(instance_url: &str, user: &str, password: &str) -> Value {
    json!({
        "authType": "basic",
        "instanceUrl": instance_url,
        "userName": user,
        "password": password,
    })
}

/// `external.idm-<name>.json` content for an OAuth2 client-credentials
/// (bearer) remote instance.
pub fn bearer_instance(
    instance_url: &str,
    client_id: &str,
    client_secret: &str,
    token_endpoint: &str,
    scopes: &[&str],
) -> Value {
    json!({
        "authType": "bearer",
        "instanceUrl": instance_url,
        "clientId": client_id,
        "clientSecret": client_secret,
        "tokenEndpoint": token_endpoint,
        "scope": scopes,
    })
}

/// `"foo"` -> `"foo.json"`; names already ending in `.json` are kept.
fn conf_name(name: &str) -> String {
    if name.ends_with(".json") {
        name.to_string()
    } else {
        format!("{name}.json")
    }
}

#[derive(Clone)]
struct SpawnSpec {
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    args: Vec<String>,
    log_format: Option<String>,
    admin_password: String,
}

pub struct GatewayBuilder {
    conf: Vec<(String, Vec<u8>)>,
    certs: Vec<(String, String)>,
    spec: SpawnSpec,
}

impl GatewayBuilder {
    /// A conf file written before start; `name` like `external.idm-east` or
    /// `external.idm-east.json`.
    pub fn conf_file(mut self, name: &str, json: Value) -> Self {
        self.conf
            .push((conf_name(name), serde_json::to_vec_pretty(&json).unwrap()));
        self
    }

    /// A conf file with arbitrary bytes (e.g. invalid JSON); `name` is used
    /// as is.
    pub fn conf_raw(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.conf.push((name.to_string(), bytes.into()));
        self
    }

    /// A PEM written as `CERTS/<name>.pem` before start.
    pub fn cert(mut self, name: &str, pem: &str) -> Self {
        self.certs.push((name.to_string(), pem.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.spec.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.spec.env_remove.push(key.to_string());
        self
    }

    /// Extra command-line argument(s) after the standard ones.
    pub fn arg(mut self, arg: &str) -> Self {
        self.spec.args.push(arg.to_string());
        self
    }

    /// `--log-format text|json`
    pub fn log_format(mut self, format: &str) -> Self {
        self.spec.log_format = Some(format.to_string());
        self
    }

    /// Sets `IDM_GATEWAY_ADMIN_PASSWORD` (default `openidm-admin`) and the
    /// password the admin helpers send.
    pub fn admin_password(mut self, password: &str) -> Self {
        self.spec.admin_password = password.to_string();
        self
    }

    fn prepare(self) -> Gateway {
        let root = tempfile::Builder::new()
            .prefix("idm-gateway-test-")
            .tempdir()
            .expect("gateway temp dir");
        for sub in ["conf", "data", "certs"] {
            std::fs::create_dir(root.path().join(sub)).expect("create gateway sub dir");
        }
        let gw = Gateway {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            root,
            spec: self.spec,
            client: super::http_client(),
        };
        for (name, bytes) in &self.conf {
            gw.write_conf_bytes(name, bytes);
        }
        for (name, pem) in &self.certs {
            gw.write_cert(name, pem);
        }
        gw
    }

    /// The gateway's directories and conf, not started: a test prepares its data dir, then
    /// calls [`Gateway::spawn`].
    pub fn build_only(self) -> Gateway {
        self.prepare()
    }

    /// Spawns the gateway and waits (30 s max) for the ping to answer 200;
    /// panics with the gateway's log if it exits or times out.
    pub async fn start(self) -> Gateway {
        let mut gw = self.prepare();
        gw.spawn_until_ready().await;
        gw
    }

    /// For negative tests: spawns the gateway and waits up to `timeout` for
    /// it to exit by itself. Returns the exit status (None if it was still
    /// running and got killed) and its log.
    pub async fn start_expect_exit(self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let mut gw = self.prepare();
        gw.addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        gw.spawn_child();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = gw.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        gw.stop();
        (status, gw.logs())
    }
}

/// A running `idm-gateway` process with its own temp conf/data/certs dirs.
/// Dropping it kills the process (SIGKILL) and removes the dirs.
pub struct Gateway {
    pub addr: SocketAddr,
    child: Option<Child>,
    root: tempfile::TempDir,
    spec: SpawnSpec,
    client: reqwest::Client,
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            conf: Vec::new(),
            certs: Vec::new(),
            spec: SpawnSpec {
                env: Vec::new(),
                env_remove: Vec::new(),
                args: Vec::new(),
                log_format: None,
                admin_password: DEFAULT_ADMIN_PASSWORD.to_string(),
            },
        }
    }

    /// A gateway with no conf files and default settings.
    pub async fn start() -> Gateway {
        Self::builder().start().await
    }

    /// `http://127.0.0.1:PORT` + `path` (a leading `/` is added if missing).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("http://{}{path}", self.addr)
        } else {
            format!("http://{}/{path}", self.addr)
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.root.path().join("conf")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.root.path().join("certs")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("gateway.log")
    }

    /// Everything the gateway wrote to stdout and stderr so far (all runs,
    /// if restarted), once the log has settled.
    ///
    /// The gateway writes its log from a writer thread, and the access log
    /// line of a request is written after its response was sent, so a line
    /// may reach the file a moment after the request that caused it
    /// returned. This waits until the file has not grown for 200 ms (at
    /// most 2 s), so both "the log says X" and "the log never says Y" look
    /// at everything logged before the call.
    pub fn logs(&self) -> String {
        let path = self.log_path();
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut last = size();
        let mut stable_since = std::time::Instant::now();
        while std::time::Instant::now() < deadline
            && stable_since.elapsed() < Duration::from_millis(200)
        {
            std::thread::sleep(Duration::from_millis(10));
            let now = size();
            if now != last {
                last = now;
                stable_since = std::time::Instant::now();
            }
        }
        self.logs_now()
    }

    /// The log as it is on disk right now.
    pub fn logs_now(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        super::eventually(timeout, || async { self.logs_now().contains(needle) }).await
    }

    pub fn admin_password(&self) -> &str {
        &self.spec.admin_password
    }

    /// Atomically (temp file + rename) writes `CONF/<name>` (`.json` added if
    /// missing).
    pub fn write_conf(&self, name: &str, json: &Value) {
        self.write_conf_bytes(
            &conf_name(name),
            &serde_json::to_vec_pretty(json).expect("serialize conf"),
        );
    }

    /// Atomically writes raw bytes as `CONF/<name>` (name used as is).
    pub fn write_conf_bytes(&self, name: &str, bytes: &[u8]) {
        atomic_write(self.root.path(), &self.conf_dir().join(name), bytes);
    }

    /// Removes `CONF/<name>` (`.json` added if missing).
    pub fn remove_conf(&self, name: &str) {
        let path = self.conf_dir().join(conf_name(name));
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }

    /// Atomically writes `CERTS/<name>.pem`.
    pub fn write_cert(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.certs_dir().join(format!("{name}.pem"));
        atomic_write(self.root.path(), &path, pem.as_bytes());
        path
    }

    /// The plain client the helpers use (no proxy, no redirects).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `method path` with the admin `X-OpenIDM-Username/Password` headers.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.anon(method, path)
            .header("X-OpenIDM-Username", ADMIN_USER)
            .header("X-OpenIDM-Password", &self.spec.admin_password)
    }

    /// Admin `GET path`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    /// Admin `POST path`.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// Admin `PUT path`.
    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::PUT, path)
    }

    /// Admin `DELETE path`.
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::DELETE, path)
    }

    /// Admin `GET` of a raw request-line path (for paths an HTTP client library would
    /// normalise, such as dot segments): the status code and the body.
    pub fn raw_get(&self, request_line_path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {request_line_path} HTTP/1.1\r\nHost: x\r\nX-OpenIDM-Username: {ADMIN_USER}\r\nX-OpenIDM-Password: {}\r\nConnection: close\r\n\r\n",
            self.spec.admin_password
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// `method path` without any credentials.
    pub fn anon(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// `method path` with the given `X-OpenIDM-Username/Password`.
    pub fn as_user(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        password: &str,
    ) -> reqwest::RequestBuilder {
        self.anon(method, path)
            .header("X-OpenIDM-Username", user)
            .header("X-OpenIDM-Password", password)
    }

    /// PID of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway is running").id()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait gateway"))
    }

    /// Kills (SIGKILL) and reaps the process; dirs are kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns the
    /// exit status, or None if it had to be killed.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_ref()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                self.stop();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The upgrade socket the gateway uses by default (`DATA/upgrade.sock`).
    pub fn upgrade_sock(&self) -> PathBuf {
        self.data_dir().join("upgrade.sock")
    }

    /// Zero-downtime upgrade, first half: starts a new process on the same dirs and
    /// address with `--upgrade` and returns the old one, still running. The new process
    /// becomes this gateway's; it waits on [`Self::upgrade_sock`] for the old one, which
    /// the caller sends SIGQUIT (see [`signal`]) once that socket exists.
    pub fn spawn_upgrade(&mut self) -> Child {
        let old = self.child.take().expect("gateway is running");
        self.spec.args.push("--upgrade".into());
        self.spawn_child();
        self.spec.args.pop();
        old
    }

    /// Stops the process and starts it again on the same port with the same
    /// dirs (data persists), waiting for readiness.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn_until_ready().await;
    }

    /// Stops the process and starts it again with another admin password (same dirs).
    pub async fn with_admin_password(mut self, password: &str) -> Gateway {
        self.stop();
        self.spec.admin_password = password.to_string();
        self.spawn_until_ready().await;
        self
    }

    fn spawn_child(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open gateway log");
        let log_err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(BIN);
        cmd.arg("--conf")
            .arg(self.conf_dir())
            .arg("--data")
            .arg(self.data_dir())
            .arg("--certs")
            .arg(self.certs_dir())
            .arg("--listen")
            .arg(self.addr.to_string());
        if let Some(format) = &self.spec.log_format {
            cmd.args(["--log-format", format]);
        }
        cmd.args(&self.spec.args);
        for key in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env_remove(key);
        }
        cmd.env("NO_PROXY", "127.0.0.1,localhost,::1")
            .env("no_proxy", "127.0.0.1,localhost,::1")
            .env("IDM_GATEWAY_ADMIN_PASSWORD", &self.spec.admin_password);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        for k in &self.spec.env_remove {
            cmd.env_remove(k);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        self.child = Some(child);
    }

    /// Starts a gateway from [`GatewayBuilder::build_only`].
    pub async fn spawn(mut self) -> Gateway {
        self.spawn_until_ready().await;
        self
    }

    async fn spawn_until_ready(&mut self) {
        let keep_port = self.addr.port() != 0;
        for attempt in 0..3 {
            if !keep_port || attempt > 0 {
                self.addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
            }
            self.spawn_child();
            match self.wait_ready().await {
                Ok(()) => return,
                Err(reason) => {
                    self.stop();
                    let logs = self.logs();
                    let port_taken = reason == "port taken"
                        || (reason == "exited"
                            && (logs.contains("Address already in use")
                                || logs.contains("AddrInUse")));
                    if !(port_taken && attempt < 2) {
                        panic!(
                            "idm-gateway on {} {reason} before {PING_PATH} answered 200; log:\n{logs}",
                            self.addr
                        );
                    }
                }
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<(), &'static str> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.try_wait().is_some() {
                return Err("exited");
            }
            let ping = self
                .get(PING_PATH)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&ping, Ok(r) if r.status() == reqwest::StatusCode::OK) {
                // The answer may come from another test's gateway that took the port first:
                // pingora retries a port in use for 30 s instead of exiting.
                if listens_on(self.pid(), self.addr.port()) {
                    return Ok(());
                }
                if self
                    .logs_now()
                    .contains(&format!("{} is in use, will try again", self.addr))
                {
                    return Err("port taken");
                }
            }
            if Instant::now() >= deadline {
                return Err("timed out");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether process `pid` holds the socket listening on `port` (Linux: `/proc/net/tcp` and the
/// process's file descriptors). Elsewhere there is no way to tell: true.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let local = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    // Columns: sl local_address rem_address st … inode (10th); st 0A is LISTEN.
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && local.iter().any(|l| l == f[1]) && f[3] == "0A")
                .then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
    })
}

/// Sends `signal` (`"QUIT"`, `"TERM"`, …) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `bytes` to a temp file inside `tmp_dir` (same filesystem) and
/// renames it to `dest`, so watchers never see a partial file.
fn atomic_write(tmp_dir: &Path, dest: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir).expect("temp file for atomic write");
    tmp.write_all(bytes).expect("write temp file");
    tmp.as_file().sync_all().ok();
    tmp.persist(dest)
        .unwrap_or_else(|e| panic!("rename into {}: {e}", dest.display()));
}
