//! IDM config naming: `a-b.json` ↔ factory config `a/b`, `a.json` ↔ `a`.

/// `external.idm-name1.json` → `external.idm/name1`; `sync.json` → `sync`.
/// IDM splits at the first `-`. `None` for files that are not config objects.
pub fn config_id_for_file(file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(".json")?;
    if stem.is_empty() || stem.starts_with('.') {
        return None;
    }
    Some(match stem.split_once('-') {
        Some((factory, instance)) if !factory.is_empty() && !instance.is_empty() => {
            format!("{factory}/{instance}")
        }
        Some(_) => return None,
        None => stem.to_owned(),
    })
}

/// One segment of a config id: plain characters, not hidden, not `.`/`..`.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `id` is a well-formed config id (`pid` or `factory/name`, plain segments). A
/// well-formed id that no file holds is a config that does not exist (404); a malformed one
/// is a bad request (400).
pub fn is_config_id(id: &str) -> bool {
    match id.split_once('/') {
        Some((factory, instance)) => plain(factory) && plain(instance),
        None => plain(id),
    }
}

/// The file a config id is stored in, or `None` when the id cannot name a file: a
/// well-formed id ([`is_config_id`]) without `-` in the factory part (it would read back as
/// another id).
pub fn file_for_config_id(id: &str) -> Option<String> {
    if !is_config_id(id) {
        return None;
    }
    let (factory, instance) = match id.split_once('/') {
        Some((f, i)) => (f, Some(i)),
        None => (id, None),
    };
    if factory.contains('-') {
        return None;
    }
    Some(match instance {
        None => format!("{factory}.json"),
        Some(i) => format!("{factory}-{i}.json"),
    })
}

/// The factory pid of a config id, if it is a factory config.
pub fn factory_of(id: &str) -> Option<&str> {
    id.split_once('/').map(|(f, _)| f)
}

/// A stable `pid` for the `/openidm/config` listing: the id itself for single configs,
/// `<factory>.<32 hex>` for factory configs, as IDM shows them.
pub fn pid_for(id: &str) -> String {
    use sha2::{Digest, Sha256};
    match factory_of(id) {
        None => id.to_owned(),
        Some(factory) => {
            let digest = Sha256::digest(id.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("{factory}.{hex}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_map_to_idm_ids_and_back() {
        for (file, id) in [
            ("external.idm-name1.json", "external.idm/name1"),
            ("sync.json", "sync"),
            ("schedule-my-job.json", "schedule/my-job"),
            ("gateway.json", "gateway"),
        ] {
            assert_eq!(config_id_for_file(file).as_deref(), Some(id));
            assert_eq!(file_for_config_id(id).as_deref(), Some(file));
        }
        assert_eq!(config_id_for_file("-x.json"), None);
        assert_eq!(config_id_for_file("x-.json"), None);
        assert_eq!(config_id_for_file("x.txt"), None);
    }

    #[test]
    fn ids_that_cannot_name_a_file_are_refused() {
        for bad in [
            "", "a/b/c", "../x", "a/..", "foo-bar", "a/", "/a", ".hidden", "a b",
        ] {
            assert_eq!(file_for_config_id(bad), None, "{bad}");
        }
        // Well-formed, so a read is a 404, but no file can hold it.
        for unstorable in ["foo-bar", "my-thing/x"] {
            assert!(is_config_id(unstorable), "{unstorable}");
            assert_eq!(file_for_config_id(unstorable), None, "{unstorable}");
        }
        for malformed in ["", "a/b/c", "../x", "a/..", "a/", "/a", ".hidden", "a b"] {
            assert!(!is_config_id(malformed), "{malformed}");
        }
    }

    #[test]
    fn pid_is_stable_and_factory_prefixed() {
        assert_eq!(pid_for("sync"), "sync");
        let p = pid_for("external.idm/name1");
        assert!(p.starts_with("external.idm.") && p.len() == "external.idm.".len() + 32);
        assert_eq!(p, pid_for("external.idm/name1"));
    }
}
