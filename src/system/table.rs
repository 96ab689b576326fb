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

mod postgres;
mod sql;

use sql::{Dialect, Sql};

/// The one object class a table holds.
const ACCOUNT: &str = "__ACCOUNT__";
/// Deepest filter nesting translated.
const MAX_FILTER_DEPTH: usize = 128;
/// How long a statement waits for another writer's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the table is.
#[derive(Debug, Clone)]
enum Target {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(Box<tokio_postgres::Config>),
}

/// `configurationProperties`, checked.
#[derive(Debug, Clone)]
struct Config {
    /// Which database.
    target: Target,
    /// The database for messages (the file, or host, port and name): no credentials.
    location: String,
    table: String,
    key_column: String,
    password_column: Option<String>,
    change_log_column: Option<String>,
}

fn string_prop(
    cfg: &Map<String, Value>,
    key: &str,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<String> {
    match cfg.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            if required {
                problems.push(format!("/configurationProperties/{key}: missing"));
            }
            None
        }
        Some(Value::Number(n)) if key == "port" => Some(n.to_string()),
        Some(_) => {
            problems.push(format!("/configurationProperties/{key}: must be a string"));
            None
        }
    }
}

impl Config {
    fn parse(cfg: &Map<String, Value>) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let table = string_prop(cfg, "table", true, &mut problems);
        let key_column = string_prop(cfg, "keyColumn", true, &mut problems);
        let password_column = string_prop(cfg, "passwordColumn", false, &mut problems);
        let change_log_column = string_prop(cfg, "changeLogColumn", false, &mut problems);
        let host = string_prop(cfg, "host", false, &mut problems);
        let port = string_prop(cfg, "port", false, &mut problems);
        let database = string_prop(cfg, "database", false, &mut problems);
        let user = string_prop(cfg, "user", false, &mut problems);
        let password = string_prop(cfg, "password", false, &mut problems);
        if let (Some(k), Some(p)) = (&key_column, &password_column) {
            if k == p {
                problems.push(format!(
                    "/configurationProperties/passwordColumn: '{p}' is also the keyColumn"
                ));
            }
        }
        let template = string_prop(cfg, "jdbcUrlTemplate", true, &mut problems);
        let mut target = None;
        if let Some(t) = template {
            let mut url = t.clone();
            for (placeholder, key, value) in [
                ("%h", "host", &host),
                ("%p", "port", &port),
                ("%d", "database", &database),
            ] {
                if url.contains(placeholder) {
                    match value {
                        Some(v) => url = url.replace(placeholder, v),
                        None => problems.push(format!(
                            "/configurationProperties/{key}: missing; jdbcUrlTemplate uses {placeholder}"
                        )),
                    }
                }
            }
            if let Some(rest) = url.strip_prefix("jdbc:sqlite:") {
                if rest.is_empty() || rest.contains(":memory:") || rest.starts_with("file::memory")
                {
                    problems.push(
                        "/configurationProperties/jdbcUrlTemplate: names no database file (jdbc:sqlite:<path>; in-memory databases are not shared)"
                            .into(),
                    );
                } else {
                    target = Some((Target::Sqlite(PathBuf::from(rest)), rest.to_owned()));
                }
            } else if let Some(rest) = url.strip_prefix("jdbc:postgresql:") {
                match postgres::parse_url(rest, user.as_deref(), password.as_deref()) {
                    Ok((pg, location)) => target = Some((Target::Postgres(Box::new(pg)), location)),
                    Err(e) => {
                        problems.push(format!("/configurationProperties/jdbcUrlTemplate: {e}"))
                    }
                }
            } else {
                let scheme: String = url.split(':').take(2).collect::<Vec<_>>().join(":");
                problems.push(format!(
                    "/configurationProperties/jdbcUrlTemplate: '{scheme}:' databases are not supported; only jdbc:sqlite:<path> and jdbc:postgresql://<host>[:<port>]/<database>"
                ));
            }
        }
        match (target, table, key_column) {
            (Some((target, location)), Some(table), Some(key_column)) if problems.is_empty() => {
                Ok(Config {
                    target,
                    location,
                    table,
                    key_column,
                    password_column,
                    change_log_column,
                })
            }
            _ => Err(problems),
        }
    }
}

/// `"name"`, with `"` doubled.
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The table's columns as they are now (either database).
struct Columns {
    names: Vec<String>,
    types: Vec<String>,
    key: usize,
    password: Option<usize>,
    change_log: Option<usize>,
    /// The quoted table name.
    table: String,
    /// The table name as configured, for messages.
    table_name: String,
}

impl Columns {
    /// The columns `names` (typed `types`) of the configured table; none: no such table.
    fn new(cfg: &Config, names: Vec<String>, types: Vec<String>) -> ConnectorResult<Columns> {
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

    fn q(&self, i: usize) -> String {
        quote(&self.names[i])
    }

    fn unknown(&self, native: &str) -> ConnectorError {
        ConnectorError::InvalidAttribute(format!(
            "'{native}' is not a column of the table '{}' (it has {})",
            self.table_name,
            self.names.join(", ")
        ))
    }

    /// The column a native attribute is written to.
    fn write_column(&self, native: &str) -> ConnectorResult<usize> {
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
    fn read_column(&self, native: &str) -> ConnectorResult<usize> {
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

    fn password_refused(&self) -> ConnectorError {
        ConnectorError::InvalidAttribute(
            "the password column cannot be read, filtered or sorted on".into(),
        )
    }

    /// Columns returned for `attributes`, with the name each is returned under.
    fn returned(&self, attributes: &[String]) -> Vec<(usize, String)> {
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

/// The columns of a SQLite table, and SQLite's SQL: typed values bound as `?N`, `1`/`0`,
/// SQLite's own NULL order.
struct LiteColumns {
    base: Columns,
    /// Declared with TEXT affinity (`CHAR`, `CLOB`, `TEXT` in the type).
    text: Vec<bool>,
}

impl LiteColumns {
    fn load(conn: &Connection, cfg: &Config) -> ConnectorResult<LiteColumns> {
        let mut stmt = conn
            .prepare_cached("SELECT name, type FROM pragma_table_info(?1)")
            .map_err(|e| sql_error(e, &cfg.table))?;
        let rows = stmt
            .query_map([&cfg.table], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| sql_error(e, &cfg.table))?;
        let names: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
        let types: Vec<String> = rows
            .iter()
            .map(|(_, t)| t.clone().unwrap_or_default().to_ascii_uppercase())
            .collect();
        let text = types
            .iter()
            .map(|t| {
                !t.contains("INT")
                    && (t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT"))
            })
            .collect();
        Ok(LiteColumns {
            base: Columns::new(cfg, names, types)?,
            text,
        })
    }
}

impl Dialect for LiteColumns {
    type Value = SqlValue;
    type Cookie = Cookie;
    const TRUE: &'static str = "1";
    const FALSE: &'static str = "0";
    const ASC: &'static str = "ASC";
    const DESC: &'static str = "DESC";
    const ECHOES_TOKEN: bool = false;

    fn cols(&self) -> &Columns {
        &self.base
    }

    fn placeholder(n: usize) -> String {
        format!("?{n}")
    }

    fn null() -> SqlValue {
        SqlValue::Null
    }

    fn string(s: String) -> SqlValue {
        SqlValue::Text(s)
    }

    fn scalar(v: &Value) -> SqlValue {
        match v {
            Value::String(s) => SqlValue::Text(s.clone()),
            Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => SqlValue::Null,
        }
    }

    fn bind(&self, sql: &mut Sql<Self>, _c: usize, v: SqlValue) -> String {
        sql.param(v)
    }

    fn out(&self, expr: String) -> String {
        expr
    }

    fn contains(&self, sql: &mut Sql<Self>, c: usize, s: &str) -> String {
        let p = sql.param(SqlValue::Text(s.to_owned()));
        format!("(instr({}, {p}) > 0)", self.base.q(c))
    }

    fn starts_with(&self, sql: &mut Sql<Self>, c: usize, s: &str) -> String {
        let col = self.base.q(c);
        let lo = sql.param(SqlValue::Text(s.to_owned()));
        if !self.text[c] {
            return format!("(instr({col}, {lo}) = 1)");
        }
        // A range an index on the column serves.
        match prefix_successor(s) {
            Some(hi) => {
                let hi = sql.param(SqlValue::Text(hi));
                format!("({col} >= {lo} AND {col} < {hi})")
            }
            None => format!("({col} >= {lo})"),
        }
    }

    fn operand(&self, sql: &mut Sql<Self>, _c: usize, value: &FilterValue) -> String {
        sql.param(match value {
            FilterValue::String(s) => SqlValue::Text(s.clone()),
            FilterValue::Integer(i) => SqlValue::Integer(*i),
            FilterValue::Float(f) => SqlValue::Real(*f),
            FilterValue::Bool(b) => SqlValue::Integer(i64::from(*b)),
        })
    }

    fn in_list(&self, c: usize, list: &str) -> String {
        format!(
            "({} IN (SELECT value FROM json_each({list})))",
            self.base.q(c)
        )
    }

    fn limit(sql: &mut Sql<Self>, n: Option<usize>) -> String {
        let n = n.map_or(-1, |n| n.min(i64::MAX as usize) as i64);
        sql.param(SqlValue::Integer(n))
    }

    fn offset(sql: &mut Sql<Self>, n: usize) -> String {
        sql.param(SqlValue::Integer(n.min(i64::MAX as usize) as i64))
    }

    fn json(&self, _c: usize, value: SqlValue) -> Option<Value> {
        match value {
            SqlValue::Null => None,
            SqlValue::Integer(i) => Some(json!(i)),
            SqlValue::Real(r) => serde_json::Number::from_f64(r).map(Value::Number),
            SqlValue::Text(t) => Some(Value::String(t)),
            SqlValue::Blob(b) => Some(Value::String(
                base64::engine::general_purpose::STANDARD.encode(b),
            )),
        }
    }

    fn uid(value: &SqlValue) -> String {
        match value {
            SqlValue::Null => String::new(),
            SqlValue::Integer(i) => i.to_string(),
            SqlValue::Real(r) => r.to_string(),
            SqlValue::Text(t) => t.clone(),
            SqlValue::Blob(b) => base64::engine::general_purpose::STANDARD.encode(b),
        }
    }

    fn key_json(v: SqlValue) -> Value {
        json!(KeyValue::from_sql(v))
    }

    fn token_value(v: &Value) -> Option<SqlValue> {
        match v {
            Value::Null => Some(SqlValue::Null),
            Value::String(s) => Some(SqlValue::Text(s.clone())),
            Value::Number(n) => Some(match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64()?),
            }),
            _ => None,
        }
    }

    fn token_key(v: &Value) -> Option<SqlValue> {
        serde_json::from_value::<KeyValue>(v.clone())
            .ok()
            .map(|k| k.to_sql())
    }

    fn cookie(values: Vec<SqlValue>) -> Cookie {
        Cookie {
            v: values.into_iter().map(KeyValue::from_sql).collect(),
        }
    }

    fn cookie_values(cookie: Cookie) -> Vec<SqlValue> {
        cookie.v.iter().map(KeyValue::to_sql).collect()
    }

    fn key_shown(v: &SqlValue) -> Option<String> {
        Some(Self::uid(v))
    }

    fn generates_key(&self) -> bool {
        // An INTEGER PRIMARY KEY numbers itself; any other key gets a UUID.
        !self.base.types[self.base.key].contains("INT")
    }

    fn password_text(v: &SqlValue) -> Option<&str> {
        match v {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// What a SQLite error means to the caller.
fn sql_error(e: rusqlite::Error, table: &str) -> ConnectorError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                ConnectorError::AlreadyExists(format!(
                    "a row with that key exists already in the table '{table}': {e}"
                ))
            }
            ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig => {
                ConnectorError::InvalidAttribute(format!("the table '{table}' refused it: {e}"))
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                ConnectorError::Timeout(format!("the database is busy: {e}"))
            }
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::SystemIoFailure => {
                ConnectorError::Unavailable(format!("the database cannot be used: {e}"))
            }
            ErrorCode::NotADatabase => {
                ConnectorError::Config(format!("the jdbcUrlTemplate file is not a database: {e}"))
            }
            _ => ConnectorError::Other(format!("the table '{table}': {e}")),
        },
        _ => ConnectorError::Other(format!("the table '{table}': {e}")),
    }
}

/// A value in a cookie or token, with its storage class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum KeyValue {
    #[serde(rename = "n")]
    Null,
    #[serde(rename = "i")]
    Integer(i64),
    #[serde(rename = "r")]
    Real(f64),
    #[serde(rename = "t")]
    Text(String),
    #[serde(rename = "b")]
    Blob(Vec<u8>),
}

impl KeyValue {
    fn from_sql(v: SqlValue) -> KeyValue {
        match v {
            SqlValue::Null => KeyValue::Null,
            SqlValue::Integer(i) => KeyValue::Integer(i),
            SqlValue::Real(r) => KeyValue::Real(r),
            SqlValue::Text(t) => KeyValue::Text(t),
            SqlValue::Blob(b) => KeyValue::Blob(b),
        }
    }

    fn to_sql(&self) -> SqlValue {
        match self {
            KeyValue::Null => SqlValue::Null,
            KeyValue::Integer(i) => SqlValue::Integer(*i),
            KeyValue::Real(r) => SqlValue::Real(*r),
            KeyValue::Text(t) => SqlValue::Text(t.clone()),
            KeyValue::Blob(b) => SqlValue::Blob(b.clone()),
        }
    }
}

/// The cookie of a page: the order values of its last row (sort columns, then the key).
#[derive(Serialize, Deserialize)]
struct Cookie {
    v: Vec<KeyValue>,
}

/// Reads the object of `select` from `row`.
fn object_of(
    cols: &LiteColumns,
    row: &rusqlite::Row<'_>,
    select: &sql::Select<LiteColumns>,
) -> rusqlite::Result<ConnectorObject> {
    select.object(cols, |i| row.get::<_, SqlValue>(i))
}

/// Idle connections and the bound on open ones.
struct Pool {
    cfg: Config,
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    max_idle: usize,
    max_wait: Duration,
}

impl Pool {
    fn open(&self) -> ConnectorResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| {
            ConnectorError::Unavailable(format!(
                "cannot open the database {}: {e}",
                self.path.display()
            ))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_error(e, &self.cfg.table))?;
        // WAL lets readers go on while one writes; a read-only file keeps its journal mode.
        let _ = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0));
        Ok(conn)
    }

    fn take(&self) -> ConnectorResult<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => self.open(),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

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

/// The connector over a SQLite table.
struct SqliteTable {
    pool: Arc<Pool>,
}

impl SqliteTable {
    /// Runs `f` with a pooled connection and the table's columns on the blocking pool.
    async fn with<T, F>(&self, f: F) -> ConnectorResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &LiteColumns, &Config) -> ConnectorResult<T> + Send + 'static,
    {
        let permit = acquire(&self.pool.permits, self.pool.max_wait).await?;
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = pool.take()?;
            let result =
                LiteColumns::load(&conn, &pool.cfg).and_then(|cols| f(&mut conn, &cols, &pool.cfg));
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|e| ConnectorError::Other(format!("the database task failed: {e}")))?
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

/// The parameters of a statement, as rusqlite binds them.
fn params(values: &[SqlValue]) -> rusqlite::ParamsFromIter<std::slice::Iter<'_, SqlValue>> {
    rusqlite::params_from_iter(values.iter())
}

#[async_trait::async_trait]
impl Connector for SqliteTable {
    async fn test(&self) -> ConnectorResult<()> {
        self.with(|conn, cols, cfg| {
            conn.query_row(
                &format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1)",
                    cols.base.table
                ),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|_| ())
            .map_err(|e| sql_error(e, &cfg.table))
        })
        .await
    }

    async fn schema(&self) -> ConnectorResult<Map<String, Value>> {
        self.with(|_, cols, _| {
            let types = &cols.base.types;
            Ok(sql::schema(&cols.base, |i| {
                let t = &types[i];
                if t.contains("INT") {
                    ("integer", "long")
                } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
                    ("number", "double")
                } else {
                    ("string", "string")
                }
            }))
        })
        .await
    }

    async fn authenticate(
        &self,
        class: &ObjectClass,
        username: &str,
        password: &str,
    ) -> ConnectorResult<String> {
        check_class(class)?;
        let (username, password) = (username.to_owned(), password.to_owned());
        self.with(move |conn, cols, cfg| {
            let err = |e| sql_error(e, &cfg.table);
            let (text, sql) = sql::authenticate_sql(cols, &username)?;
            let mut stmt = conn.prepare_cached(&text).map_err(err)?;
            let mut rows = stmt.query(params(&sql.params)).map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                let stored: SqlValue = row.get(1).map_err(err)?;
                if sql::password_matches::<LiteColumns>(&stored, &password) {
                    let key: SqlValue = row.get(0).map_err(err)?;
                    return Ok(LiteColumns::uid(&key));
                }
            }
            Err(sql::invalid_credential())
        })
        .await
    }

    async fn create(
        &self,
        class: &ObjectClass,
        uid: Option<&str>,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        check_class(class)?;
        let uid = uid.map(str::to_owned);
        self.with(move |conn, cols, cfg| {
            let (text, sql, wanted) = sql::create_sql(cols, uid.as_deref(), &attributes)?;
            let key: SqlValue = conn
                .query_row(&text, params(&sql.params), |r| r.get(0))
                .map_err(|e| match (sql_error(e, &cfg.table), &wanted) {
                    (ConnectorError::AlreadyExists(m), Some(k)) => {
                        ConnectorError::AlreadyExists(format!("object '{k}': {m}"))
                    }
                    (e, _) => e,
                })?;
            sql::created(cols, &key)
        })
        .await
    }

    async fn read(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: &[String],
    ) -> ConnectorResult<Option<ConnectorObject>> {
        check_class(class)?;
        let uid = uid.to_owned();
        let attributes = attributes.to_vec();
        self.with(move |conn, cols, cfg| {
            let err = |e| sql_error(e, &cfg.table);
            let Some(select) = sql::read_sql(cols, &uid, &attributes) else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(&select.text).map_err(err)?;
            let mut rows = stmt.query(params(&select.sql.params)).map_err(err)?;
            match rows.next().map_err(err)? {
                Some(row) => object_of(cols, row, &select).map(Some).map_err(err),
                None => Ok(None),
            }
        })
        .await
    }

    async fn update(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        check_class(class)?;
        let uid = uid.to_owned();
        self.with(move |conn, cols, cfg| {
            let err = |e| sql_error(e, &cfg.table);
            let (text, sql) = sql::update_sql(cols, &uid, &attributes)?;
            let mut stmt = conn.prepare(&text).map_err(err)?;
            let mut rows = stmt.query(params(&sql.params)).map_err(err)?;
            let first = rows.next().map_err(err)?;
            match first {
                Some(row) => {
                    let key: SqlValue = row.get(0).map_err(err)?;
                    let key = LiteColumns::uid(&key);
                    // Drain: the statement finishes only when stepped to its end.
                    while rows.next().map_err(err)?.is_some() {}
                    Ok(key)
                }
                None => Err(sql::not_found(&uid, &cols.base)),
            }
        })
        .await
    }

    async fn delete(&self, class: &ObjectClass, uid: &str) -> ConnectorResult<()> {
        check_class(class)?;
        let uid = uid.to_owned();
        self.with(move |conn, cols, cfg| {
            let (text, sql) = sql::delete_sql(cols, &uid)?;
            let n = conn
                .execute(&text, params(&sql.params))
                .map_err(|e| sql_error(e, &cfg.table))?;
            if n == 0 {
                return Err(sql::not_found(&uid, &cols.base));
            }
            Ok(())
        })
        .await
    }

    async fn query(
        &self,
        class: &ObjectClass,
        filter: Option<&QueryFilter>,
        options: &QueryOptions,
    ) -> ConnectorResult<QueryPage> {
        check_class(class)?;
        let filter = filter.cloned();
        let options = options.clone();
        self.with(move |conn, cols, cfg| {
            let err = |e| sql_error(e, &cfg.table);
            let query = sql::Query::new(cols, filter.as_ref(), &options)?;
            let total = if options.count {
                Some(
                    conn.query_row(&query.count_sql(cols), params(&query.sql.params), |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(err)?,
                )
            } else {
                None
            };
            let page = query.page(cols, &options)?;
            let mut stmt = conn.prepare(&page.text).map_err(err)?;
            let mut rows = stmt.query(params(&page.sql.params)).map_err(err)?;
            let mut objects = Vec::new();
            let mut last_order: Vec<SqlValue> = Vec::new();
            let mut more = false;
            while let Some(row) = rows.next().map_err(err)? {
                if options.page_size > 0 && objects.len() == options.page_size {
                    more = true;
                    break;
                }
                objects.push(object_of(cols, row, &page).map_err(err)?);
                last_order = (1..page.first)
                    .map(|i| row.get::<_, SqlValue>(i))
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
            }
            Ok(sql::query_page::<LiteColumns>(
                &options, objects, last_order, more, total,
            ))
        })
        .await
    }

    async fn latest_sync_token(&self, class: &ObjectClass) -> ConnectorResult<Value> {
        check_class(class)?;
        change_log_required(&self.pool.cfg)?;
        self.with(|conn, cols, cfg| {
            let chg = sql::change_log_column(&cols.base)?;
            let max: SqlValue = conn
                .query_row(&sql::latest_sql(cols, chg), [], |r| r.get(0))
                .map_err(|e| sql_error(e, &cfg.table))?;
            Ok(sql::latest_token(cols, chg, max))
        })
        .await
    }

    async fn sync(
        &self,
        class: &ObjectClass,
        token: &Value,
        max: usize,
    ) -> ConnectorResult<SyncBatch> {
        check_class(class)?;
        change_log_required(&self.pool.cfg)?;
        if token.is_null() {
            let token = self.latest_sync_token(class).await?;
            return Ok(SyncBatch {
                deltas: Vec::new(),
                token,
            });
        }
        let from = sql::SyncFrom::<LiteColumns>::parse(token)?;
        let token = token.clone();
        self.with(move |conn, cols, cfg| {
            let err = |e| sql_error(e, &cfg.table);
            let chg = sql::change_log_column(&cols.base)?;
            let select = from.sql(cols, chg, max);
            let mut stmt = conn.prepare(&select.text).map_err(err)?;
            let mut rows = stmt.query(params(&select.sql.params)).map_err(err)?;
            let mut deltas = Vec::new();
            let mut last: Option<(SqlValue, SqlValue)> = None;
            let mut next_value: Option<SqlValue> = None;
            while let Some(row) = rows.next().map_err(err)? {
                let value: SqlValue = row.get(1).map_err(err)?;
                if max > 0 && deltas.len() == max {
                    next_value = Some(value);
                    break;
                }
                deltas.push(SyncDelta::CreateOrUpdate(
                    object_of(cols, row, &select).map_err(err)?,
                ));
                last = Some((value, row.get(0).map_err(err)?));
            }
            let token = from.next_token(cols, chg, &token, last, next_value);
            Ok(SyncBatch { deltas, token })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::filter::parse as parse_filter;
    use crate::system::provisioner::{self, ObjectType};
    use std::collections::HashSet;

    const TABLE: &str = "my \"users\"";

    fn provisioner_with(props: Value) -> Provisioner {
        provisioner::parse(
            "db",
            &json!({
                "connectorRef": {
                    "connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"
                },
                "poolConfigOption": {"maxObjects": 3, "maxIdle": 2},
                "configurationProperties": props,
            }),
        )
        .expect("provisioner")
    }

    fn account() -> ObjectType {
        ObjectType::new("account", ACCOUNT, vec![])
    }

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// A database with the users table (a trigger keeps `changed` growing) and a connector.
    fn setup(change_log: bool) -> (tempfile::TempDir, PathBuf, TableConnector) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hr.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            r#"
            CREATE TABLE "my ""users""" (
                uid TEXT PRIMARY KEY,
                firstname TEXT,
                lastname TEXT,
                email VARCHAR(255),
                age INTEGER,
                "group" TEXT,
                password TEXT,
                changed INTEGER
            );
            CREATE TABLE seq (n INTEGER NOT NULL);
            INSERT INTO seq VALUES (0);
            CREATE TRIGGER users_ins AFTER INSERT ON "my ""users""" BEGIN
                UPDATE seq SET n = n + 1;
                UPDATE "my ""users""" SET changed = (SELECT n FROM seq) WHERE rowid = NEW.rowid;
            END;
            CREATE TRIGGER users_upd AFTER UPDATE OF uid, firstname, lastname, email, age, "group", password
                ON "my ""users""" BEGIN
                UPDATE seq SET n = n + 1;
                UPDATE "my ""users""" SET changed = (SELECT n FROM seq) WHERE rowid = NEW.rowid;
            END;
            INSERT INTO "my ""users""" (uid, firstname, lastname, email, age, "group", password) VALUES
                ('alice', 'Alice', 'Zed', 'alice@x.com', 30, 'a', 'pw-a'),
                ('bob', 'Bob', 'Young', NULL, 25, 'b', NULL),
                ('carol', 'Carol', 'Xu', 'carol@y.org', 41, 'a', 'pw-c');
            "#,
        )
        .unwrap();
        let mut props = json!({
            "jdbcUrlTemplate": "jdbc:sqlite:%d",
            "database": path.to_str().unwrap(),
            "table": TABLE,
            "keyColumn": "uid",
            "passwordColumn": "password",
        });
        if change_log {
            props["changeLogColumn"] = json!("changed");
        }
        let c = TableConnector::new(&provisioner_with(props)).unwrap();
        (dir, path, c)
    }

    async fn uids(c: &TableConnector, filter: &str) -> Vec<String> {
        let f = parse_filter(filter).unwrap();
        let page = c
            .query(&account(), Some(&f), &QueryOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        page.objects.into_iter().map(|o| o.uid).collect()
    }

    #[test]
    fn config_validation_reports_every_problem() {
        let problems = TableConnector::new(&provisioner_with(json!({
            "jdbcUrlTemplate": "jdbc:sqlite:%d",
            "passwordColumn": 3,
        })))
        .err()
        .unwrap();
        let all = problems.join("\n");
        for want in [
            "/configurationProperties/table: missing",
            "/configurationProperties/keyColumn: missing",
            "/configurationProperties/passwordColumn: must be a string",
            "/configurationProperties/database: missing; jdbcUrlTemplate uses %d",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let base = json!({"table": "t", "keyColumn": "id"});
        let with_url = |url: &str| {
            let mut p = base.clone();
            p["jdbcUrlTemplate"] = json!(url);
            TableConnector::new(&provisioner_with(p)).err()
        };
        let p = with_url("jdbc:postgresql://%h:%p/%d").unwrap().join("\n");
        assert!(p.contains("/configurationProperties/port: missing"), "{p}");
        assert!(p.contains("/configurationProperties/host: missing"), "{p}");
        let p = with_url("jdbc:mysql://localhost/x").unwrap().join("\n");
        assert!(
            p.contains("'jdbc:mysql:' databases are not supported"),
            "{p}"
        );
        let p = with_url("jdbc:sqlite::memory:").unwrap().join("\n");
        assert!(p.contains("names no database file"), "{p}");
        let mut p = base.clone();
        p["passwordColumn"] = json!("id");
        p["jdbcUrlTemplate"] = json!("jdbc:sqlite:/x.db");
        let problems = TableConnector::new(&provisioner_with(p)).err().unwrap();
        assert!(problems[0].contains("also the keyColumn"), "{problems:?}");
        // A valid configuration opens nothing (the file does not exist).
        assert!(with_url("jdbc:sqlite:/nonexistent/dir/x.db").is_none());
    }

    #[tokio::test]
    async fn crud_and_errors() {
        let (_dir, _path, c) = setup(false);
        let a = account();
        c.test().await.unwrap();
        let o = c.read(&a, "alice", &[]).await.unwrap().unwrap();
        assert_eq!(o.uid, "alice");
        assert_eq!(o.attributes["__NAME__"], "alice");
        assert_eq!(o.attributes["age"], 30);
        assert_eq!(o.attributes["group"], "a");
        assert!(!o.attributes.contains_key("password"));
        assert!(!o.attributes.contains_key("uid"));
        let o = c
            .read(
                &a,
                "bob",
                &[
                    "email".into(),
                    "age".into(),
                    "password".into(),
                    "__PASSWORD__".into(),
                ],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.attributes, attrs(json!({"age": 25})));
        assert!(c.read(&a, "nobody", &[]).await.unwrap().is_none());

        let uid = c
            .create(
                &a,
                Some("dave"),
                attrs(
                    json!({"firstname": "Dave", "age": [52], "__PASSWORD__": "pw-d",
                             "email": null, "group": true}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(uid, "dave");
        let o = c.read(&a, "dave", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["age"], 52);
        assert_eq!(o.attributes["group"], "1");
        assert!(!o.attributes.contains_key("email"));
        let uid = c
            .create(&a, None, attrs(json!({"__NAME__": "erin"})))
            .await
            .unwrap();
        assert_eq!(uid, "erin");
        let uid = c.create(&a, None, Map::new()).await.unwrap();
        assert!(uuid::Uuid::parse_str(&uid).is_ok(), "{uid}");

        let e = c.create(&a, Some("alice"), Map::new()).await.unwrap_err();
        assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");
        let e = c
            .create(&a, Some("x"), attrs(json!({"nosuch": 1})))
            .await
            .unwrap_err();
        match e {
            ConnectorError::InvalidAttribute(m) => assert!(m.contains("'nosuch'"), "{m}"),
            e => panic!("{e:?}"),
        }
        let e = c
            .create(&a, Some("x"), attrs(json!({"__NAME__": "y"})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        let e = c
            .create(&a, Some("x"), attrs(json!({"email": ["a", "b"]})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        let e = c
            .update(&a, "nobody", attrs(json!({"age": 1})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
        let e = c.update(&a, "nobody", Map::new()).await.unwrap_err();
        assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
        assert!(matches!(
            c.delete(&a, "nobody").await.unwrap_err(),
            ConnectorError::NotFound(_)
        ));
        let group = ObjectType::new("group", "__GROUP__", vec![]);
        assert!(matches!(
            c.read(&group, "alice", &[]).await.unwrap_err(),
            ConnectorError::NotSupported(_)
        ));
        assert!(matches!(
            c.latest_sync_token(&a).await.unwrap_err(),
            ConnectorError::NotSupported(m) if m.contains("changeLogColumn")
        ));

        // Update only the given columns; null clears; a new key renames.
        let uid = c
            .update(&a, "bob", attrs(json!({"email": "bob@x.com", "age": null})))
            .await
            .unwrap();
        assert_eq!(uid, "bob");
        let o = c.read(&a, "bob", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["email"], "bob@x.com");
        assert_eq!(o.attributes["firstname"], "Bob");
        assert!(!o.attributes.contains_key("age"));
        let uid = c
            .update(&a, "bob", attrs(json!({"__NAME__": "robert"})))
            .await
            .unwrap();
        assert_eq!(uid, "robert");
        assert!(c.read(&a, "bob", &[]).await.unwrap().is_none());
        assert!(c.read(&a, "robert", &[]).await.unwrap().is_some());
        let e = c
            .update(&a, "robert", attrs(json!({"uid": "alice"})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");
        let e = c
            .update(&a, "robert", attrs(json!({"__NAME__": null})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        assert_eq!(c.update(&a, "robert", Map::new()).await.unwrap(), "robert");

        c.delete(&a, "robert").await.unwrap();
        assert!(c.read(&a, "robert", &[]).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn every_filter_operator_in_sql() {
        let (_dir, _path, c) = setup(false);
        let cases: &[(&str, &[&str])] = &[
            ("true", &["alice", "bob", "carol"]),
            ("false", &[]),
            ("__UID__ eq 'bob'", &["bob"]),
            ("__NAME__ eq 'carol'", &["carol"]),
            ("uid eq 'alice'", &["alice"]),
            ("email co '@x'", &["alice"]),
            ("email co ''", &["alice", "carol"]),
            ("firstname sw 'Ca'", &["carol"]),
            ("email sw 'a'", &["alice"]),
            ("age sw 4", &[]),
            ("lastname gt 'Xu'", &["alice", "bob"]),
            ("lastname ge 'Xu'", &["alice", "bob", "carol"]),
            ("lastname lt 'Young'", &["carol"]),
            ("lastname le 'Young'", &["bob", "carol"]),
            ("age gt 29", &["alice", "carol"]),
            ("age ge 30.0", &["alice", "carol"]),
            ("age lt 30", &["bob"]),
            ("age le 25", &["bob"]),
            ("age eq 41", &["carol"]),
            ("email pr", &["alice", "carol"]),
            ("!(email pr)", &["bob"]),
            ("!(email eq 'alice@x.com')", &["bob", "carol"]),
            ("group eq 'a' and age gt 35", &["carol"]),
            ("group eq 'b' or age gt 35", &["bob", "carol"]),
            (r#"uid in '["bob","carol","nobody"]'"#, &["bob", "carol"]),
            ("uid in '[]'", &[]),
            ("firstname eq \"it's\" or lastname eq 'x\" OR 1=1 --'", &[]),
        ];
        for (filter, want) in cases {
            assert_eq!(uids(&c, filter).await, *want, "{filter}");
        }
        let a = account();
        for bad in ["nosuch eq 'x'", "password eq 'pw-a'", "name/first eq 'x'"] {
            let f = parse_filter(bad).unwrap();
            let e = c
                .query(&a, Some(&f), &QueryOptions::default())
                .await
                .unwrap_err();
            assert!(
                matches!(e, ConnectorError::InvalidAttribute(_)),
                "{bad}: {e:?}"
            );
        }
    }

    #[tokio::test]
    async fn paging_sorting_and_counting() {
        let (_dir, path, c) = setup(false);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute(&format!("DELETE FROM {}", quote(TABLE)), [])
                .unwrap();
            for i in 0..23 {
                conn.execute(
                    &format!(
                        "INSERT INTO {} (uid, age, lastname) VALUES (?1, ?2, ?3)",
                        quote(TABLE)
                    ),
                    rusqlite::params![
                        format!("u{i:02}"),
                        i % 4,
                        if i % 5 == 0 {
                            None
                        } else {
                            Some(format!("n{}", i % 3))
                        }
                    ],
                )
                .unwrap();
            }
        }
        let a = account();
        // Unsorted, sorted by one column, and by two with NULLs, each paged across calls.
        let sorts: Vec<Vec<(String, bool)>> = vec![
            vec![],
            vec![("age".into(), false)],
            vec![("lastname".into(), true), ("age".into(), false)],
            vec![("lastname".into(), false), ("__NAME__".into(), false)],
        ];
        let f = parse_filter("uid sw 'u'").unwrap();
        for sort in sorts {
            let all = c
                .query(
                    &a,
                    Some(&f),
                    &QueryOptions {
                        sort: sort.clone(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let want: Vec<String> = all.objects.iter().map(|o| o.uid.clone()).collect();
            assert_eq!(want.len(), 23);
            let mut seen = Vec::new();
            let mut cookie = None;
            loop {
                let page = c
                    .query(
                        &a,
                        Some(&f),
                        &QueryOptions {
                            page_size: 5,
                            cookie: cookie.clone(),
                            sort: sort.clone(),
                            count: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                assert_eq!(page.total, Some(23));
                assert!(page.objects.len() <= 5);
                seen.extend(page.objects.into_iter().map(|o| o.uid));
                match page.cookie {
                    Some(next) => cookie = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, want, "sort {sort:?}");
            let unique: HashSet<_> = seen.iter().collect();
            assert_eq!(unique.len(), 23);
        }
        // The order itself: age descending, key ascending within.
        let page = c
            .query(
                &a,
                None,
                &QueryOptions {
                    sort: vec![("age".into(), false)],
                    page_size: 3,
                    offset: 4,
                    count: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let got: Vec<_> = page.objects.iter().map(|o| o.uid.as_str()).collect();
        // age 3: u03 u07 u11 u15 u19 → offset 4 → u19, then age 2: u02 u06.
        assert_eq!(got, ["u19", "u02", "u06"]);
        assert_eq!(page.remaining, Some(23 - 7));
        for bad in ["password", "nosuch"] {
            let e = c
                .query(
                    &a,
                    None,
                    &QueryOptions {
                        sort: vec![(bad.into(), true)],
                        ..Default::default()
                    },
                )
                .await
                .unwrap_err();
            assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        }
        let e = c
            .query(
                &a,
                None,
                &QueryOptions {
                    page_size: 2,
                    cookie: Some("bm90IGEgY29va2ll".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    }

    #[tokio::test]
    async fn authenticate_plain_password() {
        let (_dir, _path, c) = setup(false);
        let a = account();
        assert_eq!(c.authenticate(&a, "alice", "pw-a").await.unwrap(), "alice");
        for (user, pw) in [
            ("alice", "wrong"),
            ("nobody", "x"),
            ("bob", ""),
            ("bob", "x"),
        ] {
            let e = c.authenticate(&a, user, pw).await.unwrap_err();
            assert!(
                matches!(e, ConnectorError::InvalidCredential(_)),
                "{user}: {e:?}"
            );
        }
    }

    #[tokio::test]
    async fn integer_key_numbers_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
            .unwrap();
        let c = TableConnector::new(&provisioner_with(json!({
            "jdbcUrlTemplate": format!("jdbc:sqlite:{}", path.display()),
            "table": "items",
            "keyColumn": "id",
        })))
        .unwrap();
        let a = account();
        let id = c
            .create(&a, None, attrs(json!({"name": "one"})))
            .await
            .unwrap();
        assert_eq!(id, "1");
        let id = c
            .create(&a, Some("7"), attrs(json!({"name": "seven"})))
            .await
            .unwrap();
        assert_eq!(id, "7");
        let o = c.read(&a, "7", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["__NAME__"], 7);
        // NOT NULL is the table's rule.
        let e = c.create(&a, None, Map::new()).await.unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        let e = c.authenticate(&a, "7", "x").await.unwrap_err();
        assert!(matches!(e, ConnectorError::NotSupported(_)), "{e:?}");
        let s = c.schema().await.unwrap();
        assert_eq!(s["account"]["properties"]["id"]["nativeName"], NAME);
        assert_eq!(s["account"]["properties"]["id"]["type"], "integer");
        assert_eq!(s["account"]["properties"]["name"]["type"], "string");
    }

    #[tokio::test]
    async fn schema_and_config_errors_at_run_time() {
        let (_dir, path, c) = setup(true);
        let s = c.schema().await.unwrap();
        let props = s["account"]["properties"].as_object().unwrap();
        assert_eq!(props["uid"]["nativeName"], NAME);
        assert_eq!(props["password"]["nativeName"], PASSWORD);
        assert_eq!(props["age"]["type"], "integer");
        assert_eq!(props["email"]["type"], "string");
        provisioner::parse(
            "db",
            &json!({"connectorRef": {"connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"},
                    "objectTypes": s}),
        )
        .unwrap();

        let with = |table: &str, key: &str, db: &std::path::Path| {
            TableConnector::new(&provisioner_with(json!({
                "jdbcUrlTemplate": format!("jdbc:sqlite:{}", db.display()),
                "table": table,
                "keyColumn": key,
            })))
            .unwrap()
        };
        let e = with("nosuch", "uid", &path).test().await.unwrap_err();
        assert!(
            matches!(e, ConnectorError::Config(ref m) if m.contains("does not exist")),
            "{e:?}"
        );
        let e = with(TABLE, "id", &path).test().await.unwrap_err();
        assert!(
            matches!(e, ConnectorError::Config(ref m) if m.contains("keyColumn 'id'")),
            "{e:?}"
        );
        let e = with(TABLE, "uid", &path.with_file_name("missing.db"))
            .test()
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::Unavailable(_)), "{e:?}");
        let junk = path.with_file_name("junk.db");
        std::fs::write(&junk, "this is not a database, it is text, long enough to have a header page....................................").unwrap();
        let e = with(TABLE, "uid", &junk).test().await.unwrap_err();
        assert!(
            matches!(e, ConnectorError::Config(ref m) if m.contains("not a database")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn live_sync_by_change_column() {
        let (_dir, _path, c) = setup(true);
        let a = account();
        let t0 = c.latest_sync_token(&a).await.unwrap();
        assert_eq!(t0, json!(3));
        let b = c.sync(&a, &t0, 10).await.unwrap();
        assert!(b.deltas.is_empty());
        assert_eq!(b.token, t0);

        c.create(&a, Some("dave"), attrs(json!({"age": 1})))
            .await
            .unwrap();
        c.update(&a, "alice", attrs(json!({"email": "new@x"})))
            .await
            .unwrap();
        c.create(&a, Some("erin"), Map::new()).await.unwrap();
        let b = c.sync(&a, &t0, 10).await.unwrap();
        let got: Vec<_> = b
            .deltas
            .iter()
            .map(|d| match d {
                SyncDelta::CreateOrUpdate(o) => o.uid.clone(),
                SyncDelta::Delete(u) => format!("-{u}"),
            })
            .collect();
        assert_eq!(got, ["dave", "alice", "erin"]);
        match &b.deltas[1] {
            SyncDelta::CreateOrUpdate(o) => {
                assert_eq!(o.attributes["email"], "new@x");
                assert!(!o.attributes.contains_key("password"));
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(b.token, json!(6));
        assert!(c.sync(&a, &b.token, 10).await.unwrap().deltas.is_empty());

        // Batches of at most `max`, oldest first, nothing twice.
        let mut token = t0.clone();
        let mut all = Vec::new();
        loop {
            let b = c.sync(&a, &token, 2).await.unwrap();
            assert!(b.deltas.len() <= 2);
            token = b.token;
            if b.deltas.is_empty() {
                break;
            }
            all.extend(b.deltas);
        }
        assert_eq!(all.len(), 3);
        assert_eq!(token, json!(6));
        // A null token starts from now; a bad one is refused.
        let b = c.sync(&a, &Value::Null, 10).await.unwrap();
        assert!(b.deltas.is_empty());
        assert_eq!(b.token, json!(6));
        let e = c.sync(&a, &json!([1]), 10).await.unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
    }

    #[tokio::test]
    async fn live_sync_splits_runs_of_equal_values_and_starts_on_empty_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, ts TEXT);")
            .unwrap();
        let c = TableConnector::new(&provisioner_with(json!({
            "jdbcUrlTemplate": format!("jdbc:sqlite:{}", path.display()),
            "table": "t",
            "keyColumn": "k",
            "changeLogColumn": "ts",
        })))
        .unwrap();
        let a = account();
        let t0 = c.latest_sync_token(&a).await.unwrap();
        assert_eq!(t0, json!({"changeLog": null}));
        // Timestamps, five rows sharing one.
        for (k, ts) in [
            ("a", "2024-01-01T00:00:00Z"),
            ("b", "2024-01-02T00:00:00Z"),
            ("c", "2024-01-02T00:00:00Z"),
            ("d", "2024-01-02T00:00:00Z"),
            ("e", "2024-01-02T00:00:00Z"),
            ("f", "2024-01-02T00:00:00Z"),
            ("g", "2024-01-03T00:00:00Z"),
        ] {
            conn.execute("INSERT INTO t VALUES (?1, ?2)", [k, ts])
                .unwrap();
        }
        conn.execute("INSERT INTO t VALUES ('nul', NULL)", [])
            .unwrap();
        let mut token = t0;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let b = c.sync(&a, &token, 2).await.unwrap();
            token = b.token;
            if b.deltas.is_empty() {
                break;
            }
            for d in b.deltas {
                match d {
                    SyncDelta::CreateOrUpdate(o) => seen.push(o.uid),
                    d => panic!("{d:?}"),
                }
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e", "f", "g"]);
        assert_eq!(token, json!("2024-01-03T00:00:00Z"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_through_the_pool() {
        let (_dir, _path, c) = setup(true);
        let c = Arc::new(c);
        let mut tasks = Vec::new();
        for t in 0..6 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    c.create(&account(), Some(&format!("t{t}-{i}")), Map::new())
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let page = c
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
        assert_eq!(page.total, Some(123));
    }
}
