//! IDM's audit event shapes, built from plain values (no I/O, no pingora types), and the
//! rules that keep secrets out of them: no request header but [`SAFE_HEADERS`], no query
//! parameter whose name looks secret, and secret-looking properties of objects and config
//! documents replaced by `null` ([`redact`]).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::crest::Caller;

/// Request headers copied into `http.request.headers` (lower-case): nothing that can carry
/// a credential.
pub const SAFE_HEADERS: [&str; 4] = ["accept", "content-type", "user-agent", "x-requested-with"];

/// Whether a property or parameter name may hold a secret (checked case-insensitively).
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
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
    ]
    .iter()
    .any(|s| n.contains(s))
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
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The fields every topic has.
fn common(event_name: &str, txid: &str, user: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("_id".into(), Value::String(new_id()));
    m.insert("timestamp".into(), Value::String(now()));
    m.insert("eventName".into(), Value::String(event_name.to_owned()));
    m.insert("transactionId".into(), Value::String(txid.to_owned()));
    m.insert(
        "userId".into(),
        user.map_or(Value::Null, |u| Value::String(u.to_owned())),
    );
    m.insert("trackingIds".into(), json!([]));
    m
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

/// The `access` event of one request.
pub fn access(r: &AccessRecord<'_>) -> Value {
    let mut m = common("access", r.txid, r.caller.map(|c| c.user.as_str()));
    if let Some(s) = r.server {
        m.insert(
            "server".into(),
            json!({"ip": s.ip().to_string(), "port": s.port()}),
        );
    }
    if let Some(c) = r.client {
        m.insert(
            "client".into(),
            json!({"ip": c.ip().to_string(), "port": c.port()}),
        );
    }
    m.insert(
        "request".into(),
        json!({"protocol": "CREST", "operation": crest_operation(r.method, r.query, r.headers)}),
    );
    let mut params = Map::new();
    for pair in r.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k);
        if is_secret_name(&k) {
            continue;
        }
        let list = params.entry(k).or_insert_with(|| json!([]));
        if let Value::Array(a) = list {
            a.push(Value::String(percent_decode(v)));
        }
    }
    let mut headers = Map::new();
    for name in SAFE_HEADERS {
        let values: Vec<Value> = r
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| Value::String(v.to_owned()))
            .collect();
        if !values.is_empty() {
            headers.insert(name.to_owned(), Value::Array(values));
        }
    }
    m.insert(
        "http".into(),
        json!({"request": {"secure": r.secure, "method": r.method, "path": r.path,
            "queryParameters": params, "headers": headers}}),
    );
    let status = match r.status {
        0 => Value::Null,
        s if s < 400 => json!("SUCCESSFUL"),
        _ => json!("FAILED"),
    };
    m.insert(
        "response".into(),
        json!({"status": status, "statusCode": r.status.to_string(),
            "elapsedTime": r.elapsed.as_millis() as u64, "elapsedTimeUnits": "MILLISECONDS"}),
    );
    if let Some(c) = r.caller {
        m.insert("roles".into(), json!(c.roles));
    }
    Value::Object(m)
}

fn percent_decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// The module that checks callers' passwords (IDM's `INTERNAL_USER`).
pub const AUTH_MODULE: &str = "INTERNAL_USER";

/// The `authentication` event of one attempt by `principal`: `caller` when it succeeded.
/// Never holds the password.
pub fn authentication(
    principal: &str,
    caller: Option<&Caller>,
    txid: &str,
    ip: Option<std::net::IpAddr>,
) -> Value {
    let result = if caller.is_some() {
        "SUCCESSFUL"
    } else {
        "FAILED"
    };
    let mut m = common("authentication", txid, caller.map(|c| c.user.as_str()));
    m.insert("result".into(), json!(result));
    m.insert("principal".into(), json!([principal]));
    m.insert(
        "context".into(),
        json!({
            "id": principal,
            "component": caller.map(|c| c.component.as_str()),
            "roles": caller.map(|c| c.roles.clone()).unwrap_or_default(),
            "ipAddress": ip.map(|i| i.to_string()),
            "moduleId": AUTH_MODULE,
        }),
    );
    let reason = if caller.is_some() {
        json!({})
    } else {
        json!({"message": "Access denied: unknown user or wrong password"})
    };
    m.insert(
        "entries".into(),
        json!([{"moduleId": AUTH_MODULE, "result": result, "reason": reason, "info": {}}]),
    );
    m.insert("method".into(), json!(AUTH_MODULE));
    Value::Object(m)
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
}

/// The `activity` (or `config`, with `topic`) event of one write, secrets removed.
pub fn object_change(topic: &str, c: ObjectChange<'_>, password_fields: &[String]) -> Value {
    let mut m = common(topic, c.txid, Some(&c.caller.user));
    m.insert("runAs".into(), json!(c.caller.user));
    m.insert("objectId".into(), json!(c.object_id));
    m.insert("operation".into(), json!(c.operation.to_ascii_uppercase()));
    let mut before = c.before.unwrap_or(Value::Null);
    let mut after = c.after.unwrap_or(Value::Null);
    let password_changed =
        redact(&mut before, password_fields) | redact(&mut after, password_fields);
    let changed: Vec<Value> = match (&before, &after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
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
            query: Some("_queryFilter=true&password=s3cr3t&access_token=t0k"),
            headers: &h,
            status: 200,
            elapsed: Duration::from_millis(12),
        });
        let text = v.to_string();
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
    fn failed_authentication_names_the_principal_only() {
        let v = authentication("bob", None, "t", Some("10.0.0.1".parse().unwrap()));
        assert_eq!(v["result"], "FAILED");
        assert_eq!(v["principal"], json!(["bob"]));
        assert_eq!(v["context"]["ipAddress"], "10.0.0.1");
        assert_eq!(v["userId"], Value::Null);
    }
}
