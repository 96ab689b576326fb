//! The symmetric keys: `<data>/keystore.json` (created on first start, mode 0600) or the
//! `IDM_GATEWAY_KEYSTORE` environment variable (the same document, inline; nothing is
//! written then).
//!
//! ```json
//! {"active": "openidm-sym-default",
//!  "keys": {"openidm-sym-default": "<base64 of 32 random bytes>"}}
//! ```
//!
//! Rotation: add a key under a new alias and make it `active` (in the file, setting
//! `active` to an alias it does not hold yet makes the gateway generate that key at the
//! next start). New values are encrypted with the active key; values encrypted with the
//! older aliases still decrypt as long as their keys stay in the keystore.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The keystore file in the data directory.
pub const FILE_NAME: &str = "keystore.json";
/// The environment variable holding a keystore document (overrides the file).
pub const ENV: &str = "IDM_GATEWAY_KEYSTORE";
/// IDM's default symmetric key alias, the first key of a new keystore.
pub const DEFAULT_ALIAS: &str = "openidm-sym-default";
/// AES-256.
pub const KEY_LEN: usize = 32;

/// A 256-bit key. Its `Debug` never shows the bytes.
pub struct KeyBytes(pub [u8; KEY_LEN]);

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(..)")
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        // Best effort: the AEAD key made from these bytes keeps its own copy.
        self.0 = [0; KEY_LEN];
    }
}

/// Where the keys came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Env,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env => write!(f, "${ENV}"),
        }
    }
}

/// The loaded keystore.
#[derive(Debug)]
pub struct Keystore {
    pub active: String,
    pub keys: BTreeMap<String, KeyBytes>,
    pub source: Source,
}

/// The document, as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    active: String,
    keys: BTreeMap<String, String>,
}

/// Loads the keystore: from `env` (the variable's value) when given, else from the file
/// in `data_dir`, creating it on first start.
pub fn load(data_dir: &Path, env: Option<&str>) -> Result<Keystore, String> {
    if let Some(text) = env {
        let doc: Doc = serde_json::from_str(text)
            .map_err(|e| format!("${ENV} is not a keystore document: {}", redact(&e)))?;
        return decode(doc, Source::Env);
    }
    let path = data_dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => {
            check_mode(&path)?;
            let doc: Doc = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "the keystore {} is not a keystore document: {}",
                    path.display(),
                    redact(&e)
                )
            })?;
            let mut doc = doc;
            // Rotation by naming a new active alias: generate its key.
            if !doc.keys.contains_key(&doc.active) {
                check_alias(&doc.active, &Source::File(path.clone()))?;
                doc.keys.insert(doc.active.clone(), new_key()?);
                write(&path, &doc)?;
                tracing::info!(keystore = %path.display(), alias = %doc.active, "generated a new active key");
            }
            decode(doc, Source::File(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let doc = Doc {
                active: DEFAULT_ALIAS.to_owned(),
                keys: BTreeMap::from([(DEFAULT_ALIAS.to_owned(), new_key()?)]),
            };
            write(&path, &doc)?;
            tracing::info!(keystore = %path.display(), "created the keystore");
            decode(doc, Source::File(path))
        }
        Err(e) => Err(format!("cannot read the keystore {}: {e}", path.display())),
    }
}

/// A JSON error without the text it quotes (a key could be in it).
fn redact(e: &serde_json::Error) -> String {
    format!(
        "line {} column {}: {:?}",
        e.line(),
        e.column(),
        e.classify()
    )
}

fn check_alias(alias: &str, source: &Source) -> Result<(), String> {
    if alias.is_empty() || alias.len() > 128 || alias.chars().any(char::is_control) {
        return Err(format!(
            "keystore {source}: a key alias must be 1 to 128 printable characters"
        ));
    }
    Ok(())
}

fn decode(doc: Doc, source: Source) -> Result<Keystore, String> {
    if !doc.keys.contains_key(&doc.active) {
        return Err(format!(
            "keystore {source}: the active alias '{}' has no key",
            doc.active.escape_debug()
        ));
    }
    let mut keys = BTreeMap::new();
    for (alias, b64) in doc.keys {
        check_alias(&alias, &source)?;
        let bytes = B64.decode(b64.trim()).ok().filter(|b| b.len() == KEY_LEN);
        let Some(bytes) = bytes else {
            return Err(format!(
                "keystore {source}: the key '{}' must be {KEY_LEN} bytes in base64",
                alias.escape_debug()
            ));
        };
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&bytes);
        keys.insert(alias, KeyBytes(key));
    }
    Ok(Keystore {
        active: doc.active,
        keys,
        source,
    })
}

/// A new random key, in base64.
fn new_key() -> Result<String, String> {
    let mut key = KeyBytes([0; KEY_LEN]);
    SystemRandom::new()
        .fill(&mut key.0)
        .map_err(|_| "the system random generator failed".to_owned())?;
    Ok(B64.encode(key.0))
}

/// Writes the document readable by the owner only, atomically (temporary file, rename).
fn write(path: &Path, doc: &Doc) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let fail = |e: std::io::Error| format!("cannot write the keystore {}: {e}", path.display());
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(fail)?;
    let text = serde_json::to_vec_pretty(doc).map_err(|e| fail(std::io::Error::other(e)))?;
    file.write_all(&text).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(fail)?;
    Ok(())
}

/// Refuses a keystore others may read or write; warns when the group may.
fn check_mode(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the keystore {}: {e}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o007 != 0 {
            return Err(format!(
                "the keystore {} is accessible to other users (mode {mode:03o}): chmod 600 it",
                path.display()
            ));
        }
        if mode & 0o070 != 0 {
            tracing::warn!(keystore = %path.display(), mode = %format!("{mode:03o}"), "the keystore is accessible to its group: chmod 600 it");
        }
    }
    Ok(())
}
