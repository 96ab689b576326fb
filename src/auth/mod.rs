//! Caller authentication: credentials from the request headers, checked by an
//! [`Authenticator`]. The gateway checks internal users in the store
//! (`crate::internal::StoreAuthenticator`); [`StaticAdmin`], a single fixed administrator,
//! serves benchmarks and tests that need no store.
//!
//! A password hash is verified once per distinct credential and the result cached
//! ([`CachingAuthenticator`]), so the per-request cost is a hash-map lookup.

mod cache;
mod credentials;
pub mod password;
mod static_admin;

use std::sync::Arc;

pub use cache::CachingAuthenticator;
pub use credentials::{credentials_from_headers, CredentialsError};
pub use static_admin::{StaticAdmin, ADMIN_USER, DEFAULT_ADMIN_PASSWORD};

pub use crate::crest::{Caller, ROLE_ADMIN, ROLE_AUTHORIZED, ROLE_REG};

/// Checks a user name and password. Implementations may be slow (a password hash): callers
/// put a [`CachingAuthenticator`] in front.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(&self, user: &str, password: &str) -> Option<Arc<Caller>>;
}
