//! Misbehaving upstreams (raw tokio TCP) for timeout / error-path tests.
//! Each listens on 127.0.0.1:<free>, counts accepted connections, and stops
//! (closing every socket) when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ServerRuntime;

/// Common part of the fault servers.
struct FaultServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _rt: ServerRuntime,
}

impl FaultServer {
    fn start<F, Fut>(name: &str, on_conn: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let rt = ServerRuntime::new(name, 1);
        let (std_listener, addr) = super::bind_loopback();
        let listener = rt.tokio_listener(std_listener);
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(on_conn(stream));
            }
        });
        Self {
            addr,
            connections,
            _rt: rt,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/openidm/", self.addr)
    }
}

/// Reads until the end of an HTTP request head (`\r\n\r\n`), EOF, 64 KiB or
/// 10 s, whichever comes first. Returns the bytes read.
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 64 * 1024 {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    buf
}

macro_rules! fault_accessors {
    ($t:ty) => {
        impl $t {
            pub fn addr(&self) -> SocketAddr {
                self.inner.addr
            }

            pub fn port(&self) -> u16 {
                self.inner.addr.port()
            }

            /// `http://127.0.0.1:PORT/openidm/`
            pub fn url(&self) -> String {
                self.inner.url()
            }

            /// Number of TCP connections accepted so far.
            pub fn connections(&self) -> usize {
                self.inner.connections.load(Ordering::SeqCst)
            }
        }
    };
}

/// Accepts connections and reads everything sent, but never answers.
pub struct HangingUpstream {
    inner: FaultServer,
}

impl HangingUpstream {
    pub fn start() -> Self {
        let inner = FaultServer::start("hanging-upstream", |mut stream| async move {
            let mut buf = [0u8; 8192];
            // Drain until the peer goes away; keep the socket open meanwhile.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        Self { inner }
    }
}
fault_accessors!(HangingUpstream);

/// Reads the request head, then resets the connection (SO_LINGER 0 + close,
/// so the peer sees RST rather than FIN).
pub struct ResettingUpstream {
    inner: FaultServer,
}

impl ResettingUpstream {
    pub fn start() -> Self {
        let inner = FaultServer::start("resetting-upstream", |mut stream| async move {
            let _ = read_head(&mut stream).await;
            let _ = stream.set_zero_linger();
            drop(stream);
        });
        Self { inner }
    }
}
fault_accessors!(ResettingUpstream);

/// Answers `200` with `Content-Length: body_len` at once, then sends the body
/// (the `/big` pattern) one byte every `interval`.
pub struct SlowBodyUpstream {
    inner: FaultServer,
}

impl SlowBodyUpstream {
    pub fn start(body_len: usize, interval: Duration) -> Self {
        let inner = FaultServer::start("slow-body-upstream", move |mut stream| async move {
            let _ = read_head(&mut stream).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {body_len}\r\nX-Upstream: slow-body\r\n\r\n"
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let _ = stream.flush().await;
            for i in 0..body_len as u64 {
                tokio::time::sleep(interval).await;
                if stream
                    .write_all(&[super::big_pattern_byte(i)])
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = stream.flush().await;
            }
            // Let the client read the end before closing.
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        });
        Self { inner }
    }
}
fault_accessors!(SlowBodyUpstream);

/// The bytes [`GarbageUpstream`] answers with.
pub const GARBAGE: &[u8] =
    b"\x00\x01\x02 this is not HTTP at all \xff\xfe\xfd\r\n\r\nSSH-2.0-nope\r\n";

/// Reads the request head, answers bytes that are not HTTP, and closes.
pub struct GarbageUpstream {
    inner: FaultServer,
}

impl GarbageUpstream {
    pub fn start() -> Self {
        let inner = FaultServer::start("garbage-upstream", |mut stream| async move {
            let _ = read_head(&mut stream).await;
            let _ = stream.write_all(GARBAGE).await;
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
        });
        Self { inner }
    }
}
fault_accessors!(GarbageUpstream);

/// A fake remote IDM for fault injection in what a CREST answer *says* (not in the transport):
/// every request gets `200` with the JSON `answer(target)` returns, `target` being the
/// request's path and query string, percent-decoded (`/openidm/managed/user?_queryFilter=…`).
/// One request per connection (`Connection: close`). The targets asked are kept in order.
pub struct ScriptedCrest {
    inner: FaultServer,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ScriptedCrest {
    pub fn start(answer: impl Fn(&str) -> serde_json::Value + Send + Sync + 'static) -> Self {
        let answer = Arc::new(answer);
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let inner = FaultServer::start("scripted-crest", move |mut stream| {
            let answer = answer.clone();
            let log = log.clone();
            async move {
                let head = read_head(&mut stream).await;
                let head = String::from_utf8_lossy(&head);
                let raw = head.split_whitespace().nth(1).unwrap_or("/");
                let target = percent_decode(raw);
                log.lock().unwrap().push(target.clone());
                let body = answer(&target).to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.flush().await;
                let _ = stream.shutdown().await;
            }
        });
        Self { inner, asked }
    }

    /// The request targets received so far.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}
fault_accessors!(ScriptedCrest);

/// `+` (a space in a query string) and `%XX` decoded; bytes that are not UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// A keep-alive HTTP/1.1 remote that closes a connection once it has been idle for
/// `idle` (as Jetty does after its idle timeout), the way a remote drops pooled
/// connections. Each request gets `200` with `{"n":<bodies so far>}`; every request body
/// received is kept, in order.
pub struct IdleClosingUpstream {
    inner: FaultServer,
    bodies: Arc<std::sync::Mutex<Vec<String>>>,
}

impl IdleClosingUpstream {
    pub fn start(idle: Duration) -> Self {
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = bodies.clone();
        let inner = FaultServer::start("idle-closing-upstream", move |mut stream| {
            let log = log.clone();
            async move {
                let mut buf = Vec::new();
                loop {
                    let Some(body) = read_request(&mut stream, &mut buf, idle).await else {
                        // Idle too long, or the peer went away: close.
                        let _ = stream.shutdown().await;
                        return;
                    };
                    let n = {
                        let mut bodies = log.lock().unwrap();
                        bodies.push(String::from_utf8_lossy(&body).into_owned());
                        bodies.len()
                    };
                    let json = format!("{{\"n\":{n}}}");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n{json}",
                        json.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
            }
        });
        Self { inner, bodies }
    }

    /// The request bodies received so far.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}
fault_accessors!(IdleClosingUpstream);

/// Reads one request (head and a `Content-Length` body) from `stream`, keeping bytes of
/// the next one in `buf`. `None` when nothing arrives for `idle` before the first byte, or
/// the peer closes or stalls (10 s) mid-request.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let wait = if buf.is_empty() {
            idle
        } else {
            Duration::from_secs(10)
        };
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some(body)
}
