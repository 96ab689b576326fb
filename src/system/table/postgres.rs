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
use super::{
    change_log_required, check_class, field_column, quote, Columns, Config, MAX_FILTER_DEPTH,
};
use crate::crest::filter::{CompareOp, FilterValue, QueryFilter};

use base64::Engine as _;
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

/// The table's columns with what PostgreSQL says of their types.
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

    /// `column::text`.
    fn text(&self, c: usize) -> String {
        format!("{}::text", self.base.q(c))
    }

    /// Whether `uid` can be a value of the key column (else no row has it).
    fn key_parses(&self, uid: &str) -> bool {
        self.category[self.base.key] != 'N' || uid.trim().parse::<f64>().is_ok()
    }

    /// A column's text as JSON.
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

/// Text parameters, each cast in SQL.
#[derive(Default)]
struct PgSql {
    params: Vec<Option<String>>,
}

impl PgSql {
    /// `$n::text`.
    fn param(&mut self, v: Option<String>) -> String {
        self.params.push(v);
        format!("${}::text", self.params.len())
    }

    /// `($n::text)::<type>`.
    fn typed(&mut self, v: Option<String>, ty: &str) -> String {
        format!("({})::{ty}", self.param(v))
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A JSON value as the text of a column value; `None` is NULL.
fn to_text(column: &str, value: &Value) -> ConnectorResult<Option<String>> {
    Ok(match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.len() == 1 => to_text(column, &items[0])?,
        Value::Array(items) => {
            return Err(ConnectorError::InvalidAttribute(format!(
                "the column '{column}' holds one value, not {}",
                items.len()
            )))
        }
        Value::Object(_) => {
            return Err(ConnectorError::InvalidAttribute(format!(
                "the column '{column}' holds one value, not an object"
            )))
        }
    })
}

fn where_pg(
    filter: &QueryFilter,
    cols: &PgColumns,
    sql: &mut PgSql,
    depth: usize,
) -> ConnectorResult<String> {
    if depth > MAX_FILTER_DEPTH {
        return Err(ConnectorError::InvalidAttribute(format!(
            "filter nested deeper than {MAX_FILTER_DEPTH} levels"
        )));
    }
    Ok(match filter {
        QueryFilter::True => "TRUE".into(),
        QueryFilter::False => "FALSE".into(),
        QueryFilter::And(items) | QueryFilter::Or(items) => {
            let (joiner, empty) = match filter {
                QueryFilter::And(_) => (" AND ", "TRUE"),
                _ => (" OR ", "FALSE"),
            };
            if items.is_empty() {
                return Ok(empty.into());
            }
            let parts = items
                .iter()
                .map(|f| where_pg(f, cols, sql, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            format!("({})", parts.join(joiner))
        }
        QueryFilter::Not(inner) => {
            format!("(({}) IS NOT TRUE)", where_pg(inner, cols, sql, depth + 1)?)
        }
        QueryFilter::Present(field) => {
            let c = field_column(&cols.base, field)?;
            format!("({} IS NOT NULL)", cols.base.q(c))
        }
        QueryFilter::Compare { field, op, value } => {
            let c = field_column(&cols.base, field)?;
            let col = cols.base.q(c);
            match (op, value) {
                (CompareOp::Co, FilterValue::String(s)) => {
                    let p = sql.param(Some(s.clone()));
                    format!("(strpos({}, {p}) > 0)", cols.text(c))
                }
                (CompareOp::Sw, FilterValue::String(s)) => {
                    let p = sql.param(Some(s.clone()));
                    format!("starts_with({}, {p})", cols.text(c))
                }
                (CompareOp::Co | CompareOp::Sw, _) => "FALSE".into(),
                _ => {
                    let rel = match op {
                        CompareOp::Eq => "=",
                        CompareOp::Lt => "<",
                        CompareOp::Le => "<=",
                        CompareOp::Gt => ">",
                        _ => ">=",
                    };
                    let (text, ty) = match value {
                        FilterValue::String(s) => (s.clone(), cols.ty(c).to_owned()),
                        FilterValue::Integer(i) => (i.to_string(), cols.ty(c).to_owned()),
                        // A fraction against an integer column compares as numeric.
                        FilterValue::Float(f) if cols.category[c] == 'N' => {
                            (f.to_string(), "numeric".to_owned())
                        }
                        FilterValue::Float(f) => (f.to_string(), cols.ty(c).to_owned()),
                        FilterValue::Bool(b) => (b.to_string(), cols.ty(c).to_owned()),
                    };
                    let p = sql.typed(Some(text), &ty);
                    format!("({col} {rel} {p})")
                }
            }
        }
        QueryFilter::In { field, values } => {
            let c = field_column(&cols.base, field)?;
            if values.is_empty() {
                return Ok("FALSE".into());
            }
            let list = serde_json::to_string(values)
                .map_err(|e| ConnectorError::Other(format!("encoding an in list: {e}")))?;
            let p = sql.param(Some(list));
            format!(
                "({} IN (SELECT json_array_elements_text(({p})::json)))",
                cols.text(c)
            )
        }
    })
}

/// The cookie of a page: the order values (as text) of its last row.
#[derive(Serialize, Deserialize)]
struct Cookie {
    pg: Vec<Option<String>>,
}

fn encode_cookie(values: Vec<Option<String>>) -> String {
    let json = serde_json::to_vec(&Cookie { pg: values }).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cookie(text: &str, len: usize) -> ConnectorResult<Vec<Option<String>>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cookie>(&b).ok())
        .map(|c| c.pg)
        .filter(|v| v.len() == len)
        .ok_or_else(|| {
            ConnectorError::InvalidAttribute(
                "the paged results cookie is not one this connector returned for this query".into(),
            )
        })
}

/// Rows after `last` in `order` (column index, ascending?), NULLs first ascending.
fn after_pg(
    cols: &PgColumns,
    order: &[(usize, bool)],
    last: &[Option<String>],
    sql: &mut PgSql,
) -> String {
    let mut ors = Vec::new();
    for i in 0..order.len() {
        let (c, asc) = order[i];
        let col = cols.base.q(c);
        let beyond = match (&last[i], asc) {
            (None, true) => format!("{col} IS NOT NULL"),
            (None, false) => continue,
            (Some(v), true) => format!("{col} > {}", sql.typed(Some(v.clone()), cols.ty(c))),
            (Some(v), false) => format!(
                "({col} < {} OR {col} IS NULL)",
                sql.typed(Some(v.clone()), cols.ty(c))
            ),
        };
        let mut ands: Vec<String> = order[..i]
            .iter()
            .zip(last)
            .map(|(&(c, _), v)| match v {
                None => format!("{} IS NULL", cols.base.q(c)),
                Some(v) => format!(
                    "{} = {}",
                    cols.base.q(c),
                    sql.typed(Some(v.clone()), cols.ty(c))
                ),
            })
            .collect();
        ands.push(beyond);
        ors.push(format!("({})", ands.join(" AND ")));
    }
    if ors.is_empty() {
        "FALSE".into()
    } else {
        format!("({})", ors.join(" OR "))
    }
}

/// An object from a row: the key text at 0, `returned` from `first`.
fn object_of(
    cols: &PgColumns,
    row: &tokio_postgres::Row,
    first: usize,
    returned: &[(usize, String)],
) -> Result<ConnectorObject, tokio_postgres::Error> {
    let uid: Option<String> = row.try_get(0)?;
    let mut attributes = Map::new();
    for (k, (c, name)) in returned.iter().enumerate() {
        if let Some(v) = cols.json(*c, row.try_get(first + k)?) {
            attributes.insert(name.clone(), v);
        }
    }
    Ok(ConnectorObject {
        uid: uid.unwrap_or_default(),
        attributes,
    })
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
        let permit = tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                ConnectorError::Timeout(format!(
                    "no database connection became free within {} ms (poolConfigOption.maxWait)",
                    self.max_wait.as_millis()
                ))
            })?
            .map_err(|_| ConnectorError::Unavailable("the connection pool is closed".into()))?;
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
        if rows.is_empty() {
            return Err(ConnectorError::Config(format!(
                "the table '{}' does not exist in {}",
                self.cfg.table, self.cfg.location
            )));
        }
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
        let cfg = &self.cfg;
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
        let text = category.iter().map(|&c| c == 'S').collect();
        let key_has_default = defaults[key];
        Ok((
            conn,
            PgColumns {
                base: Columns {
                    names,
                    text,
                    types,
                    key,
                    password,
                    change_log,
                    table: quote(&cfg.table),
                    table_name: cfg.table.clone(),
                },
                category,
                key_has_default,
            },
        ))
    }

    fn not_found(&self, uid: &str) -> ConnectorError {
        ConnectorError::NotFound(format!(
            "no row with key '{uid}' in the table '{}'",
            self.cfg.table
        ))
    }
}

/// Column → text of a write, refusing two different values for one column.
fn assignments(
    cols: &PgColumns,
    attributes: &Map<String, Value>,
) -> ConnectorResult<std::collections::BTreeMap<usize, Option<String>>> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in attributes {
        let c = cols.base.write_column(k)?;
        let value = to_text(&cols.base.names[c], v)?;
        if let Some(prev) = out.get(&c) {
            if *prev != value {
                return Err(ConnectorError::InvalidAttribute(format!(
                    "two different values for the column '{}'",
                    cols.base.names[c]
                )));
            }
        }
        out.insert(c, value);
    }
    Ok(out)
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
        let b = &cols.base;
        let mut properties = Map::new();
        for (i, name) in b.names.iter().enumerate() {
            let (kind, native) = match cols.category[i] {
                'N' if b.types[i].contains("int") => ("integer", "long"),
                'N' => ("number", "double"),
                'B' => ("boolean", "boolean"),
                _ => ("string", "string"),
            };
            let prop = if i == b.key {
                json!({"type": kind, "nativeName": NAME, "nativeType": native, "required": true})
            } else if Some(i) == b.password {
                json!({"type": "string", "nativeName": PASSWORD,
                       "nativeType": "JAVA_TYPE_GUARDEDSTRING",
                       "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]})
            } else {
                json!({"type": kind, "nativeName": name, "nativeType": native})
            };
            properties.insert(name.clone(), prop);
        }
        let mut out = Map::new();
        out.insert(
            "account".into(),
            json!({
                "$schema": "http://json-schema.org/draft-03/schema",
                "id": "__ACCOUNT__",
                "type": "object",
                "nativeType": "__ACCOUNT__",
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
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        let Some(pw) = cols.base.password else {
            return Err(ConnectorError::NotSupported(format!(
                "the table '{}' has no password column (passwordColumn is not set)",
                self.cfg.table
            )));
        };
        let invalid = || ConnectorError::InvalidCredential("invalid username or password".into());
        if !cols.key_parses(username) {
            return Err(invalid());
        }
        let b = &cols.base;
        let mut sql = PgSql::default();
        let k = sql.typed(Some(username.to_owned()), cols.ty(b.key));
        let text = format!(
            "SELECT {}, {} FROM {} WHERE {} = {k}",
            cols.text(b.key),
            cols.text(pw),
            b.table,
            b.q(b.key)
        );
        let rows = conn.query(&text, &sql.refs()).await.map_err(self.err())?;
        for row in rows {
            let stored: Option<String> = row.try_get(1).map_err(self.err())?;
            if stored.is_some_and(|s| !s.is_empty() && s == password) {
                let uid: Option<String> = row.try_get(0).map_err(self.err())?;
                return Ok(uid.unwrap_or_default());
            }
        }
        Err(invalid())
    }

    async fn create(
        &self,
        class: &ObjectClass,
        uid: Option<&str>,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        let b = &cols.base;
        let mut values = assignments(&cols, &attributes)?;
        match (uid, values.get(&b.key)) {
            (Some(u), Some(Some(v))) if v != u => {
                return Err(ConnectorError::InvalidAttribute(format!(
                    "the id '{u}' and the '{}' value '{v}' differ",
                    b.names[b.key]
                )))
            }
            (Some(u), _) => {
                values.insert(b.key, Some(u.to_owned()));
            }
            (None, None) | (None, Some(None)) => {
                values.remove(&b.key);
                if !cols.key_has_default && cols.category[b.key] == 'S' {
                    values.insert(b.key, Some(uuid::Uuid::new_v4().to_string()));
                }
            }
            (None, Some(Some(_))) => {}
        }
        let mut sql = PgSql::default();
        let names: Vec<String> = values.keys().map(|&c| b.q(c)).collect();
        let placeholders: Vec<String> = values
            .iter()
            .map(|(&c, v)| sql.typed(v.clone(), cols.ty(c)))
            .collect();
        let text = if names.is_empty() {
            format!(
                "INSERT INTO {} DEFAULT VALUES RETURNING {}",
                b.table,
                cols.text(b.key)
            )
        } else {
            format!(
                "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
                b.table,
                names.join(", "),
                placeholders.join(", "),
                cols.text(b.key)
            )
        };
        let row = conn
            .query_one(&text, &sql.refs())
            .await
            .map_err(self.err())?;
        let key: Option<String> = row.try_get(0).map_err(self.err())?;
        key.ok_or_else(|| {
            ConnectorError::InvalidAttribute(format!(
                "the key column '{}' needs a value (__NAME__)",
                b.names[b.key]
            ))
        })
    }

    async fn read(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: &[String],
    ) -> ConnectorResult<Option<ConnectorObject>> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        if !cols.key_parses(uid) {
            return Ok(None);
        }
        let b = &cols.base;
        let returned = b.returned(attributes);
        let mut select = vec![cols.text(b.key)];
        select.extend(returned.iter().map(|(c, _)| cols.text(*c)));
        let mut sql = PgSql::default();
        let k = sql.typed(Some(uid.to_owned()), cols.ty(b.key));
        let text = format!(
            "SELECT {} FROM {} WHERE {} = {k} LIMIT 1",
            select.join(", "),
            b.table,
            b.q(b.key)
        );
        let row = conn
            .query_opt(&text, &sql.refs())
            .await
            .map_err(self.err())?;
        row.map(|r| object_of(&cols, &r, 1, &returned))
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
        let b = &cols.base;
        let values = assignments(&cols, &attributes)?;
        if values.get(&b.key) == Some(&None) {
            return Err(ConnectorError::InvalidAttribute(format!(
                "the key column '{}' cannot be cleared",
                b.names[b.key]
            )));
        }
        if !cols.key_parses(uid) {
            return Err(self.not_found(uid));
        }
        let mut sql = PgSql::default();
        let k = sql.typed(Some(uid.to_owned()), cols.ty(b.key));
        let text = if values.is_empty() {
            format!(
                "SELECT {} FROM {} WHERE {} = {k}",
                cols.text(b.key),
                b.table,
                b.q(b.key)
            )
        } else {
            let sets: Vec<String> = values
                .iter()
                .map(|(&c, v)| format!("{} = {}", b.q(c), sql.typed(v.clone(), cols.ty(c))))
                .collect();
            format!(
                "UPDATE {} SET {} WHERE {} = {k} RETURNING {}",
                b.table,
                sets.join(", "),
                b.q(b.key),
                cols.text(b.key)
            )
        };
        let rows = conn.query(&text, &sql.refs()).await.map_err(self.err())?;
        match rows.first() {
            Some(r) => Ok(r
                .try_get::<_, Option<String>>(0)
                .map_err(self.err())?
                .unwrap_or_default()),
            None => Err(self.not_found(uid)),
        }
    }

    async fn delete(&self, class: &ObjectClass, uid: &str) -> ConnectorResult<()> {
        check_class(class)?;
        let (conn, cols) = self.open().await?;
        if !cols.key_parses(uid) {
            return Err(self.not_found(uid));
        }
        let b = &cols.base;
        let mut sql = PgSql::default();
        let k = sql.typed(Some(uid.to_owned()), cols.ty(b.key));
        let n = conn
            .execute(
                &format!("DELETE FROM {} WHERE {} = {k}", b.table, b.q(b.key)),
                &sql.refs(),
            )
            .await
            .map_err(self.err())?;
        if n == 0 {
            return Err(self.not_found(uid));
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
        let b = &cols.base;
        let mut sql = PgSql::default();
        let condition = match filter {
            Some(f) => where_pg(f, &cols, &mut sql, 0)?,
            None => "TRUE".into(),
        };
        let mut order: Vec<(usize, bool)> = Vec::new();
        for (attr, asc) in &options.sort {
            order.push((b.read_column(attr)?, *asc));
        }
        order.push((b.key, true));
        let total = if options.count {
            let text = format!("SELECT count(*) FROM {} WHERE {condition}", b.table);
            let row = conn
                .query_one(&text, &sql.refs())
                .await
                .map_err(self.err())?;
            Some(row.try_get::<_, i64>(0).map_err(self.err())?)
        } else {
            None
        };
        let mut condition = condition;
        let mut offset = options.offset;
        if let Some(cookie) = &options.cookie {
            let last = decode_cookie(cookie, order.len())?;
            condition = format!(
                "{condition} AND {}",
                after_pg(&cols, &order, &last, &mut sql)
            );
            offset = 0;
        }
        let returned = b.returned(&options.attributes);
        let mut select = vec![cols.text(b.key)];
        select.extend(order.iter().map(|(c, _)| cols.text(*c)));
        let first = select.len();
        select.extend(returned.iter().map(|(c, _)| cols.text(*c)));
        let order_by: Vec<String> = order
            .iter()
            .map(|(c, asc)| {
                format!(
                    "{} {}",
                    b.q(*c),
                    if *asc {
                        "ASC NULLS FIRST"
                    } else {
                        "DESC NULLS LAST"
                    }
                )
            })
            .collect();
        let limit = if options.page_size == 0 {
            "ALL".to_owned()
        } else {
            options.page_size.saturating_add(1).to_string()
        };
        let text = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {} LIMIT {limit} OFFSET {offset}",
            select.join(", "),
            b.table,
            order_by.join(", ")
        );
        let rows = conn.query(&text, &sql.refs()).await.map_err(self.err())?;
        let more = options.page_size > 0 && rows.len() > options.page_size;
        let take = if more { options.page_size } else { rows.len() };
        let mut objects = Vec::with_capacity(take);
        for row in &rows[..take] {
            objects.push(object_of(&cols, row, first, &returned).map_err(self.err())?);
        }
        let cookie = if more {
            let row = &rows[take - 1];
            let values = (1..first)
                .map(|i| row.try_get::<_, Option<String>>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(self.err())?;
            Some(encode_cookie(values))
        } else {
            None
        };
        let remaining = if !more {
            Some(0)
        } else if options.cookie.is_none() {
            total.map(|t| (t - (options.offset + objects.len()) as i64).max(0))
        } else {
            None
        };
        Ok(QueryPage {
            objects,
            cookie,
            remaining,
            total,
        })
    }

    async fn latest_sync_token(&self, class: &ObjectClass) -> ConnectorResult<Value> {
        check_class(class)?;
        change_log_required(&self.cfg)?;
        let (conn, cols) = self.open().await?;
        let Some(chg) = cols.base.change_log else {
            return Err(ConnectorError::NotSupported("no changeLogColumn".into()));
        };
        let row = conn
            .query_one(
                &format!(
                    "SELECT max({})::text FROM {}",
                    cols.base.q(chg),
                    cols.base.table
                ),
                &[],
            )
            .await
            .map_err(self.err())?;
        let max: Option<String> = row.try_get(0).map_err(self.err())?;
        Ok(match cols.json(chg, max) {
            None => json!({"changeLog": null}),
            Some(v) => v,
        })
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
        let bad = || {
            ConnectorError::InvalidAttribute(format!(
                "'{token}' is not a liveSync token of this table (a changeLogColumn value)"
            ))
        };
        let scalar = |v: &Value| -> ConnectorResult<Option<String>> {
            match v {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                Value::Number(n) => Ok(Some(n.to_string())),
                _ => Err(bad()),
            }
        };
        let (from, after_key) = match token {
            Value::Object(m) => {
                let from = scalar(m.get("changeLog").ok_or_else(bad)?)?;
                let key = match m.get("key") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(k)) => Some(k.clone()),
                    Some(_) => return Err(bad()),
                };
                (from, key)
            }
            other => (scalar(other)?, None),
        };
        let (conn, cols) = self.open().await?;
        let b = &cols.base;
        let Some(chg_col) = b.change_log else {
            return Err(ConnectorError::NotSupported("no changeLogColumn".into()));
        };
        let chg = b.q(chg_col);
        let key = b.q(b.key);
        let mut sql = PgSql::default();
        let condition = match (&from, &after_key) {
            (None, _) => format!("{chg} IS NOT NULL"),
            (Some(v), None) => format!("{chg} > {}", sql.typed(Some(v.clone()), cols.ty(chg_col))),
            (Some(v), Some(k)) => {
                let p = sql.typed(Some(v.clone()), cols.ty(chg_col));
                let kp = sql.typed(Some(k.clone()), cols.ty(b.key));
                format!("({chg} > {p} OR ({chg} = {p} AND {key} > {kp}))")
            }
        };
        let returned = b.returned(&[]);
        let mut select = vec![cols.text(b.key), cols.text(chg_col)];
        select.extend(returned.iter().map(|(c, _)| cols.text(*c)));
        let limit = if max == 0 {
            "ALL".to_owned()
        } else {
            max.saturating_add(1).to_string()
        };
        let text = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {chg} ASC, {key} ASC LIMIT {limit}",
            select.join(", "),
            b.table
        );
        let rows = conn.query(&text, &sql.refs()).await.map_err(self.err())?;
        let more = max > 0 && rows.len() > max;
        let take = if more { max } else { rows.len() };
        let mut deltas = Vec::with_capacity(take);
        for row in &rows[..take] {
            deltas.push(SyncDelta::CreateOrUpdate(
                object_of(&cols, row, 2, &returned).map_err(self.err())?,
            ));
        }
        let text_at = |i: usize, col: usize| -> ConnectorResult<Option<String>> {
            rows[i]
                .try_get::<_, Option<String>>(col)
                .map_err(self.err())
        };
        let token = if take == 0 {
            match (&from, &after_key) {
                (None, _) => json!({"changeLog": null}),
                (Some(_), None) => token.clone(),
                (Some(_), Some(_)) => token.clone(),
            }
        } else {
            let last_value = text_at(take - 1, 1)?;
            let value_json = cols
                .json(chg_col, last_value.clone())
                .unwrap_or(Value::Null);
            if more && text_at(take, 1)? == last_value {
                // The batch ends inside a run of equal values: remember the key too.
                json!({"changeLog": value_json, "key": text_at(take - 1, 0)?})
            } else {
                value_json
            }
        };
        Ok(SyncBatch { deltas, token })
    }
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
