//! The SQL both databases share, written once over a [`Dialect`]: filters as a `WHERE`,
//! `ORDER BY` and keyset paging, the statements of each operation, the paging cookie and
//! the liveSync token. A dialect says how its database spells what differs: placeholders
//! (`?N` or `$N::text`), `1`/`0` or `TRUE`/`FALSE`, casts to the column's type, how a
//! value is read back, `co`/`sw`, `in` lists, NULL ordering and `LIMIT`/`OFFSET`.
//! Running the statements (a rusqlite pool on the blocking pool, or tokio-postgres) and
//! the meaning of each database's errors stay with each database.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::super::connector::*;
use super::{Columns, ACCOUNT, MAX_FILTER_DEPTH};
use crate::crest::filter::{CompareOp, FilterValue, JsonPointer, QueryFilter};

/// How one database spells the SQL of the table connector; implemented by its columns.
pub(super) trait Dialect: Sized {
    /// A column value as bound and as read back (a NULL included).
    type Value: Clone + PartialEq;
    /// The JSON of a paging cookie.
    type Cookie: Serialize + DeserializeOwned;
    /// Always and never true.
    const TRUE: &'static str;
    const FALSE: &'static str;
    /// `ORDER BY` directions: NULL sorts first ascending, last descending.
    const ASC: &'static str;
    const DESC: &'static str;
    /// Whether `sync` answers the token it was given (rather than the token it read)
    /// when nothing changed.
    const ECHOES_TOKEN: bool;

    fn cols(&self) -> &Columns;
    /// The placeholder of the `n`th parameter (from 1).
    fn placeholder(n: usize) -> String;
    fn null() -> Self::Value;
    fn string(s: String) -> Self::Value;
    /// A JSON string, number or boolean as a column value.
    fn scalar(v: &Value) -> Self::Value;
    /// `v` as a value of column `c` (bound, cast as the database needs).
    fn bind(&self, sql: &mut Sql<Self>, c: usize, v: Self::Value) -> String;
    /// The expression as it is read back.
    fn out(&self, expr: String) -> String;
    /// `co` and `sw` with a string.
    fn contains(&self, sql: &mut Sql<Self>, c: usize, s: &str) -> String;
    fn starts_with(&self, sql: &mut Sql<Self>, c: usize, s: &str) -> String;
    /// The right-hand side of `=`, `<`, … with `value`.
    fn operand(&self, sql: &mut Sql<Self>, c: usize, value: &FilterValue) -> String;
    /// Column `c` is one of the JSON array (text) bound as `list`.
    fn in_list(&self, c: usize, list: &str) -> String;
    /// `LIMIT` (`None`: no limit) and `OFFSET` values.
    fn limit(sql: &mut Sql<Self>, n: Option<usize>) -> String;
    fn offset(sql: &mut Sql<Self>, n: usize) -> String;
    /// A value of column `c` as JSON; `None` for NULL.
    fn json(&self, c: usize, v: Self::Value) -> Option<Value>;
    /// A key value as a uid.
    fn uid(v: &Self::Value) -> String;
    /// The key in a token.
    fn key_json(v: Self::Value) -> Value;
    /// The change-log value of a token and its key (`None`: not one of ours).
    fn token_value(v: &Value) -> Option<Self::Value>;
    fn token_key(v: &Value) -> Option<Self::Value>;
    fn cookie(values: Vec<Self::Value>) -> Self::Cookie;
    fn cookie_values(cookie: Self::Cookie) -> Vec<Self::Value>;
    /// A key value as the id it must equal on create (`None`: it does not conflict).
    fn key_shown(v: &Self::Value) -> Option<String>;
    /// Whether a create without a key gets a UUID (else the database numbers it).
    fn generates_key(&self) -> bool;
    /// Password column text, for `authenticate`.
    fn password_text(v: &Self::Value) -> Option<&str>;
    /// Whether `uid` can be a key value at all (else no row has it).
    fn key_parses(&self, _uid: &str) -> bool {
        true
    }

    fn is_null(v: &Self::Value) -> bool {
        *v == Self::null()
    }

    /// Column `c` as it is read back.
    fn select(&self, c: usize) -> String {
        self.out(self.cols().q(c))
    }
}

/// The bound parameters of a statement.
pub(super) struct Sql<D: Dialect> {
    pub params: Vec<D::Value>,
}

impl<D: Dialect> Sql<D> {
    pub fn new() -> Self {
        Sql { params: Vec::new() }
    }

    pub fn param(&mut self, value: D::Value) -> String {
        self.params.push(value);
        D::placeholder(self.params.len())
    }
}

/// A JSON value for a column; `null` and `[]` are NULL.
fn column_value<D: Dialect>(column: &str, value: &Value) -> ConnectorResult<D::Value> {
    Ok(match value {
        Value::Null => D::null(),
        Value::Array(items) if items.is_empty() => D::null(),
        Value::Array(items) if items.len() == 1 => column_value::<D>(column, &items[0])?,
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
        scalar => D::scalar(scalar),
    })
}

/// Column → value of a write, refusing two different values for one column.
fn assignments<D: Dialect>(
    d: &D,
    attributes: &Map<String, Value>,
) -> ConnectorResult<BTreeMap<usize, D::Value>> {
    let cols = d.cols();
    let mut out: BTreeMap<usize, D::Value> = BTreeMap::new();
    for (k, v) in attributes {
        let c = cols.write_column(k)?;
        let value = column_value::<D>(&cols.names[c], v)?;
        if let Some(prev) = out.get(&c) {
            if *prev != value {
                return Err(ConnectorError::InvalidAttribute(format!(
                    "two different values for the column '{}'",
                    cols.names[c]
                )));
            }
        }
        out.insert(c, value);
    }
    Ok(out)
}

fn field_column(cols: &Columns, field: &JsonPointer) -> ConnectorResult<usize> {
    match field.tokens() {
        [one] => cols.read_column(one),
        _ => Err(ConnectorError::InvalidAttribute(format!(
            "'{field}' is not a column of the table '{}'",
            cols.table_name
        ))),
    }
}

/// The `WHERE` expression of a filter (true, false or NULL per row; NULL is no match).
fn where_sql<D: Dialect>(
    d: &D,
    filter: &QueryFilter,
    sql: &mut Sql<D>,
    depth: usize,
) -> ConnectorResult<String> {
    if depth > MAX_FILTER_DEPTH {
        return Err(ConnectorError::InvalidAttribute(format!(
            "filter nested deeper than {MAX_FILTER_DEPTH} levels"
        )));
    }
    let cols = d.cols();
    Ok(match filter {
        QueryFilter::True => D::TRUE.into(),
        QueryFilter::False => D::FALSE.into(),
        QueryFilter::And(items) | QueryFilter::Or(items) => {
            let (joiner, empty) = match filter {
                QueryFilter::And(_) => (" AND ", D::TRUE),
                _ => (" OR ", D::FALSE),
            };
            if items.is_empty() {
                return Ok(empty.into());
            }
            let parts = items
                .iter()
                .map(|f| where_sql(d, f, sql, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            format!("({})", parts.join(joiner))
        }
        QueryFilter::Not(inner) => {
            format!("(({}) IS NOT TRUE)", where_sql(d, inner, sql, depth + 1)?)
        }
        QueryFilter::Present(field) => {
            let c = field_column(cols, field)?;
            format!("({} IS NOT NULL)", cols.q(c))
        }
        QueryFilter::Compare { field, op, value } => {
            let c = field_column(cols, field)?;
            match (op, value) {
                (CompareOp::Co, FilterValue::String(s)) => d.contains(sql, c, s),
                (CompareOp::Sw, FilterValue::String(s)) => d.starts_with(sql, c, s),
                (CompareOp::Co | CompareOp::Sw, _) => D::FALSE.into(),
                _ => {
                    let rel = match op {
                        CompareOp::Eq => "=",
                        CompareOp::Lt => "<",
                        CompareOp::Le => "<=",
                        CompareOp::Gt => ">",
                        _ => ">=",
                    };
                    let p = d.operand(sql, c, value);
                    format!("({} {rel} {p})", cols.q(c))
                }
            }
        }
        QueryFilter::In { field, values } => {
            let c = field_column(cols, field)?;
            if values.is_empty() {
                return Ok(D::FALSE.into());
            }
            let list = serde_json::to_string(values)
                .map_err(|e| ConnectorError::Other(format!("encoding an in list: {e}")))?;
            let p = sql.param(D::string(list));
            d.in_list(c, &p)
        }
    })
}

fn encode_cookie<D: Dialect>(values: Vec<D::Value>) -> String {
    let json = serde_json::to_vec(&D::cookie(values)).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cookie<D: Dialect>(text: &str, len: usize) -> ConnectorResult<Vec<D::Value>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| serde_json::from_slice::<D::Cookie>(&b).ok())
        .map(D::cookie_values)
        .filter(|v| v.len() == len)
        .ok_or_else(|| {
            ConnectorError::InvalidAttribute(
                "the paged results cookie is not one this connector returned for this query".into(),
            )
        })
}

/// Rows after `last` in `order` (column, ascending?): NULL first ascending, last
/// descending.
fn after_sql<D: Dialect>(
    d: &D,
    order: &[(usize, bool)],
    last: &[D::Value],
    sql: &mut Sql<D>,
) -> String {
    let cols = d.cols();
    let mut ors = Vec::new();
    for i in 0..order.len() {
        let (c, asc) = order[i];
        let col = cols.q(c);
        let beyond = match (&last[i], asc) {
            (v, true) if D::is_null(v) => format!("{col} IS NOT NULL"),
            (v, false) if D::is_null(v) => continue,
            (v, true) => format!("{col} > {}", d.bind(sql, c, v.clone())),
            (v, false) => format!("({col} < {} OR {col} IS NULL)", d.bind(sql, c, v.clone())),
        };
        let mut ands: Vec<String> = order[..i]
            .iter()
            .zip(last)
            .map(|(&(c, _), v)| {
                if D::is_null(v) {
                    format!("{} IS NULL", cols.q(c))
                } else {
                    format!("{} = {}", cols.q(c), d.bind(sql, c, v.clone()))
                }
            })
            .collect();
        ands.push(beyond);
        ors.push(format!("({})", ands.join(" AND ")));
    }
    if ors.is_empty() {
        D::FALSE.into()
    } else {
        format!("({})", ors.join(" OR "))
    }
}

/// The schema: one property a column, typed by `kind` (`type`, `nativeType`).
pub(super) fn schema(
    cols: &Columns,
    kind: impl Fn(usize) -> (&'static str, &'static str),
) -> Map<String, Value> {
    let mut properties = Map::new();
    for (i, name) in cols.names.iter().enumerate() {
        let (kind, native) = kind(i);
        let prop = if i == cols.key {
            json!({"type": kind, "nativeName": NAME, "nativeType": native, "required": true})
        } else if Some(i) == cols.password {
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
            "id": ACCOUNT,
            "type": "object",
            "nativeType": ACCOUNT,
            "properties": properties,
        }),
    );
    out
}

pub(super) fn not_found(uid: &str, cols: &Columns) -> ConnectorError {
    ConnectorError::NotFound(format!(
        "no row with key '{uid}' in the table '{}'",
        cols.table_name
    ))
}

pub(super) fn invalid_credential() -> ConnectorError {
    ConnectorError::InvalidCredential("invalid username or password".into())
}

/// Whether a stored password is `password` (an empty or NULL one never is).
pub(super) fn password_matches<D: Dialect>(stored: &D::Value, password: &str) -> bool {
    D::password_text(stored).is_some_and(|s| !s.is_empty() && s == password)
}

/// `key = uid`.
fn key_is<D: Dialect>(d: &D, sql: &mut Sql<D>, uid: &str) -> String {
    let cols = d.cols();
    let k = d.bind(sql, cols.key, D::string(uid.to_owned()));
    format!("{} = {k}", cols.q(cols.key))
}

/// The key and password of the rows keyed `username`.
pub(super) fn authenticate_sql<D: Dialect>(
    d: &D,
    username: &str,
) -> ConnectorResult<(String, Sql<D>)> {
    let cols = d.cols();
    let Some(pw) = cols.password else {
        return Err(ConnectorError::NotSupported(format!(
            "the table '{}' has no password column (passwordColumn is not set)",
            cols.table_name
        )));
    };
    if !d.key_parses(username) {
        return Err(invalid_credential());
    }
    let mut sql = Sql::new();
    let text = format!(
        "SELECT {}, {} FROM {} WHERE {}",
        d.select(cols.key),
        d.select(pw),
        cols.table,
        key_is(d, &mut sql, username)
    );
    Ok((text, sql))
}

/// The `INSERT … RETURNING key` of a create, and the uid of the key it writes.
pub(super) fn create_sql<D: Dialect>(
    d: &D,
    uid: Option<&str>,
    attributes: &Map<String, Value>,
) -> ConnectorResult<(String, Sql<D>, Option<String>)> {
    let cols = d.cols();
    let mut values = assignments(d, attributes)?;
    match (uid, values.get(&cols.key)) {
        (Some(u), Some(v)) if D::key_shown(v).is_some_and(|s| s != u) => {
            return Err(ConnectorError::InvalidAttribute(format!(
                "the id '{u}' and the '{}' value '{}' differ",
                cols.names[cols.key],
                D::key_shown(v).unwrap_or_default()
            )))
        }
        (Some(u), _) => {
            values.insert(cols.key, D::string(u.to_owned()));
        }
        (None, v) if v.is_none_or(D::is_null) => {
            values.remove(&cols.key);
            if d.generates_key() {
                values.insert(cols.key, D::string(uuid::Uuid::new_v4().to_string()));
            }
        }
        (None, _) => {}
    }
    let mut sql = Sql::new();
    let names: Vec<String> = values.keys().map(|&c| cols.q(c)).collect();
    let placeholders: Vec<String> = values
        .iter()
        .map(|(&c, v)| d.bind(&mut sql, c, v.clone()))
        .collect();
    let text = if names.is_empty() {
        format!(
            "INSERT INTO {} DEFAULT VALUES RETURNING {}",
            cols.table,
            d.select(cols.key)
        )
    } else {
        format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
            cols.table,
            names.join(", "),
            placeholders.join(", "),
            d.select(cols.key)
        )
    };
    let key = values.get(&cols.key).map(D::uid);
    Ok((text, sql, key))
}

/// The uid of the key a create returned.
pub(super) fn created<D: Dialect>(d: &D, key: &D::Value) -> ConnectorResult<String> {
    if D::is_null(key) {
        let cols = d.cols();
        return Err(ConnectorError::InvalidAttribute(format!(
            "the key column '{}' needs a value (__NAME__)",
            cols.names[cols.key]
        )));
    }
    Ok(D::uid(key))
}

/// The row keyed `uid` with `attributes` (`None`: `uid` cannot be a key).
pub(super) fn read_sql<D: Dialect>(d: &D, uid: &str, attributes: &[String]) -> Option<Select<D>> {
    if !d.key_parses(uid) {
        return None;
    }
    let cols = d.cols();
    let returned = cols.returned(attributes);
    let mut select = vec![d.select(cols.key)];
    select.extend(returned.iter().map(|(c, _)| d.select(*c)));
    let mut sql = Sql::new();
    let text = format!(
        "SELECT {} FROM {} WHERE {} LIMIT 1",
        select.join(", "),
        cols.table,
        key_is(d, &mut sql, uid)
    );
    Some(Select {
        text,
        sql,
        first: 1,
        returned,
    })
}

/// The `UPDATE … RETURNING key` of the row keyed `uid` (a `SELECT` when nothing changes).
pub(super) fn update_sql<D: Dialect>(
    d: &D,
    uid: &str,
    attributes: &Map<String, Value>,
) -> ConnectorResult<(String, Sql<D>)> {
    let cols = d.cols();
    let values = assignments(d, attributes)?;
    if values.get(&cols.key).is_some_and(D::is_null) {
        return Err(ConnectorError::InvalidAttribute(format!(
            "the key column '{}' cannot be cleared",
            cols.names[cols.key]
        )));
    }
    if !d.key_parses(uid) {
        return Err(not_found(uid, cols));
    }
    let mut sql = Sql::new();
    let key = key_is(d, &mut sql, uid);
    let text = if values.is_empty() {
        format!(
            "SELECT {} FROM {} WHERE {key}",
            d.select(cols.key),
            cols.table
        )
    } else {
        let sets: Vec<String> = values
            .into_iter()
            .map(|(c, v)| format!("{} = {}", cols.q(c), d.bind(&mut sql, c, v)))
            .collect();
        format!(
            "UPDATE {} SET {} WHERE {key} RETURNING {}",
            cols.table,
            sets.join(", "),
            d.select(cols.key)
        )
    };
    Ok((text, sql))
}

/// The `DELETE` of the row keyed `uid`.
pub(super) fn delete_sql<D: Dialect>(d: &D, uid: &str) -> ConnectorResult<(String, Sql<D>)> {
    let cols = d.cols();
    if !d.key_parses(uid) {
        return Err(not_found(uid, cols));
    }
    let mut sql = Sql::new();
    let text = format!(
        "DELETE FROM {} WHERE {}",
        cols.table,
        key_is(d, &mut sql, uid)
    );
    Ok((text, sql))
}

/// A query: its filter and order (sort keys, then the key).
pub(super) struct Query<D: Dialect> {
    pub sql: Sql<D>,
    condition: String,
    order: Vec<(usize, bool)>,
}

/// A statement that reads objects: the key at column 0, `returned` from column `first`
/// (the columns between are the order values of a page, or the change-log value).
pub(super) struct Select<D: Dialect> {
    pub text: String,
    pub sql: Sql<D>,
    pub first: usize,
    pub returned: Vec<(usize, String)>,
}

impl<D: Dialect> Select<D> {
    /// The object of a row, its columns read by `get`.
    pub fn object<E>(
        &self,
        d: &D,
        mut get: impl FnMut(usize) -> Result<D::Value, E>,
    ) -> Result<ConnectorObject, E> {
        let uid = D::uid(&get(0)?);
        let mut attributes = Map::new();
        for (k, (c, name)) in self.returned.iter().enumerate() {
            if let Some(v) = d.json(*c, get(self.first + k)?) {
                attributes.insert(name.clone(), v);
            }
        }
        Ok(ConnectorObject { uid, attributes })
    }
}

impl<D: Dialect> Query<D> {
    pub fn new(
        d: &D,
        filter: Option<&QueryFilter>,
        options: &QueryOptions,
    ) -> ConnectorResult<Self> {
        let cols = d.cols();
        let mut sql = Sql::new();
        let condition = match filter {
            Some(f) => where_sql(d, f, &mut sql, 0)?,
            None => D::TRUE.into(),
        };
        let mut order = Vec::new();
        for (attr, asc) in &options.sort {
            order.push((cols.read_column(attr)?, *asc));
        }
        order.push((cols.key, true));
        Ok(Query {
            sql,
            condition,
            order,
        })
    }

    /// `SELECT count(*)` of the rows that match, with the parameters as they are now.
    pub fn count_sql(&self, d: &D) -> String {
        format!(
            "SELECT count(*) FROM {} WHERE {}",
            d.cols().table,
            self.condition
        )
    }

    /// The page `options` asks for: after its cookie, or at its offset.
    pub fn page(self, d: &D, options: &QueryOptions) -> ConnectorResult<Select<D>> {
        let cols = d.cols();
        let Query {
            mut sql,
            mut condition,
            order,
        } = self;
        let mut offset = options.offset;
        if let Some(cookie) = &options.cookie {
            let last = decode_cookie::<D>(cookie, order.len())?;
            condition = format!("{condition} AND {}", after_sql(d, &order, &last, &mut sql));
            offset = 0;
        }
        let returned = cols.returned(&options.attributes);
        let mut select = vec![d.select(cols.key)];
        select.extend(order.iter().map(|(c, _)| d.select(*c)));
        let first = select.len();
        select.extend(returned.iter().map(|(c, _)| d.select(*c)));
        let order_by: Vec<String> = order
            .iter()
            .map(|&(c, asc)| format!("{} {}", cols.q(c), if asc { D::ASC } else { D::DESC }))
            .collect();
        let limit = D::limit(
            &mut sql,
            (options.page_size > 0).then(|| options.page_size.saturating_add(1)),
        );
        let offset = D::offset(&mut sql, offset);
        let text = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {} LIMIT {limit} OFFSET {offset}",
            select.join(", "),
            cols.table,
            order_by.join(", ")
        );
        Ok(Select {
            text,
            sql,
            first,
            returned,
        })
    }
}

/// The page of `objects`; `last_order` holds the order values of the last of them.
pub(super) fn query_page<D: Dialect>(
    options: &QueryOptions,
    objects: Vec<ConnectorObject>,
    last_order: Vec<D::Value>,
    more: bool,
    total: Option<i64>,
) -> QueryPage {
    let cookie = more.then(|| encode_cookie::<D>(last_order));
    let remaining = if !more {
        Some(0)
    } else if options.cookie.is_none() {
        total.map(|t| (t - (options.offset + objects.len()) as i64).max(0))
    } else {
        None
    };
    QueryPage {
        objects,
        cookie,
        remaining,
        total,
    }
}

/// The change-log column.
pub(super) fn change_log_column(cols: &Columns) -> ConnectorResult<usize> {
    cols.change_log
        .ok_or_else(|| ConnectorError::NotSupported("no changeLogColumn".into()))
}

/// The highest change-log value.
pub(super) fn latest_sql<D: Dialect>(d: &D, chg: usize) -> String {
    let cols = d.cols();
    format!(
        "SELECT {} FROM {}",
        d.out(format!("max({})", cols.q(chg))),
        cols.table
    )
}

/// The token of the highest change-log value.
pub(super) fn latest_token<D: Dialect>(d: &D, chg: usize, max: D::Value) -> Value {
    if D::is_null(&max) {
        // An empty table: every row to come is after "the beginning".
        json!({"changeLog": null})
    } else {
        token_of(d, chg, max, None)
    }
}

/// The sync token of a change-log value (and the key of the last row when a batch ends
/// inside a run of equal values).
fn token_of<D: Dialect>(d: &D, chg: usize, value: D::Value, key: Option<D::Value>) -> Value {
    let v = d.json(chg, value).unwrap_or(Value::Null);
    match key {
        None => v,
        Some(k) => json!({"changeLog": v, "key": D::key_json(k)}),
    }
}

/// Where a liveSync token says to go on from: the change-log value and, inside a run of
/// equal values, the key of the last row seen.
pub(super) struct SyncFrom<D: Dialect> {
    value: D::Value,
    key: Option<D::Value>,
}

impl<D: Dialect> SyncFrom<D> {
    pub fn parse(token: &Value) -> ConnectorResult<Self> {
        let bad = || {
            ConnectorError::InvalidAttribute(format!(
                "'{token}' is not a liveSync token of this table (a changeLogColumn value)"
            ))
        };
        let scalar = |v: &Value| D::token_value(v).ok_or_else(bad);
        Ok(match token {
            Value::Object(m) => {
                let value = scalar(m.get("changeLog").ok_or_else(bad)?)?;
                let key = match m.get("key") {
                    None | Some(Value::Null) => None,
                    Some(k) => Some(D::token_key(k).ok_or_else(bad)?),
                };
                SyncFrom { value, key }
            }
            other => SyncFrom {
                value: scalar(other)?,
                key: None,
            },
        })
    }

    /// The rows after this point, in change-log order: the key at column 0, the change-log
    /// value at 1, then `returned` from 2; at most `max` and one more (0: all).
    pub fn sql(&self, d: &D, chg_col: usize, max: usize) -> Select<D> {
        let cols = d.cols();
        let chg = cols.q(chg_col);
        let key = cols.q(cols.key);
        let mut sql = Sql::new();
        let condition = match (&self.value, &self.key) {
            (v, _) if D::is_null(v) => format!("{chg} IS NOT NULL"),
            (v, None) => format!("{chg} > {}", d.bind(&mut sql, chg_col, v.clone())),
            (v, Some(k)) => {
                let p = d.bind(&mut sql, chg_col, v.clone());
                let kp = d.bind(&mut sql, cols.key, k.clone());
                format!("({chg} > {p} OR ({chg} = {p} AND {key} > {kp}))")
            }
        };
        let returned = cols.returned(&[]);
        let mut select = vec![d.select(cols.key), d.select(chg_col)];
        select.extend(returned.iter().map(|(c, _)| d.select(*c)));
        let limit = D::limit(&mut sql, (max > 0).then(|| max.saturating_add(1)));
        let text = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {chg} ASC, {key} ASC LIMIT {limit}",
            select.join(", "),
            cols.table
        );
        Select {
            text,
            sql,
            first: 2,
            returned,
        }
    }

    /// The token after a batch: `last` is the change-log value and key of its last row,
    /// `next` the change-log value of the first row left out.
    pub fn next_token(
        self,
        d: &D,
        chg: usize,
        token: &Value,
        last: Option<(D::Value, D::Value)>,
        next: Option<D::Value>,
    ) -> Value {
        match last {
            // Nothing new: the same token.
            None if D::is_null(&self.value) => json!({"changeLog": null}),
            None if D::ECHOES_TOKEN => token.clone(),
            None => token_of(d, chg, self.value, self.key),
            // The batch ends inside a run of equal values: remember the key too.
            Some((v, k)) if next.as_ref() == Some(&v) => token_of(d, chg, v, Some(k)),
            Some((v, _)) => token_of(d, chg, v, None),
        }
    }
}
