//! CSV file connector: IDM's `org.forgerock.openicf.csvfile.CSVFileConnector` over one file.
//!
//! * The file's first row is the header; every other row is one `__ACCOUNT__` object. The
//!   `headerUid` column is the `__UID__`, `headerName` the `__NAME__` (the same column by
//!   default), `headerPassword` the `__PASSWORD__` (compared by `authenticate`, never
//!   returned). Every other column is a string attribute of that name; an empty field is an
//!   absent attribute.
//! * Reading and writing go through the `csv` crate with the configured delimiter, quote and
//!   record terminator. The parsed file is cached by (inode, mtime, length), so queries of an
//!   unchanged file do not parse it again.
//! * Writes are serialised and atomic: the whole new file goes to a temporary file in the
//!   same directory, which is fsynced, renamed over `csvFile`, and the directory fsynced.
//!   A reader opens either the old or the new file, never a torn one; a temporary file left
//!   by a crash is never read.
//! * Queries filter, sort and page in memory (a CSV file has no index), in file order. Every
//!   value is a string, so a filter compares strings (`age gt 5` with a number never
//!   matches; `age gt '5'` compares text), and sorting is by code point.
//! * The cache key cannot see an edit in place that keeps the length within one mtime tick
//!   (writes through this connector replace the file, so they always can).
//! * liveSync compares contents: a token `n` names a copy of the file as it was,
//!   `<csvFile>.sync.<n>`, kept beside it (the newest `syncFileRetentionCount`, default 3).
//!   `sync` diffs that copy against the file now: new or changed rows are
//!   [`SyncDelta::CreateOrUpdate`], uids gone are [`SyncDelta::Delete`].

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::connector::*;
use super::provisioner::Provisioner;
use crate::crest::filter::QueryFilter;

/// The one object class a CSV file holds.
const ACCOUNT: &str = "__ACCOUNT__";
/// IDM's default `syncFileRetentionCount`.
const DEFAULT_RETENTION: usize = 3;

/// `configurationProperties`, checked.
#[derive(Debug, Clone)]
struct Config {
    path: PathBuf,
    header_uid: String,
    header_name: String,
    header_password: Option<String>,
    /// How records end when written.
    write_terminator: csv::Terminator,
    /// How records end when read (`\n`, `\r` and `\r\n` are all read as CRLF).
    read_terminator: csv::Terminator,
    quote: u8,
    delimiter: u8,
    retention: usize,
}

/// One ASCII character of a configuration property.
fn one_ascii_char(
    cfg: &Map<String, Value>,
    key: &str,
    default: u8,
    problems: &mut Vec<String>,
) -> u8 {
    match cfg.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) if s.len() == 1 && s.is_ascii() => s.as_bytes()[0],
        Some(_) => {
            problems.push(format!(
                "/configurationProperties/{key}: must be one ASCII character"
            ));
            default
        }
    }
}

/// An optional non-empty string property.
fn opt_string(cfg: &Map<String, Value>, key: &str, problems: &mut Vec<String>) -> Option<String> {
    match cfg.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push(format!("/configurationProperties/{key}: must be a string"));
            None
        }
    }
}

impl Config {
    fn parse(cfg: &Map<String, Value>) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let path = match cfg.get("csvFile") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(PathBuf::from(s)),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                problems.push(
                    "/configurationProperties/csvFile: missing; the path of the CSV file".into(),
                );
                None
            }
            Some(_) => {
                problems.push("/configurationProperties/csvFile: must be a string (a path)".into());
                None
            }
        };
        let header_uid =
            opt_string(cfg, "headerUid", &mut problems).unwrap_or_else(|| "uid".to_owned());
        let header_name =
            opt_string(cfg, "headerName", &mut problems).unwrap_or_else(|| header_uid.clone());
        let header_password = opt_string(cfg, "headerPassword", &mut problems);
        if let Some(pw) = &header_password {
            if *pw == header_uid || *pw == header_name {
                problems.push(format!(
                    "/configurationProperties/headerPassword: '{pw}' is also the uid or name column"
                ));
            }
        }
        let (write_terminator, read_terminator) = match cfg.get("newlineString") {
            None | Some(Value::Null) => (csv::Terminator::Any(b'\n'), csv::Terminator::CRLF),
            Some(Value::String(s)) => match s.as_str() {
                "\n" => (csv::Terminator::Any(b'\n'), csv::Terminator::CRLF),
                "\r\n" => (csv::Terminator::CRLF, csv::Terminator::CRLF),
                "\r" => (csv::Terminator::Any(b'\r'), csv::Terminator::CRLF),
                s if s.len() == 1 && s.is_ascii() => {
                    let b = s.as_bytes()[0];
                    (csv::Terminator::Any(b), csv::Terminator::Any(b))
                }
                _ => {
                    problems.push(
                        "/configurationProperties/newlineString: must be \"\\n\", \"\\r\\n\", \"\\r\" or one ASCII character"
                            .into(),
                    );
                    (csv::Terminator::Any(b'\n'), csv::Terminator::CRLF)
                }
            },
            Some(_) => {
                problems.push("/configurationProperties/newlineString: must be a string".into());
                (csv::Terminator::Any(b'\n'), csv::Terminator::CRLF)
            }
        };
        let quote = one_ascii_char(cfg, "quoteCharacter", b'"', &mut problems);
        let delimiter = one_ascii_char(cfg, "fieldDelimiter", b',', &mut problems);
        if quote == delimiter {
            problems.push(format!(
                "/configurationProperties/fieldDelimiter: '{}' is also the quoteCharacter",
                delimiter as char
            ));
        }
        let term_byte = match write_terminator {
            csv::Terminator::Any(b) => b,
            _ => b'\n',
        };
        for (key, b) in [("quoteCharacter", quote), ("fieldDelimiter", delimiter)] {
            if b == b'\n' || b == b'\r' || b == term_byte {
                problems.push(format!(
                    "/configurationProperties/{key}: must not be a line break or the newlineString"
                ));
            }
        }
        let retention = match cfg.get("syncFileRetentionCount") {
            None | Some(Value::Null) => DEFAULT_RETENTION,
            Some(v) => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(n) if n >= 1 => n.min(10_000) as usize,
                _ => {
                    problems.push(
                        "/configurationProperties/syncFileRetentionCount: must be an integer of at least 1"
                            .into(),
                    );
                    DEFAULT_RETENTION
                }
            },
        };
        match cfg.get("encoding") {
            None | Some(Value::Null) => {}
            Some(Value::String(e))
                if e.eq_ignore_ascii_case("utf-8") || e.eq_ignore_ascii_case("utf8") => {}
            Some(_) => problems
                .push("/configurationProperties/encoding: only utf-8 files are supported".into()),
        }
        match path {
            Some(path) if problems.is_empty() => Ok(Config {
                path,
                header_uid,
                header_name,
                header_password,
                write_terminator,
                read_terminator,
                quote,
                delimiter,
                retention,
            }),
            _ => Err(problems),
        }
    }

    fn file(&self) -> String {
        self.path.display().to_string()
    }
}

/// What identifies one version of the file on disk: a rename gives a new inode, a write in
/// place a new mtime or length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            meta.ino()
        };
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }
}

/// The parsed file.
#[derive(Debug, Clone)]
struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    by_uid: HashMap<String, usize>,
    uid_col: usize,
    name_col: usize,
    pw_col: Option<usize>,
}

impl Table {
    /// Checks the header and the uids and indexes the rows. `what` names the file.
    fn new(
        cfg: &Config,
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
        what: &str,
    ) -> ConnectorResult<Table> {
        let mut seen = HashSet::new();
        for h in &headers {
            if !seen.insert(h.as_str()) {
                return Err(ConnectorError::Config(format!(
                    "{what}: the header names column '{h}' twice"
                )));
            }
        }
        let column = |name: &str, key: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| {
                ConnectorError::Config(format!(
                    "{what}: the header has no column '{name}' ({key}); it has {}",
                    headers.join(", ")
                ))
            })
        };
        let uid_col = column(&cfg.header_uid, "headerUid")?;
        let name_col = column(&cfg.header_name, "headerName")?;
        let pw_col = match &cfg.header_password {
            Some(pw) => Some(column(pw, "headerPassword")?),
            None => None,
        };
        let mut by_uid = HashMap::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let uid = &row[uid_col];
            if uid.is_empty() {
                return Err(ConnectorError::Other(format!(
                    "{what}: record {} has an empty '{}' (uid)",
                    i + 1,
                    cfg.header_uid
                )));
            }
            if by_uid.insert(uid.clone(), i).is_some() {
                return Err(ConnectorError::Other(format!(
                    "{what}: uid '{uid}' appears on more than one record"
                )));
            }
        }
        Ok(Table {
            headers,
            rows,
            by_uid,
            uid_col,
            name_col,
            pw_col,
        })
    }

    /// Parses CSV text; a malformed file is an error naming the file and the record.
    fn parse(cfg: &Config, bytes: &[u8], what: &str) -> ConnectorResult<Table> {
        let malformed =
            |e: csv::Error| ConnectorError::Other(format!("{what} is not valid CSV: {e}"));
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(cfg.delimiter)
            .quote(cfg.quote)
            .terminator(cfg.read_terminator)
            .has_headers(true)
            .flexible(false)
            .from_reader(bytes);
        let headers: Vec<String> = reader
            .headers()
            .map_err(malformed)?
            .iter()
            .map(str::to_owned)
            .collect();
        if headers.is_empty() || headers.iter().all(String::is_empty) {
            return Err(ConnectorError::Config(format!("{what} has no header row")));
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(malformed)?;
            rows.push(record.iter().map(str::to_owned).collect::<Vec<_>>());
        }
        Table::new(cfg, headers, rows, what)
    }

    /// CSV text of `headers` and `rows`.
    fn render(cfg: &Config, headers: &[String], rows: &[Vec<String>]) -> ConnectorResult<Vec<u8>> {
        let fail = |e: &dyn std::fmt::Display| {
            ConnectorError::Other(format!("writing CSV for {}: {e}", cfg.file()))
        };
        let mut writer = csv::WriterBuilder::new()
            .delimiter(cfg.delimiter)
            .quote(cfg.quote)
            .terminator(cfg.write_terminator)
            .from_writer(Vec::new());
        writer.write_record(headers).map_err(|e| fail(&e))?;
        for row in rows {
            writer.write_record(row).map_err(|e| fail(&e))?;
        }
        writer.into_inner().map_err(|e| fail(&e))
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// The column a native attribute is written to.
    fn write_column(&self, cfg: &Config, native: &str) -> ConnectorResult<usize> {
        match native {
            UID => Ok(self.uid_col),
            NAME => Ok(self.name_col),
            PASSWORD => self.pw_col.ok_or_else(|| {
                ConnectorError::InvalidAttribute(format!(
                    "{} has no password column (headerPassword is not set)",
                    cfg.file()
                ))
            }),
            other => self.column(other).ok_or_else(|| {
                ConnectorError::InvalidAttribute(format!(
                    "'{other}' is not a column of {} (its columns are {})",
                    cfg.file(),
                    self.headers.join(", ")
                ))
            }),
        }
    }

    /// A row as the filter sees it: `__UID__`, `__NAME__` and every column but the
    /// password, empty fields left out.
    fn view(&self, row: &[String]) -> Value {
        let mut m = Map::new();
        m.insert(UID.into(), Value::String(row[self.uid_col].clone()));
        if !row[self.name_col].is_empty() {
            m.insert(NAME.into(), Value::String(row[self.name_col].clone()));
        }
        for (i, h) in self.headers.iter().enumerate() {
            if Some(i) != self.pw_col && !row[i].is_empty() {
                m.insert(h.clone(), Value::String(row[i].clone()));
            }
        }
        Value::Object(m)
    }

    /// The value of a native attribute in a row (not the password).
    fn value<'a>(&self, row: &'a [String], native: &str) -> Option<&'a str> {
        let col = match native {
            UID => Some(self.uid_col),
            NAME => Some(self.name_col),
            PASSWORD => None,
            other => self.column(other).filter(|&c| Some(c) != self.pw_col),
        }?;
        Some(row[col].as_str()).filter(|v| !v.is_empty())
    }

    /// A row as a connector object: `attributes` (or, when empty, every column but the
    /// password, and `__NAME__`).
    fn object(&self, row: &[String], attributes: &[String]) -> ConnectorObject {
        let mut out = Map::new();
        if attributes.is_empty() {
            if let Some(v) = self.value(row, NAME) {
                out.insert(NAME.into(), Value::String(v.to_owned()));
            }
            for (i, h) in self.headers.iter().enumerate() {
                if Some(i) != self.pw_col && !row[i].is_empty() {
                    out.insert(h.clone(), Value::String(row[i].clone()));
                }
            }
        } else {
            for a in attributes {
                if a == UID {
                    continue;
                }
                if let Some(v) = self.value(row, a) {
                    out.insert(a.clone(), Value::String(v.to_owned()));
                }
            }
        }
        ConnectorObject {
            uid: row[self.uid_col].clone(),
            attributes: out,
        }
    }

    /// A row as column → value (empty fields left out), to compare versions of it.
    fn row_map(&self, row: &[String]) -> HashMap<String, String> {
        self.headers
            .iter()
            .zip(row)
            .filter(|(_, v)| !v.is_empty())
            .map(|(h, v)| (h.clone(), v.clone()))
            .collect()
    }
}

/// A JSON value as one CSV field; `null` and `[]` clear it.
fn cell(cfg: &Config, column: &str, value: &Value) -> ConnectorResult<String> {
    Ok(match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) if items.is_empty() => String::new(),
        Value::Array(items) if items.len() == 1 => cell(cfg, column, &items[0])?,
        Value::Array(items) => {
            return Err(ConnectorError::InvalidAttribute(format!(
                "'{column}' of {} holds one value, not {}",
                cfg.file(),
                items.len()
            )))
        }
        Value::Object(_) => {
            return Err(ConnectorError::InvalidAttribute(format!(
                "'{column}' of {} holds a string, not an object",
                cfg.file()
            )))
        }
    })
}

/// The position of the next page: the uid of the last object returned and its index
/// (used when that object is gone).
#[derive(Serialize, Deserialize)]
struct Cookie {
    u: String,
    p: usize,
}

fn encode_cookie(c: &Cookie) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cookie(text: &str) -> ConnectorResult<Cookie> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            ConnectorError::InvalidAttribute(
                "the paged results cookie is not one this connector returned".into(),
            )
        })
}

fn io_error(what: &str, path: &Path, e: io::Error) -> ConnectorError {
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
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<Stamp> {
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
struct Inner {
    cfg: Config,
    cache: Mutex<Option<(Stamp, Arc<Table>)>>,
    /// Times the file was parsed (tests check the cache with it).
    parses: AtomicU64,
}

impl Inner {
    /// The file as it is now, from the cache when unchanged.
    fn load(&self) -> ConnectorResult<Arc<Table>> {
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
    fn store(&self, headers: Vec<String>, rows: Vec<Vec<String>>) -> ConnectorResult<()> {
        let bytes = Table::render(&self.cfg, &headers, &rows)?;
        let table = Table::new(&self.cfg, headers, rows, &self.cfg.file())?;
        let stamp = write_atomic(&self.cfg.path, &bytes)
            .map_err(|e| io_error("cannot write", &self.cfg.path, e))?;
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((stamp, Arc::new(table)));
        Ok(())
    }

    fn snapshot_path(&self, n: u64) -> PathBuf {
        let mut p = self.cfg.path.clone().into_os_string();
        p.push(format!(".sync.{n}"));
        PathBuf::from(p)
    }

    /// The numbers of the sync snapshots beside the file, ascending.
    fn snapshots(&self) -> ConnectorResult<Vec<u64>> {
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

    fn read_bytes(&self, path: &Path) -> ConnectorResult<Vec<u8>> {
        fs::read(path).map_err(|e| io_error("cannot read", path, e))
    }

    /// A snapshot holding `bytes`: the newest one when it holds them already, else a new
    /// one (older ones beyond the retention count are removed). Its number.
    fn snapshot(&self, bytes: &[u8], reuse: bool) -> ConnectorResult<u64> {
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
    fn latest_token(&self) -> ConnectorResult<u64> {
        let bytes = self.read_bytes(&self.cfg.path)?;
        Table::parse(&self.cfg, &bytes, &self.cfg.file())?;
        self.snapshot(&bytes, true)
    }

    fn sync(&self, token: u64, max: usize) -> ConnectorResult<SyncBatch> {
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

/// The CSV file connector.
pub struct CsvConnector {
    inner: Arc<Inner>,
    /// One writer at a time (file writes and sync snapshots).
    write_lock: Arc<tokio::sync::Mutex<()>>,
    sync_lock: Arc<tokio::sync::Mutex<()>>,
}

impl CsvConnector {
    /// Checks `configurationProperties`; touches no file.
    pub fn new(p: &Provisioner) -> Result<Self, Vec<String>> {
        let cfg = Config::parse(&p.configuration)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                cache: Mutex::new(None),
                parses: AtomicU64::new(0),
            }),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            sync_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> ConnectorResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> ConnectorResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| ConnectorError::Other(format!("the CSV file task failed: {e}")))?
    }

    /// Read-modify-write under the write lock: `f` gets the current table and returns the
    /// new rows (`None`: nothing to write) and its answer.
    async fn write<T, F>(&self, f: F) -> ConnectorResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Config, &Table) -> ConnectorResult<(Option<Vec<Vec<String>>>, T)>
            + Send
            + 'static,
    {
        let guard = self.write_lock.clone().lock_owned().await;
        self.blocking(move |inner| {
            let _guard = guard;
            let table = inner.load()?;
            let (rows, answer) = f(&inner.cfg, &table)?;
            if let Some(rows) = rows {
                inner.store(table.headers.clone(), rows)?;
            }
            Ok(answer)
        })
        .await
    }

    fn check_class(&self, class: &ObjectClass) -> ConnectorResult<()> {
        if class.native_type == ACCOUNT {
            Ok(())
        } else {
            Err(ConnectorError::NotSupported(format!(
                "a CSV file holds {ACCOUNT} objects only, not {}",
                class.native_type
            )))
        }
    }

    #[cfg(test)]
    fn parses(&self) -> u64 {
        self.inner.parses.load(AtomicOrdering::Relaxed)
    }
}

/// Sorts row indexes by the given native attributes (missing values first), keeping file
/// order for ties.
fn sort_rows(table: &Table, rows: &mut [usize], sort: &[(String, bool)]) {
    rows.sort_by(|&a, &b| {
        for (attr, ascending) in sort {
            let ord = table
                .value(&table.rows[a], attr)
                .cmp(&table.value(&table.rows[b], attr));
            let ord = if *ascending { ord } else { ord.reverse() };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

#[async_trait::async_trait]
impl Connector for CsvConnector {
    async fn test(&self) -> ConnectorResult<()> {
        self.blocking(|inner| inner.load().map(|_| ())).await
    }

    async fn schema(&self) -> ConnectorResult<Map<String, Value>> {
        let table = self.blocking(|inner| inner.load()).await?;
        let mut properties = Map::new();
        for (i, h) in table.headers.iter().enumerate() {
            if i == table.uid_col && i != table.name_col {
                continue;
            }
            let prop = if i == table.name_col {
                json!({"type": "string", "nativeName": NAME, "nativeType": "string", "required": true})
            } else if Some(i) == table.pw_col {
                json!({"type": "string", "nativeName": PASSWORD,
                       "nativeType": "JAVA_TYPE_GUARDEDSTRING",
                       "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]})
            } else {
                json!({"type": "string", "nativeName": h, "nativeType": "string"})
            };
            properties.insert(h.clone(), prop);
        }
        let mut out = Map::new();
        out.insert(
            "account".into(),
            json!({
                "$schema": "http://json-schema.org/draft-03/schema",
                "id": ACCOUNT,
                "type": "object",
                "nativeType": ACCOUNT,
                "properties": properties,
            }),
        );
        Ok(out)
    }

    async fn authenticate(
        &self,
        class: &ObjectClass,
        username: &str,
        password: &str,
    ) -> ConnectorResult<String> {
        self.check_class(class)?;
        let (username, password) = (username.to_owned(), password.to_owned());
        self.blocking(move |inner| {
            let table = inner.load()?;
            let Some(pw_col) = table.pw_col else {
                return Err(ConnectorError::NotSupported(format!(
                    "{} has no password column (headerPassword is not set)",
                    inner.cfg.file()
                )));
            };
            let row = table
                .rows
                .iter()
                .find(|r| r[table.name_col] == username)
                .or_else(|| table.by_uid.get(&username).map(|&i| &table.rows[i]));
            match row {
                Some(r) if !r[pw_col].is_empty() && r[pw_col] == password => {
                    Ok(r[table.uid_col].clone())
                }
                _ => Err(ConnectorError::InvalidCredential(
                    "invalid username or password".into(),
                )),
            }
        })
        .await
    }

    async fn create(
        &self,
        class: &ObjectClass,
        uid: Option<&str>,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        self.check_class(class)?;
        let uid = uid.map(str::to_owned);
        self.write(move |cfg, table| {
            let mut row = vec![String::new(); table.headers.len()];
            for (k, v) in &attributes {
                let col = table.write_column(cfg, k)?;
                row[col] = cell(cfg, k, v)?;
            }
            let given = &row[table.uid_col];
            let uid = match uid {
                Some(u) if !given.is_empty() && *given != u => {
                    return Err(ConnectorError::InvalidAttribute(format!(
                        "the id '{u}' and the '{}' value '{given}' differ",
                        cfg.header_uid
                    )))
                }
                Some(u) => u,
                None if !given.is_empty() => given.clone(),
                None => uuid::Uuid::new_v4().to_string(),
            };
            if uid.is_empty() {
                return Err(ConnectorError::InvalidAttribute("the id is empty".into()));
            }
            if table.by_uid.contains_key(&uid) {
                return Err(ConnectorError::AlreadyExists(format!(
                    "an object with uid '{uid}' exists already in {}",
                    cfg.file()
                )));
            }
            row[table.uid_col] = uid.clone();
            let mut rows = table.rows.clone();
            rows.push(row);
            Ok((Some(rows), uid))
        })
        .await
    }

    async fn read(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: &[String],
    ) -> ConnectorResult<Option<ConnectorObject>> {
        self.check_class(class)?;
        let uid = uid.to_owned();
        let attributes = attributes.to_vec();
        self.blocking(move |inner| {
            let table = inner.load()?;
            Ok(table
                .by_uid
                .get(&uid)
                .map(|&i| table.object(&table.rows[i], &attributes)))
        })
        .await
    }

    async fn update(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        self.check_class(class)?;
        let uid = uid.to_owned();
        self.write(move |cfg, table| {
            let Some(&i) = table.by_uid.get(&uid) else {
                return Err(ConnectorError::NotFound(format!(
                    "no object with uid '{uid}' in {}",
                    cfg.file()
                )));
            };
            let mut row = table.rows[i].clone();
            for (k, v) in &attributes {
                let col = table.write_column(cfg, k)?;
                row[col] = cell(cfg, k, v)?;
            }
            let new_uid = row[table.uid_col].clone();
            if new_uid.is_empty() {
                return Err(ConnectorError::InvalidAttribute(format!(
                    "'{}' (the uid) cannot be cleared",
                    cfg.header_uid
                )));
            }
            if new_uid != uid && table.by_uid.contains_key(&new_uid) {
                return Err(ConnectorError::AlreadyExists(format!(
                    "an object with uid '{new_uid}' exists already in {}",
                    cfg.file()
                )));
            }
            if row == table.rows[i] {
                return Ok((None, new_uid));
            }
            let mut rows = table.rows.clone();
            rows[i] = row;
            Ok((Some(rows), new_uid))
        })
        .await
    }

    async fn delete(&self, class: &ObjectClass, uid: &str) -> ConnectorResult<()> {
        self.check_class(class)?;
        let uid = uid.to_owned();
        self.write(move |cfg, table| {
            let Some(&i) = table.by_uid.get(&uid) else {
                return Err(ConnectorError::NotFound(format!(
                    "no object with uid '{uid}' in {}",
                    cfg.file()
                )));
            };
            let mut rows = table.rows.clone();
            rows.remove(i);
            Ok((Some(rows), ()))
        })
        .await
    }

    async fn query(
        &self,
        class: &ObjectClass,
        filter: Option<&QueryFilter>,
        options: &QueryOptions,
    ) -> ConnectorResult<QueryPage> {
        self.check_class(class)?;
        let filter = filter.cloned();
        let options = options.clone();
        self.blocking(move |inner| {
            let table = inner.load()?;
            for (attr, _) in &options.sort {
                let known = matches!(attr.as_str(), UID | NAME)
                    || table.column(attr).is_some_and(|c| Some(c) != table.pw_col);
                if !known {
                    return Err(ConnectorError::InvalidAttribute(format!(
                        "cannot sort on '{attr}': it is not a column of {}",
                        inner.cfg.file()
                    )));
                }
            }
            let mut matched: Vec<usize> = match &filter {
                None | Some(QueryFilter::True) => (0..table.rows.len()).collect(),
                Some(f) => (0..table.rows.len())
                    .filter(|&i| f.matches(&table.view(&table.rows[i])))
                    .collect(),
            };
            if !options.sort.is_empty() {
                sort_rows(&table, &mut matched, &options.sort);
            }
            let len = matched.len();
            let start = match &options.cookie {
                Some(c) => {
                    let c = decode_cookie(c)?;
                    matched
                        .iter()
                        .position(|&i| table.rows[i][table.uid_col] == c.u)
                        .map_or(c.p.min(len), |pos| pos + 1)
                }
                None => options.offset.min(len),
            };
            let end = if options.page_size == 0 {
                len
            } else {
                start.saturating_add(options.page_size).min(len)
            };
            let objects = matched[start..end]
                .iter()
                .map(|&i| table.object(&table.rows[i], &options.attributes))
                .collect();
            let cookie = (options.page_size > 0 && end < len && end > start).then(|| {
                encode_cookie(&Cookie {
                    u: table.rows[matched[end - 1]][table.uid_col].clone(),
                    p: end,
                })
            });
            Ok(QueryPage {
                objects,
                cookie,
                remaining: Some((len - end) as i64),
                total: options.count.then_some(len as i64),
            })
        })
        .await
    }

    async fn latest_sync_token(&self, class: &ObjectClass) -> ConnectorResult<Value> {
        self.check_class(class)?;
        let guard = self.sync_lock.clone().lock_owned().await;
        self.blocking(move |inner| {
            let _guard = guard;
            inner.latest_token().map(|n| json!(n))
        })
        .await
    }

    async fn sync(
        &self,
        class: &ObjectClass,
        token: &Value,
        max: usize,
    ) -> ConnectorResult<SyncBatch> {
        self.check_class(class)?;
        let n = match token {
            Value::Null => {
                let token = self.latest_sync_token(class).await?;
                return Ok(SyncBatch {
                    deltas: Vec::new(),
                    token,
                });
            }
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            return Err(ConnectorError::InvalidAttribute(format!(
                "'{token}' is not a CSV liveSync token (a snapshot number)"
            )));
        };
        let guard = self.sync_lock.clone().lock_owned().await;
        self.blocking(move |inner| {
            let _guard = guard;
            inner.sync(n, max)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::filter::parse as parse_filter;
    use crate::system::provisioner::{self, ObjectType};

    fn provisioner_with(props: Value) -> Provisioner {
        provisioner::parse(
            "csv",
            &json!({
                "connectorRef": {
                    "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"
                },
                "configurationProperties": props,
            }),
        )
        .expect("provisioner")
    }

    fn account() -> ObjectType {
        ObjectType::new("account", ACCOUNT, vec![])
    }

    const HR: &str = "uid,username,firstname,lastname,email,password\n\
        1,bjensen,Barbara,Jensen,bjensen@example.com,Passw0rd\n\
        2,scarter,Sam,Carter,scarter@example.com,\n\
        3,jdoe,John,Doe,,secret\n";

    /// A connector over a fresh copy of `content` (uid column `uid`, name `username`,
    /// password `password`).
    fn setup(content: &str) -> (tempfile::TempDir, PathBuf, CsvConnector) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hr.csv");
        fs::write(&path, content).unwrap();
        let c = CsvConnector::new(&provisioner_with(json!({
            "csvFile": path.to_str().unwrap(),
            "headerUid": "uid",
            "headerName": "username",
            "headerPassword": "password",
        })))
        .unwrap();
        (dir, path, c)
    }

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    async fn uids(c: &CsvConnector, filter: &str) -> Vec<String> {
        let f = parse_filter(filter).unwrap();
        let page = c
            .query(&account(), Some(&f), &QueryOptions::default())
            .await
            .unwrap();
        page.objects.into_iter().map(|o| o.uid).collect()
    }

    #[test]
    fn config_validation_reports_every_problem() {
        let p = provisioner_with(json!({
            "headerUid": 5,
            "quoteCharacter": "''",
            "fieldDelimiter": "\n",
            "newlineString": "ab",
            "syncFileRetentionCount": 0,
            "encoding": "latin-1",
        }));
        let problems = CsvConnector::new(&p).err().unwrap();
        let all = problems.join("\n");
        for want in [
            "/configurationProperties/csvFile: missing",
            "/configurationProperties/headerUid: must be a string",
            "/configurationProperties/quoteCharacter: must be one ASCII character",
            "/configurationProperties/fieldDelimiter: must not be a line break",
            "/configurationProperties/newlineString: must be",
            "/configurationProperties/syncFileRetentionCount: must be an integer",
            "/configurationProperties/encoding: only utf-8",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let p = provisioner_with(json!({"csvFile": "/x.csv", "headerPassword": "uid"}));
        let problems = CsvConnector::new(&p).err().unwrap();
        assert!(problems[0].contains("headerPassword"), "{problems:?}");
        let p = provisioner_with(json!({"csvFile": "/x.csv", "fieldDelimiter": "\""}));
        let problems = CsvConnector::new(&p).err().unwrap();
        assert!(
            problems[0].contains("also the quoteCharacter"),
            "{problems:?}"
        );
        // A valid configuration does not touch the (missing) file.
        let p = provisioner_with(json!({"csvFile": "/nonexistent/dir/x.csv"}));
        assert!(CsvConnector::new(&p).is_ok());
    }

    #[tokio::test]
    async fn crud() {
        let (_dir, path, c) = setup(HR);
        let a = account();
        c.test().await.unwrap();
        let o = c.read(&a, "1", &[]).await.unwrap().unwrap();
        assert_eq!(o.uid, "1");
        assert_eq!(o.attributes["__NAME__"], "bjensen");
        assert_eq!(o.attributes["firstname"], "Barbara");
        assert!(!o.attributes.contains_key("password"));
        let o = c
            .read(
                &a,
                "2",
                &["email".into(), "__PASSWORD__".into(), "password".into()],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.attributes, attrs(json!({"email": "scarter@example.com"})));
        assert!(c.read(&a, "9", &[]).await.unwrap().is_none());

        // Create with a given uid, with the uid column, and generated.
        let uid = c
            .create(
                &a,
                Some("4"),
                attrs(
                    json!({"__NAME__": "new, \"quoted\"\nuser", "email": ["n@example.com"],
                             "__PASSWORD__": "pw", "lastname": null}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(uid, "4");
        let o = c.read(&a, "4", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["__NAME__"], "new, \"quoted\"\nuser");
        assert_eq!(o.attributes["email"], "n@example.com");
        assert!(!o.attributes.contains_key("lastname"));
        let uid = c
            .create(&a, None, attrs(json!({"uid": "5", "__NAME__": "five"})))
            .await
            .unwrap();
        assert_eq!(uid, "5");
        let uid = c
            .create(&a, None, attrs(json!({"__NAME__": "gen"})))
            .await
            .unwrap();
        assert!(uuid::Uuid::parse_str(&uid).is_ok(), "{uid}");

        // Errors.
        let e = c
            .create(&a, Some("1"), attrs(json!({"__NAME__": "dup"})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");
        let e = c
            .create(&a, Some("6"), attrs(json!({"nosuch": "x"})))
            .await
            .unwrap_err();
        match e {
            ConnectorError::InvalidAttribute(m) => {
                assert!(m.contains("'nosuch'") && m.contains("hr.csv"), "{m}")
            }
            e => panic!("{e:?}"),
        }
        let e = c
            .create(&a, Some("6"), attrs(json!({"email": ["a", "b"]})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        let e = c
            .update(&a, "9", attrs(json!({"email": "x"})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
        assert!(matches!(
            c.delete(&a, "9").await.unwrap_err(),
            ConnectorError::NotFound(_)
        ));
        let group = ObjectType::new("group", "__GROUP__", vec![]);
        assert!(matches!(
            c.read(&group, "1", &[]).await.unwrap_err(),
            ConnectorError::NotSupported(_)
        ));

        // Update: only the given columns; clear with null; rename via the uid column.
        let uid = c
            .update(
                &a,
                "2",
                attrs(json!({"email": null, "firstname": "Samantha"})),
            )
            .await
            .unwrap();
        assert_eq!(uid, "2");
        let o = c.read(&a, "2", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["firstname"], "Samantha");
        assert_eq!(o.attributes["lastname"], "Carter");
        assert!(!o.attributes.contains_key("email"));
        let uid = c
            .update(&a, "2", attrs(json!({"uid": "22"})))
            .await
            .unwrap();
        assert_eq!(uid, "22");
        assert!(c.read(&a, "2", &[]).await.unwrap().is_none());
        let e = c
            .update(&a, "22", attrs(json!({"uid": "1"})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");

        c.delete(&a, "22").await.unwrap();
        assert!(c.read(&a, "22", &[]).await.unwrap().is_none());

        // The file is still valid CSV with the same header, and a new connector reads it.
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("uid,username,firstname,lastname,email,password\n"));
        let (_d2, _p2, c2) = setup(&text);
        let o = c2.read(&a, "4", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["__NAME__"], "new, \"quoted\"\nuser");
    }

    #[tokio::test]
    async fn uid_is_name_when_same_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.csv");
        fs::write(&path, "uid;mail\r\n'a;b';a@x\r\n").unwrap();
        let c = CsvConnector::new(&provisioner_with(json!({
            "csvFile": path.to_str().unwrap(),
            "fieldDelimiter": ";",
            "quoteCharacter": "'",
            "newlineString": "\r\n",
        })))
        .unwrap();
        let a = account();
        let o = c.read(&a, "a;b", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["__NAME__"], "a;b");
        let uid = c
            .create(&a, None, attrs(json!({"__NAME__": "carol", "mail": "c@x"})))
            .await
            .unwrap();
        assert_eq!(uid, "carol");
        let uid = c
            .update(&a, "carol", attrs(json!({"__NAME__": "caroline"})))
            .await
            .unwrap();
        assert_eq!(uid, "caroline");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "uid;mail\r\n'a;b';a@x\r\ncaroline;c@x\r\n");
        let e = c.authenticate(&a, "caroline", "x").await.unwrap_err();
        assert!(matches!(e, ConnectorError::NotSupported(_)), "{e:?}");
    }

    #[tokio::test]
    async fn every_filter_operator() {
        let (_dir, _path, c) = setup(
            "uid,username,firstname,lastname,email,password\n\
             1,alice,Alice,Zed,alice@x.com,\n\
             2,bob,Bob,Young,,\n\
             3,carol,Carol,Xu,carol@y.org,\n",
        );
        let cases: &[(&str, &[&str])] = &[
            ("true", &["1", "2", "3"]),
            ("false", &[]),
            ("__UID__ eq '2'", &["2"]),
            ("__NAME__ eq 'carol'", &["3"]),
            ("username eq 'bob'", &["2"]),
            ("email co '@x'", &["1"]),
            ("firstname sw 'Ca'", &["3"]),
            ("lastname gt 'Xu'", &["1", "2"]),
            ("lastname ge 'Xu'", &["1", "2", "3"]),
            ("lastname lt 'Young'", &["3"]),
            ("lastname le 'Young'", &["2", "3"]),
            ("email pr", &["1", "3"]),
            ("!(email pr)", &["2"]),
            ("password pr", &[]),
            ("username eq 'alice' or username eq 'bob'", &["1", "2"]),
            ("email pr and firstname sw 'A'", &["1"]),
            (r#"username in '["bob","carol","nobody"]'"#, &["2", "3"]),
            ("nosuch eq 'x'", &[]),
        ];
        for (filter, want) in cases {
            assert_eq!(uids(&c, filter).await, *want, "{filter}");
        }
    }

    #[tokio::test]
    async fn paging_sorting_counting_and_cache() {
        let mut content = String::from("uid,username,n,password\n");
        for i in 0..25 {
            content.push_str(&format!("u{i:02},name{},{},\n", 24 - i, i % 3));
        }
        let (_dir, _path, c) = setup(&content);
        let a = account();
        // Pages across separate calls until the end, no duplicates, file order.
        let mut seen = Vec::new();
        let mut cookie = None;
        let mut pages = 0;
        loop {
            let page = c
                .query(
                    &a,
                    None,
                    &QueryOptions {
                        page_size: 7,
                        cookie: cookie.clone(),
                        count: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            pages += 1;
            assert_eq!(page.total, Some(25));
            seen.extend(page.objects.into_iter().map(|o| o.uid));
            assert_eq!(page.remaining, Some(25 - seen.len() as i64));
            match page.cookie {
                Some(next) => cookie = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 4);
        let want: Vec<String> = (0..25).map(|i| format!("u{i:02}")).collect();
        assert_eq!(seen, want);
        // Only one parse for all those pages: the file did not change.
        assert_eq!(c.parses(), 1);

        // Offset, sort descending on one column then ascending on another.
        let page = c
            .query(
                &a,
                None,
                &QueryOptions {
                    page_size: 3,
                    offset: 2,
                    sort: vec![("n".into(), false), ("__NAME__".into(), true)],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let got: Vec<_> = page.objects.iter().map(|o| o.uid.as_str()).collect();
        // n=2: u02 (name22), u05 (name19), u08, u11, u14, u17, u20, u23 → by name:
        // name1(u23), name10(u14), name13(u11), name16(u08), name19(u05), name22(u02), name4(u20), name7(u17)
        assert_eq!(got, vec!["u11", "u08", "u05"]);
        let e = c
            .query(
                &a,
                None,
                &QueryOptions {
                    sort: vec![("password".into(), true)],
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        let e = c
            .query(
                &a,
                None,
                &QueryOptions {
                    page_size: 2,
                    cookie: Some("garbage!".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");

        // Paging with a filter and a delete between pages: no duplicates, nothing skipped.
        let f = parse_filter("n eq '1'").unwrap();
        let opts = QueryOptions {
            page_size: 3,
            ..Default::default()
        };
        let p1 = c.query(&a, Some(&f), &opts).await.unwrap();
        let first: Vec<_> = p1.objects.iter().map(|o| o.uid.clone()).collect();
        assert_eq!(first, ["u01", "u04", "u07"]);
        c.delete(&a, "u04").await.unwrap();
        let p2 = c
            .query(
                &a,
                Some(&f),
                &QueryOptions {
                    cookie: p1.cookie,
                    ..opts.clone()
                },
            )
            .await
            .unwrap();
        let second: Vec<_> = p2.objects.iter().map(|o| o.uid.clone()).collect();
        assert_eq!(second, ["u10", "u13", "u16"]);
    }

    #[tokio::test]
    async fn authenticate_plain_password() {
        let (_dir, _path, c) = setup(HR);
        let a = account();
        assert_eq!(
            c.authenticate(&a, "bjensen", "Passw0rd").await.unwrap(),
            "1"
        );
        assert_eq!(c.authenticate(&a, "3", "secret").await.unwrap(), "3");
        for (user, pw) in [("bjensen", "wrong"), ("nobody", "x"), ("scarter", "")] {
            let e = c.authenticate(&a, user, pw).await.unwrap_err();
            assert!(
                matches!(e, ConnectorError::InvalidCredential(_)),
                "{user}: {e:?}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_and_missing_files_are_errors_not_panics() {
        let (_dir, path, c) = setup("uid,username,password\n1,a,x\n2,b\n");
        let e = c.read(&account(), "1", &[]).await.unwrap_err();
        match e {
            ConnectorError::Other(m) => assert!(m.contains("hr.csv is not valid CSV"), "{m}"),
            e => panic!("{e:?}"),
        }
        fs::write(&path, "uid,username,password\n1,a,x\n1,b,y\n").unwrap();
        let e = c.test().await.unwrap_err();
        assert!(e.to_string().contains("more than one record"), "{e}");
        fs::write(&path, "id,username,password\n1,a,x\n").unwrap();
        let e = c.test().await.unwrap_err();
        assert!(matches!(e, ConnectorError::Config(ref m) if m.contains("no column 'uid'")));
        fs::write(&path, b"uid,username,password\n1,\xff,x\n").unwrap();
        assert!(c.test().await.is_err());
        fs::write(&path, "").unwrap();
        assert!(c.test().await.is_err());
        fs::remove_file(&path).unwrap();
        let e = c.test().await.unwrap_err();
        assert!(matches!(e, ConnectorError::Unavailable(_)), "{e:?}");
    }

    #[tokio::test]
    async fn schema_from_header() {
        let (_dir, _path, c) = setup(HR);
        let s = c.schema().await.unwrap();
        let props = s["account"]["properties"].as_object().unwrap();
        assert_eq!(s["account"]["nativeType"], ACCOUNT);
        assert_eq!(props["username"]["nativeName"], NAME);
        assert_eq!(props["password"]["nativeName"], PASSWORD);
        assert_eq!(props["email"]["nativeName"], "email");
        assert!(!props.contains_key("uid"));
        // The schema is one provisioner objectTypes entry.
        let p = provisioner::parse(
            "csv",
            &json!({"connectorRef": {"connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"},
                    "objectTypes": s}),
        )
        .unwrap();
        assert_eq!(p.object_types[0].name_property().unwrap().name, "username");
    }

    #[tokio::test]
    async fn live_sync_create_update_delete() {
        let (dir, path, c) = setup(HR);
        let a = account();
        let t0 = c.latest_sync_token(&a).await.unwrap();
        // Unchanged: the same token, no deltas.
        assert_eq!(c.latest_sync_token(&a).await.unwrap(), t0);
        let b = c.sync(&a, &t0, 100).await.unwrap();
        assert!(b.deltas.is_empty());
        assert_eq!(b.token, t0);

        c.create(&a, Some("4"), attrs(json!({"__NAME__": "new"})))
            .await
            .unwrap();
        c.update(&a, "1", attrs(json!({"email": "b@new"})))
            .await
            .unwrap();
        c.delete(&a, "2").await.unwrap();
        // An edit by someone else, in place.
        let text = fs::read_to_string(&path).unwrap().replace("John", "Johnny");
        fs::write(&path, text).unwrap();

        let b = c.sync(&a, &t0, 100).await.unwrap();
        let mut creates: Vec<_> = b
            .deltas
            .iter()
            .filter_map(|d| match d {
                SyncDelta::CreateOrUpdate(o) => Some(o.uid.clone()),
                _ => None,
            })
            .collect();
        creates.sort();
        assert_eq!(creates, ["1", "3", "4"]);
        assert!(b.deltas.contains(&SyncDelta::Delete("2".into())));
        let updated = b
            .deltas
            .iter()
            .find_map(|d| match d {
                SyncDelta::CreateOrUpdate(o) if o.uid == "1" => Some(o.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(updated.attributes["email"], "b@new");
        assert!(!updated.attributes.contains_key("password"));
        let t1 = b.token;
        assert_ne!(t1, t0);
        assert!(c.sync(&a, &t1, 100).await.unwrap().deltas.is_empty());

        // A batch limit: the token after a partial batch leads to the rest, nothing twice.
        for i in 10..15 {
            c.create(&a, Some(&i.to_string()), Map::new())
                .await
                .unwrap();
        }
        c.delete(&a, "3").await.unwrap();
        let mut token = t1.clone();
        let mut all = Vec::new();
        for _ in 0..10 {
            let b = c.sync(&a, &token, 2).await.unwrap();
            assert!(b.deltas.len() <= 2);
            token = b.token;
            if b.deltas.is_empty() {
                break;
            }
            all.extend(b.deltas);
        }
        let names: Vec<String> = all
            .iter()
            .map(|d| match d {
                SyncDelta::CreateOrUpdate(o) => format!("+{}", o.uid),
                SyncDelta::Delete(u) => format!("-{u}"),
            })
            .collect();
        assert_eq!(names, ["+10", "+11", "+12", "+13", "+14", "-3"]);

        // Old snapshots are pruned to syncFileRetentionCount (3).
        let snaps = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("hr.csv.sync.")
            })
            .count();
        assert_eq!(snaps, 3);
        let e = c.sync(&a, &t0, 10).await.unwrap_err();
        assert!(e.to_string().contains("is gone"), "{e}");
        let e = c.sync(&a, &json!({"x": 1}), 10).await.unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        // A null token starts from now.
        let b = c.sync(&a, &Value::Null, 10).await.unwrap();
        assert!(b.deltas.is_empty() && b.token.is_u64());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_are_atomic_and_none_is_lost() {
        let (dir, path, c) = setup("uid,username,password\n");
        let c = Arc::new(c);
        // A stray temporary file from an interrupted write is never read.
        fs::write(
            dir.path().join(".hr.csv.deadbeef.tmp"),
            "uid,garbage\n\"unterminated",
        )
        .unwrap();

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let path = path.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(AtomicOrdering::Relaxed) {
                    let bytes = fs::read(&path).unwrap();
                    let mut r = csv::Reader::from_reader(bytes.as_slice());
                    assert_eq!(r.headers().unwrap().len(), 3);
                    for rec in r.records() {
                        assert_eq!(rec.expect("a torn file").len(), 3);
                    }
                    reads += 1;
                }
                reads
            })
        };
        let mut tasks = Vec::new();
        for t in 0..8 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0..50 {
                    let uid = format!("t{t}-{i}");
                    let got = c
                        .create(&account(), Some(&uid), attrs(json!({"__NAME__": uid})))
                        .await
                        .unwrap();
                    done.push(got);
                    if i % 10 == 0 {
                        // Queries interleave with the writes and see whole files.
                        c.query(&account(), None, &QueryOptions::default())
                            .await
                            .unwrap();
                    }
                }
                done
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        stop.store(true, AtomicOrdering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(acked.len(), 400);
        let page = c
            .query(&account(), None, &QueryOptions::default())
            .await
            .unwrap();
        let present: HashSet<_> = page.objects.into_iter().map(|o| o.uid).collect();
        for uid in &acked {
            assert!(present.contains(uid), "{uid} lost");
        }
        assert_eq!(present.len(), 400);
        // Only the stray file is left besides the CSV file: no temporary file of ours.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A fresh connector (cold cache) parses the same 400 rows.
        let (_d, _p, c2) = setup(&fs::read_to_string(&path).unwrap());
        let page = c2
            .query(
                &account(),
                None,
                &QueryOptions {
                    count: true,
                    page_size: 1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.total, Some(400));
    }
}
