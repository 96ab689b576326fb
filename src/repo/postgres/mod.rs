//! [`PgRepo`]: the store on PostgreSQL (`--store postgres://user:pass@host:port/db`), the
//! same [`Repo`] contract as the embedded store, shared by every gateway node using the
//! same database.
//!
//! * **Layout**: one table per resource (`obj_<hash of the resource>`, registered in
//!   `repo_tables`), `id text COLLATE "C"` primary key, `rev text`, `body jsonb`; four
//!   expression indexes per searchable property: the jsonb value (partial: the rows where
//!   it is a number or a boolean), its text in the "C" collation (strings), and two partial
//!   ones on the rows where it is an array (GIN for `@>`, and the rows themselves for
//!   comparisons of elements).
//! * **Revisions**: one database sequence (`repo_rev`), so revisions never repeat for an id,
//!   across delete and re-create, restarts and nodes.
//! * **Conditional writes** are single statements (`UPDATE … WHERE id = $1 AND rev = $2`),
//!   atomic across nodes; a write with other writes (`WriteOptions::also`) is one
//!   transaction; a batch is one transaction with a savepoint per op.
//! * **Unique properties** are unique partial expression indexes (created on first use),
//!   so they hold across nodes; where existing data already breaks the policy the index
//!   cannot be built and the value is checked in the write's transaction under an advisory
//!   lock of the property instead (also across nodes).
//! * **Queries**: filter, sort, offset and keyset paging and counts are SQL ([`sql`]),
//!   page and count in one repeatable-read snapshot; the query time limit is
//!   `statement_timeout`.
//! * **Migrations** are versioned (`repo_schema`) and run under `pg_advisory_lock`, so nodes
//!   starting together migrate once; a schema newer than this build is refused.
//! * **Connections**: a deadpool pool of [`POOL_SIZE`]; plain TCP or a Unix socket, or TLS
//!   with `sslmode=require` ([`tls`]: the server verified with the gateway's trust); the
//!   password from the URL or `IDM_GATEWAY_STORE_PASSWORD`.

mod group;
mod sql;
pub mod tls;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use self::sql::{Cookie, Sql};
use super::sql_common::{millis, prepare_content, unique_values};
use super::{
    ObjectStream, Repo, RepoError, RepoPage, RepoQuery, StoredObject, WriteOp, WriteOptions,
    DEFAULT_QUERY_TIME_LIMIT,
};
use crate::crest::filter::{JsonPointer, QueryFilter};
use crate::crest::query::CountPolicy;

/// Connections kept in the pool (and statements run at once by one node).
pub const POOL_SIZE: usize = 16;

/// Longest wait for a pooled connection: a store operation never hangs on a pool held
/// by stuck work; it fails with a message saying so.
const POOL_WAIT: Duration = Duration::from_secs(20);

/// Environment variable with the store's password, when the URL has none.
pub const PASSWORD_ENV: &str = "IDM_GATEWAY_STORE_PASSWORD";

/// Objects a streamed query fetches at a time: the bound on its memory.
const STREAM_AHEAD: usize = 256;

/// Schema version this build writes; migrations `1..=SCHEMA_VERSION` of [`MIGRATIONS`].
const SCHEMA_VERSION: i32 = 1;

/// One entry per version: the SQL taking the schema from the version before to it.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = ["CREATE SEQUENCE IF NOT EXISTS repo_rev;
     CREATE TABLE IF NOT EXISTS repo_tables (
         resource text COLLATE \"C\" PRIMARY KEY,
         tbl text NOT NULL UNIQUE
     );"];

/// Advisory lock key of the migrations (shared by every node of the database).
const MIGRATION_LOCK: &str = "idm-gateway repo migrations";

/// The store on PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PgRepo {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// `postgres://user@host:port/db`: for messages, never with the password.
    location: String,
    /// Resources whose table is known to exist.
    tables: RwLock<HashSet<String>>,
    /// How each unique property (`<table>\0<pointer>`) is enforced.
    unique: RwLock<HashMap<String, UniqueMode>>,
    /// Unique index name → the property it enforces (for the errors).
    unique_names: RwLock<HashMap<String, String>>,
    query_limit_ms: AtomicU64,
    /// Single writes committed together ([`group`]).
    group: group::GroupCommit,
    /// The indexes each table was last given by this process: declaring the same ones
    /// again (every reconciliation start declares its links') costs nothing, instead of a
    /// transaction under the table's advisory lock.
    indexed: RwLock<HashMap<String, Vec<(String, String)>>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum UniqueMode {
    /// A unique index enforces it.
    Index,
    /// Existing data breaks it: checked in the write's transaction, under an advisory lock.
    Checked,
}

impl std::fmt::Debug for PgRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRepo")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

/// The table of a resource: the same on every node, without a lookup.
fn table_name(resource: &str) -> String {
    format!("obj_{}", &hex(&Sha256::digest(resource.as_bytes()))[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An advisory lock key for `parts`.
fn lock_key(parts: &[&str]) -> i64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Takes the transaction-scoped advisory lock of `parts` in the transaction `c` is in
/// (`what` names the lock in errors).
async fn advisory_lock<C: GenericClient + Sync>(
    c: &C,
    parts: &[&str],
    what: &'static str,
) -> Result<(), RepoError> {
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(parts)])
        .await
        .map_err(internal(what))?;
    Ok(())
}

/// Name of an index of `tbl` on expression `expr` (`kind`: `ix`, `uq`).
fn index_name(kind: &str, tbl: &str, expr: &str, suffix: &str) -> String {
    let mut h = Sha256::new();
    h.update(tbl.as_bytes());
    h.update([0]);
    h.update(expr.as_bytes());
    format!("{kind}_{}{suffix}", &hex(&h.finalize())[..20])
}

fn internal(context: &'static str) -> impl Fn(tokio_postgres::Error) -> RepoError {
    move |e| RepoError::Internal(format!("{context}: {}", describe(&e)))
}

/// An error's text: the server's message where there is one (never the password: the
/// driver does not echo its configuration).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // The cause is in the sources (a refused certificate, a refused connection).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

fn pool_error(location: &str) -> impl Fn(deadpool_postgres::PoolError) -> RepoError + '_ {
    move |e| {
        let why = match &e {
            deadpool_postgres::PoolError::Backend(pg) => describe(pg),
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                return RepoError::Internal(format!(
                    "the store at {location} is busy: no connection of the pool came free \
                     within {} s",
                    POOL_WAIT.as_secs()
                ))
            }
            other => other.to_string(),
        };
        RepoError::Internal(format!("the store at {location} is unreachable: {why}"))
    }
}

/// What a write does, ready for SQL.
#[derive(Debug, Clone)]
enum PgOp {
    Create {
        id: String,
        body: String,
        unique: Vec<(JsonPointer, Value)>,
    },
    Update {
        id: String,
        rev: Option<String>,
        body: String,
        unique: Vec<(JsonPointer, Value)>,
    },
    Delete {
        id: String,
        rev: Option<String>,
    },
    Put {
        id: String,
        body: String,
    },
}

/// The SQL form of a [`WriteOp`]: resource, op, and a create's or put's content.
#[allow(clippy::type_complexity)]
fn pg_op(op: WriteOp) -> Result<(String, PgOp, Option<Map<String, Value>>), RepoError> {
    Ok(match op {
        WriteOp::Create {
            resource,
            id,
            content,
            unique,
        } => {
            let (content, body) = prepare_content(content)?;
            let unique = unique_values(&content, &unique);
            (resource, PgOp::Create { id, body, unique }, Some(content))
        }
        WriteOp::Put {
            resource,
            id,
            content,
        } => {
            let (content, body) = prepare_content(content)?;
            (resource, PgOp::Put { id, body }, Some(content))
        }
        WriteOp::Delete { resource, id, rev } => (resource, PgOp::Delete { id, rev }, None),
    })
}

/// A write the store ran but whose result went missing: never expected.
fn lost_result() -> RepoError {
    RepoError::Internal("a write of a committed transaction got no result".into())
}

fn parse_body(body: &str) -> Result<Map<String, Value>, RepoError> {
    match serde_json::from_str(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(RepoError::Internal(
            "a stored object is not an object".into(),
        )),
        Err(e) => Err(RepoError::Internal(format!(
            "a stored object is corrupt: {e}"
        ))),
    }
}

/// A query's SQL.
struct Plan {
    select: Sql,
    count: Option<Sql>,
    page_size: usize,
    fingerprint: String,
    n_components: usize,
}

fn plan(
    tbl: &str,
    resource: &str,
    query: &RepoQuery<'_>,
    edges: Option<String>,
) -> Result<Plan, RepoError> {
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(resource.as_bytes());
        h.update([0]);
        h.update(format!("{:?}", query.filter).as_bytes());
        for key in query.sort {
            h.update([0]);
            h.update(key.to_string().as_bytes());
        }
        hex(&h.finalize()[..8])
    };
    let components = sql::sort_components(query.sort);
    let n_components = components.len();
    let cookie = query
        .cookie
        .map(|c| Cookie::decode(c, &fingerprint, n_components))
        .transpose()?;
    if let Some(c) = &cookie {
        sql::check_cookie_values(query.sort, c)?;
    }
    let mut select = Sql {
        edges,
        ..Sql::default()
    };
    let filter = sql::filter_sql(query.filter, &mut select)?;
    let count = (query.count == CountPolicy::Exact).then(|| Sql {
        text: format!("SELECT count(*) FROM \"{tbl}\" WHERE {filter}"),
        params: select.params.clone(),
        edges: None,
    });
    let mut where_ = filter;
    if let Some(cookie) = &cookie {
        where_ = format!(
            "{where_} AND {}",
            sql::after_cookie(query.sort, cookie, &mut select)
        );
    }
    let keys: String = components
        .iter()
        .map(|(c, _)| format!(", ({})::text", c.expr))
        .collect();
    let mut text = format!(
        "SELECT id, rev, {body}{keys} FROM \"{tbl}\" WHERE {where_} ORDER BY {}",
        sql::order_by(query.sort),
        body = if query.ids_only {
            "NULL::text"
        } else {
            "body::text"
        }
    );
    if query.page_size > 0 {
        text.push_str(&format!(
            " LIMIT {}",
            i64::try_from(query.page_size)
                .unwrap_or(i64::MAX - 1)
                .saturating_add(1)
        ));
    }
    let offset = if cookie.is_some() { 0 } else { query.offset };
    if offset > 0 {
        text.push_str(&format!(
            " OFFSET {}",
            i64::try_from(offset).unwrap_or(i64::MAX)
        ));
    }
    select.text = text;
    Ok(Plan {
        select,
        count,
        page_size: query.page_size,
        fingerprint,
        n_components,
    })
}

fn params(values: &[String]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// A stored row: id, rev, body (absent for ids-only queries).
fn row_object(row: &tokio_postgres::Row) -> Result<StoredObject, RepoError> {
    let id: String = row.try_get(0).map_err(internal("reading a row"))?;
    let rev: String = row.try_get(1).map_err(internal("reading a row"))?;
    let body: Option<String> = row.try_get(2).map_err(internal("reading a row"))?;
    let content = match body {
        Some(b) => parse_body(&b)?,
        None => Map::new(),
    };
    Ok(StoredObject { id, rev, content })
}

impl PgRepo {
    /// Connects to the database of `url` (`postgres://user[:password]@host[:port]/db`,
    /// libpq key/value form too), the password from [`PASSWORD_ENV`] when the URL has
    /// none, and migrates its schema. With `sslmode=require` the connections are TLS,
    /// the server verified with `tls` (the gateway's trust). Fails with a message naming the
    /// server (never the password) when it is unreachable or refuses us.
    pub async fn connect_with(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<PgRepo, RepoError> {
        let mut cfg = tokio_postgres::Config::from_str(url).map_err(|e| {
            RepoError::Internal(format!(
                "the store URL is not a valid PostgreSQL URL (postgres://user:password@host:port/database): {e}"
            ))
        })?;
        if cfg.get_password().is_none() {
            if let Ok(pw) = std::env::var(PASSWORD_ENV) {
                cfg.password(pw);
            }
        }
        Self::with_config_tls(cfg, tls).await
    }

    /// [`PgRepo::connect_with`] without TLS.
    pub async fn connect(url: &str) -> Result<PgRepo, RepoError> {
        Self::connect_with(url, None).await
    }

    /// [`PgRepo::with_config_tls`] without TLS.
    pub async fn with_config(cfg: tokio_postgres::Config) -> Result<PgRepo, RepoError> {
        Self::with_config_tls(cfg, None).await
    }

    /// Like [`PgRepo::connect_with`], from a parsed configuration.
    pub async fn with_config_tls(
        mut cfg: tokio_postgres::Config,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<PgRepo, RepoError> {
        // sslmode=require: TLS, the server verified with `tls`; otherwise plain (`prefer`
        // does not upgrade: an unverified TLS session would only look safe).
        let tls = match (cfg.get_ssl_mode(), tls) {
            (SslMode::Require, Some(tls)) => Some(tls),
            (SslMode::Require, None) => {
                return Err(RepoError::Internal(
                    "sslmode=require needs the gateway's TLS trust, which this store was opened without".into(),
                ))
            }
            _ => None,
        };
        let Some(user) = cfg.get_user().map(str::to_string) else {
            return Err(RepoError::Internal(
                "the store URL names no user (postgres://user:password@host:port/database)".into(),
            ));
        };
        let Some(db) = cfg.get_dbname().map(str::to_string) else {
            return Err(RepoError::Internal(
                "the store URL names no database (postgres://user:password@host:port/database)"
                    .into(),
            ));
        };
        // Paths are SQL literals with backslash escapes inside: they must mean what they say
        // whatever the server's default.
        let options = format!(
            "{} -c standard_conforming_strings=on",
            cfg.get_options().unwrap_or_default()
        );
        cfg.options(options.trim_start());
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let location = format!("postgres://{user}@{host}:{port}/{db}");
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match tls {
            Some(tls) => Manager::from_config(cfg, tls::RustlsConnect(tls), manager_config),
            None => Manager::from_config(cfg, NoTls, manager_config),
        };
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| RepoError::Internal(format!("building the store's pool: {e}")))?;
        let repo = PgRepo {
            inner: Arc::new(Inner {
                pool,
                location,
                tables: RwLock::new(HashSet::new()),
                unique: RwLock::new(HashMap::new()),
                unique_names: RwLock::new(HashMap::new()),
                query_limit_ms: AtomicU64::new(millis(DEFAULT_QUERY_TIME_LIMIT)),
                group: group::GroupCommit::default(),
                indexed: RwLock::new(HashMap::new()),
            }),
        };
        repo.migrate().await?;
        Ok(repo)
    }

    /// `postgres://user@host:port/db` (no password).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Sets how long a query may run (streamed ones: until their last object is taken)
    /// before it is cancelled with [`RepoError::TimeLimit`].
    pub fn set_query_time_limit(&self, limit: Duration) {
        self.inner
            .query_limit_ms
            .store(millis(limit).max(1), Ordering::Relaxed);
    }

    fn query_time_limit(&self) -> Duration {
        Duration::from_millis(self.inner.query_limit_ms.load(Ordering::Relaxed))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, RepoError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(pool_error(&self.inner.location))
    }

    /// Brings the schema to [`SCHEMA_VERSION`], one node at a time.
    async fn migrate(&self) -> Result<(), RepoError> {
        let mut client = self.client().await?;
        let key = lock_key(&[MIGRATION_LOCK]);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(internal("locking the store's schema"))?;
        let result = migrate_locked(&mut client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await
            .map_err(internal("unlocking the store's schema"));
        result.and(unlocked.map(|_| ()))
    }

    /// The table of `resource` if it exists.
    async fn existing_table(&self, resource: &str) -> Result<Option<String>, RepoError> {
        if self.known(resource) {
            return Ok(Some(table_name(resource)));
        }
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT tbl FROM repo_tables WHERE resource = $1",
                &[&resource],
            )
            .await
            .map_err(internal("looking up a table"))?;
        match row {
            Some(row) => {
                let tbl: String = row.get(0);
                if tbl != table_name(resource) {
                    return Err(RepoError::Internal(format!(
                        "the store's table of {resource} is {tbl}, not {}",
                        table_name(resource)
                    )));
                }
                self.mark_known(resource);
                Ok(Some(tbl))
            }
            None => Ok(None),
        }
    }

    fn known(&self, resource: &str) -> bool {
        self.inner
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(resource)
    }

    fn mark_known(&self, resource: &str) {
        self.inner
            .tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(resource.to_string());
    }

    /// The table of `resource`, created if missing (once across nodes: under an advisory
    /// lock of the resource).
    async fn ensure_table(&self, resource: &str) -> Result<String, RepoError> {
        if let Some(t) = self.existing_table(resource).await? {
            return Ok(t);
        }
        let tbl = table_name(resource);
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(internal("starting a transaction"))?;
        advisory_lock(&tx, &["table", resource], "locking a new table").await?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS \"{tbl}\" (
                 id text COLLATE \"C\" PRIMARY KEY,
                 rev text COLLATE \"C\" NOT NULL,
                 body jsonb NOT NULL
             )"
        ))
        .await
        .map_err(internal("creating a table"))?;
        tx.execute(
            "INSERT INTO repo_tables (resource, tbl) VALUES ($1, $2) ON CONFLICT (resource) DO NOTHING",
            &[&resource, &tbl],
        )
        .await
        .map_err(internal("registering a table"))?;
        tx.commit().await.map_err(internal("creating a table"))?;
        self.mark_known(resource);
        Ok(tbl)
    }

    /// Makes sure every unique property of `unique` is enforced on `tbl`: a unique index,
    /// built on first use (or, when existing data breaks the policy, checks in the write).
    async fn ensure_unique(
        &self,
        tbl: &str,
        unique: &[(JsonPointer, Value)],
    ) -> Result<(), RepoError> {
        for (ptr, _) in unique {
            let key = format!("{tbl}\0{ptr}");
            let known = self
                .inner
                .unique
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&key);
            if known {
                continue;
            }
            let v = sql::value_expr(ptr);
            let name = index_name("uq", tbl, &v, "");
            let mut client = self.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(internal("starting a transaction"))?;
            advisory_lock(&tx, &["indexes", tbl], "locking a table's indexes").await?;
            let created = tx
                .batch_execute(&format!(
                    "CREATE UNIQUE INDEX IF NOT EXISTS \"{name}\" ON \"{tbl}\" (({v})) WHERE jsonb_typeof({v}) <> 'null'"
                ))
                .await;
            let mode = match created {
                Ok(()) => {
                    tx.commit()
                        .await
                        .map_err(internal("creating a unique index"))?;
                    UniqueMode::Index
                }
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    tracing::warn!(
                        table = %tbl,
                        property = %ptr,
                        "stored objects already break a unique policy: checked per write, not by an index"
                    );
                    UniqueMode::Checked
                }
                Err(e) => return Err(internal("creating a unique index")(e)),
            };
            self.inner
                .unique_names
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name, ptr.to_string());
            self.inner
                .unique
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, mode);
        }
        Ok(())
    }

    fn unique_mode(&self, tbl: &str, ptr: &JsonPointer) -> UniqueMode {
        self.inner
            .unique
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{tbl}\0{ptr}"))
            .copied()
            .unwrap_or(UniqueMode::Checked)
    }

    /// What a failed write statement means for its caller.
    fn write_error(
        &self,
        resource: &str,
        context: &'static str,
        e: tokio_postgres::Error,
    ) -> RepoError {
        if let Some(db) = e.as_db_error() {
            if db.code() == &SqlState::UNIQUE_VIOLATION {
                if let Some(c) = db.constraint().filter(|c| c.starts_with("uq_")) {
                    let property = self
                        .inner
                        .unique_names
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(c)
                        .cloned()
                        .unwrap_or_else(|| c.to_string());
                    return RepoError::Unique {
                        resource: resource.to_string(),
                        property,
                    };
                }
            }
            // jsonb cannot hold U+0000 in a string (`\u0000`); the embedded store can.
            if db.code() == &SqlState::UNTRANSLATABLE_CHARACTER
                || db.code() == &SqlState::CHARACTER_NOT_IN_REPERTOIRE
            {
                return RepoError::Unstorable(
                    "a string holds the character U+0000, which the PostgreSQL store cannot keep"
                        .into(),
                );
            }
        }
        internal(context)(e)
    }

    /// Creates the tables and unique indexes `ops` need, before their transaction.
    async fn prepare(&self, resource: &str, op: &PgOp) -> Result<(), RepoError> {
        match op {
            PgOp::Create { unique, .. } => {
                let tbl = self.ensure_table(resource).await?;
                self.ensure_unique(&tbl, unique).await
            }
            PgOp::Put { .. } => self.ensure_table(resource).await.map(|_| ()),
            PgOp::Update { unique, .. } => match self.existing_table(resource).await? {
                Some(tbl) => self.ensure_unique(&tbl, unique).await,
                None => Ok(()),
            },
            PgOp::Delete { .. } => self.existing_table(resource).await.map(|_| ()),
        }
    }

    /// Runs `ops` concurrently on one transaction (pipelined, in order) and commits.
    /// `Ok(None)`: a write failed and nothing was committed.
    async fn pipelined_ops(
        &self,
        client: &mut deadpool_postgres::Object,
        ops: &[(&str, &PgOp)],
    ) -> Result<Option<Vec<(String, Option<String>)>>, RepoError> {
        let tx = client
            .transaction()
            .await
            .map_err(internal("starting a transaction"))?;
        let results = futures_util::future::join_all(
            ops.iter()
                .map(|(resource, op)| self.apply(&tx, resource, op)),
        )
        .await;
        if results.iter().any(Result::is_err) {
            tx.rollback()
                .await
                .map_err(internal("rolling a batch back"))?;
            return Ok(None);
        }
        tx.commit().await.map_err(internal("committing"))?;
        Ok(Some(results.into_iter().flatten().collect()))
    }

    /// Runs `ops` one after the other in one transaction, each in a savepoint of its own
    /// (a failing op is rolled back alone), and commits: one result per op, or the error
    /// that failed them all (nothing committed).
    async fn savepoints(
        &self,
        client: &mut deadpool_postgres::Object,
        ops: &[(&str, &PgOp)],
    ) -> Result<Vec<Result<(String, Option<String>), RepoError>>, RepoError> {
        let mut tx = client
            .transaction()
            .await
            .map_err(internal("starting a transaction"))?;
        let mut out = Vec::with_capacity(ops.len());
        for (resource, op) in ops {
            let sp = tx
                .savepoint("w")
                .await
                .map_err(internal("starting a savepoint"))?;
            let r = self.apply(&sp, resource, op).await;
            if r.is_ok() {
                sp.commit().await
            } else {
                sp.rollback().await
            }
            .map_err(internal("ending a savepoint"))?;
            out.push(r);
        }
        tx.commit().await.map_err(internal("committing"))?;
        Ok(out)
    }

    /// Whether `op` must run in a transaction of its own (several statements).
    fn needs_transaction(&self, resource: &str, op: &PgOp) -> bool {
        let tbl = table_name(resource);
        match op {
            PgOp::Create { unique, .. } | PgOp::Update { unique, .. } => unique
                .iter()
                .any(|(p, _)| self.unique_mode(&tbl, p) == UniqueMode::Checked),
            _ => false,
        }
    }

    /// Runs one op on `c` (a connection, a transaction or a savepoint): the new revision,
    /// and a delete's last body.
    async fn apply<C: GenericClient + Sync>(
        &self,
        c: &C,
        resource: &str,
        op: &PgOp,
    ) -> Result<(String, Option<String>), RepoError> {
        let not_found = |id: &str| RepoError::NotFound {
            resource: resource.to_string(),
            id: id.to_string(),
        };
        let tbl = table_name(resource);
        let exists = self.known(resource);
        match op {
            PgOp::Create { id, body, unique } => {
                self.check_unique(c, resource, &tbl, id, unique).await?;
                let stmt = c
                    .prepare_cached(&format!(
                        "INSERT INTO \"{tbl}\" (id, rev, body) VALUES ($1, nextval('repo_rev')::text, $2::text::jsonb) \
                         ON CONFLICT (id) DO NOTHING RETURNING rev"
                    ))
                    .await
                    .map_err(internal("preparing a create"))?;
                let row = c
                    .query_opt(&stmt, &[id, body])
                    .await
                    .map_err(|e| self.write_error(resource, "creating an object", e))?;
                match row {
                    Some(row) => Ok((row.get(0), None)),
                    None => Err(RepoError::AlreadyExists {
                        resource: resource.to_string(),
                        id: id.clone(),
                    }),
                }
            }
            PgOp::Update {
                id,
                rev,
                body,
                unique,
            } => {
                if !exists {
                    return Err(not_found(id));
                }
                self.check_unique(c, resource, &tbl, id, unique).await?;
                let stmt = c
                    .prepare_cached(&format!(
                        "UPDATE \"{tbl}\" SET rev = nextval('repo_rev')::text, body = $3::text::jsonb \
                         WHERE id = $1 AND ($2::text IS NULL OR rev = $2::text) RETURNING rev"
                    ))
                    .await
                    .map_err(internal("preparing an update"))?;
                let row = c
                    .query_opt(&stmt, &[id, rev, body])
                    .await
                    .map_err(|e| self.write_error(resource, "updating an object", e))?;
                match row {
                    Some(row) => Ok((row.get(0), None)),
                    None => Err(self.miss(c, resource, &tbl, id, rev).await),
                }
            }
            PgOp::Delete { id, rev } => {
                if !exists {
                    return Err(not_found(id));
                }
                let stmt = c
                    .prepare_cached(&format!(
                        "DELETE FROM \"{tbl}\" WHERE id = $1 AND ($2::text IS NULL OR rev = $2::text) \
                         RETURNING rev, body::text"
                    ))
                    .await
                    .map_err(internal("preparing a delete"))?;
                let row = c
                    .query_opt(&stmt, &[id, rev])
                    .await
                    .map_err(internal("deleting an object"))?;
                match row {
                    Some(row) => Ok((row.get(0), Some(row.get(1)))),
                    None => Err(self.miss(c, resource, &tbl, id, rev).await),
                }
            }
            PgOp::Put { id, body } => {
                let stmt = c
                    .prepare_cached(&format!(
                        "INSERT INTO \"{tbl}\" (id, rev, body) VALUES ($1, nextval('repo_rev')::text, $2::text::jsonb) \
                         ON CONFLICT (id) DO UPDATE SET rev = excluded.rev, body = excluded.body RETURNING rev"
                    ))
                    .await
                    .map_err(internal("preparing a write"))?;
                let row = c
                    .query_one(&stmt, &[id, body])
                    .await
                    .map_err(|e| self.write_error(resource, "writing an object", e))?;
                Ok((row.get(0), None))
            }
        }
    }

    /// Why a conditional update or delete touched no row.
    async fn miss<C: GenericClient + Sync>(
        &self,
        c: &C,
        resource: &str,
        tbl: &str,
        id: &str,
        rev: &Option<String>,
    ) -> RepoError {
        let current = c
            .query_opt(&format!("SELECT rev FROM \"{tbl}\" WHERE id = $1"), &[&id])
            .await;
        match (current, rev) {
            (Ok(Some(_)), Some(expected)) => RepoError::RevisionMismatch {
                resource: resource.to_string(),
                id: id.to_string(),
                expected: expected.clone(),
            },
            (Ok(_), _) => RepoError::NotFound {
                resource: resource.to_string(),
                id: id.to_string(),
            },
            (Err(e), _) => internal("reading an object")(e),
        }
    }

    /// Unique properties not enforced by an index: checked under an advisory lock of the
    /// property, held to the end of the transaction `c` is in.
    async fn check_unique<C: GenericClient + Sync>(
        &self,
        c: &C,
        resource: &str,
        tbl: &str,
        id: &str,
        unique: &[(JsonPointer, Value)],
    ) -> Result<(), RepoError> {
        for (ptr, value) in unique {
            if self.unique_mode(tbl, ptr) == UniqueMode::Index {
                continue;
            }
            advisory_lock(
                c,
                &["unique", tbl, &ptr.to_string()],
                "locking a unique property",
            )
            .await?;
            let v = sql::value_expr(ptr);
            let clash = c
                .query_opt(
                    &format!(
                        "SELECT 1 FROM \"{tbl}\" WHERE {v} = $1::text::jsonb AND id <> $2 LIMIT 1"
                    ),
                    &[&value.to_string(), &id],
                )
                .await
                .map_err(internal("checking a unique property"))?;
            if clash.is_some() {
                return Err(RepoError::Unique {
                    resource: resource.to_string(),
                    property: ptr.to_string(),
                });
            }
        }
        Ok(())
    }

    /// One write and the writes committed with it.
    async fn write(
        &self,
        resource: &str,
        op: PgOp,
        also: &[WriteOp],
    ) -> Result<(String, Option<String>), RepoError> {
        self.prepare(resource, &op).await?;
        let also = also
            .iter()
            .cloned()
            .map(pg_op)
            .collect::<Result<Vec<_>, _>>()?;
        for (r, op, _) in &also {
            self.prepare(r, op).await?;
        }
        if also.is_empty() && !self.needs_transaction(resource, &op) {
            return self.write_grouped(resource, op).await;
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(internal("starting a transaction"))?;
        let done = self.apply(&tx, resource, &op).await?;
        for (r, op, _) in &also {
            self.apply(&tx, r, op).await?;
        }
        tx.commit().await.map_err(internal("committing"))?;
        Ok(done)
    }

    fn edges(&self) -> Option<String> {
        self.known(super::RELATIONSHIPS)
            .then(|| table_name(super::RELATIONSHIPS))
    }

    /// The table of `resource`, or `None`; with the edges' table when `filter` tests a
    /// relationship field and edges were ever stored.
    async fn query_tables(
        &self,
        resource: &str,
        filter: &QueryFilter,
    ) -> Result<Option<(String, Option<String>)>, RepoError> {
        let Some(tbl) = self.existing_table(resource).await? else {
            return Ok(None);
        };
        if !uses_edges(filter, 0) {
            return Ok(Some((tbl, None)));
        }
        self.existing_table(super::RELATIONSHIPS).await?;
        Ok(Some((tbl, self.edges())))
    }
}

/// A written object from what its write returned: the content written, or for a delete
/// the body it returned.
fn stored(
    id: String,
    rev: String,
    content: Option<Map<String, Value>>,
    body: Option<String>,
) -> Result<StoredObject, RepoError> {
    let content = match (content, body) {
        (Some(c), _) => c,
        (None, Some(b)) => parse_body(&b)?,
        (None, None) => return Err(RepoError::Internal("a delete returned no object".into())),
    };
    Ok(StoredObject { id, rev, content })
}

/// Whether `filter` tests a relationship field ([`super::RELATIONSHIP_FIELD`]).
fn uses_edges(filter: &QueryFilter, depth: usize) -> bool {
    if depth > 256 {
        return false; // refused as too deep by the translation anyway
    }
    match filter {
        QueryFilter::And(items) | QueryFilter::Or(items) => {
            items.iter().any(|f| uses_edges(f, depth + 1))
        }
        QueryFilter::Not(inner) => uses_edges(inner, depth + 1),
        QueryFilter::Present(p)
        | QueryFilter::Compare { field: p, .. }
        | QueryFilter::In { field: p, .. } => {
            p.tokens().first().map(String::as_str) == Some(super::RELATIONSHIP_FIELD)
        }
        QueryFilter::True | QueryFilter::False => false,
    }
}

async fn migrate_locked(client: &mut deadpool_postgres::Object) -> Result<(), RepoError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS repo_schema (version integer NOT NULL)")
        .await
        .map_err(internal("creating the schema version table"))?;
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM repo_schema", &[])
        .await
        .map_err(internal("reading the schema version"))?
        .get(0);
    let version = version.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(RepoError::Internal(format!(
            "the store's schema is version {version}, newer than this gateway's ({SCHEMA_VERSION}): upgrade the gateway"
        )));
    }
    for v in version + 1..=SCHEMA_VERSION {
        let tx = client
            .transaction()
            .await
            .map_err(internal("starting a migration"))?;
        tx.batch_execute(MIGRATIONS[(v - 1) as usize])
            .await
            .map_err(internal("migrating the store's schema"))?;
        tx.execute("INSERT INTO repo_schema (version) VALUES ($1)", &[&v])
            .await
            .map_err(internal("recording the schema version"))?;
        tx.commit()
            .await
            .map_err(internal("committing a migration"))?;
        tracing::info!(version = v, "store schema migrated");
    }
    Ok(())
}

/// A query error: the time limit, a bad query, or a store failure.
fn query_error(limit: Duration) -> impl Fn(tokio_postgres::Error) -> RepoError {
    move |e| match e.code() {
        Some(c) if c == &SqlState::QUERY_CANCELED => RepoError::TimeLimit(limit),
        // A NUL in a filter value: PostgreSQL text cannot hold one, no object matches it.
        Some(c)
            if c == &SqlState::CHARACTER_NOT_IN_REPERTOIRE
                || c == &SqlState::UNTRANSLATABLE_CHARACTER =>
        {
            RepoError::BadQuery(describe(&e))
        }
        _ => internal("querying the store")(e),
    }
}

async fn run_plan(
    client: &mut deadpool_postgres::Object,
    plan: &Plan,
    limit: Duration,
) -> Result<RepoPage, RepoError> {
    let qe = query_error(limit);
    // Prepared first, then pipelined: the read transaction (page and count see one
    // snapshot, under the time limit) costs one round trip, not four.
    let select = client.prepare(&plan.select.text).await.map_err(&qe)?;
    let count_stmt = match &plan.count {
        Some(c) => Some(client.prepare(&c.text).await.map_err(&qe)?),
        None => None,
    };
    let begin = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = {}",
        millis(limit).max(1)
    );
    let select_params = params(&plan.select.params);
    let count_params = plan.count.as_ref().map(|c| params(&c.params));
    let c: &tokio_postgres::Client = client;
    // Sent in this order on their first poll; a failed statement aborts the transaction,
    // which the COMMIT then rolls back, so the connection goes back to the pool clean.
    let (began, rows, total, ended) = futures_util::future::join4(
        c.batch_execute(&begin),
        c.query(&select, &select_params),
        async {
            match (&count_stmt, &count_params) {
                (Some(s), Some(p)) => c.query_one(s, p).await.map(Some),
                _ => Ok(None),
            }
        },
        c.batch_execute("COMMIT"),
    )
    .await;
    began.map_err(internal("starting a read"))?;
    let rows = rows.map_err(&qe)?;
    let total = total.map_err(&qe)?;
    ended.map_err(internal("ending a read"))?;
    let mut results = Vec::with_capacity(rows.len().min(plan.page_size.max(1)));
    let mut more = false;
    let mut last_keys = Vec::new();
    for row in &rows {
        if plan.page_size > 0 && results.len() == plan.page_size {
            more = true;
            break;
        }
        results.push(row_object(row)?);
        if plan.page_size > 0 {
            last_keys = (0..plan.n_components)
                .map(|i| row.try_get::<_, String>(3 + i))
                .collect::<Result<_, _>>()
                .map_err(internal("reading a sort key"))?;
        }
    }
    let next_cookie = match (more, results.last()) {
        (true, Some(last)) => Some(
            Cookie {
                query: plan.fingerprint.clone(),
                keys: last_keys,
                id: last.id.clone(),
            }
            .encode()?,
        ),
        _ => None,
    };
    let total = total.map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0));
    Ok(RepoPage {
        results,
        next_cookie,
        total,
    })
}

#[async_trait::async_trait]
impl Repo for PgRepo {
    async fn create(
        &self,
        resource: &str,
        id: &str,
        content: Map<String, Value>,
        opts: WriteOptions<'_>,
    ) -> Result<StoredObject, RepoError> {
        let (content, body) = prepare_content(content)?;
        let unique = unique_values(&content, opts.unique);
        let op = PgOp::Create {
            id: id.to_string(),
            body,
            unique,
        };
        let (rev, _) = self.write(resource, op, opts.also).await?;
        Ok(StoredObject {
            id: id.to_string(),
            rev,
            content,
        })
    }

    async fn read(&self, resource: &str, id: &str) -> Result<Option<StoredObject>, RepoError> {
        let Some(tbl) = self.existing_table(resource).await? else {
            return Ok(None);
        };
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT id, rev, body::text FROM \"{tbl}\" WHERE id = $1"
            ))
            .await
            .map_err(internal("preparing a read"))?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(internal("reading an object"))?;
        row.as_ref().map(row_object).transpose()
    }

    async fn update(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
        content: Map<String, Value>,
        opts: WriteOptions<'_>,
    ) -> Result<StoredObject, RepoError> {
        let (content, body) = prepare_content(content)?;
        let unique = unique_values(&content, opts.unique);
        let op = PgOp::Update {
            id: id.to_string(),
            rev: rev.map(str::to_string),
            body,
            unique,
        };
        let (rev, _) = self.write(resource, op, opts.also).await?;
        Ok(StoredObject {
            id: id.to_string(),
            rev,
            content,
        })
    }

    async fn delete(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
    ) -> Result<StoredObject, RepoError> {
        self.delete_with(resource, id, rev, &[]).await
    }

    async fn delete_with(
        &self,
        resource: &str,
        id: &str,
        rev: Option<&str>,
        also: &[WriteOp],
    ) -> Result<StoredObject, RepoError> {
        let op = PgOp::Delete {
            id: id.to_string(),
            rev: rev.map(str::to_string),
        };
        let (rev, body) = self.write(resource, op, also).await?;
        let body = body.ok_or_else(|| RepoError::Internal("a delete returned no object".into()))?;
        Ok(StoredObject {
            id: id.to_string(),
            rev,
            content: parse_body(&body)?,
        })
    }

    async fn query(&self, resource: &str, query: RepoQuery<'_>) -> Result<RepoPage, RepoError> {
        let Some((tbl, edges)) = self.query_tables(resource, query.filter).await? else {
            // Validate the cookie and filter all the same: a bad query is bad either way.
            plan("t", resource, &query, None)?;
            return Ok(RepoPage {
                results: Vec::new(),
                next_cookie: None,
                total: (query.count == CountPolicy::Exact).then_some(0),
            });
        };
        let plan = plan(&tbl, resource, &query, edges)?;
        let limit = self.query_time_limit();
        let mut client = self.client().await?;
        run_plan(&mut client, &plan, limit).await
    }

    /// Rows are fetched [`STREAM_AHEAD`] at a time from a portal, on a connection held by
    /// a task that hands them to the consumer through a channel of the same size. The
    /// query time limit covers the whole stream.
    async fn query_stream(
        &self,
        resource: &str,
        query: RepoQuery<'_>,
    ) -> Result<ObjectStream, RepoError> {
        if query.page_size != 0 || query.cookie.is_some() || query.count != CountPolicy::None {
            return Err(RepoError::BadQuery(
                "a streamed query has no paging and no count".into(),
            ));
        }
        let Some((tbl, edges)) = self.query_tables(resource, query.filter).await? else {
            plan("t", resource, &query, None)?;
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        let plan = plan(&tbl, resource, &query, edges)?;
        let limit = self.query_time_limit();
        let deadline = Instant::now() + limit;
        let mut client = self.client().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_AHEAD);
        let failed = tx.clone();
        tokio::spawn(async move {
            let reader = async {
                let qe = query_error(limit);
                let db = client
                    .build_transaction()
                    .read_only(true)
                    .start()
                    .await
                    .map_err(internal("starting a read"))?;
                db.batch_execute(&format!(
                    "SET LOCAL statement_timeout = {}",
                    millis(limit).max(1)
                ))
                .await
                .map_err(internal("setting the query time limit"))?;
                let stmt = db.prepare(&plan.select.text).await.map_err(&qe)?;
                let portal = db
                    .bind(&stmt, &params(&plan.select.params))
                    .await
                    .map_err(&qe)?;
                loop {
                    if Instant::now() >= deadline {
                        return Err(RepoError::TimeLimit(limit));
                    }
                    let rows = db
                        .query_portal(&portal, STREAM_AHEAD as i32)
                        .await
                        .map_err(&qe)?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        let obj = row_object(row)?;
                        match tokio::time::timeout_at(deadline.into(), tx.send(Ok(obj))).await {
                            Ok(Ok(())) => {}
                            // The consumer is gone: stop reading.
                            Ok(Err(_)) => return Ok(()),
                            Err(_) => return Err(RepoError::TimeLimit(limit)),
                        }
                    }
                    if rows.len() < STREAM_AHEAD {
                        break;
                    }
                }
                db.commit().await.map_err(internal("ending a read"))
            };
            if let Err(e) = reader.await {
                let _ = tokio::time::timeout(Duration::from_secs(1), failed.send(Err(e))).await;
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        )))
    }

    /// One transaction, a savepoint per op: a failing op leaves the others written.
    async fn batch(&self, ops: Vec<WriteOp>) -> Vec<Result<StoredObject, RepoError>> {
        if ops.is_empty() {
            return Vec::new();
        }
        let mut prepared = Vec::with_capacity(ops.len());
        for op in ops {
            let id = match &op {
                WriteOp::Create { id, .. }
                | WriteOp::Put { id, .. }
                | WriteOp::Delete { id, .. } => id.clone(),
            };
            let p = match pg_op(op) {
                Ok((resource, op, content)) => self
                    .prepare(&resource, &op)
                    .await
                    .map(|()| (resource, op, content)),
                Err(e) => Err(e),
            };
            prepared.push((id, p));
        }
        let fail_all = |e: RepoError, n: usize| (0..n).map(|_| Err(e.clone())).collect();
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => return fail_all(e, prepared.len()),
        };
        // Fast path: every write pipelined in one transaction (one round trip for the lot
        // instead of three per write: a page of recon links was 1 000 sequential savepoints,
        // which bounded a first reconciliation at ~3 300 objects/s with the CPU idle). If any
        // write fails, the transaction is rolled back and the batch runs again below, one
        // savepoint per write, so a failing write fails alone.
        let ops: Vec<(&str, &PgOp)> = prepared
            .iter()
            .filter_map(|(_, p)| p.as_ref().ok().map(|(r, op, _)| (r.as_str(), op)))
            .collect();
        let pipelinable = prepared.len() > 1
            && prepared.iter().all(|(_, p)| match p {
                Ok((resource, op, _)) => !self.needs_transaction(resource, op),
                Err(_) => false,
            });
        if pipelinable {
            match self.pipelined_ops(&mut client, &ops).await {
                Ok(Some(done)) => {
                    return prepared
                        .into_iter()
                        .zip(done)
                        .map(|((id, p), (rev, body))| {
                            let (_, _, content) = p?;
                            stored(id, rev, content, body)
                        })
                        .collect()
                }
                Ok(None) => {} // a write failed: each on its own below
                Err(e) => return fail_all(e, prepared.len()),
            }
        }
        let mut applied = match self.savepoints(&mut client, &ops).await {
            Ok(applied) => applied.into_iter(),
            Err(e) => return fail_all(e, prepared.len()),
        };
        prepared
            .into_iter()
            .map(|(id, p)| {
                let (_, _, content) = p?;
                let (rev, body) = applied.next().unwrap_or_else(|| Err(lost_result()))?;
                stored(id, rev, content, body)
            })
            .collect()
    }

    async fn set_indexes(&self, resource: &str, fields: &[JsonPointer]) -> Result<(), RepoError> {
        let tbl = self.ensure_table(resource).await?;
        let mut wanted: Vec<(String, String)> = Vec::new();
        for f in fields {
            if matches!(f.tokens(), [t] if t == "_id" || t == "_rev") || f.tokens().is_empty() {
                continue;
            }
            let v = sql::value_expr(f);
            let t = sql::text_expr(f);
            // Numbers and booleans compare as jsonb, strings as text: each index holds only
            // the rows whose value its comparisons can match (a jsonb B-tree insert costs
            // several times a text one; a string property's rows skip it).
            wanted.push((
                index_name("ix", &tbl, &v, "_n"),
                format!("(({v})) WHERE jsonb_typeof({v}) IN ('number', 'boolean')"),
            ));
            wanted.push((index_name("ix", &tbl, &v, "_t"), format!("({t})")));
            // The array branch of a comparison: `@>` (equality), and the rows holding an
            // array (other operators test their elements).
            let arrays = format!("WHERE jsonb_typeof({v}) = 'array'");
            wanted.push((
                index_name("ix", &tbl, &v, "_g"),
                format!("USING gin (({v})) {arrays}"),
            ));
            wanted.push((
                index_name("ix", &tbl, &v, "_a"),
                format!("((jsonb_typeof({v}))) {arrays}"),
            ));
        }
        let done = self
            .inner
            .indexed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&tbl)
            == Some(&wanted);
        if done {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(internal("starting a transaction"))?;
        advisory_lock(&tx, &["indexes", &tbl], "locking a table's indexes").await?;
        let existing: Vec<String> = tx
            .query(
                "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() \
                 AND tablename = $1 AND indexname LIKE 'ix\\_%'",
                &[&tbl],
            )
            .await
            .map_err(internal("listing indexes"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for name in &existing {
            if !wanted.iter().any(|(w, _)| w == name) {
                tx.batch_execute(&format!("DROP INDEX IF EXISTS \"{name}\""))
                    .await
                    .map_err(internal("dropping an index"))?;
            }
        }
        for (name, expr) in &wanted {
            if !existing.contains(name) {
                tx.batch_execute(&format!(
                    "CREATE INDEX IF NOT EXISTS \"{name}\" ON \"{tbl}\" {expr}"
                ))
                .await
                .map_err(internal("creating an index"))?;
            }
        }
        tx.commit().await.map_err(internal("committing indexes"))?;
        self.inner
            .indexed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tbl, wanted);
        Ok(())
    }
}
