//! idm-gateway: a reverse-proxy gateway and sync hub for ForgeRock/Ping IDM federation.
//!
//! `/openidm/external/idm/<name>/…` is relayed by pingora to the remote IDM instance named by
//! `conf/external.idm-<name>.json`; everything else under `/openidm` is answered in-process.
//! See `DESIGN.md` of the project for the module map.

pub mod access;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod crest;
pub mod crypto;
pub mod csv_import;
pub mod events;
pub mod external;
pub mod internal;
pub mod lifecycle;
pub mod local;
pub mod logwriter;
pub mod managed;
pub mod metrics;
pub mod proxy;
pub mod remote;
pub mod repo;
pub mod scheduler;
pub mod script;
pub mod server;
pub mod settings;
pub mod state;
pub mod store_error;
pub mod sync;
pub mod system;
pub mod tls;
