//! Reversible encryption and one-way hashing of values, in IDM's `$crypto` envelopes:
//! `encryption` properties of `managed.json` and `openidm.encrypt/decrypt/isEncrypted/
//! hash/isHashed/matches` in scripts.
//!
//! ```json
//! {"$crypto": {"type": "x-simple-encryption",
//!   "value": {"cipher": "AES/GCM/NoPadding", "stableId": "openidm-sym-default",
//!             "purpose": "idm.password.encryption", "keySize": 32,
//!             "iv": "<b64, 12 bytes>", "data": "<b64, ciphertext and 16-byte tag>"}}}
//! ```
//!
//! The plaintext is the JSON text of the value, so any value round-trips. `stableId` is the
//! alias of the key ([`keystore`]); AES-256-GCM authenticates the data, so a wrong key or a
//! changed byte is an error, never garbage. Errors never hold key material or plaintext.

pub mod hash;
pub mod keystore;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Map, Value};

pub use hash::is_hashed;
pub use keystore::{Source, DEFAULT_ALIAS, ENV, FILE_NAME};

/// The cipher the gateway encrypts with.
pub const CIPHER: &str = "AES/GCM/NoPadding";
/// IDM's cipher name for its default; accepted by `encrypt` (the gateway uses GCM).
const IDM_DEFAULT_CIPHER: &str = "AES/CBC/PKCS5Padding";
/// The purpose recorded when none is given (IDM's password secret).
pub const DEFAULT_PURPOSE: &str = "idm.password.encryption";
const ENCRYPTED: &str = "x-simple-encryption";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the keystore has no key with alias '{0}'")]
    UnknownKey(String),
    #[error("unsupported cipher or algorithm '{0}'")]
    Unsupported(String),
    #[error("not a valid $crypto value: {0}")]
    Malformed(&'static str),
    #[error("the encrypted value cannot be decrypted: wrong key or altered data")]
    Decrypt,
    #[error("the system random generator failed")]
    Random,
    #[error("encryption failed: {0}")]
    Internal(&'static str),
}

/// The keys and the operations on envelopes.
pub struct Crypto {
    keys: BTreeMap<String, LessSafeKey>,
    active: String,
    source: Source,
    rng: SystemRandom,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("aliases", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .field("source", &self.source)
            .finish()
    }
}

impl Crypto {
    /// The keystore of `data_dir` (created on first start), or `$IDM_GATEWAY_KEYSTORE`.
    pub fn open(data_dir: &Path) -> Result<Arc<Crypto>, String> {
        let env = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty());
        Self::open_with(data_dir, env.as_deref())
    }

    /// As [`Crypto::open`], with the environment's keystore given.
    pub fn open_with(data_dir: &Path, env: Option<&str>) -> Result<Arc<Crypto>, String> {
        let store = keystore::load(data_dir, env)?;
        let mut keys = BTreeMap::new();
        for (alias, bytes) in &store.keys {
            let key = UnboundKey::new(&AES_256_GCM, &bytes.0)
                .map_err(|_| format!("keystore {}: unusable key '{alias}'", store.source))?;
            keys.insert(alias.clone(), LessSafeKey::new(key));
        }
        tracing::info!(keystore = %store.source, active = %store.active, keys = keys.len(), "encryption keys loaded");
        Ok(Arc::new(Crypto {
            keys,
            active: store.active,
            source: store.source,
            rng: SystemRandom::new(),
        }))
    }

    /// The alias new values are encrypted with.
    pub fn active_alias(&self) -> &str {
        &self.active
    }

    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// `openidm.encrypt(value, cipher, alias)`: `alias` names a key of the keystore, or
    /// else is taken as the purpose (IDM 7 passes a purpose there) and the active key is
    /// used. `cipher` may be null, AES/GCM/NoPadding or IDM's AES/CBC/PKCS5Padding (the
    /// gateway encrypts with AES-256-GCM either way).
    pub fn encrypt(
        &self,
        value: &Value,
        cipher: Option<&str>,
        alias: Option<&str>,
    ) -> Result<Value, CryptoError> {
        match cipher {
            None | Some(CIPHER) | Some(IDM_DEFAULT_CIPHER) => {}
            Some(other) => return Err(CryptoError::Unsupported(other.to_owned())),
        }
        match alias {
            Some(a) if self.keys.contains_key(a) => self.seal(value, a, DEFAULT_PURPOSE),
            Some(purpose) if !purpose.is_empty() => self.seal(value, &self.active, purpose),
            _ => self.seal(value, &self.active, DEFAULT_PURPOSE),
        }
    }

    /// Encrypts with the active key, recording `purpose` (a managed property's
    /// `encryption`).
    pub fn encrypt_for(&self, value: &Value, purpose: Option<&str>) -> Result<Value, CryptoError> {
        self.seal(value, &self.active, purpose.unwrap_or(DEFAULT_PURPOSE))
    }

    fn seal(&self, value: &Value, alias: &str, purpose: &str) -> Result<Value, CryptoError> {
        let key = self
            .keys
            .get(alias)
            .ok_or_else(|| CryptoError::UnknownKey(alias.to_owned()))?;
        let mut iv = [0u8; NONCE_LEN];
        self.rng.fill(&mut iv).map_err(|_| CryptoError::Random)?;
        let mut data =
            serde_json::to_vec(value).map_err(|_| CryptoError::Internal("cannot serialise"))?;
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut data)
            .map_err(|_| CryptoError::Internal("AES-GCM failed"))?;
        Ok(json!({"$crypto": {"type": ENCRYPTED, "value": {
            "cipher": CIPHER,
            "stableId": alias,
            "purpose": purpose,
            "keySize": keystore::KEY_LEN,
            "iv": B64.encode(iv),
            "data": B64.encode(data),
        }}}))
    }

    /// `openidm.decrypt(value)`: a copy of `value` with every envelope in it decrypted.
    pub fn decrypt(&self, value: &Value) -> Result<Value, CryptoError> {
        if is_encrypted(value) {
            return self.open_envelope(value);
        }
        Ok(match value {
            Value::Object(m) => {
                let mut out = Map::with_capacity(m.len());
                for (k, v) in m {
                    out.insert(k.clone(), self.decrypt(v)?);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.decrypt(v))
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }

    fn open_envelope(&self, envelope: &Value) -> Result<Value, CryptoError> {
        let v = &envelope["$crypto"]["value"];
        let field = |name: &'static str| v.get(name).and_then(Value::as_str);
        match field("cipher") {
            Some(CIPHER) => {}
            Some(other) => return Err(CryptoError::Unsupported(other.to_owned())),
            None => return Err(CryptoError::Malformed("no cipher")),
        }
        let alias = field("stableId").ok_or(CryptoError::Malformed("no stableId"))?;
        let key = self
            .keys
            .get(alias)
            .ok_or_else(|| CryptoError::UnknownKey(alias.to_owned()))?;
        let iv: [u8; NONCE_LEN] = field("iv")
            .and_then(|s| B64.decode(s).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or(CryptoError::Malformed("iv must be 12 bytes in base64"))?;
        let mut data = field("data")
            .and_then(|s| B64.decode(s).ok())
            .ok_or(CryptoError::Malformed("data must be base64"))?;
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut data)
            .map_err(|_| CryptoError::Decrypt)?;
        serde_json::from_slice(plain)
            .map_err(|_| CryptoError::Malformed("the plaintext is not JSON"))
    }

    /// `openidm.hash(value, algorithm)`: SHA-256 (default), SHA-384, SHA-512, PBKDF2
    /// (`PBKDF2-SHA-512` for another HMAC) or ARGON2.
    pub fn hash(&self, value: &Value, algorithm: Option<&str>) -> Result<Value, CryptoError> {
        hash::hash(&self.rng, value, algorithm)
    }

    /// `openidm.matches(plain, stored)`: whether `plain` is what a hashed or encrypted
    /// value holds.
    pub fn matches(&self, plain: &str, stored: &Value) -> bool {
        if is_encrypted(stored) {
            return match self.open_envelope(stored) {
                Ok(Value::String(s)) => hash::constant_time_eq(s.as_bytes(), plain.as_bytes()),
                Ok(other) => hash::constant_time_eq(other.to_string().as_bytes(), plain.as_bytes()),
                Err(_) => false,
            };
        }
        hash::matches(plain.as_bytes(), stored)
    }
}

/// Whether `v` is an encryption envelope.
pub fn is_encrypted(v: &Value) -> bool {
    v.get("$crypto")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        == Some(ENCRYPTED)
}

impl crate::script::Secrets for Crypto {
    fn encrypt(
        &self,
        value: &Value,
        cipher: Option<&str>,
        alias: Option<&str>,
    ) -> Result<Value, String> {
        Crypto::encrypt(self, value, cipher, alias).map_err(|e| e.to_string())
    }

    fn decrypt(&self, value: &Value) -> Result<Value, String> {
        Crypto::decrypt(self, value).map_err(|e| e.to_string())
    }

    fn is_encrypted(&self, value: &Value) -> bool {
        is_encrypted(value)
    }

    fn hash(&self, value: &Value, algorithm: Option<&str>) -> Result<Value, String> {
        Crypto::hash(self, value, algorithm).map_err(|e| e.to_string())
    }

    fn is_hashed(&self, value: &Value) -> bool {
        is_hashed(value)
    }

    fn matches(&self, plain: &str, hashed: &Value) -> bool {
        Crypto::matches(self, plain, hashed)
    }
}
