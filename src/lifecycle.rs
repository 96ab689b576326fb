//! The process's life around pingora's: the drain flag background writers check, and the
//! systemd notifications (`READY=1`, `MAINPID=`, `STOPPING=1`) that let a `Type=notify` unit
//! follow a zero-downtime upgrade to the new process.
//!
//! It must not decide when the process stops: pingora does (SIGTERM, SIGQUIT); this module
//! only reacts to its execution phases.
//!
//! [`InstanceLock`]: one gateway process owns a data directory at a time; during an upgrade
//! the new one serves before it owns it, and takes it over when the old one exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set once this process hands its listeners over (upgrade) or starts a graceful stop: from
/// then on background writers (scheduler, temporal constraints' check) start nothing new,
/// so the store has one writer of scheduled work at a time.
#[derive(Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `DATA/gateway.lock`, locked (`flock`, released by the kernel when the process exits) by
/// the process that owns the data directory: the one whose start-up recovery (interrupted
/// reconciliation runs and CSV imports) and scheduler may act on the store.
pub struct InstanceLock {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl InstanceLock {
    pub fn open(data_dir: &std::path::Path) -> Result<Self, String> {
        let path = data_dir.join("gateway.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Self { file, path })
    }

    /// Takes the lock if nobody holds it; false when another process does.
    pub fn try_take(&self) -> Result<bool, String> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("cannot lock {}: {e}", self.path.display()))
            }
        }
    }

    /// Waits until the lock is free (the process holding it exited), then takes it.
    pub fn take(&self) -> Result<(), String> {
        self.file
            .lock()
            .map_err(|e| format!("cannot lock {}: {e}", self.path.display()))
    }
}

/// Sends `state` (`READY=1`, `MAINPID=…`, `STOPPING=1`, newline-separated) to systemd when
/// it started this process with `NOTIFY_SOCKET` (a `Type=notify` unit); otherwise nothing.
/// A failure is logged: notifications are advice to the service manager, never fatal.
pub fn notify_systemd(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_notification(&socket, state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn send_notification(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        // An abstract socket (`@name`): Linux only, as systemd is.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(socket)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send_notification(path.as_os_str(), "READY=1\nMAINPID=42").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=42");
    }

    #[test]
    fn one_holder_of_the_instance_lock_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::open(dir.path()).unwrap();
        let second = InstanceLock::open(dir.path()).unwrap();
        assert!(first.try_take().unwrap());
        assert!(!second.try_take().unwrap());
        drop(first);
        assert!(second.try_take().unwrap());
    }

    #[test]
    fn drain_is_shared_by_clones() {
        let drain = Drain::new();
        let seen = drain.clone();
        assert!(!seen.is_draining());
        drain.start();
        assert!(seen.is_draining());
    }
}
