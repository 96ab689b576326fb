//! liveSync: tokens name copies of the file (`<csvFile>.sync.<n>`), and a sync diffs the
//! copy of the token against the file now.

use super::*;

impl Inner {
    pub(super) fn snapshot_path(&self, n: u64) -> PathBuf {
        let mut p = self.cfg.path.clone().into_os_string();
        p.push(format!(".sync.{n}"));
        PathBuf::from(p)
    }

    /// The numbers of the sync snapshots beside the file, ascending.
    pub(super) fn snapshots(&self) -> ConnectorResult<Vec<u64>> {
        let path = &self.cfg.path;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let prefix = format!(
            "{}.sync.",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut out = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| io_error("cannot list", &dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    pub(super) fn read_bytes(&self, path: &Path) -> ConnectorResult<Vec<u8>> {
        fs::read(path).map_err(|e| io_error("cannot read", path, e))
    }

    /// A snapshot holding `bytes`: the newest one when it holds them already, else a new
    /// one (older ones beyond the retention count are removed). Its number.
    pub(super) fn snapshot(&self, bytes: &[u8], reuse: bool) -> ConnectorResult<u64> {
        let existing = self.snapshots()?;
        if let Some(&last) = existing.last() {
            if reuse && fs::read(self.snapshot_path(last)).is_ok_and(|b| b == bytes) {
                return Ok(last);
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let n = existing.last().map_or(now, |&last| now.max(last + 1));
        let path = self.snapshot_path(n);
        write_atomic(&path, bytes).map_err(|e| io_error("cannot write", &path, e))?;
        let mut all = existing;
        all.push(n);
        if all.len() > self.cfg.retention {
            for old in &all[..all.len() - self.cfg.retention] {
                let _ = fs::remove_file(self.snapshot_path(*old));
            }
        }
        Ok(n)
    }

    /// The token of the file as it is now.
    pub(super) fn latest_token(&self) -> ConnectorResult<u64> {
        let bytes = self.read_bytes(&self.cfg.path)?;
        Table::parse(&self.cfg, &bytes, &self.cfg.file())?;
        self.snapshot(&bytes, true)
    }

    pub(super) fn sync(&self, token: u64, max: usize) -> ConnectorResult<SyncBatch> {
        let snap = self.snapshot_path(token);
        let old_bytes = match fs::read(&snap) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConnectorError::Config(format!(
                    "the liveSync token {token} names {}, which is gone (only the newest {} are kept, syncFileRetentionCount); start liveSync again from the latest token",
                    snap.display(),
                    self.cfg.retention
                )))
            }
            Err(e) => return Err(io_error("cannot read", &snap, e)),
        };
        let old = Table::parse(&self.cfg, &old_bytes, &snap.display().to_string())?;
        let cur_bytes = self.read_bytes(&self.cfg.path)?;
        let cur = Table::parse(&self.cfg, &cur_bytes, &self.cfg.file())?;

        // Creates and updates in file order, then deletes in the old file's order.
        let mut changed = Vec::new();
        for (i, row) in cur.rows.iter().enumerate() {
            let uid = &row[cur.uid_col];
            let same = old
                .by_uid
                .get(uid)
                .is_some_and(|&j| old.row_map(&old.rows[j]) == cur.row_map(row));
            if !same {
                changed.push(i);
            }
        }
        let deleted: Vec<&String> = old
            .rows
            .iter()
            .map(|r| &r[old.uid_col])
            .filter(|uid| !cur.by_uid.contains_key(*uid))
            .collect();
        let total = changed.len() + deleted.len();
        let take = if max == 0 { total } else { max.min(total) };
        let mut deltas = Vec::with_capacity(take);
        for &i in changed.iter().take(take) {
            deltas.push(SyncDelta::CreateOrUpdate(cur.object(&cur.rows[i], &[])));
        }
        for uid in deleted.iter().take(take - deltas.len()) {
            deltas.push(SyncDelta::Delete((*uid).clone()));
        }
        if take == total {
            let n = self.snapshot(&cur_bytes, true)?;
            return Ok(SyncBatch {
                deltas,
                token: json!(n),
            });
        }
        // A partial batch: the next token names the old content with these deltas applied,
        // over the union of both headers so that no difference is lost.
        let mut headers = cur.headers.clone();
        for h in &old.headers {
            if !headers.contains(h) {
                headers.push(h.clone());
            }
        }
        let shape = |m: HashMap<String, String>| -> Vec<String> {
            headers
                .iter()
                .map(|h| m.get(h).cloned().unwrap_or_default())
                .collect()
        };
        let mut rows: Vec<Vec<String>> = old.rows.iter().map(|r| shape(old.row_map(r))).collect();
        let mut index: HashMap<String, usize> = old.by_uid.clone();
        let mut removed = HashSet::new();
        for d in &deltas {
            match d {
                SyncDelta::CreateOrUpdate(o) => {
                    let row = shape(cur.row_map(&cur.rows[cur.by_uid[&o.uid]]));
                    match index.get(&o.uid) {
                        Some(&j) => rows[j] = row,
                        None => {
                            index.insert(o.uid.clone(), rows.len());
                            rows.push(row);
                        }
                    }
                }
                SyncDelta::Delete(uid) => {
                    removed.insert(uid.clone());
                }
            }
        }
        let uid_col = cur.uid_col;
        rows.retain(|r| !removed.contains(&r[uid_col]));
        let bytes = Table::render(&self.cfg, &headers, &rows)?;
        let n = self.snapshot(&bytes, false)?;
        Ok(SyncBatch {
            deltas,
            token: json!(n),
        })
    }
}
