//! IDM's audit event shapes, built from plain values (no I/O, no pingora types), and the
//! rules that keep secrets out of them: no request header but [`SAFE_HEADERS`], no query
//! parameter whose name looks secret, and secret-looking properties of objects and config
//! documents replaced by `null` ([`redact`]).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::crest::Caller;

/// Request headers copied into `http.request.headers` (lower-case): nothing that can carry
/// a credential.
pub const SAFE_HEADERS: [http::HeaderName; 4] = [
    http::header::ACCEPT,
    http::header::CONTENT_TYPE,
    http::header::USER_AGENT,
    http::HeaderName::from_static("x-requested-with"),
];

/// Whether a property or parameter name may hold a secret (checked case-insensitively).
pub fn is_secret_name(name: &str) -> bool {
    const SECRET: [&str; 10] = [
        "password",
        "secret",
        "token",
        "authorization",
        "cookie",
        "credential",
        "apikey",
        "api_key",
        "privatekey",
        "private_key",
    ];
    // Runs for every query parameter of every audited request: no lower-cased copy.
    let n = name.as_bytes();
    SECRET.iter().any(|s| {
        n.len() >= s.len()
            && n.windows(s.len())
                .any(|w| w.eq_ignore_ascii_case(s.as_bytes()))
    })
}

/// Replaces the value of every secret-looking property (and of every name in `extra`) in
/// `v`, at any depth, with `null`. Returns whether anything was replaced.
pub fn redact(v: &mut Value, extra: &[String]) -> bool {
    let mut changed = false;
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_name(k) || extra.iter().any(|e| e == k) {
                    if !val.is_null() {
                        *val = Value::Null;
                        changed = true;
                    }
                } else {
                    changed |= redact(val, extra);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= redact(item, extra);
            }
        }
        _ => {}
    }
    changed
}

/// UTC now in IDM's format (`2026-12-04T15:48:12.123Z`).
pub fn now() -> String {
    // Not `format(…)`: that parses its pattern on every call (once per request here).
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn new_id() -> String {
    crate::repo::new_object_id()
}

/// The fields every topic has, as a map the topic's own fields are added to (the events
/// built as JSON trees: activity, config, recon start and summary).
fn common(event_name: &str, txid: &str, user: Option<&str>) -> Map<String, Value> {
    match serde_json::to_value(Header::new(event_name, txid, user)) {
        Ok(Value::Object(m)) => m,
        // A struct of strings serializes to an object.
        _ => Map::new(),
    }
}

/// One HTTP request as the `access` topic records it.
pub struct AccessRecord<'a> {
    pub txid: &'a str,
    pub caller: Option<&'a Caller>,
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    pub secure: bool,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// 0 when no response was written.
    pub status: u16,
    pub elapsed: Duration,
}

/// CREST operation of an HTTP request (IDM's `request.operation`).
pub fn crest_operation(
    method: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
) -> &'static str {
    let has =
        |name: &str| query.is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some(name)));
    let action = query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix("_action=")));
    match method {
        "GET" | "HEAD" if has("_queryFilter") || has("_queryId") || has("_queryExpression") => {
            "QUERY"
        }
        "GET" | "HEAD" => "READ",
        "PUT"
            if headers
                .get(http::header::IF_NONE_MATCH)
                .is_some_and(|v| v == "*") =>
        {
            "CREATE"
        }
        "PUT" => "UPDATE",
        "POST" if action == Some("create") => "CREATE",
        "POST" => "ACTION",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "ACTION",
    }
}

/// The fields every event starts with.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Header<'a> {
    #[serde(rename = "_id")]
    id: String,
    timestamp: String,
    event_name: &'a str,
    transaction_id: &'a str,
    user_id: Option<&'a str>,
    tracking_ids: [(); 0],
}

impl<'a> Header<'a> {
    fn new(event_name: &'a str, transaction_id: &'a str, user: Option<&'a str>) -> Self {
        Self {
            id: new_id(),
            timestamp: now(),
            event_name,
            transaction_id,
            user_id: user,
            tracking_ids: [],
        }
    }
}

/// `server` / `client` of an access event.
#[derive(Serialize)]
struct Endpoint {
    ip: std::net::IpAddr,
    port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Self {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl Header<'_> {
    /// Writes the header's fields at the start of an event: what `#[serde(flatten)]` does,
    /// without its detour (a flattened struct is serialized as a map, entry by entry, through
    /// serde's buffering adapter) on the two events every request produces.
    fn serialize_into<S: SerializeStruct>(&self, st: &mut S) -> Result<(), S::Error> {
        st.serialize_field("_id", &self.id)?;
        st.serialize_field("timestamp", &self.timestamp)?;
        st.serialize_field("eventName", self.event_name)?;
        st.serialize_field("transactionId", self.transaction_id)?;
        st.serialize_field("userId", &self.user_id)?;
        st.serialize_field("trackingIds", &self.tracking_ids)
    }
}

/// The `access` event, serialized straight from the request's fields: this runs once per
/// request, so it builds no JSON tree.
struct AccessEvent<'a> {
    header: Header<'a>,
    server: Option<Endpoint>,
    client: Option<Endpoint>,
    request: AccessRequest,
    http: AccessHttp<'a>,
    response: AccessResponse,
    roles: Option<&'a [String]>,
}

impl Serialize for AccessEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("AccessEvent", 13)?;
        self.header.serialize_into(&mut st)?;
        if let Some(server) = &self.server {
            st.serialize_field("server", server)?;
        }
        if let Some(client) = &self.client {
            st.serialize_field("client", client)?;
        }
        st.serialize_field("request", &self.request)?;
        st.serialize_field("http", &self.http)?;
        st.serialize_field("response", &self.response)?;
        if let Some(roles) = self.roles {
            st.serialize_field("roles", roles)?;
        }
        st.end()
    }
}

#[derive(Serialize)]
struct AccessRequest {
    protocol: &'static str,
    operation: &'static str,
}

#[derive(Serialize)]
struct AccessHttp<'a> {
    request: AccessHttpRequest<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessHttpRequest<'a> {
    secure: bool,
    method: &'a str,
    path: &'a str,
    query_parameters: QueryParameters<'a>,
    headers: SafeHeaders<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessResponse {
    status: Option<&'static str>,
    #[serde(serialize_with = "as_string")]
    status_code: u16,
    elapsed_time: u64,
    elapsed_time_units: &'static str,
}

fn as_string<S: serde::Serializer>(n: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(n)
}

/// `http.request.queryParameters`: every parameter but secret-looking ones, decoded, as
/// `{name: [values…]}` in the order the names first appear.
struct QueryParameters<'a>(Option<&'a str>);

impl Serialize for QueryParameters<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut params: Vec<(Cow<'_, str>, Vec<Cow<'_, str>>)> = Vec::new();
        for pair in self.0.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k);
            if is_secret_name(&k) {
                continue;
            }
            let v = percent_decode(v);
            match params.iter_mut().find(|(name, _)| *name == k) {
                Some((_, values)) => values.push(v),
                None => params.push((k, vec![v])),
            }
        }
        let mut map = s.serialize_map(Some(params.len()))?;
        for (k, v) in &params {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `http.request.headers`: the [`SAFE_HEADERS`] the request has, as `{name: [values…]}`.
struct SafeHeaders<'a>(&'a http::HeaderMap);

impl Serialize for SafeHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for name in &SAFE_HEADERS {
            let values: Vec<&str> = self
                .0
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if !values.is_empty() {
                map.serialize_entry(name.as_str(), &values)?;
            }
        }
        map.end()
    }
}

/// The `access` event of one request, as a JSON line.
pub fn access(r: &AccessRecord<'_>) -> String {
    let event = AccessEvent {
        header: Header::new("access", r.txid, r.caller.map(|c| c.user.as_str())),
        server: r.server.map(Endpoint::from),
        client: r.client.map(Endpoint::from),
        request: AccessRequest {
            protocol: "CREST",
            operation: crest_operation(r.method, r.query, r.headers),
        },
        http: AccessHttp {
            request: AccessHttpRequest {
                secure: r.secure,
                method: r.method,
                path: r.path,
                query_parameters: QueryParameters(r.query),
                headers: SafeHeaders(r.headers),
            },
        },
        response: AccessResponse {
            status: match r.status {
                0 => None,
                s if s < 400 => Some("SUCCESSFUL"),
                _ => Some("FAILED"),
            },
            status_code: r.status,
            elapsed_time: r.elapsed.as_millis() as u64,
            elapsed_time_units: "MILLISECONDS",
        },
        roles: r.caller.map(|c| c.roles.as_slice()),
    };
    to_json_line(&event)
}

/// An event as JSON, in a buffer sized for a typical event (no regrowth on the way).
fn to_json_line<T: Serialize>(event: &T) -> String {
    let mut out = Vec::with_capacity(1024);
    // Plain structs of strings and numbers: serializing cannot fail, and serde_json writes
    // UTF-8.
    match serde_json::to_writer(&mut out, event) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['+', '%']) {
        return Cow::Borrowed(s);
    }
    let plus = s.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&plus)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The module IDM names for a caller's account: `MANAGED_USER` for managed objects,
/// `INTERNAL_USER` otherwise (also for a failed attempt, which has no account).
pub fn auth_module(caller: Option<&Caller>) -> &'static str {
    match caller {
        Some(c) if c.component.starts_with("managed/") => "MANAGED_USER",
        _ => "INTERNAL_USER",
    }
}

struct AuthenticationEvent<'a> {
    header: Header<'a>,
    result: &'static str,
    principal: [&'a str; 1],
    context: AuthenticationContext<'a>,
    entries: [AuthenticationEntry; 1],
    method: &'static str,
}

impl Serialize for AuthenticationEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("AuthenticationEvent", 11)?;
        self.header.serialize_into(&mut st)?;
        st.serialize_field("result", self.result)?;
        st.serialize_field("principal", &self.principal)?;
        st.serialize_field("context", &self.context)?;
        st.serialize_field("entries", &self.entries)?;
        st.serialize_field("method", self.method)?;
        st.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationContext<'a> {
    id: &'a str,
    component: Option<&'a str>,
    roles: &'a [String],
    ip_address: Option<std::net::IpAddr>,
    module_id: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationEntry {
    module_id: &'static str,
    result: &'static str,
    reason: AuthenticationReason,
    info: Empty,
}

#[derive(Serialize)]
struct AuthenticationReason {
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

#[derive(Serialize)]
struct Empty {}

/// The `authentication` event of one attempt by `principal` (`caller` when it succeeded),
/// as a JSON line. Never holds the password.
pub fn authentication(
    principal: &str,
    caller: Option<&Caller>,
    txid: &str,
    ip: Option<std::net::IpAddr>,
) -> String {
    let result = if caller.is_some() {
        "SUCCESSFUL"
    } else {
        "FAILED"
    };
    let module = auth_module(caller);
    let event = AuthenticationEvent {
        header: Header::new("authentication", txid, caller.map(|c| c.user.as_str())),
        result,
        principal: [principal],
        context: AuthenticationContext {
            id: principal,
            component: caller.map(|c| c.component.as_str()),
            roles: caller.map(|c| c.roles.as_slice()).unwrap_or_default(),
            ip_address: ip,
            module_id: module,
        },
        entries: [AuthenticationEntry {
            module_id: module,
            result,
            reason: AuthenticationReason {
                message: caller
                    .is_none()
                    .then_some("Access denied: unknown user or wrong password"),
            },
            info: Empty {},
        }],
        method: module,
    };
    to_json_line(&event)
}

/// What an `activity` or `config` event records of one write.
pub struct ObjectChange<'a> {
    pub txid: &'a str,
    pub caller: &'a Caller,
    /// `managed/user/<id>`, `config/<id>`.
    pub object_id: &'a str,
    /// `create`, `update`, `patch`, `delete`.
    pub operation: &'a str,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub revision: Option<&'a str>,
    /// The request set a password field (an answer may not show passwords at all).
    pub password_written: bool,
}

/// Whether a write's request body sets one of `password_fields`: a property of a create
/// or update body, or the field of a patch operation.
pub fn writes_password(body: &Value, password_fields: &[String]) -> bool {
    let named = |name: &str| {
        password_fields
            .iter()
            .any(|f| f == name.trim_start_matches('/'))
    };
    match body {
        Value::Object(o) => o.keys().any(|k| named(k)),
        Value::Array(ops) => ops
            .iter()
            .any(|op| op.get("field").and_then(Value::as_str).is_some_and(&named)),
        _ => false,
    }
}

/// The `activity` (or `config`, with `topic`) event of one write, secrets removed.
pub fn object_change(topic: &str, c: ObjectChange<'_>, password_fields: &[String]) -> Value {
    let mut m = common(topic, c.txid, Some(&c.caller.user));
    m.insert("runAs".into(), json!(c.caller.user));
    m.insert("objectId".into(), json!(c.object_id));
    m.insert("operation".into(), json!(c.operation.to_ascii_uppercase()));
    let mut before = c.before.unwrap_or(Value::Null);
    let mut after = c.after.unwrap_or(Value::Null);
    let password_changed = redact(&mut before, password_fields)
        | redact(&mut after, password_fields)
        | c.password_written;
    let changed: Vec<Value> = match (&before, &after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            // `_id`/`_rev` are not fields of the object (the revision has its own).
            keys.into_iter()
                .filter(|k| *k != "_id" && *k != "_rev" && a.get(*k) != b.get(*k))
                .map(|k| Value::String(format!("/{k}")))
                .collect()
        }
        _ => Vec::new(),
    };
    m.insert("before".into(), before);
    m.insert("after".into(), after);
    m.insert("changedFields".into(), Value::Array(changed));
    m.insert("revision".into(), json!(c.revision));
    m.insert("status".into(), json!("SUCCESS"));
    m.insert("message".into(), json!(""));
    if topic == "activity" {
        m.insert(
            "passwordChanged".into(),
            json!(password_changed && c.operation != "delete"),
        );
    }
    Value::Object(m)
}

/// What sync did to one object: a `recon` entry (`entryType` `entry`) of a reconciliation
/// run, or a `sync` event of an implicit sync or a liveSync push.
pub struct SyncEntry<'a> {
    /// `reconId` of a run; `None` for the `sync` topic.
    pub recon_id: Option<&'a str>,
    pub transaction_id: &'a str,
    pub user: &'a str,
    pub mapping: &'a str,
    pub situation: &'a str,
    pub action: &'a str,
    /// `source` or `target`: the phase that handled the object (recon only).
    pub reconciling: &'a str,
    /// Full ids (`managed/user/<id>`), when known.
    pub source_object_id: Option<String>,
    pub target_object_id: Option<String>,
    /// The failure, when the action failed.
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncEvent<'a> {
    #[serde(flatten)]
    header: Header<'a>,
    action: &'a str,
    exception: Option<&'a str>,
    link_qualifier: &'static str,
    mapping: &'a str,
    message: Option<&'a str>,
    message_detail: Option<()>,
    situation: &'a str,
    source_object_id: Option<&'a str>,
    status: &'static str,
    target_object_id: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    recon: Option<ReconFields<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReconFields<'a> {
    reconciling: &'a str,
    ambiguous_target_object_ids: Option<()>,
    recon_action: &'static str,
    entry_type: &'static str,
    recon_id: &'a str,
}

/// The `recon` entry or `sync` event of one object, as a JSON line.
pub fn sync_entry(e: &SyncEntry<'_>) -> String {
    let event = SyncEvent {
        header: Header::new(
            if e.recon_id.is_some() {
                "recon"
            } else {
                "sync"
            },
            e.transaction_id,
            Some(e.user),
        ),
        action: e.action,
        exception: e.error,
        link_qualifier: "default",
        mapping: e.mapping,
        message: e.error,
        message_detail: None,
        situation: e.situation,
        source_object_id: e.source_object_id.as_deref(),
        status: if e.error.is_some() {
            "FAILURE"
        } else {
            "SUCCESS"
        },
        target_object_id: e.target_object_id.as_deref(),
        recon: e.recon_id.map(|recon_id| ReconFields {
            reconciling: e.reconciling,
            ambiguous_target_object_ids: None,
            recon_action: "recon",
            entry_type: "entry",
            recon_id,
        }),
    };
    serde_json::to_string(&event).unwrap_or_default()
}

/// A `recon` event: `entryType` `start` or `summary` of run `recon_id`.
pub fn recon(
    entry_type: &str,
    recon_id: &str,
    mapping: &str,
    status: &str,
    detail: Value,
    user: &str,
) -> Value {
    let mut m = common("recon", recon_id, Some(user));
    m.insert("entryType".into(), json!(entry_type));
    m.insert("reconId".into(), json!(recon_id));
    m.insert("mapping".into(), json!(mapping));
    m.insert("reconciling".into(), json!(""));
    m.insert("status".into(), json!(status));
    m.insert(
        "message".into(),
        json!(match entry_type {
            "start" => "Reconciliation initiated by ".to_owned() + user,
            _ => format!("Reconciliation of {mapping} finished: {status}"),
        }),
    );
    m.insert("messageDetail".into(), detail);
    m.insert("action".into(), Value::Null);
    m.insert("exception".into(), Value::Null);
    m.insert("linkQualifier".into(), Value::Null);
    m.insert("situation".into(), Value::Null);
    m.insert("sourceObjectId".into(), Value::Null);
    m.insert("targetObjectId".into(), Value::Null);
    m.insert("ambiguousTargetObjectIds".into(), Value::Null);
    m.insert("reconAction".into(), json!("recon"));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn password_writes_are_seen_in_the_request() {
        let fields = ["password".to_string()];
        assert!(writes_password(
            &json!({"password": "x", "sn": "y"}),
            &fields
        ));
        assert!(writes_password(
            &json!([{"operation": "replace", "field": "/password", "value": "x"}]),
            &fields
        ));
        assert!(writes_password(
            &json!([{"operation": "replace", "field": "password", "value": "x"}]),
            &fields
        ));
        assert!(!writes_password(&json!({"sn": "y"}), &fields));
        assert!(!writes_password(
            &json!([{"operation": "replace", "field": "/sn", "value": "x"}]),
            &fields
        ));
        assert!(!writes_password(&Value::Null, &fields));
    }

    #[test]
    fn timestamps_are_idms_utc_millis() {
        let t = now();
        assert_eq!(t.len(), "2026-12-04T15:48:12.123Z".len(), "{t}");
        assert!(
            t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
            "{t}"
        );
    }

    #[test]
    fn operations() {
        let none = headers(&[]);
        assert_eq!(
            crest_operation("GET", Some("_queryFilter=true"), &none),
            "QUERY"
        );
        assert_eq!(crest_operation("GET", Some("_fields=a"), &none), "READ");
        assert_eq!(
            crest_operation("POST", Some("_action=create"), &none),
            "CREATE"
        );
        assert_eq!(
            crest_operation("POST", Some("_action=recon"), &none),
            "ACTION"
        );
        assert_eq!(
            crest_operation("PUT", None, &headers(&[("if-none-match", "*")])),
            "CREATE"
        );
        assert_eq!(crest_operation("PUT", None, &none), "UPDATE");
        assert_eq!(crest_operation("PATCH", None, &none), "PATCH");
        assert_eq!(crest_operation("DELETE", None, &none), "DELETE");
    }

    #[test]
    fn access_keeps_no_secret() {
        let h = headers(&[
            ("authorization", "Basic b3BlbmlkbS1hZG1pbjpzM2NyM3Q="),
            ("x-openidm-password", "s3cr3t"),
            ("cookie", "session-jwt=abc"),
            ("user-agent", "curl/8"),
        ]);
        let caller = Caller::new(
            "openidm-admin",
            "internal/user",
            vec!["internal/role/openidm-admin".into()],
        );
        let v = access(&AccessRecord {
            txid: "tx-1",
            caller: Some(&caller),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("127.0.0.1:8080".parse().unwrap()),
            secure: false,
            method: "GET",
            path: "/openidm/managed/user",
            query: Some(
                "_queryFilter=true&password=s3cr3t&access_token=t0k&_fields=a%2Cb&_fields=c+d",
            ),
            headers: &h,
            status: 200,
            elapsed: Duration::from_millis(12),
        });
        let text = v.clone();
        let v: Value = serde_json::from_str(&text).unwrap();
        for secret in ["s3cr3t", "b3BlbmlkbS1hZG1p", "session-jwt", "t0k"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            v["http"]["request"]["headers"]["user-agent"],
            json!(["curl/8"])
        );
        assert_eq!(
            v["http"]["request"]["queryParameters"]["_queryFilter"],
            json!(["true"])
        );
        assert_eq!(
            v["http"]["request"]["queryParameters"]["_fields"],
            json!(["a,b", "c d"])
        );
        assert_eq!(v["http"]["request"]["method"], "GET");
        assert_eq!(v["http"]["request"]["secure"], false);
        assert_eq!(v["client"], json!({"ip": "127.0.0.1", "port": 5000}));
        assert_eq!(v["server"], json!({"ip": "127.0.0.1", "port": 8080}));
        assert_eq!(v["trackingIds"], json!([]));
        assert_eq!(v["eventName"], "access");
        assert_eq!(v["roles"], json!(["internal/role/openidm-admin"]));
        assert_eq!(v["request"]["operation"], "QUERY");
        assert_eq!(v["response"]["status"], "SUCCESSFUL");
        assert_eq!(v["response"]["statusCode"], "200");
        assert_eq!(v["response"]["elapsedTime"], 12);
        assert_eq!(v["userId"], "openidm-admin");
        assert_eq!(v["transactionId"], "tx-1");
    }

    #[test]
    fn activity_hides_passwords_and_lists_changes() {
        let caller = Caller::new("openidm-admin", "internal/user", vec![]);
        let v = object_change(
            "activity",
            ObjectChange {
                txid: "t",
                caller: &caller,
                object_id: "managed/user/1",
                operation: "update",
                before: Some(json!({"userName": "a", "password": "old"})),
                after: Some(
                    json!({"userName": "b", "password": "n3w", "nested": {"clientSecret": "x"}}),
                ),
                revision: Some("2"),
                password_written: false,
            },
            &["password".into()],
        );
        let text = v.to_string();
        assert!(
            !text.contains("n3w") && !text.contains("\"old\"") && !text.contains("\"x\""),
            "{text}"
        );
        assert_eq!(v["passwordChanged"], true);
        assert_eq!(v["operation"], "UPDATE");
        assert_eq!(v["changedFields"], json!(["/nested", "/userName"]));
    }

    #[test]
    fn recon_entries_and_sync_events_have_idms_fields() {
        let entry = |recon_id, error| SyncEntry {
            recon_id,
            transaction_id: "tx",
            user: "system",
            mapping: "managedUser_systemLdap",
            situation: "ABSENT",
            action: "CREATE",
            reconciling: "source",
            source_object_id: Some("managed/user/1".into()),
            target_object_id: None,
            error,
        };
        let v: Value = serde_json::from_str(&sync_entry(&entry(Some("r1"), None))).unwrap();
        assert_eq!(v["eventName"], "recon");
        assert_eq!(v["entryType"], "entry");
        assert_eq!(v["reconId"], "r1");
        assert_eq!(v["reconciling"], "source");
        assert_eq!(v["status"], "SUCCESS");
        assert_eq!(v["sourceObjectId"], "managed/user/1");
        assert_eq!(v["targetObjectId"], Value::Null);
        assert_eq!(v["situation"], "ABSENT");
        assert_eq!(v["action"], "CREATE");
        let v: Value =
            serde_json::from_str(&sync_entry(&entry(None, Some("target refused")))).unwrap();
        assert_eq!(v["eventName"], "sync");
        assert_eq!(v["status"], "FAILURE");
        assert_eq!(v["exception"], "target refused");
        assert!(
            v.get("reconId").is_none() && v.get("entryType").is_none(),
            "{v}"
        );
    }

    #[test]
    fn failed_authentication_names_the_principal_only() {
        let v: Value = serde_json::from_str(&authentication(
            "bob",
            None,
            "t",
            Some("10.0.0.1".parse().unwrap()),
        ))
        .unwrap();
        assert_eq!(v["result"], "FAILED");
        assert_eq!(v["principal"], json!(["bob"]));
        assert_eq!(v["context"]["ipAddress"], "10.0.0.1");
        assert_eq!(v["userId"], Value::Null);
        assert_eq!(v["entries"][0]["moduleId"], "INTERNAL_USER");
        assert_eq!(v["entries"][0]["result"], "FAILED");
        assert_eq!(v["trackingIds"], json!([]));
        let caller = Caller::new(
            "u1",
            "managed/user",
            vec!["internal/role/openidm-authorized".into()],
        );
        let v: Value =
            serde_json::from_str(&authentication("alice", Some(&caller), "t", None)).unwrap();
        assert_eq!(v["result"], "SUCCESSFUL");
        assert_eq!(v["userId"], "u1");
        assert_eq!(v["method"], "MANAGED_USER");
        assert_eq!(
            v["context"]["roles"],
            json!(["internal/role/openidm-authorized"])
        );
        assert_eq!(v["entries"][0]["reason"], json!({}));
    }
}
