//! `idm-gateway`: parse the command line, set up logging, load settings, run.

use clap::Parser;
use idm_gateway::config::{GatewayFile, LogFormat};
use idm_gateway::logwriter::{BatchedWriter, LogGuard};
use idm_gateway::settings::{Cli, Settings, ADMIN_PASSWORD_ENV};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc malloc: profiles of the proxy path showed ~25% of the CPU in
/// glibc malloc/free, much of it lock contention between worker threads. (mimalloc was as
/// fast but kept memory freed across threads: a store scan grew RSS by 230 MB.)
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    let file = match GatewayFile::load(&cli.conf) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("idm-gateway: {e}");
            std::process::exit(2);
        }
    };
    let settings = Settings::resolve(cli, file, std::env::var(ADMIN_PASSWORD_ENV).ok());
    let log_writer = init_logging(settings.log_format);
    if let Err(e) = idm_gateway::server::run(settings) {
        tracing::error!("{e}");
        // Writes what is still queued before exiting.
        drop(log_writer);
        std::process::exit(1);
    }
}

/// RUST_LOG filters (default `info`); pingora's `log` records are bridged into tracing.
///
/// Lines are formatted on the thread that logs and written to stderr by a writer thread
/// every 50 ms ([`idm_gateway::logwriter`]): a request never waits on the log's I/O nor
/// wakes another thread, and no line is ever dropped.
fn init_logging(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = match BatchedWriter::new(std::io::stderr()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("idm-gateway: cannot start the log writer thread: {e}");
            std::process::exit(1);
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
