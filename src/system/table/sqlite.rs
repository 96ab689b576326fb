//! SQLite: the pool of connections (WAL, busy timeout, on the blocking pool), SQLite's SQL
//! dialect, its error mapping, and the connector over a SQLite table.

use super::*;

/// The columns of a SQLite table, and SQLite's SQL: typed values bound as `?N`, `1`/`0`,
/// SQLite's own NULL order.
pub(super) struct LiteColumns {
    pub(super) base: Columns,
    /// Declared with TEXT affinity (`CHAR`, `CLOB`, `TEXT` in the type).
    pub(super) text: Vec<bool>,
}

impl LiteColumns {
    pub(super) fn load(conn: &Connection, cfg: &Config) -> ConnectorResult<LiteColumns> {
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
pub(super) fn sql_error(e: rusqlite::Error, table: &str) -> ConnectorError {
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
pub(super) enum KeyValue {
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
    pub(super) fn from_sql(v: SqlValue) -> KeyValue {
        match v {
            SqlValue::Null => KeyValue::Null,
            SqlValue::Integer(i) => KeyValue::Integer(i),
            SqlValue::Real(r) => KeyValue::Real(r),
            SqlValue::Text(t) => KeyValue::Text(t),
            SqlValue::Blob(b) => KeyValue::Blob(b),
        }
    }

    pub(super) fn to_sql(&self) -> SqlValue {
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
pub(super) struct Cookie {
    pub(super) v: Vec<KeyValue>,
}

/// Reads the object of `select` from `row`.
pub(super) fn object_of(
    cols: &LiteColumns,
    row: &rusqlite::Row<'_>,
    select: &sql::Select<LiteColumns>,
) -> rusqlite::Result<ConnectorObject> {
    select.object(cols, |i| row.get::<_, SqlValue>(i))
}

/// Idle connections and the bound on open ones.
pub(super) struct Pool {
    pub(super) cfg: Config,
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) max_idle: usize,
    pub(super) max_wait: Duration,
}

impl Pool {
    pub(super) fn open(&self) -> ConnectorResult<Connection> {
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

    pub(super) fn take(&self) -> ConnectorResult<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => self.open(),
        }
    }

    pub(super) fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

/// The connector over a SQLite table.
pub(super) struct SqliteTable {
    pub(super) pool: Arc<Pool>,
}

impl SqliteTable {
    /// Runs `f` with a pooled connection and the table's columns on the blocking pool.
    pub(super) async fn with<T, F>(&self, f: F) -> ConnectorResult<T>
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

/// The parameters of a statement, as rusqlite binds them.
pub(super) fn params(
    values: &[SqlValue],
) -> rusqlite::ParamsFromIter<std::slice::Iter<'_, SqlValue>> {
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
