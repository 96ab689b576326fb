//! Remote IDM instances: the live registry built from the conf snapshot, their credentials
//! (Basic, or an OAuth2 client-credentials token cache), and name resolution.
//!
//! No pingora types here: the proxy turns a [`RemoteInstance`] into a peer, and the CREST
//! client of the sync hub will use the same registry and token cache.

mod registry;
mod resolve;
mod tls;
mod token;

pub use registry::{Credentials, Registry, RemoteInstance};
pub use resolve::Resolver;
pub use tls::http_client;
pub use token::{Token, TokenError, TokenSource};
