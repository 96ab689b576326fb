//! The floor of the framework: a pingora 0.9 reverse proxy that does nothing but forward
//! every request to one upstream over pooled keep-alive connections (no authentication, no
//! header work, no routing, no logging), with the gateway's allocator and server settings.
//! `benches/load.sh` measures it next to nginx and idm-gateway, so the report separates what
//! pingora itself costs per request on this machine from what the gateway adds.
//!
//!   pingora_baseline --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]
//!       [--work-stealing true|false] [--listener-tasks N] [--pool N]
//!
//! The last three are the gateway's `gateway.json` `server` settings, so both run alike.

use async_trait::async_trait;
use pingora::prelude::{http_proxy_service, HttpPeer, Opt, ProxyHttp, Result, Server, Session};
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (arg(&args, "--listen"), arg(&args, "--upstream")) else {
        eprintln!("usage: pingora_baseline --listen HOST:PORT --upstream HOST:PORT [--threads N]");
        std::process::exit(2);
    };
    let threads = arg(&args, "--threads")
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    // The gateway's settings (src/server.rs), so that only the per-request work differs.
    let num = |name: &str, default: usize| {
        arg(&args, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: num("--pool", 512),
        work_stealing: arg(&args, "--work-stealing").is_none_or(|v| v != "false"),
        listener_tasks_per_fd: num("--listener-tasks", 1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Forward { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever()
}
