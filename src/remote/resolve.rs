//! Name resolution for remote instances, cached briefly so the hot path does not hit the
//! resolver on every request (pingora's `HttpPeer::new` would resolve synchronously and
//! panic on failure, so the proxy hands it a resolved address).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use moka::future::Cache;

pub const DNS_TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Resolver {
    cache: Cache<(String, u16), SocketAddr>,
}

impl Resolver {
    pub fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(1024)
                .time_to_live(DNS_TTL)
                .build(),
        }
    }

    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_owned(), port);
        self.cache
            .try_get_with(key, async move {
                tokio::net::lookup_host((host, port))
                    .await?
                    .next()
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("no address for {host}"),
                        )
                    })
            })
            .await
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}
