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
//!
//! This file holds the connector and its [`Connector`] impl; `config` checks the
//! configuration, `table` is the parsed file, `file` the cache and atomic writes, `sync`
//! the liveSync copies and diff; `tests` runs the connector on temporary files.

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

mod config;
mod file;
mod sync;
mod table;
#[cfg(test)]
mod tests;

use config::Config;
use file::{io_error, write_atomic, Inner};
use table::{cell, Stamp, Table};

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
