//! IDM's `salted-hash` envelopes (one-way):
//!
//! ```json
//! {"$crypto": {"type": "salted-hash", "value": {"algorithm": "SHA-256", "data": "<b64>"}}}
//! ```
//!
//! `data` is the digest followed by the salt (as OpenDJ's salted SHA schemes lay it out),
//! the digest being `H(value ‖ salt)`. PBKDF2 adds IDM's `config` (`hashLength`,
//! `saltLength`, `iterations`, `hmac`); ARGON2 holds the PHC string the gateway already
//! stores for `secureHash` properties ([`crate::auth::password`]).

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};
use sha2::Digest;

use super::CryptoError;

/// The salt of the SHA schemes, in bytes.
const SALT_LEN: usize = 16;
/// PBKDF2 defaults (IDM's documented config, with a 32-byte hash).
const PBKDF2_ITERATIONS: u32 = 20_000;
const PBKDF2_HASH_LEN: usize = 32;
/// Upper bounds on what a stored PBKDF2 config may ask for.
const PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;
const PBKDF2_MAX_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sha {
    Sha256,
    Sha384,
    Sha512,
}

impl Sha {
    fn parse(name: &str) -> Option<Sha> {
        match name.to_ascii_uppercase().replace(['-', '_'], "").as_str() {
            "SHA256" => Some(Sha::Sha256),
            "SHA384" => Some(Sha::Sha384),
            "SHA512" => Some(Sha::Sha512),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sha::Sha256 => "SHA-256",
            Sha::Sha384 => "SHA-384",
            Sha::Sha512 => "SHA-512",
        }
    }

    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Sha::Sha256 => run::<sha2::Sha256>(parts),
            Sha::Sha384 => run::<sha2::Sha384>(parts),
            Sha::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    fn len(self) -> usize {
        match self {
            Sha::Sha256 => 32,
            Sha::Sha384 => 48,
            Sha::Sha512 => 64,
        }
    }

    fn pbkdf2(self) -> ring::pbkdf2::Algorithm {
        match self {
            Sha::Sha256 => ring::pbkdf2::PBKDF2_HMAC_SHA256,
            Sha::Sha384 => ring::pbkdf2::PBKDF2_HMAC_SHA384,
            Sha::Sha512 => ring::pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
}

/// The bytes a value is hashed as: a string's UTF-8, anything else's JSON text.
pub fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

fn envelope(value: Value) -> Value {
    json!({"$crypto": {"type": "salted-hash", "value": value}})
}

fn salt(rng: &SystemRandom, len: usize) -> Result<Vec<u8>, CryptoError> {
    let mut s = vec![0u8; len];
    rng.fill(&mut s).map_err(|_| CryptoError::Random)?;
    Ok(s)
}

/// Hashes `value` with `algorithm` (SHA-256 when None).
pub fn hash(
    rng: &SystemRandom,
    value: &Value,
    algorithm: Option<&str>,
) -> Result<Value, CryptoError> {
    let plain = bytes_of(value);
    let algorithm = algorithm.unwrap_or("SHA-256");
    if let Some(sha) = Sha::parse(algorithm) {
        let salt = salt(rng, SALT_LEN)?;
        let mut data = sha.digest(&[&plain, &salt]);
        data.extend_from_slice(&salt);
        return Ok(envelope(
            json!({"algorithm": sha.name(), "data": B64.encode(data)}),
        ));
    }
    let upper = algorithm.to_ascii_uppercase();
    if upper == "ARGON2" {
        let text = String::from_utf8(plain).map_err(|_| CryptoError::Malformed("not text"))?;
        return crate::auth::password::hash(&text)
            .map_err(|_| CryptoError::Internal("hashing failed"));
    }
    // "PBKDF2" (HMAC-SHA-256) or "PBKDF2-SHA-512" and the like.
    if let Some(rest) = upper.strip_prefix("PBKDF2") {
        let rest = rest
            .trim_start_matches(['-', '_'])
            .trim_start_matches("HMAC");
        let sha = if rest.is_empty() {
            Sha::Sha256
        } else {
            Sha::parse(rest).ok_or_else(|| CryptoError::Unsupported(algorithm.to_owned()))?
        };
        let salt = salt(rng, SALT_LEN)?;
        let mut data = vec![0u8; PBKDF2_HASH_LEN];
        let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero");
        ring::pbkdf2::derive(sha.pbkdf2(), iterations, &salt, &plain, &mut data);
        data.extend_from_slice(&salt);
        return Ok(envelope(json!({
            "algorithm": "PBKDF2",
            "data": B64.encode(data),
            "config": {"hashLength": PBKDF2_HASH_LEN, "saltLength": SALT_LEN,
                       "iterations": PBKDF2_ITERATIONS, "hmac": sha.name()},
        })));
    }
    Err(CryptoError::Unsupported(algorithm.to_owned()))
}

/// Whether `v` is a `salted-hash` envelope.
pub fn is_hashed(v: &Value) -> bool {
    v.get("$crypto")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        == Some("salted-hash")
}

/// Whether `plain` hashes to the `salted-hash` envelope `hashed`. Anything malformed or
/// unknown never matches.
pub fn matches(plain: &[u8], hashed: &Value) -> bool {
    let Some(value) = hashed.get("$crypto").and_then(|c| c.get("value")) else {
        return false;
    };
    let Some(algorithm) = value.get("algorithm").and_then(Value::as_str) else {
        return false;
    };
    if algorithm.eq_ignore_ascii_case("ARGON2") {
        return std::str::from_utf8(plain)
            .map(|p| crate::auth::password::verify(hashed, p))
            .unwrap_or(false);
    }
    let Some(data) = value
        .get("data")
        .and_then(Value::as_str)
        .and_then(|d| B64.decode(d).ok())
    else {
        return false;
    };
    if let Some(sha) = Sha::parse(algorithm) {
        if data.len() <= sha.len() {
            return false;
        }
        let (digest, salt) = data.split_at(sha.len());
        return constant_time_eq(&sha.digest(&[plain, salt]), digest);
    }
    if algorithm.eq_ignore_ascii_case("PBKDF2") {
        let config = value.get("config");
        let get = |k: &str| config.and_then(|c| c.get(k)).and_then(Value::as_u64);
        let sha = match config.and_then(|c| c.get("hmac")).and_then(Value::as_str) {
            None => Some(Sha::Sha256),
            Some(h) => Sha::parse(h.trim_start_matches("Hmac").trim_start_matches("HMAC")),
        };
        let hash_len = get("hashLength").map_or(PBKDF2_HASH_LEN as u64, |l| l) as usize;
        let iterations = get("iterations").unwrap_or(u64::from(PBKDF2_ITERATIONS));
        let (Some(sha), Some(iterations)) = (
            sha,
            u32::try_from(iterations)
                .ok()
                .filter(|i| *i <= PBKDF2_MAX_ITERATIONS)
                .and_then(NonZeroU32::new),
        ) else {
            return false;
        };
        if hash_len == 0 || hash_len > PBKDF2_MAX_LEN || data.len() <= hash_len {
            return false;
        }
        let (derived, salt) = data.split_at(hash_len);
        return ring::pbkdf2::verify(sha.pbkdf2(), iterations, salt, plain, derived).is_ok();
    }
    false
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
