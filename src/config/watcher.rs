//! The conf/certs watcher. It only signals: file events are debounced and turned into a
//! call of the reload function, which lives elsewhere and tolerates half-written files.
//!
//! Debounce: a burst of events (an editor's write + rename, `cp` of several files) becomes
//! one reload once the directory has been quiet for [`QUIET`], and never later than
//! [`MAX_DELAY`] after the first event, so a change is live well within a second. A slow
//! periodic rescan ([`RESCAN`]) covers events the OS dropped.
//!
//! Symlinks: every event in a watched directory asks for a reload, and a reload compares
//! the content of every file (following symlinks), so a Kubernetes ConfigMap or Secret
//! volume (`x.json -> ..data/x.json`, updated by renaming a new `..data` symlink over the
//! old one) is picked up at once: the rename is an event of the directory even though
//! `x.json` itself never changes. A symlink whose target lies outside the watched
//! directories is followed: every directory holding a link met on the way (a ConfigMap
//! mounted elsewhere and linked into `conf/`) is watched too, re-evaluated after each
//! reload; the rescan covers anything else.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

pub const QUIET: Duration = Duration::from_millis(60);
pub const MAX_DELAY: Duration = Duration::from_millis(300);
pub const RESCAN: Duration = Duration::from_secs(10);

/// Links followed from one entry at most (as the OS's own limit on nested links).
const MAX_LINK_HOPS: usize = 40;

/// Keeps the OS watch alive; dropping it stops watching (the thread ends with the channel).
pub struct WatchHandle {
    _watcher: Arc<Mutex<notify::RecommendedWatcher>>,
}

/// Watches `dirs` (those that exist) and calls `reload` after each debounced burst of
/// changes, and every [`RESCAN`].
pub fn spawn(dirs: &[PathBuf], reload: impl Fn() + Send + 'static) -> notify::Result<WatchHandle> {
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })?;
    let roots: Vec<PathBuf> = dirs.iter().filter(|d| d.is_dir()).cloned().collect();
    for dir in &roots {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let watcher = Arc::new(Mutex::new(watcher));
    let mut links = LinkWatch {
        watcher: Arc::downgrade(&watcher),
        roots,
        watched: BTreeSet::new(),
    };
    links.refresh();
    std::thread::Builder::new()
        .name("conf-watcher".into())
        .spawn(move || {
            debounce_loop(rx, move || {
                reload();
                links.refresh();
            })
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(WatchHandle { _watcher: watcher })
}

/// The extra watches on directories that symlinks in the watched directories lead through.
struct LinkWatch {
    /// Weak: the thread must not keep the watcher (and so its own channel) alive.
    watcher: Weak<Mutex<notify::RecommendedWatcher>>,
    roots: Vec<PathBuf>,
    watched: BTreeSet<PathBuf>,
}

impl LinkWatch {
    /// Watches the directories the links lead through now that are not watched yet.
    fn refresh(&mut self) {
        let Some(watcher) = self.watcher.upgrade() else {
            return;
        };
        let mut watcher = watcher.lock().unwrap_or_else(|e| e.into_inner());
        for dir in link_dirs(&self.roots) {
            if !self.watched.contains(&dir)
                && watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok()
            {
                self.watched.insert(dir);
            }
        }
    }
}

/// The directories (canonical) holding a symlink met while resolving a symlink entry of
/// `roots`, the roots themselves excluded.
fn link_dirs(roots: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                links_met(&entry.path(), &mut out);
            }
        }
    }
    for root in roots {
        if let Ok(root) = root.canonicalize() {
            out.remove(&root);
        }
    }
    out
}

/// Follows the symlink `link` to its end, adding the directory of every link met on the
/// way (the link itself, then any link among the components of each target).
fn links_met(link: &Path, out: &mut BTreeSet<PathBuf>) {
    let mut link = link.to_path_buf();
    let mut rest = PathBuf::new();
    for _ in 0..MAX_LINK_HOPS {
        let Some(dir) = link.parent().and_then(|p| p.canonicalize().ok()) else {
            return;
        };
        let Ok(target) = std::fs::read_link(&link) else {
            return;
        };
        out.insert(dir.clone());
        let full = dir.join(target).join(&rest);
        // The first component of the new path that is itself a link, if any.
        let mut prefix = PathBuf::new();
        let mut next = None;
        let mut components = full.components();
        for c in components.by_ref() {
            match c {
                Component::ParentDir => {
                    prefix.pop();
                }
                c => prefix.push(c),
            }
            if std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink()) {
                next = Some(prefix.clone());
                break;
            }
        }
        let Some(next) = next else {
            return;
        };
        rest = components.as_path().to_path_buf();
        link = next;
    }
}

fn debounce_loop(rx: mpsc::Receiver<()>, mut reload: impl FnMut()) {
    // A reload that panics is reported where it runs; here it must only not end the loop.
    let mut reload = || {
        if let Err(panic) = super::guarded(&mut reload) {
            tracing::error!(panic = %panic, "config reload panicked; watching goes on");
        }
    };
    loop {
        match rx.recv_timeout(RESCAN) {
            Ok(()) => {
                let first = Instant::now();
                loop {
                    let left = MAX_DELAY.saturating_sub(first.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(QUIET.min(left)) {
                        Ok(()) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                reload();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => reload(),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `dir` as a Kubernetes volume holding `x.json` (generation `n`): `..<ts>/x.json`,
    /// `..data -> ..<ts>` swapped by renaming a new link over it, `x.json -> ..data/x.json`.
    fn kube_volume(dir: &Path, n: usize) {
        let ts = format!("..2026_12_03_09_00_0{n}.1");
        std::fs::create_dir(dir.join(&ts)).unwrap();
        std::fs::write(dir.join(&ts).join("x.json"), format!("{{\"n\": {n}}}")).unwrap();
        std::os::unix::fs::symlink(&ts, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        if n == 1 {
            std::os::unix::fs::symlink("..data/x.json", dir.join("x.json")).unwrap();
        }
    }

    #[test]
    fn links_lead_to_the_directories_that_hold_them() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, mounted) = (tmp.path().join("conf"), tmp.path().join("mounted"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&mounted).unwrap();
        kube_volume(&mounted, 1);
        // In-directory layout: nothing outside the root to watch.
        kube_volume(&root, 1);
        assert!(link_dirs(std::slice::from_ref(&root)).is_empty());
        // A link from the root into a volume mounted elsewhere.
        std::os::unix::fs::symlink(mounted.join("x.json"), root.join("y.json")).unwrap();
        assert_eq!(
            link_dirs(std::slice::from_ref(&root)),
            BTreeSet::from([mounted.canonicalize().unwrap()])
        );
        // A relative link, and a dangling one.
        std::os::unix::fs::symlink("../mounted/x.json", root.join("z.json")).unwrap();
        std::os::unix::fs::symlink("../nowhere/x.json", root.join("d.json")).unwrap();
        assert_eq!(link_dirs(&[root]).len(), 1);
    }

    #[test]
    fn a_swap_in_a_volume_linked_from_elsewhere_is_an_event() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, mounted) = (tmp.path().join("conf"), tmp.path().join("mounted"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&mounted).unwrap();
        kube_volume(&mounted, 1);
        std::os::unix::fs::symlink(mounted.join("x.json"), root.join("x.json")).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let _handle = spawn(&[root], move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        kube_volume(&mounted, 2);
        // Well before the rescan: the swap in `mounted/` was seen as an event.
        let deadline = Instant::now() + RESCAN / 2;
        while calls.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(calls.load(Ordering::SeqCst) > 0, "the swap was not seen");
    }

    #[test]
    fn a_panicking_reload_does_not_stop_the_watcher() {
        let tmp = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let _handle = spawn(&[tmp.path().to_owned()], move || {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first reload explodes");
            }
        })
        .unwrap();
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while calls.load(Ordering::SeqCst) < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            calls.load(Ordering::SeqCst) >= n
        };
        std::fs::write(tmp.path().join("a.json"), "{}").unwrap();
        assert!(wait_for(1));
        // The first reload panicked; a later change is still seen.
        std::thread::sleep(MAX_DELAY);
        std::fs::write(tmp.path().join("b.json"), "{}").unwrap();
        assert!(wait_for(2), "the watcher stopped after a panic");
    }
}
