//! The pingora `ProxyHttp` implementation: the only place pingora types meet the rest of
//! the gateway. Phases only sequence; the work is in plain functions (`route`, `headers`,
//! `errors`) that are tested without a session.

mod errors;
mod headers;
pub mod limits;
mod route;
mod service;
mod trust;

pub use errors::{classify_request_error, classify_upstream_error};
pub use headers::{rewrite_request, rewrite_response, transaction_id, TRANSACTION_ID};
pub use route::{classify, Route, RouteError};
pub use service::{GatewayProxy, RequestCtx, DEFAULT_MAX_PROXY_BODY};
