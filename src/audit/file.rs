//! The JSON file handler (IDM's `JsonAuditEventHandler`): one file per topic,
//! `<logDirectory>/<topic>.audit.json`, one JSON event per line, rotated by size, by age
//! (`rotationInterval`) and at times of day (`rotationTimes`, UTC), with the rotated files
//! pruned by count, by the disk space they use and by the free space left.
//!
//! Runs on its own thread and blocks only that thread: the request path hands events over
//! a bounded queue ([`super::Audit`]). Every write interval, what was queued is written and
//! flushed, so a burst costs one `write` per 64 KiB, and no event waits longer than the
//! interval. The time-based rotations are checked at the same wake-ups (no timer thread):
//! a file is rotated at most one write interval after it is due, and never while empty.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc::Receiver;

use super::config::JsonFileConfig;
use super::{Event, Writer};

/// File name of a topic's current file.
pub fn file_name(topic: &str) -> String {
    format!("{topic}.audit.json")
}

/// What the handler reads the time from (a test sets the day it likes).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

struct Current {
    out: BufWriter<File>,
    size: u64,
    /// When the file was started: what `rotationInterval` and `rotationTimes` count from.
    started: DateTime<Utc>,
}

pub struct JsonFileWriter {
    cfg: JsonFileConfig,
    files: HashMap<Arc<str>, Current>,
    clock: Clock,
}

impl JsonFileWriter {
    pub fn new(cfg: JsonFileConfig) -> Self {
        Self::with_clock(cfg, Arc::new(Utc::now))
    }

    pub fn with_clock(cfg: JsonFileConfig, clock: Clock) -> Self {
        Self {
            cfg,
            files: HashMap::new(),
            clock,
        }
    }

    /// Writes events until the audit closes (or every sender is gone).
    pub fn run(mut self, mut rx: Receiver<Event>, writer: Writer) {
        if let Err(e) = std::fs::create_dir_all(&self.cfg.dir) {
            tracing::error!(dir = %self.cfg.dir.display(), error = %e,
                "cannot create the audit log directory");
        }
        while let Some(batch) = writer.next_tick(&mut rx, usize::MAX) {
            self.write_batch(&batch);
        }
        self.flush();
    }

    /// One wake-up: the time-based rotations that are due, then `batch`, flushed.
    fn write_batch(&mut self, batch: &[Event]) {
        let now = (self.clock)();
        self.rotate_due(now);
        for event in batch {
            self.write(event, now);
        }
        self.flush();
    }

    /// Whether a file started at `started` is due for a time-based rotation at `now`.
    fn time_due(&self, started: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let by_age = self
            .cfg
            .rotation_interval
            .and_then(|iv| chrono::TimeDelta::from_std(iv).ok())
            .is_some_and(|iv| now - started >= iv);
        by_age || last_rotation_time(&self.cfg.rotation_times, now).is_some_and(|t| t > started)
    }

    /// Rotates the open files (with something in them) whose time has come.
    fn rotate_due(&mut self, now: DateTime<Utc>) {
        if self.cfg.rotation_interval.is_none() && self.cfg.rotation_times.is_empty() {
            return;
        }
        let due: Vec<Arc<str>> = self
            .files
            .iter()
            .filter(|(_, c)| c.size > 0 && self.time_due(c.started, now))
            .map(|(t, _)| t.clone())
            .collect();
        for topic in due {
            self.rotate(&topic, now);
        }
    }

    fn write(&mut self, event: &Event, now: DateTime<Utc>) {
        let line = event.json.as_bytes();
        let len = line.len() as u64 + 1;
        if let Some(max) = self.cfg.max_file_size {
            let full = self
                .files
                .get(&event.topic)
                .is_some_and(|c| c.size > 0 && c.size + len > max);
            if full {
                self.rotate(&event.topic, now);
            }
        }
        let cur = match self.files.get_mut(&event.topic) {
            Some(c) => c,
            None => match self.open_current(&event.topic, now) {
                Ok(c) => self.files.entry(event.topic.clone()).or_insert(c),
                Err(e) => {
                    tracing::error!(topic = %event.topic, error = %e,
                        "cannot open the audit log file; event lost");
                    return;
                }
            },
        };
        match cur
            .out
            .write_all(line)
            .and_then(|()| cur.out.write_all(b"\n"))
        {
            Ok(()) => cur.size += len,
            Err(e) => {
                tracing::error!(topic = %event.topic, error = %e,
                    "cannot write the audit log file; event lost");
                // Reopen on the next event.
                self.files.remove(&event.topic);
            }
        }
    }

    fn path(&self, topic: &str) -> PathBuf {
        self.cfg.dir.join(file_name(topic))
    }

    /// Opens the topic's file to append; a file left from before (a restart, a reload)
    /// that is already due for a time-based rotation is rotated first.
    fn open_current(&mut self, topic: &str, now: DateTime<Utc>) -> std::io::Result<Current> {
        let cur = self.open(topic, now)?;
        if cur.size > 0 && self.time_due(cur.started, now) {
            drop(cur);
            self.rotate(topic, now);
            return self.open(topic, now);
        }
        Ok(cur)
    }

    fn open(&self, topic: &str, now: DateTime<Utc>) -> std::io::Result<Current> {
        let path = self.path(topic);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let meta = file.metadata().ok();
        let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
        // A file with events in it was started when it was created (its modification
        // time where the file system keeps no creation time); a new or empty one now.
        let started = meta
            .filter(|_| size > 0)
            .and_then(|m| m.created().or_else(|_| m.modified()).ok())
            .map(DateTime::<Utc>::from)
            .map_or(now, |t| t.min(now));
        Ok(Current {
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
            started,
        })
    }

    fn flush(&mut self) {
        for (topic, cur) in &mut self.files {
            if let Err(e) = cur.out.flush() {
                tracing::error!(topic = %topic, error = %e, "cannot flush the audit log file");
            }
        }
    }

    /// Closes the topic's file, renames it `<prefix><topic>.audit.json<suffix>` and drops
    /// the oldest rotated files beyond the retention.
    fn rotate(&mut self, topic: &str, now: DateTime<Utc>) {
        if let Some(mut cur) = self.files.remove(topic) {
            let _ = cur.out.flush();
        }
        let path = self.path(topic);
        let base = format!("{}{}", self.cfg.rotation_prefix, file_name(topic));
        let stamp = now.format(&self.cfg.rotation_suffix).to_string();
        let mut target = self.cfg.dir.join(format!("{base}{stamp}"));
        let mut n = 1;
        while target.exists() {
            target = self.cfg.dir.join(format!("{base}{stamp}.{n}"));
            n += 1;
        }
        if let Err(e) = std::fs::rename(&path, &target) {
            tracing::error!(topic = %topic, error = %e, "cannot rotate the audit log file");
            return;
        }
        prune(&self.cfg, &base);
    }
}

/// The latest of the day's rotation points (`offsets` from midnight UTC, today's or
/// yesterday's) at or before `now`; `None` without any.
fn last_rotation_time(
    offsets: &[std::time::Duration],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let today = now.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    [today, today - chrono::TimeDelta::days(1)]
        .into_iter()
        .flat_map(|midnight| {
            offsets
                .iter()
                .filter_map(move |o| Some(midnight + chrono::TimeDelta::from_std(*o).ok()?))
        })
        .filter(|t| *t <= now)
        .max()
}

/// Removes the oldest rotated files named `<base>…` (other than `<base>` itself) while
/// there are more than `maxNumberOfHistoryFiles`, while together they use more than
/// `maxDiskSpaceToUse`, or while the file system has less than `minFreeSpaceRequired` free.
fn prune(cfg: &JsonFileConfig, base: &str) {
    if cfg.max_history.is_none() && cfg.max_disk_space.is_none() && cfg.min_free_space.is_none() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(&cfg.dir) else {
        return;
    };
    let mut rotated: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.len() > base.len() && n.starts_with(base))
        })
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, e.path(), m.len()))
        })
        .collect();
    rotated.sort();
    let mut used: u64 = rotated.iter().map(|(_, _, len)| len).sum();
    let mut count = rotated.len();
    for (_, p, len) in &rotated {
        let too_many = cfg.max_history.is_some_and(|keep| count > keep);
        let too_big = cfg.max_disk_space.is_some_and(|max| used > max);
        let too_full = !too_many
            && !too_big
            && cfg
                .min_free_space
                .is_some_and(|min| free_space(&cfg.dir).is_some_and(|free| free < min));
        if !(too_many || too_big || too_full) {
            break;
        }
        match std::fs::remove_file(p) {
            Ok(()) => {
                count -= 1;
                used = used.saturating_sub(*len);
            }
            Err(e) => {
                tracing::warn!(file = %p.display(), error = %e, "cannot remove an old audit log file");
                return;
            }
        }
    }
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
#[cfg(unix)]
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; `stat` is a buffer of the
    // type statvfs(3) fills, read only when the call reports success.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Option<u64> {
    None
}

/// Events of `topic` in the handler's current file, oldest first (lines that do not parse
/// are skipped): what a query through a JSON handler reads, as IDM's does.
pub fn read_events(dir: &Path, topic: &str) -> std::io::Result<Vec<Value>> {
    let text = match std::fs::read_to_string(dir.join(file_name(topic))) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn config(dir: &Path) -> JsonFileConfig {
        JsonFileConfig {
            dir: dir.to_path_buf(),
            max_file_size: None,
            rotation_prefix: String::new(),
            rotation_suffix: "-%Y.%m.%d-%H.%M.%S".into(),
            rotation_interval: None,
            rotation_times: Vec::new(),
            max_history: None,
            max_disk_space: None,
            min_free_space: None,
        }
    }

    /// A writer whose clock the test moves.
    fn writer(
        cfg: JsonFileConfig,
        start: DateTime<Utc>,
    ) -> (JsonFileWriter, Arc<Mutex<DateTime<Utc>>>) {
        let now = Arc::new(Mutex::new(start));
        let clock = now.clone();
        let w = JsonFileWriter::with_clock(cfg, Arc::new(move || *clock.lock().unwrap()));
        (w, now)
    }

    fn event(topic: &str, n: usize) -> Event {
        Event {
            topic: Arc::from(topic),
            json: Arc::new(format!(r#"{{"n":{n}}}"#)),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The files of `dir` (names) and every `n` written, oldest file first by name.
    fn files(dir: &Path) -> (Vec<String>, Vec<u64>) {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut ns = Vec::new();
        for n in &names {
            for l in std::fs::read_to_string(dir.join(n)).unwrap().lines() {
                let v: Value = serde_json::from_str(l).unwrap();
                ns.push(v["n"].as_u64().unwrap());
            }
        }
        ns.sort();
        (names, ns)
    }

    #[test]
    fn rotation_interval_rotates_a_file_once_it_is_that_old_and_loses_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.rotation_interval = Some(Duration::from_secs(86_400));
        let (mut w, now) = writer(cfg, at("2030-01-01T10:00:00Z"));
        w.write_batch(&[event("access", 1), event("access", 2)]);
        // Nearly a day later: not yet.
        *now.lock().unwrap() = at("2030-01-02T09:59:59Z");
        w.write_batch(&[event("access", 3)]);
        assert_eq!(files(tmp.path()).0, ["access.audit.json"]);
        // A day after the file was started: rotated at the next wake-up, even with
        // nothing to write.
        *now.lock().unwrap() = at("2030-01-02T10:00:00Z");
        w.write_batch(&[]);
        assert_eq!(
            files(tmp.path()).0,
            ["access.audit.json-2030.01.02-10.00.00"]
        );
        // The next event starts a new file, due a day after it.
        *now.lock().unwrap() = at("2030-01-02T10:00:01Z");
        w.write_batch(&[event("access", 4)]);
        *now.lock().unwrap() = at("2030-01-03T10:00:01Z");
        w.write_batch(&[event("access", 5)]);
        let (names, ns) = files(tmp.path());
        assert_eq!(
            names,
            [
                "access.audit.json",
                "access.audit.json-2030.01.02-10.00.00",
                "access.audit.json-2030.01.03-10.00.01"
            ]
        );
        assert_eq!(ns, [1, 2, 3, 4, 5]);
        // The new file holds the event written after the rotation only.
        let current = read_events(tmp.path(), "access").unwrap();
        assert_eq!(current, [serde_json::json!({"n": 5})]);
    }

    #[test]
    fn rotation_times_rotate_at_offsets_after_midnight() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.rotation_times = vec![Duration::from_secs(600), Duration::from_secs(1200)];
        let (mut w, now) = writer(cfg, at("2030-01-01T23:55:00Z"));
        w.write_batch(&[event("activity", 1)]);
        // Midnight passes: no rotation point yet.
        *now.lock().unwrap() = at("2030-01-02T00:09:59Z");
        w.write_batch(&[event("activity", 2)]);
        assert_eq!(files(tmp.path()).0.len(), 1);
        // 00:10 is a rotation point.
        *now.lock().unwrap() = at("2030-01-02T00:10:00.500Z");
        w.write_batch(&[event("activity", 3)]);
        // 00:15: the file started at 00:10 is not due until 00:20.
        *now.lock().unwrap() = at("2030-01-02T00:15:00Z");
        w.write_batch(&[event("activity", 4)]);
        *now.lock().unwrap() = at("2030-01-02T00:20:00Z");
        w.write_batch(&[]);
        let (names, ns) = files(tmp.path());
        assert_eq!(
            names,
            [
                "activity.audit.json-2030.01.02-00.10.00",
                "activity.audit.json-2030.01.02-00.20.00"
            ]
        );
        assert_eq!(ns, [1, 2, 3, 4]);
        // An idle empty file is never rotated.
        *now.lock().unwrap() = at("2030-01-03T00:20:00Z");
        w.write_batch(&[]);
        assert_eq!(files(tmp.path()).0.len(), 2);
    }

    #[test]
    fn a_file_left_from_before_that_is_due_is_rotated_before_the_first_write() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("access.audit.json"), "{\"n\":0}\n").unwrap();
        let mut cfg = config(tmp.path());
        cfg.rotation_interval = Some(Duration::from_secs(3600));
        // The file was created now (real time); the handler wakes two hours later.
        let later = Utc::now() + chrono::TimeDelta::hours(2);
        let (mut w, _) = writer(cfg, later);
        w.write_batch(&[event("access", 1)]);
        let (names, ns) = files(tmp.path());
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(ns, [0, 1]);
        assert_eq!(
            read_events(tmp.path(), "access").unwrap(),
            [serde_json::json!({"n": 1})]
        );
    }

    #[test]
    fn last_rotation_time_is_todays_or_yesterdays() {
        let offsets = [Duration::from_secs(600), Duration::from_secs(3600 * 12)];
        assert_eq!(
            last_rotation_time(&offsets, at("2030-01-02T00:05:00Z")),
            Some(at("2030-01-01T12:00:00Z"))
        );
        assert_eq!(
            last_rotation_time(&offsets, at("2030-01-02T00:10:00Z")),
            Some(at("2030-01-02T00:10:00Z"))
        );
        assert_eq!(
            last_rotation_time(&offsets, at("2030-01-02T13:00:00Z")),
            Some(at("2030-01-02T12:00:00Z"))
        );
        assert_eq!(last_rotation_time(&[], at("2030-01-02T13:00:00Z")), None);
    }

    #[test]
    fn retention_prunes_by_count_by_disk_space_and_by_free_space() {
        let rotate_n = |cfg: JsonFileConfig, n: usize| {
            let (mut w, now) = writer(cfg, at("2030-01-01T00:00:00Z"));
            for i in 0..n {
                w.write_batch(&[event("access", i)]);
                *now.lock().unwrap() += chrono::TimeDelta::hours(1);
                // Distinct modification times order the rotated files.
                std::thread::sleep(Duration::from_millis(20));
                w.write_batch(&[]);
            }
        };
        let rotated = |dir: &Path| {
            let (names, ns) = files(dir);
            (names.len(), ns)
        };
        let each = r#"{"n":0}"#.len() as u64 + 1;

        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.rotation_interval = Some(Duration::from_secs(3600));
        cfg.max_history = Some(2);
        rotate_n(cfg.clone(), 4);
        assert_eq!(rotated(tmp.path()), (2, vec![2, 3]), "the newest two kept");

        let tmp = tempfile::tempdir().unwrap();
        cfg.dir = tmp.path().to_path_buf();
        cfg.max_history = None;
        cfg.max_disk_space = Some(3 * each);
        rotate_n(cfg.clone(), 5);
        assert_eq!(rotated(tmp.path()), (3, vec![2, 3, 4]), "three files fit");

        // No file system has that much free: every rotated file goes.
        let tmp = tempfile::tempdir().unwrap();
        cfg.dir = tmp.path().to_path_buf();
        cfg.max_disk_space = None;
        cfg.min_free_space = Some(u64::MAX);
        rotate_n(cfg.clone(), 3);
        assert_eq!(rotated(tmp.path()), (0, vec![]));
        // And any has one byte free.
        let tmp = tempfile::tempdir().unwrap();
        cfg.dir = tmp.path().to_path_buf();
        cfg.min_free_space = Some(1);
        rotate_n(cfg, 3);
        assert_eq!(rotated(tmp.path()).0, 3);
    }
}
