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

/// The table's columns with what PostgreSQL says of their types, and PostgreSQL's SQL:
/// text values bound as `$N::text` and cast to the column's type, `TRUE`/`FALSE`,
/// `NULLS FIRST` ascending and `NULLS LAST` descending.
struct PgColumns {
    base: Columns,
    /// `pg_type.typcategory`: `N` numeric, `B` boolean, `S` string, `D` date/time, ….
    category: Vec<char>,
    /// The key column has a default (serial, identity): an insert may leave it out.
    key_has_default: bool,
}

impl PgColumns {
    fn ty(&self, c: usize) -> &str {
        &self.base.types[c]
    }

    /// `($n::text)::<type>`.
    fn typed(sql: &mut Sql<Self>, v: Option<String>, ty: &str) -> String {
        format!("({})::{ty}", sql.param(v))
    }
}

impl Dialect for PgColumns {
    type Value = Option<String>;
    type Cookie = Cookie;
    const TRUE: &'static str = "TRUE";
    const FALSE: &'static str = "FALSE";
    const ASC: &'static str = "ASC NULLS FIRST";
    const DESC: &'static str = "DESC NULLS LAST";
    const ECHOES_TOKEN: bool = true;

    fn cols(&self) -> &Columns {
        &self.base
    }

    fn placeholder(n: usize) -> String {
        format!("${n}::text")
    }

    fn null() -> Option<String> {
        None
    }

    fn string(s: String) -> Option<String> {
        Some(s)
    }

    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn bind(&self, sql: &mut Sql<Self>, c: usize, v: Option<String>) -> String {
        Self::typed(sql, v, self.ty(c))
    }

    fn out(&self, expr: String) -> String {
        format!("{expr}::text")
    }

    fn contains(&self, sql: &mut Sql<Self>, c: usize, s: &str) -> String {
        let p = sql.param(Some(s.to_owned()));
        format!("(strpos({}, {p}) > 0)", self.select(c))
    }

    fn starts_with(&self, sql: &mut Sql<Self>, c: usize, s: &str) -> String {
        let p = sql.param(Some(s.to_owned()));
        format!("starts_with({}, {p})", self.select(c))
    }

    fn operand(&self, sql: &mut Sql<Self>, c: usize, value: &FilterValue) -> String {
        let (text, ty) = match value {
            FilterValue::String(s) => (s.clone(), self.ty(c)),
            FilterValue::Integer(i) => (i.to_string(), self.ty(c)),
            // A fraction against an integer column compares as numeric.
            FilterValue::Float(f) if self.category[c] == 'N' => (f.to_string(), "numeric"),
            FilterValue::Float(f) => (f.to_string(), self.ty(c)),
            FilterValue::Bool(b) => (b.to_string(), self.ty(c)),
        };
        Self::typed(sql, Some(text), ty)
    }

    fn in_list(&self, c: usize, list: &str) -> String {
        format!(
            "({} IN (SELECT json_array_elements_text(({list})::json)))",
            self.select(c)
        )
    }

    fn limit(_sql: &mut Sql<Self>, n: Option<usize>) -> String {
        n.map_or_else(|| "ALL".to_owned(), |n| n.to_string())
    }

    fn offset(_sql: &mut Sql<Self>, n: usize) -> String {
        n.to_string()
    }

    /// Shaped by the type's category.
    fn json(&self, c: usize, text: Option<String>) -> Option<Value> {
        let text = text?;
        Some(match self.category[c] {
            'N' => match text.parse::<i64>() {
                Ok(i) => json!(i),
                Err(_) => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::String(text)),
            },
            'B' => match text.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(text),
            },
            _ => Value::String(text),
        })
    }

    fn uid(v: &Option<String>) -> String {
        v.clone().unwrap_or_default()
    }

    fn key_json(v: Option<String>) -> Value {
        json!(v)
    }

    fn token_value(v: &Value) -> Option<Option<String>> {
        match v {
            Value::Null => Some(None),
            Value::String(s) => Some(Some(s.clone())),
            Value::Number(n) => Some(Some(n.to_string())),
            _ => None,
        }
    }

    fn token_key(v: &Value) -> Option<Option<String>> {
        match v {
            Value::String(k) => Some(Some(k.clone())),
            _ => None,
        }
    }

    fn cookie(values: Vec<Option<String>>) -> Cookie {
        Cookie { pg: values }
    }

    fn cookie_values(cookie: Cookie) -> Vec<Option<String>> {
        cookie.pg
    }

    fn key_shown(v: &Option<String>) -> Option<String> {
        v.clone()
    }

    fn generates_key(&self) -> bool {
        !self.key_has_default && self.category[self.base.key] == 'S'
    }

    fn password_text(v: &Option<String>) -> Option<&str> {
        v.as_deref()
    }

    /// Whether `uid` can be a value of the key column (else no row has it).
    fn key_parses(&self, uid: &str) -> bool {
        self.category[self.base.key] != 'N' || uid.trim().parse::<f64>().is_ok()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::filter::parse as parse_filter;
    use crate::system::provisioner::{self, ObjectType};
    use crate::system::table::TableConnector;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    #[test]
    fn urls() {
        let (pg, loc) = parse_url("//db.example:6543/hr?user=u&password=p", None, None).unwrap();
        assert_eq!(loc, "postgresql://db.example:6543/hr");
        assert_eq!(pg.get_user(), Some("u"));
        assert_eq!(pg.get_dbname(), Some("hr"));
        assert_eq!(pg.get_password(), Some(&b"p"[..]));
        let (pg, loc) = parse_url("hr", Some("admin"), Some("pw")).unwrap();
        assert_eq!(loc, "postgresql://localhost:5432/hr");
        assert_eq!(pg.get_user(), Some("admin"));
        // Properties win over URL parameters.
        let (pg, _) = parse_url("//h/hr?user=u", Some("admin"), None).unwrap();
        assert_eq!(pg.get_user(), Some("admin"));
        assert!(parse_url("//h/", Some("u"), None)
            .unwrap_err()
            .contains("names no database"));
        assert!(parse_url("//h/db", None, None)
            .unwrap_err()
            .contains("needs a user"));
        assert!(parse_url("//h/db?sslmode=require", Some("u"), None)
            .unwrap_err()
            .contains("TLS"));
    }

    /// A PostgreSQL server of our own: initdb in a temporary directory, a free loopback
    /// port, stopped (by its data directory) when dropped.
    struct Server {
        dir: tempfile::TempDir,
        bin: PathBuf,
        child: Child,
        port: u16,
        as_postgres: bool,
    }

    fn command(bin: &Path, name: &str, as_postgres: bool) -> Command {
        if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(name));
            c
        } else {
            Command::new(bin.join(name))
        }
    }

    impl Server {
        /// `None` when PostgreSQL is not installed or does not start (the test then fails).
        fn start() -> Option<Server> {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .flatten()
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").exists())
                .collect();
            versions.sort();
            let bin = versions.pop()?;
            let uid = Command::new("id").arg("-u").output().ok()?;
            let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
            let dir = tempfile::tempdir().ok()?;
            if as_postgres {
                let ok = Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(dir.path())
                    .status()
                    .ok()?
                    .success();
                assert!(ok, "chown of the PostgreSQL test directory");
            }
            let data = dir.path().join("data");
            let out = command(&bin, "initdb", as_postgres)
                .arg("-D")
                .arg(&data)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .output()
                .expect("initdb");
            assert!(
                out.status.success(),
                "initdb: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let log = std::fs::File::create(dir.path().join("log")).ok()?;
            let child = command(&bin, "postgres", as_postgres)
                .arg("-D")
                .arg(&data)
                .args([
                    "-p",
                    &port.to_string(),
                    "-h",
                    "127.0.0.1",
                    "-c",
                    "fsync=off",
                ])
                .arg("-k")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("postgres");
            Some(Server {
                dir,
                bin,
                child,
                port,
                as_postgres,
            })
        }

        async fn client(&self) -> Client {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host("127.0.0.1")
                .port(self.port)
                .user("postgres")
                .dbname("postgres");
            for _ in 0..100 {
                if let Ok((client, conn)) = cfg.connect(NoTls).await {
                    tokio::spawn(conn);
                    return client;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            panic!("PostgreSQL did not start:\n{log}");
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = command(&self.bin, "pg_ctl", self.as_postgres)
                .arg("stop")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = self.child.wait();
        }
    }

    fn connector(port: u16, props: Value) -> TableConnector {
        let mut cfg = json!({
            "jdbcUrlTemplate": "jdbc:postgresql://%h:%p/%d",
            "host": "127.0.0.1",
            "port": port,
            "database": "postgres",
            "user": "postgres",
            "password": "unused",
        });
        for (k, v) in props.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let p = provisioner::parse(
            "pg",
            &json!({
                "connectorRef": {
                    "connectorName": "org.identityconnectors.databasetable.DatabaseTableConnector"
                },
                "poolConfigOption": {"maxObjects": 3, "maxIdle": 2},
                "configurationProperties": cfg,
            }),
        )
        .unwrap();
        TableConnector::new(&p).unwrap()
    }

    fn account() -> ObjectType {
        ObjectType::new("account", "__ACCOUNT__", vec![])
    }

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn against_a_real_postgresql() {
        let Some(server) = Server::start() else {
            panic!(
                "could not start a throwaway PostgreSQL: the table connector tests need the \
                 `postgresql` package; run `make test` (it installs it) instead of plain `cargo test`"
            );
        };
        let admin = server.client().await;
        admin
            .batch_execute(
                r#"
                CREATE TABLE "my ""users""" (
                    uid TEXT PRIMARY KEY,
                    firstname TEXT,
                    lastname TEXT,
                    email VARCHAR(255),
                    age INTEGER,
                    active BOOLEAN,
                    "group" TEXT,
                    password TEXT,
                    changed BIGINT
                );
                CREATE SEQUENCE chg;
                CREATE FUNCTION bump() RETURNS trigger AS $$
                BEGIN NEW.changed := nextval('chg'); RETURN NEW; END $$ LANGUAGE plpgsql;
                CREATE TRIGGER bump BEFORE INSERT OR UPDATE ON "my ""users"""
                    FOR EACH ROW EXECUTE FUNCTION bump();
                INSERT INTO "my ""users""" (uid, firstname, lastname, email, age, active, "group", password) VALUES
                    ('alice', 'Alice', 'Zed', 'alice@x.com', 30, true, 'a', 'pw-a'),
                    ('bob', 'Bob', 'Young', NULL, 25, false, 'b', NULL),
                    ('carol', 'Carol', 'Xu', 'carol@y.org', 41, NULL, 'a', 'pw-c');
                CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
                "#,
            )
            .await
            .unwrap();
        let c = connector(
            server.port,
            json!({"table": "my \"users\"", "keyColumn": "uid", "passwordColumn": "password",
                   "changeLogColumn": "changed"}),
        );
        let a = account();
        c.test().await.unwrap();

        // Read, types from the column types.
        let o = c.read(&a, "alice", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["__NAME__"], "alice");
        assert_eq!(o.attributes["age"], 30);
        assert_eq!(o.attributes["active"], true);
        assert!(!o.attributes.contains_key("password"));
        assert!(c.read(&a, "nobody", &[]).await.unwrap().is_none());

        // Every filter operator, pushed down.
        let cases: &[(&str, &[&str])] = &[
            ("true", &["alice", "bob", "carol"]),
            ("false", &[]),
            ("__UID__ eq 'bob'", &["bob"]),
            ("email co '@x'", &["alice"]),
            ("firstname sw 'Ca'", &["carol"]),
            ("lastname gt 'Xu'", &["alice", "bob"]),
            ("lastname ge 'Xu'", &["alice", "bob", "carol"]),
            ("lastname lt 'Young'", &["carol"]),
            ("lastname le 'Young'", &["bob", "carol"]),
            ("age gt 29", &["alice", "carol"]),
            ("age ge 30.5", &["carol"]),
            ("age le 25", &["bob"]),
            ("active eq true", &["alice"]),
            ("email pr", &["alice", "carol"]),
            ("!(email pr)", &["bob"]),
            ("!(active eq true)", &["bob", "carol"]),
            ("group eq 'a' and age gt 35", &["carol"]),
            ("group eq 'b' or age gt 35", &["bob", "carol"]),
            (r#"uid in '["bob","carol","nobody"]'"#, &["bob", "carol"]),
            ("firstname eq \"it's\" or lastname eq 'x\" OR 1=1 --'", &[]),
        ];
        for (filter, want) in cases {
            let f = parse_filter(filter).unwrap();
            let page = c
                .query(&a, Some(&f), &QueryOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{filter}: {e}"));
            let got: Vec<_> = page.objects.into_iter().map(|o| o.uid).collect();
            assert_eq!(got, *want, "{filter}");
        }
        let f = parse_filter("nosuch eq 1").unwrap();
        let e = c
            .query(&a, Some(&f), &QueryOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");

        let t0 = c.latest_sync_token(&a).await.unwrap();
        assert_eq!(t0, json!(3));

        // CRUD and errors.
        assert_eq!(
            c.create(
                &a,
                Some("dave"),
                attrs(json!({"age": "52", "active": false, "__PASSWORD__": "pw-d"}))
            )
            .await
            .unwrap(),
            "dave"
        );
        let e = c.create(&a, Some("dave"), Map::new()).await.unwrap_err();
        assert!(matches!(e, ConnectorError::AlreadyExists(_)), "{e:?}");
        let e = c
            .create(&a, Some("x"), attrs(json!({"age": "old"})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidAttribute(_)), "{e:?}");
        let e = c
            .create(&a, Some("x"), attrs(json!({"nosuch": 1})))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectorError::InvalidAttribute(ref m) if m.contains("'nosuch'")),
            "{e:?}"
        );
        let uid = c.create(&a, None, Map::new()).await.unwrap();
        assert!(uuid::Uuid::parse_str(&uid).is_ok(), "{uid}");
        c.delete(&a, &uid).await.unwrap();
        assert_eq!(
            c.update(&a, "bob", attrs(json!({"email": "bob@x.com", "age": null})))
                .await
                .unwrap(),
            "bob"
        );
        let o = c.read(&a, "bob", &[]).await.unwrap().unwrap();
        assert_eq!(o.attributes["email"], "bob@x.com");
        assert!(!o.attributes.contains_key("age"));
        assert_eq!(
            c.update(&a, "bob", attrs(json!({"__NAME__": "robert"})))
                .await
                .unwrap(),
            "robert"
        );
        let e = c
            .update(&a, "nobody", attrs(json!({"age": 1})))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");
        let e = c.delete(&a, "nobody").await.unwrap_err();
        assert!(matches!(e, ConnectorError::NotFound(_)), "{e:?}");

        // Authenticate.
        assert_eq!(c.authenticate(&a, "dave", "pw-d").await.unwrap(), "dave");
        let e = c.authenticate(&a, "dave", "nope").await.unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidCredential(_)), "{e:?}");

        // liveSync: dave created, robert renamed (an update), the uuid row deleted (unseen).
        let b = c.sync(&a, &t0, 100).await.unwrap();
        let got: Vec<_> = b
            .deltas
            .iter()
            .map(|d| match d {
                SyncDelta::CreateOrUpdate(o) => o.uid.clone(),
                SyncDelta::Delete(u) => format!("-{u}"),
            })
            .collect();
        assert_eq!(got, ["dave", "robert"]);
        let mut token = t0.clone();
        let mut n = 0;
        loop {
            let b = c.sync(&a, &token, 1).await.unwrap();
            token = b.token;
            if b.deltas.is_empty() {
                break;
            }
            n += b.deltas.len();
        }
        assert_eq!(n, 2);

        // Paging with sorts across calls: the same as one unpaged query.
        for i in 0..20 {
            c.create(
                &a,
                Some(&format!("u{i:02}")),
                attrs(json!({"age": i % 3, "lastname": if i % 4 == 0 { Value::Null } else { json!(format!("n{}", i % 5)) }})),
            )
            .await
            .unwrap();
        }
        for sort in [
            vec![],
            vec![("age".to_owned(), false)],
            vec![("lastname".to_owned(), true), ("age".to_owned(), false)],
            vec![("lastname".to_owned(), false)],
        ] {
            let all = c
                .query(
                    &a,
                    None,
                    &QueryOptions {
                        sort: sort.clone(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let want: Vec<_> = all.objects.into_iter().map(|o| o.uid).collect();
            let mut seen = Vec::new();
            let mut cookie = None;
            loop {
                let page = c
                    .query(
                        &a,
                        None,
                        &QueryOptions {
                            page_size: 4,
                            cookie: cookie.clone(),
                            sort: sort.clone(),
                            count: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                assert_eq!(page.total, Some(want.len() as i64));
                seen.extend(page.objects.into_iter().map(|o| o.uid));
                match page.cookie {
                    Some(next) => cookie = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, want, "{sort:?}");
        }

        // A serial key numbers itself; schema types; unknown table.
        let items = connector(server.port, json!({"table": "items", "keyColumn": "id"}));
        assert_eq!(
            items
                .create(&a, None, attrs(json!({"name": "one"})))
                .await
                .unwrap(),
            "1"
        );
        assert!(items.read(&a, "not-a-number", &[]).await.unwrap().is_none());
        let s = items.schema().await.unwrap();
        assert_eq!(s["account"]["properties"]["id"]["type"], "integer");
        assert!(matches!(
            items.latest_sync_token(&a).await.unwrap_err(),
            ConnectorError::NotSupported(_)
        ));
        let none = connector(server.port, json!({"table": "nosuch", "keyColumn": "id"}));
        let e = none.test().await.unwrap_err();
        assert!(
            matches!(e, ConnectorError::Config(ref m) if m.contains("does not exist")),
            "{e:?}"
        );
        // A server that is not there.
        let down = connector(1, json!({"table": "items", "keyColumn": "id"}));
        let e = down.test().await.unwrap_err();
        assert!(matches!(e, ConnectorError::Unavailable(_)), "{e:?}");
    }
}
