//! Password hashing for stored secrets (internal and managed user passwords): argon2id,
//! salted, in IDM's `$crypto` envelope so a stored hash is recognisable and never
//! re-hashed:
//!
//! ```json
//! {"$crypto": {"type": "salted-hash", "value": {"algorithm": "ARGON2", "data": "$argon2id$v=19$…"}}}
//! ```
//!
//! Hashing and verifying take tens of milliseconds of CPU: async callers use the `_async`
//! forms, which run on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde_json::{json, Value};

/// Hashes `password` into a `$crypto` value.
pub fn hash(password: &str) -> Result<Value, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let phc = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| format!("cannot hash password: {e}"))?
        .to_string();
    Ok(json!({"$crypto": {"type": "salted-hash", "value": {"algorithm": "ARGON2", "data": phc}}}))
}

pub async fn hash_async(password: String) -> Result<Value, String> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| format!("cannot hash password: {e}"))?
}

/// Whether `v` is already a stored hash (an `$crypto` envelope).
pub fn is_hashed(v: &Value) -> bool {
    v.get("$crypto").is_some()
}

/// The PHC string inside a `$crypto` envelope.
fn phc(stored: &Value) -> Option<&str> {
    stored.get("$crypto")?.get("value")?.get("data")?.as_str()
}

/// Whether `password` matches the stored hash. Anything that is not a valid hash never
/// matches.
pub fn verify(stored: &Value, password: &str) -> bool {
    let Some(phc) = phc(stored) else {
        return false;
    };
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

pub async fn verify_async(stored: Value, password: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&stored, &password))
        .await
        .unwrap_or(false)
}

/// Wraps an existing argon2 PHC string (`$argon2id$…`, e.g. from config) in the envelope.
pub fn from_phc(phc: &str) -> Result<Value, String> {
    PasswordHash::new(phc).map_err(|e| format!("not a valid argon2 hash: {e}"))?;
    Ok(json!({"$crypto": {"type": "salted-hash", "value": {"algorithm": "ARGON2", "data": phc}}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_is_recognised() {
        let h = hash("s3cret").unwrap();
        assert!(is_hashed(&h));
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "other"));
        assert!(!verify(&json!("s3cret"), "s3cret"));
        assert!(!h.to_string().contains("s3cret"));
    }
}
