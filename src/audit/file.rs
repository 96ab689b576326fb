//! The JSON file handler (IDM's `JsonAuditEventHandler`): one file per topic,
//! `<logDirectory>/<topic>.audit.json`, one JSON event per line, rotated by size.
//!
//! Runs on its own thread and blocks only that thread: the request path hands events over
//! a bounded queue ([`super::Audit`]). Every write interval, what was queued is written and
//! flushed, so a burst costs one `write` per 64 KiB, and no event waits longer than the
//! interval.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::Receiver;

use super::config::JsonFileConfig;
use super::{Event, Writer};

/// File name of a topic's current file.
pub fn file_name(topic: &str) -> String {
    format!("{topic}.audit.json")
}

struct Current {
    out: BufWriter<File>,
    size: u64,
}

pub struct JsonFileWriter {
    cfg: JsonFileConfig,
    files: HashMap<Arc<str>, Current>,
}

impl JsonFileWriter {
    pub fn new(cfg: JsonFileConfig) -> Self {
        Self {
            cfg,
            files: HashMap::new(),
        }
    }

    /// Writes events until the audit closes (or every sender is gone).
    pub fn run(mut self, mut rx: Receiver<Event>, writer: Writer) {
        if let Err(e) = std::fs::create_dir_all(&self.cfg.dir) {
            tracing::error!(dir = %self.cfg.dir.display(), error = %e,
                "cannot create the audit log directory");
        }
        while let Some(batch) = writer.next_batch(&mut rx, usize::MAX) {
            for event in &batch {
                self.write(event);
            }
            self.flush();
        }
        self.flush();
    }

    fn write(&mut self, event: &Event) {
        let line = event.json.as_bytes();
        let len = line.len() as u64 + 1;
        if let Some(max) = self.cfg.max_file_size {
            let full = self
                .files
                .get(&event.topic)
                .is_some_and(|c| c.size > 0 && c.size + len > max);
            if full {
                self.rotate(&event.topic);
            }
        }
        let cur = match self.files.get_mut(&event.topic) {
            Some(c) => c,
            None => match self.open(&event.topic) {
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

    fn open(&self, topic: &str) -> std::io::Result<Current> {
        let path = self.path(topic);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Current {
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
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
    fn rotate(&mut self, topic: &str) {
        if let Some(mut cur) = self.files.remove(topic) {
            let _ = cur.out.flush();
        }
        let path = self.path(topic);
        let base = format!("{}{}", self.cfg.rotation_prefix, file_name(topic));
        let stamp = chrono::Utc::now()
            .format(&self.cfg.rotation_suffix)
            .to_string();
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
        if let Some(keep) = self.cfg.max_history {
            prune(&self.cfg.dir, &base, keep);
        }
    }
}

/// Removes the oldest files named `<base>…` (other than `<base>` itself) beyond `keep`.
fn prune(dir: &Path, base: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut rotated: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.len() > base.len() && n.starts_with(base))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if rotated.len() <= keep {
        return;
    }
    rotated.sort();
    for (_, p) in &rotated[..rotated.len() - keep] {
        if let Err(e) = std::fs::remove_file(p) {
            tracing::warn!(file = %p.display(), error = %e, "cannot remove an old audit log file");
        }
    }
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
