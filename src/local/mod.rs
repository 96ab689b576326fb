//! Gateway-level resources answered in-process: `info/*`, `config`, `metrics/prometheus`.
//! Each is a [`RequestHandler`] mounted on the CREST router next to `managed` and
//! `internal`.

mod config;
mod info;
mod metrics;

pub use config::ConfigHandler;
pub use info::{ping_body, InfoHandler};
pub use metrics::MetricsHandler;

/// Largest request body a local resource accepts.
pub const MAX_LOCAL_BODY: usize = 1024 * 1024;
