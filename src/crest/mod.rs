//! CREST wire model shared by every handler: the error body, query filters, query
//! parameters and JSON responses.
//!
//! This module knows nothing about pingora or the store; it only turns results into
//! `(status, headers, body)` triples that an HTTP edge writes out.

mod error;
pub mod fields;
pub mod filter;
pub mod patch;
pub mod query;

pub use error::{reason_phrase, ResourceError};
