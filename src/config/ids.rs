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

/// The file a config id is stored in, or `None` when the id cannot name a file: at most one
/// `/`, no `-` in the factory part (it would read back as another id), plain characters.
pub fn file_for_config_id(id: &str) -> Option<String> {
    let (factory, instance) = match id.split_once('/') {
        Some((f, i)) => (f, Some(i)),
        None => (id, None),
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !plain(factory) || factory.contains('-') {
        return None;
    }
    match instance {
        None => Some(format!("{factory}.json")),
        Some(i) if plain(i) => Some(format!("{factory}-{i}.json")),
        Some(_) => None,
    }
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
    }

    #[test]
    fn pid_is_stable_and_factory_prefixed() {
        assert_eq!(pid_for("sync"), "sync");
        let p = pid_for("external.idm/name1");
        assert!(p.starts_with("external.idm.") && p.len() == "external.idm.".len() + 32);
        assert_eq!(p, pid_for("external.idm/name1"));
    }
}
