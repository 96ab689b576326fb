//! Caller authentication as IDM's `authentication.json` describes it ([`config`]): the
//! classic modules ([`modules`]: `STATIC_USER`, `INTERNAL_USER`, `MANAGED_USER`) for
//! user name and password, `rsFilter` ([`rsfilter`]) for OAuth2 bearer tokens, and
//! [`Authn`] choosing between them per request, with login throttling ([`throttle`]).
//! [`StaticAdmin`], a single fixed administrator, serves benchmarks and tests that need
//! no store.
//!
//! A password hash is verified once per distinct credential and the result cached
//! ([`CachingAuthenticator`]), so the per-request cost is a hash-map lookup.

mod cache;
pub mod config;
mod credentials;
pub mod modules;
pub mod password;
pub mod rsfilter;
mod service;
mod static_admin;
pub mod throttle;

use std::sync::Arc;

pub use cache::{CachingAuthenticator, Refusal};
pub use config::{parse_authentication, AuthConfig, AUTHENTICATION_CONFIG};
pub use credentials::{
    credentials_from_headers, reauth_password_from_headers, CredentialsError, REAUTH_PASSWORD,
};
pub use service::{AccountChanges, AuthError, Authn, LiveAuth, Reauthentication};
pub use static_admin::{StaticAdmin, ADMIN_USER, DEFAULT_ADMIN_PASSWORD};
pub use throttle::LoginThrottleConfig;

pub use crate::crest::{Caller, ROLE_ADMIN, ROLE_AUTHORIZED, ROLE_REG};

/// Checks a user name and password. Implementations may be slow (a password hash): callers
/// put a [`CachingAuthenticator`] in front.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(&self, user: &str, password: &str) -> Option<Arc<Caller>>;
}
