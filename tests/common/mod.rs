//! Shared integration-test harness for idm-gateway.
//!
//! Every integration test file does `mod common;` and uses what it needs, so
//! unused items are expected here.
//!
//! All in-process servers (recording upstream, fault upstreams, fake token
//! endpoint) run on their own background tokio runtime, so they work from
//! `#[tokio::test]` (any flavor) as well as from plain `#[test]` functions, and
//! they keep serving while a test blocks its own thread. Dropping a server
//! shuts its runtime down and closes every socket it had open.
#![allow(dead_code, unused_imports)]

pub mod faults;
pub mod fixtures;
pub mod gateway;
pub mod oauth;
pub mod pki;
pub mod postgres;
pub mod slapd;
pub mod smtp;
pub mod token;
pub mod upstream;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

pub use faults::{
    GarbageUpstream, HangingUpstream, IdleClosingUpstream, ResettingUpstream, ScriptedCrest,
    SlowBodyUpstream,
};
pub use gateway::{basic_instance, bearer_instance, Gateway, GatewayBuilder, ADMIN_USER};
pub use oauth::OidcProvider;
pub use pki::TestPki;
pub use slapd::Slapd;
pub use smtp::{SmtpOptions, SmtpServer};
pub use token::{FakeTokenEndpoint, TokenMode, TokenRequest};
pub use upstream::{Recorded, RecordingUpstream};

/// Status and body of a response: the body as JSON, or as a JSON string when it is not
/// JSON (so an assertion message still shows it).
pub async fn json_of(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Sends `method path` as the gateway's administrator, with `body` as JSON when given.
pub async fn send(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = gw.request(method, path);
    if let Some(body) = body {
        r = r.json(&body);
    }
    json_of(r.send().await.unwrap()).await
}

/// A port on 127.0.0.1 that was free a moment ago (bind port 0, read, drop).
///
/// Only for processes we cannot hand a listener to (the gateway, node); the
/// in-process servers bind port 0 themselves and never race.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// Bind a std listener on 127.0.0.1:0, non-blocking, ready for tokio.
pub(crate) fn bind_loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("set listener non-blocking");
    let addr = listener.local_addr().expect("listener local_addr");
    (listener, addr)
}

/// Bind a std listener on 127.0.0.1:`port`, non-blocking, ready for tokio.
pub(crate) fn bind_loopback_port(port: u16) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the reserved port");
    listener
        .set_nonblocking(true)
        .expect("set listener non-blocking");
    let addr = listener.local_addr().expect("listener local_addr");
    (listener, addr)
}

/// A plain reqwest client for talking to loopback servers: no system proxy,
/// no redirects followed, 30 s overall timeout.
pub fn http_client() -> reqwest::Client {
    client_builder().build().expect("build reqwest client")
}

/// The builder behind [`http_client`], for tests that need to tweak it
/// (HTTP/2 prior knowledge, extra roots, shorter timeouts, ...).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes;
/// returns whether it ever returned true.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Byte `i` of the deterministic pattern served by the recording upstream's
/// `/big` endpoint.
pub fn big_pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The first `n` bytes of the `/big` pattern (for building request bodies or
/// comparing small responses).
pub fn big_pattern(n: usize) -> Vec<u8> {
    (0..n as u64).map(big_pattern_byte).collect()
}

/// A background multi-threaded tokio runtime owned by one test server.
/// Dropping it aborts every task it runs (and so closes their sockets)
/// without blocking, also when dropped inside another runtime.
pub(crate) struct ServerRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl ServerRuntime {
    pub(crate) fn new(name: &str, workers: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(format!("test-{name}"))
            .enable_all()
            .build()
            .expect("build test server runtime");
        Self { rt: Some(rt) }
    }

    /// Stops every task now, closing every socket they held.
    pub(crate) fn shutdown(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.as_ref().expect("runtime alive").handle()
    }

    pub(crate) fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(fut)
    }

    /// Turns a bound std listener into a tokio one inside this runtime.
    pub(crate) fn tokio_listener(&self, listener: TcpListener) -> tokio::net::TcpListener {
        let _guard = self.handle().enter();
        tokio::net::TcpListener::from_std(listener).expect("register listener with tokio")
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
