use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use super::*;

fn open(dir: &Path) -> Arc<Crypto> {
    Crypto::open_with(dir, None).unwrap()
}

fn key_doc(keys: &[(&str, u8)], active: &str) -> String {
    let keys: serde_json::Map<String, Value> = keys
        .iter()
        .map(|(a, b)| (a.to_string(), json!(B64.encode([*b; 32]))))
        .collect();
    json!({"active": active, "keys": keys}).to_string()
}

#[test]
fn strings_and_objects_round_trip_and_the_plaintext_is_not_in_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    for v in [
        json!("S3cret-pass"),
        json!({"a": [1, 2, {"b": "S3cret-deep"}], "n": null}),
        json!(42),
    ] {
        let e = c.encrypt(&v, None, None).unwrap();
        assert!(is_encrypted(&e), "{e}");
        assert!(!is_hashed(&e));
        assert!(!e.to_string().contains("S3cret"), "{e}");
        let inner = &e["$crypto"]["value"];
        assert_eq!(inner["cipher"], CIPHER);
        assert_eq!(inner["stableId"], DEFAULT_ALIAS);
        assert_eq!(inner["purpose"], DEFAULT_PURPOSE);
        assert_eq!(c.decrypt(&e).unwrap(), v);
    }
    // A fresh iv each time.
    let a = c.encrypt(&json!("x"), None, None).unwrap();
    let b = c.encrypt(&json!("x"), None, None).unwrap();
    assert_ne!(a["$crypto"]["value"]["iv"], b["$crypto"]["value"]["iv"]);
    assert_ne!(a["$crypto"]["value"]["data"], b["$crypto"]["value"]["data"]);
}

#[test]
fn decrypt_is_deep_and_leaves_plain_values_alone() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let doc = json!({
        "userName": "ada",
        "password": c.encrypt(&json!("pw-1"), None, None).unwrap(),
        "list": [c.encrypt(&json!({"k": 1}), None, None).unwrap(), "plain"],
    });
    assert_eq!(
        c.decrypt(&doc).unwrap(),
        json!({"userName": "ada", "password": "pw-1", "list": [{"k": 1}, "plain"]})
    );
    assert_eq!(c.decrypt(&json!("plain")).unwrap(), json!("plain"));
}

#[test]
fn wrong_key_and_altered_data_are_errors_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let e = c.encrypt(&json!("S3cret-pass"), None, None).unwrap();
    // Another keystore with the same alias: the tag does not verify.
    let other = Crypto::open_with(
        dir.path(),
        Some(&key_doc(&[(DEFAULT_ALIAS, 7)], DEFAULT_ALIAS)),
    )
    .unwrap();
    assert_eq!(other.decrypt(&e), Err(CryptoError::Decrypt));
    // One changed byte of the ciphertext.
    let mut tampered = e.clone();
    let mut data = B64
        .decode(e["$crypto"]["value"]["data"].as_str().unwrap())
        .unwrap();
    data[0] ^= 1;
    tampered["$crypto"]["value"]["data"] = json!(B64.encode(&data));
    assert_eq!(c.decrypt(&tampered), Err(CryptoError::Decrypt));
    // Unknown alias, bad iv, other cipher, missing fields.
    let mut unknown = e.clone();
    unknown["$crypto"]["value"]["stableId"] = json!("nope");
    assert_eq!(
        c.decrypt(&unknown),
        Err(CryptoError::UnknownKey("nope".into()))
    );
    let mut bad_iv = e.clone();
    bad_iv["$crypto"]["value"]["iv"] = json!("AAAA");
    assert!(matches!(c.decrypt(&bad_iv), Err(CryptoError::Malformed(_))));
    let mut cbc = e.clone();
    cbc["$crypto"]["value"]["cipher"] = json!("AES/CBC/PKCS5Padding");
    assert!(matches!(c.decrypt(&cbc), Err(CryptoError::Unsupported(_))));
    let empty = json!({"$crypto": {"type": "x-simple-encryption", "value": {}}});
    assert!(matches!(c.decrypt(&empty), Err(CryptoError::Malformed(_))));
    for err in [
        other.decrypt(&e).unwrap_err(),
        c.decrypt(&bad_iv).unwrap_err(),
    ] {
        assert!(!err.to_string().contains("S3cret"), "{err}");
    }
    assert!(!format!("{c:?}").contains(&B64.encode([7u8; 32])));
    assert_eq!(
        c.encrypt(&json!(1), Some("DES"), None),
        Err(CryptoError::Unsupported("DES".into()))
    );
}

#[test]
fn the_keystore_file_is_created_0600_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let path = dir.path().join(FILE_NAME);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let e = c.encrypt(&json!("pw"), None, None).unwrap();
    let again = open(dir.path());
    assert_eq!(again.decrypt(&e).unwrap(), json!("pw"));
    assert_eq!(again.source(), &Source::File(path.clone()));
    // Readable by others: refused; by the group: accepted (with a warning).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Crypto::open_with(dir.path(), None).unwrap_err();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(Crypto::open_with(dir.path(), None).is_ok());
    // A broken document is refused without quoting it.
    std::fs::write(
        &path,
        "{\"active\": \"a\", \"keys\": {\"a\": \"c2VjcmV0\"}}",
    )
    .unwrap();
    let err = Crypto::open_with(dir.path(), None).unwrap_err();
    assert!(err.contains("32 bytes"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");
}

#[test]
fn rotation_encrypts_with_the_new_key_and_old_values_still_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let old = c.encrypt(&json!("old-secret"), None, None).unwrap();
    // The admin names a new active alias: its key is generated at the next start.
    let path = dir.path().join(FILE_NAME);
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["active"] = json!("key-2");
    std::fs::write(&path, doc.to_string()).unwrap();
    let rotated = open(dir.path());
    assert_eq!(rotated.active_alias(), "key-2");
    assert_eq!(
        rotated.aliases().collect::<Vec<_>>(),
        ["key-2", DEFAULT_ALIAS]
    );
    let new = rotated.encrypt(&json!("new-secret"), None, None).unwrap();
    assert_eq!(new["$crypto"]["value"]["stableId"], "key-2");
    assert_eq!(rotated.decrypt(&old).unwrap(), json!("old-secret"));
    assert_eq!(rotated.decrypt(&new).unwrap(), json!("new-secret"));
    // The generated key was saved, owner-only.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(open(dir.path()).decrypt(&new).unwrap(), json!("new-secret"));
    // A script may still name the old alias; an unknown name is a purpose.
    let pinned = rotated
        .encrypt(&json!(1), None, Some(DEFAULT_ALIAS))
        .unwrap();
    assert_eq!(pinned["$crypto"]["value"]["stableId"], DEFAULT_ALIAS);
    let purposed = rotated.encrypt(&json!(1), None, Some("idm.other")).unwrap();
    assert_eq!(purposed["$crypto"]["value"]["stableId"], "key-2");
    assert_eq!(purposed["$crypto"]["value"]["purpose"], "idm.other");
}

#[test]
fn the_environment_keystore_is_used_as_is_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let env = key_doc(&[("a", 1), ("b", 2)], "b");
    let c = Crypto::open_with(dir.path(), Some(&env)).unwrap();
    assert_eq!(c.source(), &Source::Env);
    assert_eq!(c.active_alias(), "b");
    assert!(!dir.path().join(FILE_NAME).exists());
    let e = c.encrypt(&json!("x"), None, None).unwrap();
    let same = Crypto::open_with(dir.path(), Some(&key_doc(&[("b", 2)], "b"))).unwrap();
    assert_eq!(same.decrypt(&e).unwrap(), json!("x"));
    for bad in [
        key_doc(&[("a", 1)], "missing"),
        "not json".to_owned(),
        json!({"active": "a", "keys": {"a": "AAAA"}}).to_string(),
    ] {
        let err = Crypto::open_with(dir.path(), Some(&bad)).unwrap_err();
        assert!(
            err.contains(ENV) || err.contains("$IDM_GATEWAY_KEYSTORE"),
            "{err}"
        );
    }
}

#[test]
fn hashes_are_salted_one_way_and_match() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    for alg in [
        None,
        Some("SHA-512"),
        Some("SHA-384"),
        Some("PBKDF2"),
        Some("PBKDF2-SHA-512"),
        Some("ARGON2"),
    ] {
        let h = c.hash(&json!("Passw0rd"), alg).unwrap();
        assert!(is_hashed(&h), "{h}");
        assert!(!is_encrypted(&h));
        assert!(!h.to_string().contains("Passw0rd"));
        assert!(c.matches("Passw0rd", &h), "{alg:?}");
        assert!(!c.matches("Passw0rd!", &h), "{alg:?}");
        assert_eq!(c.decrypt(&h).unwrap(), h, "a hash is not decrypted");
    }
    assert_eq!(
        c.hash(&json!("x"), None).unwrap()["$crypto"]["value"]["algorithm"],
        "SHA-256"
    );
    assert_ne!(
        c.hash(&json!("x"), None).unwrap(),
        c.hash(&json!("x"), None).unwrap()
    );
    assert!(matches!(
        c.hash(&json!("x"), Some("MD5")),
        Err(CryptoError::Unsupported(_))
    ));
    // What the store holds for secureHash today (argon2) matches too.
    let stored = crate::auth::password::hash("Argon-pw").unwrap();
    assert!(is_hashed(&stored));
    assert!(c.matches("Argon-pw", &stored));
    assert!(!c.matches("argon-pw", &stored));
    // Encrypted values match their plaintext; garbage never matches.
    let e = c.encrypt(&json!("Enc-pw"), None, None).unwrap();
    assert!(c.matches("Enc-pw", &e));
    assert!(!c.matches("enc-pw", &e));
    for junk in [
        json!(null),
        json!("Passw0rd"),
        json!({"$crypto": {"type": "salted-hash", "value": {"algorithm": "SHA-256", "data": "!!"}}}),
    ] {
        assert!(!c.matches("Passw0rd", &junk));
    }
    let absurd = json!({"$crypto": {"type": "salted-hash", "value": {"algorithm": "PBKDF2", "data": "AAAAAAAA",
        "config": {"iterations": 4_000_000_000u64, "hashLength": 2}}}});
    assert!(!c.matches("x", &absurd));
}

#[test]
fn secrets_trait_answers_strings() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let s: &dyn crate::script::Secrets = c.as_ref();
    let e = s.encrypt(&json!("v"), None, None).unwrap();
    assert!(s.is_encrypted(&e));
    assert_eq!(s.decrypt(&e).unwrap(), json!("v"));
    let mut bad = e.clone();
    bad["$crypto"]["value"]["stableId"] = json!("zz");
    assert!(s.decrypt(&bad).unwrap_err().contains("'zz'"));
    let h = s.hash(&json!("v"), None).unwrap();
    assert!(s.is_hashed(&h) && s.matches("v", &h));
}
