//! Script files (`{"file": "script/x.js"}`), read from the project directory and reloaded
//! live: a file is looked at again when it is used and its last look is older than
//! [`RECHECK`]; a changed file is compiled before it replaces the old text. A file that
//! does not compile is reported like a bad conf file (error log naming file, line and
//! reason; the `idm_gateway_config_reloads_total{outcome="rejected"}` metric) and the
//! last good version stays live.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::error::ScriptError;
use super::runner::check_syntax;
use super::spec::content_hash;

/// How long a file's last look is trusted.
pub const RECHECK: Duration = Duration::from_millis(500);

/// Largest script file read.
const MAX_SCRIPT_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Clone)]
struct Entry {
    /// The last good text and its hash (`None`: never compiled).
    good: Option<(Arc<str>, u64)>,
    checked: Instant,
    /// What the file looked like at the last look (modified time, length).
    stamp: Option<(SystemTime, u64)>,
}

/// Outcome of looking at a file again, for the caller's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChange {
    Unchanged,
    Applied,
    Rejected,
}

/// Told when a script file is (re)loaded or rejected.
pub type OnChange = Box<dyn Fn(&Path, FileChange) + Send + Sync>;

pub struct ScriptFiles {
    project: PathBuf,
    entries: Mutex<HashMap<PathBuf, Entry>>,
    on_change: OnChange,
}

impl ScriptFiles {
    pub fn new(project: PathBuf, on_change: OnChange) -> Self {
        Self {
            project,
            entries: Mutex::new(HashMap::new()),
            on_change,
        }
    }

    pub fn project(&self) -> &Path {
        &self.project
    }

    /// The current good text of `file` (relative to the project) and its hash.
    pub fn text(&self, name: &Arc<str>, file: &Path) -> Result<(Arc<str>, u64), ScriptError> {
        let now = Instant::now();
        let prev = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(file)
            .cloned();
        if let Some(Entry {
            good: Some(good),
            checked,
            ..
        }) = &prev
        {
            if now.duration_since(*checked) < RECHECK {
                return Ok(good.clone());
            }
        }
        let (entry, change) = self.look(name, file, prev, now);
        let good = entry.good.clone();
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file.to_owned(), entry);
        if change != FileChange::Unchanged {
            (self.on_change)(file, change);
        }
        good.ok_or_else(|| {
            ScriptError::internal(
                name,
                format!(
                    "script file {} is missing or does not compile (see the log)",
                    file.display()
                ),
            )
        })
    }

    /// Reads and compiles `file` as it is now, without touching what is live (the
    /// compile action): the engine's reason when it does not compile.
    pub fn check(&self, file: &Path) -> Result<(), String> {
        let path = self.project.join(file);
        let len = std::fs::metadata(&path).ok().map(|m| m.len());
        read_checked(&path, len).map(drop)
    }

    fn look(
        &self,
        name: &Arc<str>,
        file: &Path,
        prev: Option<Entry>,
        now: Instant,
    ) -> (Entry, FileChange) {
        let path = self.project.join(file);
        let prev = prev.unwrap_or(Entry {
            good: None,
            checked: now,
            stamp: None,
        });
        let stamp = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_some() && stamp == prev.stamp {
            return (
                Entry {
                    checked: now,
                    ..prev
                },
                FileChange::Unchanged,
            );
        }
        let checked = read_checked(&path, stamp.map(|(_, len)| len));
        match checked {
            Ok(text) => {
                let hash = content_hash(&text);
                if prev.good.is_some() {
                    tracing::info!(script = %name, file = %path.display(), "script file reloaded");
                }
                (
                    Entry {
                        good: Some((Arc::from(text), hash)),
                        checked: now,
                        stamp,
                    },
                    FileChange::Applied,
                )
            }
            Err(problem) => {
                tracing::error!(
                    script = %name,
                    file = %path.display(),
                    problem = %problem,
                    "script file rejected; the last good version stays live"
                );
                (
                    Entry {
                        good: prev.good,
                        checked: now,
                        stamp,
                    },
                    FileChange::Rejected,
                )
            }
        }
    }
}

/// The text of the script file at `path` (`len` bytes, `None`: unreadable) if it compiles.
fn read_checked(path: &Path, len: Option<u64>) -> Result<String, String> {
    let text = match len {
        Some(len) if len > MAX_SCRIPT_BYTES => {
            return Err(format!("the file is larger than {MAX_SCRIPT_BYTES} bytes"))
        }
        Some(_) => std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| String::from_utf8(b).map_err(|_| "the file is not UTF-8".into()))?,
        None => return Err("the file does not exist or cannot be read".into()),
    };
    check_syntax(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_changed_file_replaces_the_text_and_a_broken_one_keeps_the_last_good() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "script/x.js", "source.a");
        let rejected = Arc::new(AtomicUsize::new(0));
        let r = rejected.clone();
        let files = ScriptFiles::new(
            tmp.path().to_owned(),
            Box::new(move |_, c| {
                if c == FileChange::Rejected {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            }),
        );
        let name: Arc<str> = Arc::from("t");
        let file = Path::new("script/x.js");
        assert_eq!(&*files.text(&name, file).unwrap().0, "source.a");
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        write(tmp.path(), "script/x.js", "source.b + 1");
        assert_eq!(&*files.text(&name, file).unwrap().0, "source.b + 1");
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        write(tmp.path(), "script/x.js", "source.b +");
        assert_eq!(&*files.text(&name, file).unwrap().0, "source.b + 1");
        assert_eq!(rejected.load(Ordering::SeqCst), 1);
        let missing = files.text(&name, Path::new("script/none.js")).unwrap_err();
        assert!(missing.to_string().contains("script/none.js"), "{missing}");
    }
}
