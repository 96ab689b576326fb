//! [`SqliteRepo`]: the embedded default store, one SQLite database in WAL mode
//! (`<data dir>/repo.sqlite`).
//!
//! * **Layout**: one table per resource, JSONB bodies, an expression index per searchable
//!   property ([`schema`]).
//! * **Writes** go to one writer thread that group-commits ([`writer`]).
//! * **Reads and queries** run on a small pool of read-only connections through
//!   `spawn_blocking`; WAL lets them run while the writer commits. Filters, sorting, paging
//!   and counts are SQL ([`sql`]); nothing loads a resource to filter it in memory.
//!
//! # Durability
//!
//! `journal_mode=WAL`, `synchronous=FULL`: every commit fsyncs the WAL, so a write that
//! returned `Ok` survives `kill -9` and power loss. `NORMAL` would only be safe against
//! process crashes. Measured with `benches/repo.rs` (100 000 users, 64 concurrent writers,
//! 2 shared cores, ext4 on a virtio disk, load average 5–7 from other builds):
//! `FULL` 8 000–16 500 creates/s, `NORMAL` 60 000–74 000 creates/s. Group commit keeps
//! `FULL` above the 5 000/s target, so power-loss safety wins. `wal_autocheckpoint = 8192`
//! (32 MB of WAL between checkpoints instead of 4 MB): checkpoints were 15 % of the writer
//! thread during a bulk reconciliation; a larger WAL copies each hot page back less often.
//!
//! # Ordering
//!
//! Sort keys on properties order by SQLite's rules on the extracted values: missing and
//! null first when ascending (last when descending), then booleans and numbers (as 0/1 and
//! numerically), then strings (by code point), then arrays/objects (by their JSON text).
//! Ties, and the end of every sort, are broken by `_id` ascending.
//!
//! # Revisions
//!
//! One store-wide sequence: every create and update takes the next number (decimal text),
//! so a revision never repeats for an id, across delete and re-create and across restarts
//! (IDM's JDBC repository restarts a re-created object at "0", so a client holding the old
//! object's revision would match the new one by accident).

mod schema;
mod sql;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Semaphore};

use self::schema::internal;
/// Shared with the database table connector, which pages and filters the same way.
pub(crate) use self::sql::prefix_successor;
use self::sql::{Cookie, KeyValue, Sql};
use self::writer::{Command, Done, Message, Op, Tables, UniqueValue};
use super::sql_common::{self, millis, prepare_content};
use super::{
    ObjectStream, Repo, RepoError, RepoPage, RepoQuery, StoredObject, WriteOp, WriteOptions,
    DEFAULT_QUERY_TIME_LIMIT,
};
use crate::crest::filter::JsonPointer;
use crate::crest::query::CountPolicy;

/// File name of the database in the data directory.
pub const DB_FILE: &str = "repo.sqlite";

/// Read-only connections kept open (and queries run at once).
const READERS: usize = 4;

/// Objects a streamed query reads ahead of its consumer: the bound on its memory.
const STREAM_AHEAD: usize = 256;

/// SQLite virtual-machine steps between two checks of a query's deadline (a few
/// microseconds of work: a cancelled query stops promptly, a running one pays nothing).
const PROGRESS_STEPS: i32 = 1000;

/// The embedded store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct SqliteRepo {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    commands: Option<mpsc::Sender<Message>>,
    writer: Option<JoinHandle<()>>,
    tables: Tables,
    readers: Mutex<Vec<Connection>>,
    read_slots: Arc<Semaphore>,
    /// Longest a query may hold a reader, in milliseconds ([`SqliteRepo::set_query_time_limit`]).
    query_limit_ms: AtomicU64,
    /// Directory removed when the store is dropped ([`SqliteRepo::open_temporary`]).
    remove_dir: Option<PathBuf>,
}

impl Drop for Inner {
    /// Stops the writer (it finishes the batch in hand) and closes every connection.
    /// Blocks for at most one commit.
    fn drop(&mut self) {
        self.commands.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(dir) = &self.remove_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl std::fmt::Debug for SqliteRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRepo")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteRepo {
    /// Opens (creating if needed) `<dir>/repo.sqlite`, migrating its schema to the current
    /// version.
    pub fn open(dir: &Path) -> Result<SqliteRepo, RepoError> {
        Self::open_inner(dir, None)
    }

    /// A store in a fresh directory under the system temp dir, removed when the last clone
    /// is dropped. For tests of code that needs a `Repo`.
    pub fn open_temporary() -> Result<SqliteRepo, RepoError> {
        let dir = std::env::temp_dir().join(format!("idm-gateway-repo-{}", uuid::Uuid::new_v4()));
        Self::open_inner(&dir, Some(dir.clone()))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Sets how long a query may run (streamed ones: until their last object is taken)
    /// before it is cancelled with [`RepoError::TimeLimit`], freeing its reader.
    pub fn set_query_time_limit(&self, limit: Duration) {
        self.inner
            .query_limit_ms
            .store(millis(limit).max(1), Ordering::Relaxed);
    }

    fn query_time_limit(&self) -> Duration {
        Duration::from_millis(self.inner.query_limit_ms.load(Ordering::Relaxed))
    }

    fn open_inner(dir: &Path, remove_dir: Option<PathBuf>) -> Result<SqliteRepo, RepoError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            RepoError::Internal(format!(
                "creating the data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| RepoError::Internal(format!("opening {}: {e}", path.display())))?;
        configure_writer(&conn)?;
        schema::migrate(&mut conn)?;
        let tables: Tables = Arc::new(RwLock::new(
            schema::load_catalog(&conn)?
                .into_iter()
                .collect::<HashMap<_, _>>(),
        ));
        let next_rev = schema::load_next_rev(&conn)?;
        let (commands, rx) = mpsc::channel();
        let writer_tables = tables.clone();
        let writer = std::thread::Builder::new()
            .name("repo-writer".into())
            .spawn(move || writer::run(conn, rx, writer_tables, next_rev))
            .map_err(|e| RepoError::Internal(format!("starting the store writer: {e}")))?;
        Ok(SqliteRepo {
            inner: Arc::new(Inner {
                path,
                commands: Some(commands),
                writer: Some(writer),
                tables,
                readers: Mutex::new(Vec::new()),
                read_slots: Arc::new(Semaphore::new(READERS)),
                query_limit_ms: AtomicU64::new(millis(DEFAULT_QUERY_TIME_LIMIT)),
                remove_dir,
            }),
        })
    }

    /// Sends a command to the writer and waits for its commit.
    async fn write(&self, resource: &str, op: Op) -> Result<Done, RepoError> {
        self.write_with(resource, op, Vec::new()).await
    }

    /// Like `write`, with other writes in the same savepoint.
    async fn write_with(
        &self,
        resource: &str,
        op: Op,
        also: Vec<(String, Op)>,
    ) -> Result<Done, RepoError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || RepoError::Internal("the store writer has stopped".into());
        self.inner
            .commands
            .as_ref()
            .ok_or_else(stopped)?
            .send(Message::One(Command {
                resource: resource.to_string(),
                op,
                also,
                reply,
            }))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Sends commands to the writer as one message (one transaction) and waits for all.
    async fn write_many(&self, ops: Vec<(String, Op)>) -> Vec<Result<Done, RepoError>> {
        let stopped = || RepoError::Internal("the store writer has stopped".into());
        let mut replies = Vec::with_capacity(ops.len());
        let mut cmds = Vec::with_capacity(ops.len());
        for (resource, op) in ops {
            let (reply, rx) = oneshot::channel();
            cmds.push(Command {
                resource,
                op,
                also: Vec::new(),
                reply,
            });
            replies.push(rx);
        }
        let sent = match self.inner.commands.as_ref() {
            Some(tx) => tx.send(Message::Many(cmds)).is_ok(),
            None => false,
        };
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(if sent {
                rx.await.map_err(|_| stopped()).and_then(|r| r)
            } else {
                Err(stopped())
            });
        }
        out
    }

    /// Runs `f` on a pooled read-only connection off the async runtime.
    async fn read_with<T, F>(&self, f: F) -> Result<T, RepoError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, RepoError> + Send + 'static,
    {
        let permit = self
            .inner
            .read_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RepoError::Internal("the store is closing".into()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => open_reader(&inner.path)?,
            };
            let result = f(&mut conn);
            inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| RepoError::Internal(format!("a store read failed: {e}")))?
    }
}

/// Runs `f` with SQLite's progress handler cancelling any statement once `deadline` has
/// passed; a failure at or after the deadline is reported as the time limit.
fn with_deadline<T>(
    conn: &mut Connection,
    limit: Duration,
    deadline: Instant,
    f: impl FnOnce(&mut Connection) -> Result<T, RepoError>,
) -> Result<T, RepoError> {
    conn.progress_handler(PROGRESS_STEPS, Some(move || Instant::now() >= deadline))
        .map_err(internal("setting the query time limit"))?;
    let result = f(conn);
    let _ = conn.progress_handler(0, None::<fn() -> bool>);
    match result {
        Err(_) if Instant::now() >= deadline => Err(RepoError::TimeLimit(limit)),
        other => other,
    }
}

impl Inner {
    fn table(&self, resource: &str) -> Option<String> {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(resource)
            .cloned()
    }
}

fn configure_writer(conn: &Connection) -> Result<(), RepoError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(internal("setting WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(RepoError::Internal(format!(
            "the store could not switch to WAL mode (journal mode is {mode})"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA wal_autocheckpoint = 8192;
         PRAGMA busy_timeout = 10000;
         PRAGMA cache_size = -32768;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(internal("configuring the store"))
}

fn open_reader(path: &Path) -> Result<Connection, RepoError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| RepoError::Internal(format!("opening {} for reading: {e}", path.display())))?;
    // 8 MB per reader: the hot upper index levels fit; a leaf missed is a read from the
    // OS page cache. Four readers at 16 MB each took a million-object store's
    // reconciliation over 250 MB of RSS.
    conn.execute_batch(
        "PRAGMA busy_timeout = 10000;
         PRAGMA cache_size = -8192;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(internal("configuring a store reader"))?;
    Ok(conn)
}

/// The values `content` holds at its `unique` fields, in the writer's form.
fn unique_values(content: &Map<String, Value>, unique: &[JsonPointer]) -> Vec<UniqueValue> {
    sql_common::unique_values(content, unique)
        .into_iter()
        .map(|(field, value)| UniqueValue { field, value })
        .collect()
}

/// The writer's form of one [`WriteOp`] (and, for a create, the content it stores).
#[allow(clippy::type_complexity)]
fn writer_op(op: WriteOp) -> Result<(String, Op, Option<Map<String, Value>>), RepoError> {
    Ok(match op {
        WriteOp::Create {
            resource,
            id,
            content,
            unique,
        } => {
            let (content, body) = prepare_content(content)?;
            let unique = unique_values(&content, &unique);
            (resource, Op::Create { id, body, unique }, Some(content))
        }
        WriteOp::Put {
            resource,
            id,
            content,
        } => {
            let (content, body) = prepare_content(content)?;
            (resource, Op::Put { id, body }, Some(content))
        }
        WriteOp::Delete { resource, id, rev } => (resource, Op::Delete { id, rev }, None),
    })
}

/// The writer's form of [`crate::repo::WriteOptions::also`].
fn also_ops(also: &[WriteOp]) -> Result<Vec<(String, Op)>, RepoError> {
    also.iter()
        .map(|op| writer_op(op.clone()).map(|(r, op, _)| (r, op)))
        .collect()
}

fn parse_body(text: &str) -> Result<Map<String, Value>, RepoError> {
    serde_json::from_str(text)
        .map_err(|e| RepoError::Internal(format!("a stored object is not JSON: {e}")))
}

/// SQLite's own limits on statement size surface as a bad query, not a store failure.
fn query_error(e: rusqlite::Error) -> RepoError {
    let text = e.to_string();
    if text.contains("too large") || text.contains("too many") || text.contains("stack overflow") {
        RepoError::BadQuery(format!("the filter is too complex: {text}"))
    } else {
        RepoError::Internal(format!("running a query: {text}"))
    }
}

/// A query translated to SQL, ready to run on a reader.
struct Plan {
    select: Sql,
    count: Option<Sql>,
    page_size: usize,
    fingerprint: String,
}

#[cfg(test)]
fn plan(tbl: &str, resource: &str, query: &RepoQuery<'_>) -> Result<Plan, RepoError> {
    plan_with(tbl, resource, query, None)
}

/// The SQL of a query; `edges` is the relationships' table, if any edge was ever stored.
fn plan_with(
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
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let cookie = query
        .cookie
        .map(|c| Cookie::decode(c, &fingerprint, query.sort.len()))
        .transpose()?;
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
    let keys: String = query
        .sort
        .iter()
        .map(|k| format!(", {}", sql::sort_expr(&k.field)))
        .collect();
    let mut text = format!(
        "SELECT id, rev, {body}{keys} FROM \"{tbl}\" WHERE {where_} ORDER BY {}",
        sql::order_by(query.sort),
        body = if query.ids_only { "NULL" } else { "json(body)" }
    );
    let offset = if cookie.is_some() { 0 } else { query.offset };
    let limit = match query.page_size {
        0 => -1,
        n => i64::try_from(n).unwrap_or(i64::MAX - 1).saturating_add(1),
    };
    if limit >= 0 || offset > 0 {
        text.push_str(&format!(" LIMIT {limit}"));
    }
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
    })
}

fn run_plan(conn: &mut Connection, plan: &Plan, n_keys: usize) -> Result<RepoPage, RepoError> {
    // One read transaction: the page and the count see the same snapshot.
    let tx = conn.transaction().map_err(internal("starting a read"))?;
    let mut results = Vec::new();
    let mut last_keys = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&plan.select.text).map_err(query_error)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(plan.select.params.iter()))
            .map_err(query_error)?;
        while let Some(row) = rows.next().map_err(query_error)? {
            if plan.page_size > 0 && results.len() == plan.page_size {
                // The extra row only says there is a next page.
                results.push(None);
                break;
            }
            let id: String = row.get(0).map_err(query_error)?;
            let rev: String = row.get(1).map_err(query_error)?;
            let body: Option<String> = row.get(2).map_err(query_error)?;
            if plan.page_size > 0 {
                last_keys = (0..n_keys)
                    .map(|i| {
                        row.get::<_, SqlValue>(3 + i)
                            .map_err(query_error)
                            .and_then(KeyValue::from_sql)
                    })
                    .collect::<Result<_, _>>()?;
            }
            let content = match body {
                Some(body) => parse_body(&body)?,
                None => Map::new(), // ids only
            };
            results.push(Some(StoredObject { id, rev, content }));
        }
    }
    let more = matches!(results.last(), Some(None));
    let results: Vec<StoredObject> = results.into_iter().flatten().collect();
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
    let total = match &plan.count {
        Some(count) => {
            let n: i64 = tx
                .prepare_cached(&count.text)
                .and_then(|mut s| {
                    s.query_row(rusqlite::params_from_iter(count.params.iter()), |r| {
                        r.get(0)
                    })
                })
                .map_err(query_error)?;
            Some(u64::try_from(n).unwrap_or(0))
        }
        None => None,
    };
    tx.commit().map_err(internal("ending a read"))?;
    Ok(RepoPage {
        results,
        next_cookie,
        total,
    })
}

/// Runs an unpaged plan, handing each object to `each` as it is read; `each` answers
/// whether to go on.
fn stream_plan(
    conn: &mut Connection,
    plan: &Plan,
    mut each: impl FnMut(StoredObject) -> Result<bool, RepoError>,
) -> Result<(), RepoError> {
    let tx = conn.transaction().map_err(internal("starting a read"))?;
    {
        let mut stmt = tx.prepare_cached(&plan.select.text).map_err(query_error)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(plan.select.params.iter()))
            .map_err(query_error)?;
        while let Some(row) = rows.next().map_err(query_error)? {
            let id: String = row.get(0).map_err(query_error)?;
            let rev: String = row.get(1).map_err(query_error)?;
            let body: Option<String> = row.get(2).map_err(query_error)?;
            let content = match body {
                Some(body) => parse_body(&body)?,
                None => Map::new(), // ids only
            };
            if !each(StoredObject { id, rev, content })? {
                break;
            }
        }
    }
    tx.commit().map_err(internal("ending a read"))
}

#[async_trait::async_trait]
impl Repo for SqliteRepo {
    async fn create(
        &self,
        resource: &str,
        id: &str,
        content: Map<String, Value>,
        opts: WriteOptions<'_>,
    ) -> Result<StoredObject, RepoError> {
        let (content, body) = prepare_content(content)?;
        let unique = unique_values(&content, opts.unique);
        let done = self
            .write_with(
                resource,
                Op::Create {
                    id: id.to_string(),
                    body,
                    unique,
                },
                also_ops(opts.also)?,
            )
            .await?;
        Ok(StoredObject {
            id: id.to_string(),
            rev: done.rev,
            content,
        })
    }

    async fn read(&self, resource: &str, id: &str) -> Result<Option<StoredObject>, RepoError> {
        let Some(tbl) = self.inner.table(resource) else {
            return Ok(None);
        };
        let id = id.to_string();
        self.read_with(move |conn| {
            let row: Option<(String, String)> = conn
                .prepare_cached(&format!(
                    "SELECT rev, json(body) FROM \"{tbl}\" WHERE id = ?1"
                ))
                .and_then(|mut s| {
                    s.query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(internal("reading an object"))?;
            row.map(|(rev, body)| {
                Ok(StoredObject {
                    id,
                    rev,
                    content: parse_body(&body)?,
                })
            })
            .transpose()
        })
        .await
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
        let done = self
            .write_with(
                resource,
                Op::Update {
                    id: id.to_string(),
                    rev: rev.map(str::to_string),
                    body,
                    unique,
                },
                also_ops(opts.also)?,
            )
            .await?;
        Ok(StoredObject {
            id: id.to_string(),
            rev: done.rev,
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
        let done = self
            .write_with(
                resource,
                Op::Delete {
                    id: id.to_string(),
                    rev: rev.map(str::to_string),
                },
                also_ops(also)?,
            )
            .await?;
        let body = done
            .body
            .ok_or_else(|| RepoError::Internal("a delete returned no object".into()))?;
        Ok(StoredObject {
            id: id.to_string(),
            rev: done.rev,
            content: parse_body(&body)?,
        })
    }

    async fn query(&self, resource: &str, query: RepoQuery<'_>) -> Result<RepoPage, RepoError> {
        let Some(tbl) = self.inner.table(resource) else {
            // Validate the cookie and filter all the same: a bad query is bad either way.
            plan_with("t", resource, &query, None)?;
            return Ok(RepoPage {
                results: Vec::new(),
                next_cookie: None,
                total: (query.count == CountPolicy::Exact).then_some(0),
            });
        };
        let edges = self.inner.table(super::RELATIONSHIPS);
        let plan = plan_with(&tbl, resource, &query, edges)?;
        let n_keys = query.sort.len();
        let limit = self.query_time_limit();
        let deadline = Instant::now() + limit;
        self.read_with(move |conn| {
            with_deadline(conn, limit, deadline, |conn| run_plan(conn, &plan, n_keys))
        })
        .await
    }

    /// Rows go from a reader thread to the consumer through a channel of [`STREAM_AHEAD`]
    /// objects. The query time limit covers the whole stream: a consumer that stops taking
    /// objects does not hold the reader past it.
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
        let Some(tbl) = self.inner.table(resource) else {
            plan_with("t", resource, &query, None)?;
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        let edges = self.inner.table(super::RELATIONSHIPS);
        let plan = plan_with(&tbl, resource, &query, edges)?;
        let limit = self.query_time_limit();
        let deadline = Instant::now() + limit;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_AHEAD);
        let runtime = tokio::runtime::Handle::current();
        let failed = tx.clone();
        let this = self.clone();
        let reader = async move {
            this.read_with(move |conn| {
                with_deadline(conn, limit, deadline, |conn| {
                    stream_plan(conn, &plan, |obj| {
                        let sent = runtime
                            .block_on(tokio::time::timeout_at(deadline.into(), tx.send(Ok(obj))));
                        match sent {
                            Ok(Ok(())) => Ok(true),
                            // The consumer is gone (client disconnected): stop reading.
                            Ok(Err(_)) => Ok(false),
                            Err(_) => Err(RepoError::TimeLimit(limit)),
                        }
                    })
                })
            })
            .await
        };
        tokio::spawn(async move {
            if let Err(e) = reader.await {
                // Bounded like the rows: a consumer that stopped reading never sees it.
                let _ = tokio::time::timeout(Duration::from_secs(1), failed.send(Err(e))).await;
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        )))
    }

    /// One writer message: the ops share one transaction and one fsync.
    async fn batch(&self, ops: Vec<WriteOp>) -> Vec<Result<StoredObject, RepoError>> {
        if ops.is_empty() {
            return Vec::new();
        }
        // What each op returns besides the writer's `Done`: the id, and a create's content.
        let mut kept: Vec<Result<(String, Option<Map<String, Value>>), RepoError>> =
            Vec::with_capacity(ops.len());
        let mut cmds = Vec::with_capacity(ops.len());
        for op in ops {
            let id = match &op {
                WriteOp::Create { id, .. }
                | WriteOp::Put { id, .. }
                | WriteOp::Delete { id, .. } => id.clone(),
            };
            match writer_op(op) {
                Ok((resource, op, content)) => {
                    cmds.push((resource, op));
                    kept.push(Ok((id, content)));
                }
                Err(e) => kept.push(Err(e)),
            }
        }
        let mut done = self.write_many(cmds).await.into_iter();
        kept.into_iter()
            .map(|k| {
                let (id, content) = k?;
                let done = done
                    .next()
                    .unwrap_or_else(|| Err(RepoError::Internal("a batch lost a reply".into())))?;
                let content = match content {
                    Some(c) => c,
                    None => parse_body(done.body.as_deref().ok_or_else(|| {
                        RepoError::Internal("a delete returned no object".into())
                    })?)?,
                };
                Ok(StoredObject {
                    id,
                    rev: done.rev,
                    content,
                })
            })
            .collect()
    }

    async fn set_indexes(&self, resource: &str, fields: &[JsonPointer]) -> Result<(), RepoError> {
        self.write(
            resource,
            Op::SetIndexes {
                fields: fields.to_vec(),
            },
        )
        .await
        .map(|_| ())
    }
}
