//! Database table connector: IDM's `org.identityconnectors.databasetable.DatabaseTableConnector`
//! over one table of a SQLite database (`jdbcUrlTemplate` `jdbc:sqlite:<path>`) or of a
//! PostgreSQL database (`jdbc:postgresql://%h:%p/%d`, see [`postgres`]); `%h`, `%p`, `%d`
//! are replaced by `host`, `port`, `database`, and `user`/`password` log in to PostgreSQL.
//!
//! * Each row is one `__ACCOUNT__` object. `keyColumn` is its `__UID__` and its `__NAME__`
//!   (as in IDM), `passwordColumn` its `__PASSWORD__` (compared in plain text by
//!   `authenticate`, never returned); every other column is an attribute of that name. A
//!   NULL is an absent attribute. Columns come from the table itself (`pragma_table_info`),
//!   so an attribute that is not a column is refused, naming it.
//! * Every table and column name is a quoted identifier and every value a bound parameter.
//! * Queries push the filter down as a SQL `WHERE`, sort with `ORDER BY` (the key column
//!   breaks ties), and page by keyset: the cookie holds the sort values and key of the last
//!   row returned, so pages stay exact while rows come and go. SQLite's own comparison
//!   rules apply (column affinity; NULL sorts first ascending), so a filter compares as the
//!   database does, not always as the in-memory evaluator would.
//! * liveSync needs `changeLogColumn`, a column that grows with every change (an integer
//!   sequence or a timestamp a trigger maintains). The token is the highest value seen;
//!   `sync` answers the rows above it in that order. A batch that ends inside a run of equal
//!   values gets the token `{"changeLog": value, "key": last key}` so the rest of the run
//!   follows. A deleted row leaves nothing behind in the table, so deletes are **not**
//!   reported; rows whose change column is NULL are never reported either.
//! * Connections: a small pool (`poolConfigOption.maxObjects` at once, `maxIdle` kept), WAL
//!   journal, a busy timeout; all SQLite work runs on the blocking pool.
//!
//! What follows describes SQLite; PostgreSQL behaves the same (see [`postgres`] for how).
//!
//! This file holds the connector that picks the database and what both share; `config`
//! checks the configuration, `columns` maps attributes to columns, `sql` builds the SQL of
//! either dialect, `sqlite` and `postgres` run it; `tests` runs the connector on SQLite.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connector::*;
use super::provisioner::Provisioner;
use crate::crest::filter::{FilterValue, QueryFilter};
use crate::repo::sqlite::prefix_successor;

mod columns;
mod config;
mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

use columns::{quote, Columns};
use config::{Config, Target};
use sqlite::{Pool, SqliteTable};

use sql::{Dialect, Sql};

/// The one object class a table holds.
const ACCOUNT: &str = "__ACCOUNT__";
/// Deepest filter nesting translated.
const MAX_FILTER_DEPTH: usize = 128;
/// How long a statement waits for another writer's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The database table connector: SQLite or PostgreSQL, by `jdbcUrlTemplate`.
pub struct TableConnector {
    inner: Box<dyn Connector>,
}

impl TableConnector {
    /// Checks `configurationProperties`; opens no database.
    pub fn new(p: &Provisioner) -> Result<Self, Vec<String>> {
        let cfg = Config::parse(&p.configuration)?;
        let inner: Box<dyn Connector> = match cfg.target.clone() {
            Target::Sqlite(path) => Box::new(SqliteTable {
                pool: Arc::new(Pool {
                    cfg,
                    path,
                    idle: Mutex::new(Vec::new()),
                    permits: Arc::new(Semaphore::new(p.pool.max_objects.max(1))),
                    max_idle: p.pool.max_idle,
                    max_wait: p.pool.max_wait,
                }),
            }),
            Target::Postgres(pg) => Box::new(postgres::PgTable::new(cfg, *pg, &p.pool)),
        };
        Ok(Self { inner })
    }
}

#[async_trait::async_trait]
impl Connector for TableConnector {
    async fn test(&self) -> ConnectorResult<()> {
        self.inner.test().await
    }
    async fn schema(&self) -> ConnectorResult<Map<String, Value>> {
        self.inner.schema().await
    }
    async fn authenticate(
        &self,
        class: &ObjectClass,
        username: &str,
        password: &str,
    ) -> ConnectorResult<String> {
        self.inner.authenticate(class, username, password).await
    }
    async fn create(
        &self,
        class: &ObjectClass,
        uid: Option<&str>,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        self.inner.create(class, uid, attributes).await
    }
    async fn read(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: &[String],
    ) -> ConnectorResult<Option<ConnectorObject>> {
        self.inner.read(class, uid, attributes).await
    }
    async fn update(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        self.inner.update(class, uid, attributes).await
    }
    async fn delete(&self, class: &ObjectClass, uid: &str) -> ConnectorResult<()> {
        self.inner.delete(class, uid).await
    }
    async fn query(
        &self,
        class: &ObjectClass,
        filter: Option<&QueryFilter>,
        options: &QueryOptions,
    ) -> ConnectorResult<QueryPage> {
        self.inner.query(class, filter, options).await
    }
    async fn latest_sync_token(&self, class: &ObjectClass) -> ConnectorResult<Value> {
        self.inner.latest_sync_token(class).await
    }
    async fn sync(
        &self,
        class: &ObjectClass,
        token: &Value,
        max: usize,
    ) -> ConnectorResult<SyncBatch> {
        self.inner.sync(class, token, max).await
    }
}

/// A permit to use one connection, waited for at most `max_wait` (`poolConfigOption.maxWait`).
async fn acquire(
    permits: &Arc<Semaphore>,
    max_wait: Duration,
) -> ConnectorResult<OwnedSemaphorePermit> {
    tokio::time::timeout(max_wait, permits.clone().acquire_owned())
        .await
        .map_err(|_| {
            ConnectorError::Timeout(format!(
                "no database connection became free within {} ms (poolConfigOption.maxWait)",
                max_wait.as_millis()
            ))
        })?
        .map_err(|_| ConnectorError::Unavailable("the connection pool is closed".into()))
}

fn check_class(class: &ObjectClass) -> ConnectorResult<()> {
    if class.native_type == ACCOUNT {
        Ok(())
    } else {
        Err(ConnectorError::NotSupported(format!(
            "a database table holds {ACCOUNT} objects only, not {}",
            class.native_type
        )))
    }
}

fn change_log_required(cfg: &Config) -> ConnectorResult<()> {
    if cfg.change_log_column.is_some() {
        Ok(())
    } else {
        Err(ConnectorError::NotSupported(
                "liveSync of a database table needs changeLogColumn (a column that grows with every change); it is not set"
                    .into(),
            ))
    }
}
