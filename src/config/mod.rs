//! The conf directory: loading, validation, `&{…}` substitution, IDM config ids, and the
//! immutable [`ConfSnapshot`] that a reload builds and the rest of the gateway reads.
//!
//! This module reads files and validates them; it never talks to remotes and never
//! decides what a request does. A file that fails to parse or validate is reported and the
//! last good version of what it defines stays live.

pub mod duration;
mod gateway;
mod ids;
mod instance;
pub mod substitute;
mod trust;
pub mod watcher;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

pub use gateway::{
    check_shutdown_grace, GatewayFile, LogFormat, ServerTuning, DEFAULT_SHUTDOWN_GRACE_SECONDS,
    DEFAULT_TEMPORAL_CHECK, GATEWAY_CONFIG,
};
pub use ids::{config_id_for_file, factory_of, file_for_config_id, is_config_id, pid_for};
pub use instance::{
    parse_instance, valid_instance_name, BearerConfig, HealthConfig, InstanceConfig, InstanceUrl,
    RemoteAuth, Secret, TokenAuthMethod, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DOWN_FOR,
    DEFAULT_READ_TIMEOUT, MAX_INSTANCE_URLS,
};
pub use substitute::{from_env, substitute};
pub use trust::{fingerprint_of, Trust};
pub use write::{delete_config_file, write_config_file};

/// Factory pid of remote IDM instance files.
pub const EXTERNAL_IDM: &str = "external.idm";

/// One `conf/*.json` file as last read.
#[derive(Debug, Clone)]
pub struct ConfFile {
    pub file_name: String,
    /// The document as written on disk (before substitution), when it parsed.
    pub raw: Option<Value>,
    /// Why the file is not live; empty when it is.
    pub problems: Vec<String>,
    /// The CREST `_rev` of the file: [`revision`] of its bytes.
    pub rev: String,
}

impl ConfFile {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Everything the conf and certs directories say, at one instant.
#[derive(Debug, Clone, Default)]
pub struct ConfSnapshot {
    /// Every conf file by config id (`external.idm/name1`, `gateway`, …).
    pub files: BTreeMap<String, ConfFile>,
    /// The live (last good) remote instances by instance name.
    pub instances: BTreeMap<String, Arc<InstanceConfig>>,
    /// Extra trust anchors for remote TLS from `certs/*.pem`.
    pub trust: Arc<Trust>,
}

/// What a reload did to one config object; each outcome is a metric label and a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    Applied,
    Unchanged,
    Rejected(Vec<String>),
    Removed,
    /// The reload itself failed on a bug (a panic, with its message): nothing changed.
    Panicked(String),
}

impl ReloadOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Rejected(_) => "rejected",
            ReloadOutcome::Removed => "removed",
            ReloadOutcome::Panicked(_) => "panicked",
        }
    }
}

/// Directories a snapshot is read from.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub conf: PathBuf,
    pub certs: PathBuf,
    /// Files in `certs/` that are not trust anchors (the server's own certificate and key).
    pub certs_exclude: Vec<PathBuf>,
}

/// Reads the conf and certs directories into a new snapshot, reusing `prev` for files that
/// did not change and keeping the last good instance for files that became invalid.
/// Returns the snapshot and one `(config id, outcome)` per file that changed.
pub fn load(dirs: &Dirs, prev: &ConfSnapshot) -> (ConfSnapshot, Vec<(String, ReloadOutcome)>) {
    load_with(dirs, prev, &|_, _| Ok(()))
}

/// Checks a config document other than a remote instance (`managed`, …): the problems
/// that make it rejected. Provided by the layer that understands the document.
pub type Validator<'a> = &'a dyn Fn(&str, &Value) -> Result<(), Vec<String>>;

/// [`load`], with `validate` run on every valid-JSON object that is not a remote instance.
pub fn load_with(
    dirs: &Dirs,
    prev: &ConfSnapshot,
    validate: Validator<'_>,
) -> (ConfSnapshot, Vec<(String, ReloadOutcome)>) {
    let mut outcomes = Vec::new();
    let mut files = BTreeMap::new();
    let mut instances = BTreeMap::new();

    for (file_name, bytes) in read_conf_dir(&dirs.conf) {
        let Some(id) = config_id_for_file(&file_name) else {
            continue;
        };
        let rev = revision(&bytes);
        if let Some(old) = prev.files.get(&id) {
            if old.rev == rev && old.file_name == file_name {
                if let Some(name) = instance_name(&id) {
                    if let Some(inst) = prev.instances.get(name) {
                        instances.insert(name.to_owned(), inst.clone());
                    }
                }
                files.insert(id, old.clone());
                continue;
            }
        }
        let (raw, outcome) = match serde_json::from_slice::<Value>(&bytes) {
            Err(e) => (None, Err(vec![format!("not valid JSON: {e}")])),
            Ok(raw) => {
                // A check that panics on some input rejects that file only: the other
                // files of the reload still apply, and fixing the file applies it.
                let check = || match instance_name(&id) {
                    Some(name) => lower_instance(name, &raw).map(|c| {
                        instances.insert(name.to_owned(), Arc::new(c));
                    }),
                    None if !raw.is_object() => {
                        Err(vec!["the file must contain a JSON object".into()])
                    }
                    None => validate(&id, &raw),
                };
                let result = guarded(check).unwrap_or_else(|panic| {
                    Err(vec![format!(
                        "the check of this file failed unexpectedly (a bug; please report it): {panic}"
                    )])
                });
                (Some(raw), result)
            }
        };
        let problems = match outcome {
            Ok(()) => {
                outcomes.push((id.clone(), ReloadOutcome::Applied));
                Vec::new()
            }
            Err(problems) => {
                if let Some(name) = instance_name(&id) {
                    if let Some(last_good) = prev.instances.get(name) {
                        instances.insert(name.to_owned(), last_good.clone());
                    }
                }
                outcomes.push((id.clone(), ReloadOutcome::Rejected(problems.clone())));
                problems
            }
        };
        files.insert(
            id,
            ConfFile {
                file_name,
                raw,
                problems,
                rev,
            },
        );
    }
    for id in prev.files.keys() {
        if !files.contains_key(id) {
            outcomes.push((id.clone(), ReloadOutcome::Removed));
        }
    }

    let trust = Trust::load(&dirs.certs, &dirs.certs_exclude, &prev.trust);
    let trust = if trust.fingerprint == prev.trust.fingerprint {
        prev.trust.clone()
    } else {
        if trust.problems.is_empty() {
            outcomes.push(("certs".into(), ReloadOutcome::Applied));
        } else {
            outcomes.push((
                "certs".into(),
                ReloadOutcome::Rejected(trust.problems.clone()),
            ));
        }
        Arc::new(trust)
    };

    (
        ConfSnapshot {
            files,
            instances,
            trust,
        },
        outcomes,
    )
}

/// Runs `f`, turning a panic into its message: a bug met while reading one file or
/// running one reload must not take the watcher, or the gateway, down with it.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

/// Substitutes `&{…}` references and validates an instance document.
pub fn lower_instance(name: &str, raw: &Value) -> Result<InstanceConfig, Vec<String>> {
    let mut doc = raw.clone();
    let problems = substitute(&mut doc, &from_env);
    if !problems.is_empty() {
        return Err(problems);
    }
    parse_instance(name, &doc)
}

/// `external.idm/<name>` → `<name>`.
pub fn instance_name(config_id: &str) -> Option<&str> {
    config_id
        .strip_prefix(EXTERNAL_IDM)
        .and_then(|rest| rest.strip_prefix('/'))
}

/// `(file name, bytes)` of every candidate conf file; unreadable entries are skipped (they
/// show up as removed, and come back on the next event).
fn read_conf_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        if file_name.starts_with('.') || !file_name.ends_with(".json") {
            continue;
        }
        // Follows symlinks: every file of a Kubernetes ConfigMap volume is one
        // (`x.json -> ..data/x.json`).
        if !std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(entry.path()) {
            out.push((file_name, bytes));
        }
    }
    out
}

/// The revision of a conf file: the first 128 bits of the SHA-256 of its bytes, in hex.
///
/// Derived from the bytes, not kept anywhere: a hand edit changes it like a REST write does,
/// it survives restarts, and a client's `If-Match` is checked against the file as it is
/// on disk. Writing back the same bytes gives the same revision (same content, same
/// version); different content never shares one.
pub fn revision(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dirs(tmp: &Path) -> Dirs {
        std::fs::create_dir_all(tmp.join("conf")).unwrap();
        std::fs::create_dir_all(tmp.join("certs")).unwrap();
        Dirs {
            conf: tmp.join("conf"),
            certs: tmp.join("certs"),
            certs_exclude: vec![],
        }
    }

    fn write(d: &Dirs, name: &str, v: &str) {
        std::fs::write(d.conf.join(name), v).unwrap();
    }

    const GOOD: &str = r#"{"authType":"basic","instanceUrl":"http://127.0.0.1:1/openidm/","userName":"u","password":"p"}"#;

    #[test]
    fn shipped_conf_dir_loads_without_problems() {
        let d = Dirs {
            conf: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf"),
            certs: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs"),
            certs_exclude: vec![],
        };
        let (snap, outcomes) = load(&d, &ConfSnapshot::default());
        for (id, outcome) in &outcomes {
            assert!(
                !matches!(outcome, ReloadOutcome::Rejected(_)),
                "{id}: {outcome:?}"
            );
        }
        assert!(snap.files.contains_key("gateway"));
    }

    #[test]
    fn invalid_change_keeps_last_good_instance() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        write(&d, "external.idm-a.json", GOOD);
        let (s1, o1) = load(&d, &ConfSnapshot::default());
        assert_eq!(o1, vec![("external.idm/a".into(), ReloadOutcome::Applied)]);
        assert!(s1.instances.contains_key("a"));

        write(&d, "external.idm-a.json", r#"{"authType":"basic","#);
        let (s2, o2) = load(&d, &s1);
        assert!(
            matches!(&o2[0].1, ReloadOutcome::Rejected(p) if p[0].starts_with("not valid JSON"))
        );
        assert!(Arc::ptr_eq(&s1.instances["a"], &s2.instances["a"]));
        assert!(!s2.files["external.idm/a"].is_valid());

        // Unchanged bytes stay rejected without a new outcome.
        let (s3, o3) = load(&d, &s2);
        assert!(o3.is_empty(), "{o3:?}");
        assert!(s3.instances.contains_key("a"));

        std::fs::remove_file(d.conf.join("external.idm-a.json")).unwrap();
        let (s4, o4) = load(&d, &s3);
        assert_eq!(o4, vec![("external.idm/a".into(), ReloadOutcome::Removed)]);
        assert!(s4.instances.is_empty());
    }

    #[test]
    fn a_panicking_check_rejects_that_file_only_and_a_later_fix_applies() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        let check: Validator<'_> = &|id, doc| {
            if doc.get("boom").is_some() {
                panic!("check of {id} exploded");
            }
            Ok(())
        };
        write(&d, "a.json", r#"{"v": 1}"#);
        let (s1, _) = load_with(&d, &ConfSnapshot::default(), check);
        write(&d, "a.json", r#"{"boom": true}"#);
        write(&d, "b.json", r#"{"v": 1}"#);
        let (s2, o2) = load_with(&d, &s1, check);
        let rejected = o2.iter().find(|(id, _)| id == "a").unwrap();
        assert!(
            matches!(&rejected.1, ReloadOutcome::Rejected(p) if p[0].contains("check of a exploded")),
            "{o2:?}"
        );
        assert!(o2.contains(&("b".into(), ReloadOutcome::Applied)), "{o2:?}");
        assert!(!s2.files["a"].is_valid());
        write(&d, "a.json", r#"{"v": 2}"#);
        let (s3, o3) = load_with(&d, &s2, check);
        assert_eq!(o3, vec![("a".into(), ReloadOutcome::Applied)]);
        assert!(s3.files["a"].is_valid());
    }

    #[test]
    fn guarded_turns_a_panic_into_its_message() {
        assert_eq!(guarded(|| 1), Ok(1));
        assert_eq!(guarded(|| -> u8 { panic!("static") }), Err("static".into()));
        let n = 3;
        assert_eq!(
            guarded(|| -> u8 { panic!("formatted {n}") }),
            Err("formatted 3".into())
        );
    }

    #[test]
    fn new_invalid_file_defines_nothing_and_other_files_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dirs(tmp.path());
        write(&d, "external.idm-b.json", r#"{"authType":"basic"}"#);
        write(&d, ".external.idm-c.json.swp", GOOD);
        write(&d, "notes.txt", "hello");
        write(&d, "sync.json", &json!({"mappings": []}).to_string());
        let (s, o) = load(&d, &ConfSnapshot::default());
        assert!(s.instances.is_empty());
        assert_eq!(s.files.len(), 2);
        assert_eq!(o.len(), 2);
        assert!(s.files["sync"].is_valid());
    }
}
