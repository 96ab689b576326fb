//! `OidcProvider`: a real OAuth2 authorization server (the `oidc-provider`
//! npm package, `tests/oauth/server.mjs`) run under node for bearer tests.
//!
//! Needs `npm ci --prefix tests/oauth` to have been run once.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

// Generous: node starts slowly on a loaded 2-core machine (tests run in parallel).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct OidcProvider {
    child: Child,
    // Held so node sees EOF on stdin (and exits) if we die without Drop.
    _stdin: Option<ChildStdin>,
    port: u16,
    client_id: String,
    client_secret: String,
    auth_method: String,
    stderr_path: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Directory holding `server.mjs`, `package.json` and `node_modules/`.
pub fn oauth_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oauth")
}

impl OidcProvider {
    /// Starts oidc-provider on a free loopback port with one client
    /// `client_id`/`secret` using `auth_method` (`client_secret_basic` or
    /// `client_secret_post`), allowed `scopes`, and client-credentials access
    /// tokens valid `ttl_secs`. Blocks until it printed READY (90 s max).
    pub fn start(
        client_id: &str,
        secret: &str,
        auth_method: &str,
        scopes: &[&str],
        ttl_secs: u64,
    ) -> Self {
        Self::start_env(client_id, secret, auth_method, scopes, ttl_secs, &[])
    }

    /// [`OidcProvider::start`] with more of `server.mjs`'s environment (`EXTRA_CLIENTS`,
    /// `ACCESS_TOKEN_FORMAT`, `AUDIENCE`).
    pub fn start_env(
        client_id: &str,
        secret: &str,
        auth_method: &str,
        scopes: &[&str],
        ttl_secs: u64,
        env: &[(&str, &str)],
    ) -> Self {
        assert!(
            matches!(auth_method, "client_secret_basic" | "client_secret_post"),
            "unsupported auth method {auth_method}"
        );
        let dir = oauth_dir();
        if !dir
            .join("node_modules/oidc-provider/package.json")
            .is_file()
        {
            panic!(
                "tests/oauth/node_modules is missing: run `npm ci --prefix tests/oauth` \
                 (in {}) before running these tests",
                env!("CARGO_MANIFEST_DIR")
            );
        }
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_string());
        let tmp = tempfile::tempdir().expect("tempdir for oidc-provider logs");
        let stderr_path = tmp.path().join("oidc-provider.stderr.log");

        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = super::free_port();
            let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
            let mut child = Command::new(&node)
                .arg(dir.join("server.mjs"))
                .current_dir(&dir)
                .env("PORT", port.to_string())
                .env("CLIENT_ID", client_id)
                .env("CLIENT_SECRET", secret)
                .env("TOKEN_AUTH_METHOD", auth_method)
                .env("SCOPES", scopes.join(" "))
                .env("TOKEN_TTL", ttl_secs.to_string())
                .env("NODE_ENV", "test")
                .envs(env.iter().copied())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(stderr))
                .spawn()
                .unwrap_or_else(|e| panic!("spawn `{node}` (is Node.js installed?): {e}"));
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().expect("piped stdout");
            let (tx, rx) = mpsc::channel::<String>();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("READY") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(line);
                        }
                    }
                    // Keep draining so node never blocks on a full pipe.
                }
            });
            match rx.recv_timeout(READY_TIMEOUT) {
                Ok(_) => {
                    return Self {
                        child,
                        _stdin: stdin,
                        port,
                        client_id: client_id.to_string(),
                        client_secret: secret.to_string(),
                        auth_method: auth_method.to_string(),
                        stderr_path,
                        _tmp: tmp,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    last_err = format!("{e:?}; exit status {status:?}; stderr:\n{log}");
                    let port_taken = log.contains("EADDRINUSE");
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        panic!("oidc-provider did not become ready: {last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/token`
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer())
    }

    pub fn introspection_endpoint(&self) -> String {
        format!("{}/token/introspection", self.issuer())
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    pub fn auth_method(&self) -> &str {
        &self.auth_method
    }

    /// What node wrote to stderr so far (oidc-provider warnings, errors).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// POSTs `form` to `url`, authenticating as the client with its
    /// registered method.
    fn client_post(&self, url: &str, mut form: Vec<(&str, String)>) -> reqwest::RequestBuilder {
        let req = super::http_client().post(url);
        if self.auth_method == "client_secret_post" {
            form.push(("client_id", self.client_id.clone()));
            form.push(("client_secret", self.client_secret.clone()));
            req.form(&form)
        } else {
            req.basic_auth(
                form_urlencode(&self.client_id),
                Some(form_urlencode(&self.client_secret)),
            )
            .form(&form)
        }
    }

    /// Gets a client-credentials token for `scopes`; returns the token
    /// response JSON (`access_token`, `expires_in`, `scope`, `token_type`).
    /// Panics unless the server answers 200.
    pub async fn fetch_token(&self, scopes: &[&str]) -> Value {
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let resp = self
            .client_post(&self.token_endpoint(), form)
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "token endpoint answered {status}: {body}\n{}",
            self.logs()
        );
        serde_json::from_str(&body).expect("token response JSON")
    }

    /// A client-credentials token of another registered client (`EXTRA_CLIENTS`), with
    /// HTTP Basic client authentication. Returns the access token.
    pub async fn token_for(&self, client_id: &str, secret: &str, scopes: &[&str]) -> String {
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let resp = reqwest::Client::new()
            .post(self.token_endpoint())
            .basic_auth(form_urlencode(client_id), Some(form_urlencode(secret)))
            .form(&form)
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "token endpoint answered {status}: {body}"
        );
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// RFC 7662 introspection of `token`; `active` is true for a valid one.
    pub async fn introspect(&self, token: &str) -> Value {
        let resp = self
            .client_post(
                &self.introspection_endpoint(),
                vec![("token", token.to_string())],
            )
            .send()
            .await
            .expect("introspection request");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "introspection answered {status}: {body}\n{}",
            self.logs()
        );
        serde_json::from_str(&body).expect("introspection JSON")
    }
}

/// `application/x-www-form-urlencoded` encoding of one value, as RFC 6749
/// §2.3.1 wants for client credentials in HTTP Basic.
fn form_urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
