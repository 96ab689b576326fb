//! Remote IDM instances: the live registry built from the conf snapshot, their credentials
//! (Basic, or an OAuth2 client-credentials token cache), and name resolution.
//!
//! No pingora types here: the proxy turns a [`RemoteInstance`] into a peer, and the CREST
//! client ([`client::RemoteHandler`], mounted on `external/idm` of the internal router) uses
//! the same registry and token cache.

pub mod client;
mod failure;
mod health;
mod registry;
mod resolve;
mod token;

pub use client::{query_pages, QueryPager, RemoteHandler};
pub use failure::UpstreamFailure;
pub use health::{bit as url_bit, UrlSet};
pub use registry::{Credentials, Registry, RemoteInstance};
pub use resolve::Resolver;
pub use token::{Token, TokenError, TokenSource};
