//! The database table connector over PostgreSQL (`jdbc:postgresql://host:port/database`),
//! with `tokio-postgres` and a small pool of clients. Plain connections only (no TLS yet).
//!
//! Every value travels as text and is cast in SQL to the column's own type
//! (`($1::text)::integer`), so one code path serves every column type and the server does
//! the conversion; values come back as `column::text` and are shaped to JSON by the type's
//! category (numbers, booleans, strings). Semantics match the SQLite side: `co` is
//! `strpos`, `sw` is `starts_with` (both case-sensitive), `!x` is `(x) IS NOT TRUE`, NULL
//! sorts first ascending (`NULLS FIRST`) and last descending, keyset paging on the sort
//! values and the key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::super::connector::*;
use super::super::provisioner::PoolConfig;
use super::sql::{self, Dialect, Sql};
use super::{acquire, change_log_required, check_class, quote, Columns, Config};
use crate::crest::filter::{FilterValue, QueryFilter};

use serde::{Deserialize, Serialize};

/// Parses what follows `jdbc:postgresql:` (`//host[:port]/database[?user=…]` or
/// `database`); `user` and `password` properties win over URL parameters. The client
/// configuration and a description without credentials.
pub(super) fn parse_url(
    rest: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<(tokio_postgres::Config, String), String> {
    let (host, port, database, params) = match rest.strip_prefix("//") {
        Some(r) => {
            let url = url::Url::parse(&format!("postgresql://{r}"))
                .map_err(|e| format!("'jdbc:postgresql:{rest}' is not a valid URL: {e}"))?;
            let host = url.host_str().unwrap_or("localhost").to_owned();
            let port = url.port().unwrap_or(5432);
            let database = url.path().trim_start_matches('/').to_owned();
            let params: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            (host, port, database, params)
        }
        None => {
            let (db, query) = rest.split_once('?').unwrap_or((rest, ""));
            let params = url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            ("localhost".to_owned(), 5432, db.to_owned(), params)
        }
    };
    if database.is_empty() {
        return Err("names no database (jdbc:postgresql://<host>[:<port>]/<database>)".to_owned());
    }
    let param = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let tls_wanted = param("ssl").is_some_and(|v| v == "true")
        || param("sslmode").is_some_and(|m| !matches!(m, "disable" | "allow" | "prefer"));
    if tls_wanted {
        return Err("TLS connections to PostgreSQL are not supported yet (ssl/sslmode)".to_owned());
    }
    let Some(user) = user.or_else(|| param("user")) else {
        return Err("PostgreSQL needs a user: set the user property".to_owned());
    };
    let mut pg = tokio_postgres::Config::new();
    pg.host(&host)
        .port(port)
        .dbname(&database)
        .user(user)
        .application_name("idm-gateway")
        .connect_timeout(Duration::from_secs(10));
    if let Some(pw) = password.or_else(|| param("password")) {
        pg.password(pw);
    }
    Ok((pg, format!("postgresql://{host}:{port}/{database}")))
}

mod dialect;
#[cfg(test)]
mod tests;

use dialect::PgColumns;

/// The cookie of a page: the order values (as text) of its last row.
#[derive(Serialize, Deserialize)]
struct Cookie {
    pg: Vec<Option<String>>,
}

/// The parameters of a statement, as tokio-postgres binds them.
fn refs(sql: &Sql<PgColumns>) -> Vec<&(dyn ToSql + Sync)> {
    sql.params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect()
}

fn pg_error(e: tokio_postgres::Error, cfg: &Config) -> ConnectorError {
    let table = &cfg.table;
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let mut msg = format!("the table '{table}': {}", db.message());
            if let Some(d) = db.detail() {
                msg.push_str(&format!(" ({d})"));
            }
            if code == "23505" {
                ConnectorError::AlreadyExists(msg)
            } else if code.starts_with("23") || code.starts_with("22") {
                ConnectorError::InvalidAttribute(msg)
            } else if code.starts_with("42") {
                ConnectorError::Config(msg)
            } else if code.starts_with("08")
                || code.starts_with("28")
                || code.starts_with("57")
                || code.starts_with("53")
                || code == "3D000"
            {
                ConnectorError::Unavailable(msg)
            } else {
                ConnectorError::Other(msg)
            }
        }
        None => ConnectorError::Unavailable(format!(
            "PostgreSQL at {} cannot be used: {e}",
            cfg.location
        )),
    }
}

/// A pooled client; back to the idle list when dropped (unless closed).
struct Conn {
    client: Option<Client>,
    idle: Arc<Mutex<Vec<Client>>>,
    max_idle: usize,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("a pooled client until dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < self.max_idle {
                    idle.push(c);
                }
            }
        }
    }
}

/// The connector over a PostgreSQL table.
pub(super) struct PgTable {
    cfg: Config,
    pg: tokio_postgres::Config,
    idle: Arc<Mutex<Vec<Client>>>,
    permits: Arc<Semaphore>,
    max_idle: usize,
    max_wait: Duration,
}

impl PgTable {
    pub(super) fn new(cfg: Config, pg: tokio_postgres::Config, pool: &PoolConfig) -> Self {
        Self {
            cfg,
            pg,
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(pool.max_objects.max(1))),
            max_idle: pool.max_idle,
            max_wait: pool.max_wait,
        }
    }

    fn err(&self) -> impl Fn(tokio_postgres::Error) -> ConnectorError + '_ {
        |e| pg_error(e, &self.cfg)
    }

    async fn conn(&self) -> ConnectorResult<Conn> {
        let permit = acquire(&self.permits, self.max_wait).await?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let client = match reused {
            Some(c) => c,
            None => {
                let (client, connection) = self.pg.connect(NoTls).await.map_err(self.err())?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "PostgreSQL connection ended");
                    }
                });
                client
            }
        };
        Ok(Conn {
            client: Some(client),
            idle: self.idle.clone(),
            max_idle: self.max_idle,
            _permit: permit,
        })
    }

    /// A client and the table's columns as they are now.
    async fn open(&self) -> ConnectorResult<(Conn, PgColumns)> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                        t.typcategory::text, (a.atthasdef OR a.attidentity <> '') \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&quote(&self.cfg.table)],
            )
            .await
            .map_err(self.err())?;
        let mut names = Vec::new();
        let mut types = Vec::new();
        let mut category = Vec::new();
        let mut defaults = Vec::new();
        for r in &rows {
            names.push(r.try_get::<_, String>(0).map_err(self.err())?);
            types.push(r.try_get::<_, String>(1).map_err(self.err())?);
            let cat: String = r.try_get(2).map_err(self.err())?;
            category.push(cat.chars().next().unwrap_or('X'));
            defaults.push(r.try_get::<_, bool>(3).map_err(self.err())?);
        }
        let base = Columns::new(&self.cfg, names, types)?;
        let key_has_default = defaults[base.key];
        Ok((
            conn,
            PgColumns {
                base,
                category,
                key_has_default,
            },
        ))
    }
}

#[async_trait::async_trait]
impl Connector for PgTable {
    async fn test(&self) -> ConnectorResult<()> {
        let (conn, cols) = self.open().await?;
        conn.query(&format!("SELECT 1 FROM {} LIMIT 1", cols.base.table), &[])
            .await
            .map_err(self.err())?;
        Ok(())
    }

    async fn schema(&self) -> ConnectorResult<Map<String, Value>> {
        let (_conn, cols) = self.open().await?;
        Ok(sql::schema(&cols.base, |i| match cols.category[i] {
            'N' if cols.ty(i).contains("int") => ("integer", "long"),
            'N' => ("number", "double"),
            'B' => ("boolean", "boolean"),
            _ => ("string", "string"),
        }))
    }

    async fn authenticate(
        &self,
        class: &ObjectClass,
        username: &str,
        password: &str,
    ) -> ConnectorResult<String> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        let (text, sql) = sql::authenticate_sql(&cols, username)?;
        let rows = conn.query(&text, &refs(&sql)).await.map_err(self.err())?;
        for row in rows {
            let stored: Option<String> = row.try_get(1).map_err(self.err())?;
            if sql::password_matches::<PgColumns>(&stored, password) {
                let uid: Option<String> = row.try_get(0).map_err(self.err())?;
                return Ok(PgColumns::uid(&uid));
            }
        }
        Err(sql::invalid_credential())
    }

    async fn create(
        &self,
        class: &ObjectClass,
        uid: Option<&str>,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        let (text, sql, _) = sql::create_sql(&cols, uid, &attributes)?;
        let row = conn
            .query_one(&text, &refs(&sql))
            .await
            .map_err(self.err())?;
        let key: Option<String> = row.try_get(0).map_err(self.err())?;
        sql::created(&cols, &key)
    }

    async fn read(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: &[String],
    ) -> ConnectorResult<Option<ConnectorObject>> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        let Some(select) = sql::read_sql(&cols, uid, attributes) else {
            return Ok(None);
        };
        let row = conn
            .query_opt(&select.text, &refs(&select.sql))
            .await
            .map_err(self.err())?;
        row.map(|r| object_of(&cols, &r, &select))
            .transpose()
            .map_err(self.err())
    }

    async fn update(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        let (text, sql) = sql::update_sql(&cols, uid, &attributes)?;
        let rows = conn.query(&text, &refs(&sql)).await.map_err(self.err())?;
        match rows.first() {
            Some(r) => Ok(PgColumns::uid(&r.try_get(0).map_err(self.err())?)),
            None => Err(sql::not_found(uid, &cols.base)),
        }
    }

    async fn delete(&self, class: &ObjectClass, uid: &str) -> ConnectorResult<()> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        let (text, sql) = sql::delete_sql(&cols, uid)?;
        let n = conn.execute(&text, &refs(&sql)).await.map_err(self.err())?;
        if n == 0 {
            return Err(sql::not_found(uid, &cols.base));
        }
        Ok(())
    }

    async fn query(
        &self,
        class: &ObjectClass,
        filter: Option<&QueryFilter>,
        options: &QueryOptions,
    ) -> ConnectorResult<QueryPage> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        let query = sql::Query::new(&cols, filter, options)?;
        let total = if options.count {
            let row = conn
                .query_one(&query.count_sql(&cols), &refs(&query.sql))
                .await
                .map_err(self.err())?;
            Some(row.try_get::<_, i64>(0).map_err(self.err())?)
        } else {
            None
        };
        let page = query.page(&cols, options)?;
        let rows = conn
            .query(&page.text, &refs(&page.sql))
            .await
            .map_err(self.err())?;
        let more = options.page_size > 0 && rows.len() > options.page_size;
        let take = if more { options.page_size } else { rows.len() };
        let mut objects = Vec::with_capacity(take);
        for row in &rows[..take] {
            objects.push(object_of(&cols, row, &page).map_err(self.err())?);
        }
        let last_order = if more {
            let row = &rows[take - 1];
            (1..page.first)
                .map(|i| row.try_get::<_, Option<String>>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(self.err())?
        } else {
            Vec::new()
        };
        Ok(sql::query_page::<PgColumns>(
            options, objects, last_order, more, total,
        ))
    }

    async fn latest_sync_token(&self, class: &ObjectClass) -> ConnectorResult<Value> {
        check_class(class)?;
        change_log_required(&self.cfg)?;
        let (conn, cols) = self.open().await?;
        let chg = sql::change_log_column(&cols.base)?;
        let row = conn
            .query_one(&sql::latest_sql(&cols, chg), &[])
            .await
            .map_err(self.err())?;
        let max: Option<String> = row.try_get(0).map_err(self.err())?;
        Ok(sql::latest_token(&cols, chg, max))
    }

    async fn sync(
        &self,
        class: &ObjectClass,
        token: &Value,
        max: usize,
    ) -> ConnectorResult<SyncBatch> {
        check_class(class)?;
        change_log_required(&self.cfg)?;
        if token.is_null() {
            let token = self.latest_sync_token(class).await?;
            return Ok(SyncBatch {
                deltas: Vec::new(),
                token,
            });
        }
        let from = sql::SyncFrom::<PgColumns>::parse(token)?;
        let (conn, cols) = self.open().await?;
        let chg = sql::change_log_column(&cols.base)?;
        let select = from.sql(&cols, chg, max);
        let rows = conn
            .query(&select.text, &refs(&select.sql))
            .await
            .map_err(self.err())?;
        let more = max > 0 && rows.len() > max;
        let take = if more { max } else { rows.len() };
        let mut deltas = Vec::with_capacity(take);
        for row in &rows[..take] {
            deltas.push(SyncDelta::CreateOrUpdate(
                object_of(&cols, row, &select).map_err(self.err())?,
            ));
        }
        let text_at = |i: usize, col: usize| -> ConnectorResult<Option<String>> {
            rows[i]
                .try_get::<_, Option<String>>(col)
                .map_err(self.err())
        };
        let last = match take {
            0 => None,
            _ => Some((text_at(take - 1, 1)?, text_at(take - 1, 0)?)),
        };
        let next = if more { Some(text_at(take, 1)?) } else { None };
        let token = from.next_token(&cols, chg, token, last, next);
        Ok(SyncBatch { deltas, token })
    }
}

/// Reads the object of `select` from `row`.
fn object_of(
    cols: &PgColumns,
    row: &tokio_postgres::Row,
    select: &sql::Select<PgColumns>,
) -> Result<ConnectorObject, tokio_postgres::Error> {
    select.object(cols, |i| row.try_get(i))
}
