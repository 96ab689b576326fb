//! The file on disk: reads through the parse cache, and atomic whole-file writes
//! (temporary file, fsync, rename, directory fsync).

use super::*;

pub(super) fn io_error(what: &str, path: &Path, e: io::Error) -> ConnectorError {
    let msg = format!("{what} {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
            ConnectorError::Unavailable(msg)
        }
        _ => ConnectorError::Other(msg),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced,
/// renamed over `path`, then the directory fsynced. The stamp of the new file.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<Stamp> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "csv".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let permissions = fs::metadata(path).ok().map(|m| m.permissions());
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Some(p) = permissions {
            f.set_permissions(p)?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        let meta = f.metadata()?;
        drop(f);
        fs::rename(&tmp, path)?;
        Ok(meta)
    })();
    let meta = match result {
        Ok(meta) => meta,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    #[cfg(unix)]
    File::open(&dir)?.sync_all()?;
    Ok(Stamp::of(&meta))
}

/// What the blocking side shares: configuration and the parse cache.
pub(super) struct Inner {
    pub(super) cfg: Config,
    pub(super) cache: Mutex<Option<(Stamp, Arc<Table>)>>,
    /// Times the file was parsed (tests check the cache with it).
    pub(super) parses: AtomicU64,
}

impl Inner {
    /// The file as it is now, from the cache when unchanged.
    pub(super) fn load(&self) -> ConnectorResult<Arc<Table>> {
        let path = &self.cfg.path;
        let mut f = File::open(path).map_err(|e| io_error("cannot open", path, e))?;
        let meta = f.metadata().map_err(|e| io_error("cannot stat", path, e))?;
        let stamp = Stamp::of(&meta);
        if let Some((s, t)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if *s == stamp {
                return Ok(t.clone());
            }
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut bytes)
            .map_err(|e| io_error("cannot read", path, e))?;
        self.parses.fetch_add(1, AtomicOrdering::Relaxed);
        let table = Arc::new(Table::parse(&self.cfg, &bytes, &self.cfg.file())?);
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((stamp, table.clone()));
        Ok(table)
    }

    /// Replaces the file with `headers` and `rows` (the caller holds the write lock).
    pub(super) fn store(
        &self,
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    ) -> ConnectorResult<()> {
        let bytes = Table::render(&self.cfg, &headers, &rows)?;
        let table = Table::new(&self.cfg, headers, rows, &self.cfg.file())?;
        let stamp = write_atomic(&self.cfg.path, &bytes)
            .map_err(|e| io_error("cannot write", &self.cfg.path, e))?;
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((stamp, Arc::new(table)));
        Ok(())
    }
}
