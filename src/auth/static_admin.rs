//! A single fixed administrator without a store (benchmarks of the credential cache, tests).

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::{Authenticator, Caller, ROLE_ADMIN, ROLE_AUTHORIZED};
use crate::config::Secret;

pub const ADMIN_USER: &str = "openidm-admin";
pub const DEFAULT_ADMIN_PASSWORD: &str = "openidm-admin";

/// `openidm-admin` with an argon2 password hash.
pub struct StaticAdmin {
    hash: String,
    caller: Arc<Caller>,
}

impl StaticAdmin {
    /// `password` is plain text (hashed here) or an argon2 PHC string (`$argon2id$…`).
    pub fn new(password: &Secret) -> Result<Self, String> {
        let hash = if password.expose().starts_with("$argon2") {
            PasswordHash::new(password.expose())
                .map_err(|e| format!("adminPassword is not a valid argon2 hash: {e}"))?;
            password.expose().to_owned()
        } else {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default()
                .hash_password(password.expose().as_bytes(), &salt)
                .map_err(|e| format!("cannot hash adminPassword: {e}"))?
                .to_string()
        };
        Ok(Self {
            hash,
            caller: Arc::new(
                Caller::new(
                    ADMIN_USER,
                    "internal/user",
                    vec![ROLE_ADMIN.into(), ROLE_AUTHORIZED.into()],
                )
                .with_password_login(),
            ),
        })
    }
}

#[async_trait::async_trait]
impl Authenticator for StaticAdmin {
    async fn authenticate(&self, user: &str, password: &str) -> Option<Arc<Caller>> {
        if user != ADMIN_USER {
            return None;
        }
        let hash = self.hash.clone();
        let password = password.to_owned();
        // argon2 takes tens of milliseconds of CPU: keep it off the proxy's event loop.
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok.then(|| self.caller.clone())
    }
}
