//! Gateway-level resources answered in-process: `info/*`, `config`, `metrics/prometheus`,
//! the schema service (`schema/managed/*`), feature enablement (`feature/*`) and the
//! authentication service (`authentication?_action=reauthenticate`).
//! Each is a [`RequestHandler`] mounted on the CREST router next to `managed` and
//! `internal`.

mod authentication;
mod config;
mod feature;
mod info;
mod metrics;
pub mod schema;

pub use authentication::AuthenticationHandler;
pub use config::ConfigHandler;
pub use feature::FeatureHandler;
pub use info::{ping_body, InfoHandler};
pub use metrics::MetricsHandler;
pub use schema::SchemaHandler;

/// Largest request body a local resource accepts.
pub const MAX_LOCAL_BODY: usize = 1024 * 1024;
