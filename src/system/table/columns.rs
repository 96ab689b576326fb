//! The table's columns as either database reports them: which column is the key, the
//! password and the change log, and how native attribute names map to columns.

use super::*;

/// `"name"`, with `"` doubled.
pub(super) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The table's columns as they are now (either database).
pub(super) struct Columns {
    pub(super) names: Vec<String>,
    pub(super) types: Vec<String>,
    pub(super) key: usize,
    pub(super) password: Option<usize>,
    pub(super) change_log: Option<usize>,
    /// The quoted table name.
    pub(super) table: String,
    /// The table name as configured, for messages.
    pub(super) table_name: String,
}

impl Columns {
    /// The columns `names` (typed `types`) of the configured table; none: no such table.
    pub(super) fn new(
        cfg: &Config,
        names: Vec<String>,
        types: Vec<String>,
    ) -> ConnectorResult<Columns> {
        if names.is_empty() {
            return Err(ConnectorError::Config(format!(
                "the table '{}' does not exist in {}",
                cfg.table, cfg.location
            )));
        }
        let find = |name: &str, key: &str| {
            names.iter().position(|n| n == name).ok_or_else(|| {
                ConnectorError::Config(format!(
                    "{key} '{name}' is not a column of the table '{}' (it has {})",
                    cfg.table,
                    names.join(", ")
                ))
            })
        };
        let key = find(&cfg.key_column, "keyColumn")?;
        let password = match &cfg.password_column {
            Some(p) => Some(find(p, "passwordColumn")?),
            None => None,
        };
        let change_log = match &cfg.change_log_column {
            Some(c) => Some(find(c, "changeLogColumn")?),
            None => None,
        };
        Ok(Columns {
            names,
            types,
            key,
            password,
            change_log,
            table: quote(&cfg.table),
            table_name: cfg.table.clone(),
        })
    }

    pub(super) fn q(&self, i: usize) -> String {
        quote(&self.names[i])
    }

    pub(super) fn unknown(&self, native: &str) -> ConnectorError {
        ConnectorError::InvalidAttribute(format!(
            "'{native}' is not a column of the table '{}' (it has {})",
            self.table_name,
            self.names.join(", ")
        ))
    }

    /// The column a native attribute is written to.
    pub(super) fn write_column(&self, native: &str) -> ConnectorResult<usize> {
        match native {
            UID | NAME => Ok(self.key),
            PASSWORD => self.password.ok_or_else(|| {
                ConnectorError::InvalidAttribute(format!(
                    "the table '{}' has no password column (passwordColumn is not set)",
                    self.table_name
                ))
            }),
            other => self
                .names
                .iter()
                .position(|n| n == other)
                .ok_or_else(|| self.unknown(other)),
        }
    }

    /// The column a native attribute is read, filtered or sorted by (never the password).
    pub(super) fn read_column(&self, native: &str) -> ConnectorResult<usize> {
        let col = match native {
            UID | NAME => self.key,
            PASSWORD => return Err(self.password_refused()),
            other => self
                .names
                .iter()
                .position(|n| n == other)
                .ok_or_else(|| self.unknown(other))?,
        };
        if Some(col) == self.password {
            return Err(self.password_refused());
        }
        Ok(col)
    }

    pub(super) fn password_refused(&self) -> ConnectorError {
        ConnectorError::InvalidAttribute(
            "the password column cannot be read, filtered or sorted on".into(),
        )
    }

    /// Columns returned for `attributes`, with the name each is returned under.
    pub(super) fn returned(&self, attributes: &[String]) -> Vec<(usize, String)> {
        if attributes.is_empty() {
            let mut out = vec![(self.key, NAME.to_owned())];
            out.extend(
                (0..self.names.len())
                    .filter(|&i| i != self.key && Some(i) != self.password)
                    .map(|i| (i, self.names[i].clone())),
            );
            return out;
        }
        attributes
            .iter()
            .filter(|a| a.as_str() != UID)
            .filter_map(|a| match a.as_str() {
                NAME => Some((self.key, NAME.to_owned())),
                PASSWORD => None,
                other => self
                    .names
                    .iter()
                    .position(|n| n == other)
                    .filter(|&i| Some(i) != self.password)
                    .map(|i| (i, other.to_owned())),
            })
            .collect()
    }
}
