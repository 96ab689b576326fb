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
//! directories is picked up by the rescan.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

pub const QUIET: Duration = Duration::from_millis(60);
pub const MAX_DELAY: Duration = Duration::from_millis(300);
pub const RESCAN: Duration = Duration::from_secs(10);

/// Keeps the OS watch alive; dropping it stops watching (the thread ends with the channel).
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
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
    for dir in dirs {
        if dir.is_dir() {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    std::thread::Builder::new()
        .name("conf-watcher".into())
        .spawn(move || debounce_loop(rx, reload))
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(WatchHandle { _watcher: watcher })
}

fn debounce_loop(rx: mpsc::Receiver<()>, reload: impl Fn()) {
    // A reload that panics is reported where it runs; here it must only not end the loop.
    let reload = || {
        if let Err(panic) = super::guarded(&reload) {
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
    use std::sync::Arc;

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
