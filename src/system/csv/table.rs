//! The parsed file: headers, rows and the uid index, the view of a row as a connector
//! object, and the version stamp the parse cache is keyed by.

use super::*;

/// What identifies one version of the file on disk: a rename gives a new inode, a write in
/// place a new mtime or length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) modified: Option<SystemTime>,
    pub(super) len: u64,
    pub(super) inode: u64,
}

impl Stamp {
    pub(super) fn of(meta: &fs::Metadata) -> Stamp {
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
pub(super) struct Table {
    pub(super) headers: Vec<String>,
    pub(super) rows: Vec<Vec<String>>,
    pub(super) by_uid: HashMap<String, usize>,
    pub(super) uid_col: usize,
    pub(super) name_col: usize,
    pub(super) pw_col: Option<usize>,
}

impl Table {
    /// Checks the header and the uids and indexes the rows. `what` names the file.
    pub(super) fn new(
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
    pub(super) fn parse(cfg: &Config, bytes: &[u8], what: &str) -> ConnectorResult<Table> {
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
    pub(super) fn render(
        cfg: &Config,
        headers: &[String],
        rows: &[Vec<String>],
    ) -> ConnectorResult<Vec<u8>> {
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

    pub(super) fn column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// The column a native attribute is written to.
    pub(super) fn write_column(&self, cfg: &Config, native: &str) -> ConnectorResult<usize> {
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
    pub(super) fn view(&self, row: &[String]) -> Value {
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
    pub(super) fn value<'a>(&self, row: &'a [String], native: &str) -> Option<&'a str> {
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
    pub(super) fn object(&self, row: &[String], attributes: &[String]) -> ConnectorObject {
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
    pub(super) fn row_map(&self, row: &[String]) -> HashMap<String, String> {
        self.headers
            .iter()
            .zip(row)
            .filter(|(_, v)| !v.is_empty())
            .map(|(h, v)| (h.clone(), v.clone()))
            .collect()
    }
}

/// A JSON value as one CSV field; `null` and `[]` clear it.
pub(super) fn cell(cfg: &Config, column: &str, value: &Value) -> ConnectorResult<String> {
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
