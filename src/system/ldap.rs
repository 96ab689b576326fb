//! LDAP connector: IDM's `org.identityconnectors.ldap.LdapConnector` over [`ldap3`]
//! (pure Rust, rustls on ring).
//!
//! # Model
//! * Object classes: `__ACCOUNT__` → `accountObjectClasses`, `__GROUP__` →
//!   `groupObjectClasses`, any other native type → that LDAP objectClass. Creates set those
//!   classes; searches AND in `(objectClass=…)` of each class but `top`, plus
//!   `accountSearchFilter`/`groupSearchFilter`, after the query's own filter in one flat
//!   `(&…)` (OpenLDAP builds candidates in filter order: see `class_search_filter`).
//! * Ids: an object's uid is its `uidAttribute` value (`entryUUID` by default, requested
//!   explicitly since it is operational; `dn`/`entryDN` makes the DN the uid). `__NAME__` is
//!   the DN, `__PASSWORD__` is `passwordAttribute`. Read/update/delete by uid is one subtree
//!   search `(uidAttribute=<uid>)` under `baseContexts`, then the operation on its DN.
//! * Values come back as arrays of strings (binary values base64), `__NAME__` as a string;
//!   writes take scalars or arrays (numbers and booleans as their text; base64 for
//!   attributes declared `JAVA_TYPE_BYTE_ARRAY`). An update replaces the given attributes
//!   (`null`/`[]` removes one); a changed `__NAME__` is a modDN (new RDN, new superior).
//! * Queries: the native [`QueryFilter`] is always pushed down as an RFC 4515 filter
//!   ([`to_ldap_filter`]); `__NAME__ eq <dn>` at the top becomes a base-scope search.
//!
//! # Connections
//! * Operations share a small pool (`poolConfigOption.maxObjects`) of connections bound as
//!   `principal`, opened lazily (never in [`LdapConnector::new`]) and replaced when they die.
//!   One ldap3 handle multiplexes concurrent operations on its connection.
//! * Paged queries (`page_size > 0`) use the Simple Paged Results control (RFC 2696). slapd
//!   keeps one paged search per connection and its cookie is only valid there, so each
//!   paged query gets its own connection, held in a bounded map ([`MAX_PAGED_SESSIONS`],
//!   idle TTL [`PAGED_SESSION_TTL`], least recently used evicted first) under a random,
//!   opaque cookie that is new for every page. An unknown, reused or expired cookie is an
//!   [`ConnectorError::InvalidAttribute`]. Finished sessions give their connection back for
//!   the next paged query. `total` is only set when a query ends within its first page.
//! * `sort` sends the Server Side Sort control (RFC 2891) as critical; a server without it
//!   answers [`ConnectorError::NotSupported`].
//! * `authenticate` binds as the account on a separate, short-lived connection.
//! * TLS: `ssl` (ldaps) or `startTLS` (the StartTLS extended operation on a plain
//!   connection). The server's certificate must chain to a platform root or to a
//!   certificate of the gateway's `certs/` directory (the [`Trust`] the proxy uses, given
//!   to [`LdapConnector::new`]) and must name `host` (a DNS name or an IP address SAN);
//!   there is no way to turn verification off. A failed handshake is
//!   [`ConnectorError::Unavailable`] naming TLS and the reason. A change of `certs/`
//!   rebuilds the TLS-using LDAP systems ([`uses_tls`]), so new connections use the new
//!   trust.
//! * `operationTimeout` (`SEARCH`, `GET`, `CREATE`, `UPDATE`, `DELETE`, `AUTHENTICATE`,
//!   `TEST`, `SYNC`, `SCHEMA`) bounds each whole operation → [`ConnectorError::Timeout`].
//!
//! # liveSync
//! The token is an `entryCSN` (a JSON string; OpenLDAP keeps it on every entry, with
//! microsecond time and a change counter, so CSNs are unique and totally ordered). `sync`
//! searches `(entryCSN>=T)` minus `(entryCSN=T)`, sorts by CSN and returns the oldest
//! `max` as [`SyncDelta::CreateOrUpdate`]; the next token is the last returned CSN, so
//! nothing is returned twice and entries sharing a timestamp are not missed.
//! `latest_sync_token` is the greatest `contextCSN` of the naming contexts when the server
//! keeps one (syncprov), otherwise the greatest `entryCSN` under `baseContexts`.
//! Deletes leave no entry behind. With `accessLogBase` set (the suffix of OpenLDAP's
//! `accesslog` overlay database, e.g. `cn=accesslog`, logging at least `logops delete` with
//! `logsuccess TRUE`, ideally `logold (objectClass=*)`), `sync` also reads the logged
//! deletes after the token (`auditDelete` entries, ordered by their own `entryCSN`) and
//! returns them as [`SyncDelta::Delete`] with the uid from `reqEntryUUID` (or the old
//! entry); without `logold` a delete cannot be matched to an object class and is reported
//! for every class. **Without `accessLogBase`, deletes are not seen by liveSync**:
//! reconciliation finds them. `accountSearchFilter`/`groupSearchFilter` do not apply to
//! logged deletes.
//!
//! Secrets: `credentials` and passwords never appear in logs, errors or `Debug`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ldap3::asn1::{ASNTag, Boolean, OctetString, Sequence, Tag, TagClass};
use ldap3::controls::{PagedResults, RawControl};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};
use serde_json::{json, Map, Value};

use super::connector::*;
use super::provisioner::{ConnectorKind, Provisioner};
use crate::config::Trust;
use crate::crest::filter::{CompareOp, FilterValue, QueryFilter};

/// Most paged queries kept open at once (each holds one connection).
pub const MAX_PAGED_SESSIONS: usize = 64;
/// How long an open paged query waits for its next page.
pub const PAGED_SESSION_TTL: Duration = Duration::from_secs(60);
/// Connection timeout when no `connectTimeout` is configured.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SSS_OID: &str = "1.2.840.113556.1.4.473";
const PAGED_OID: &str = "1.2.840.113556.1.4.319";
/// The lowest possible CSN: the token of an empty directory.
const ZERO_CSN: &str = "00000101000000.000000Z#000000#000#000000";

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The parsed `configurationProperties`.
#[derive(Clone)]
struct Config {
    system: String,
    url: String,
    /// `ssl` or `startTLS`.
    tls: bool,
    start_tls: bool,
    principal: Option<String>,
    credentials: Option<String>,
    base_contexts: Vec<String>,
    account_object_classes: Vec<String>,
    group_object_classes: Vec<String>,
    account_user_name_attributes: Vec<String>,
    account_search_filter: Option<String>,
    group_search_filter: Option<String>,
    uid_attribute: String,
    password_attribute: String,
    use_paged_results: bool,
    block_size: usize,
    access_log_base: Option<String>,
    connect_timeout: Duration,
    timeouts: HashMap<String, Duration>,
    pool_size: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("system", &self.system)
            .field("url", &self.url)
            .field("start_tls", &self.start_tls)
            .field("principal", &self.principal)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("base_contexts", &self.base_contexts)
            .field("uid_attribute", &self.uid_attribute)
            .finish_non_exhaustive()
    }
}

/// An LDAP attribute description: letters, digits, `-`, `.` and `;` options.
fn valid_attribute(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b';'))
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !host.starts_with(['.', '-'])
}

impl Config {
    fn parse(p: &Provisioner) -> Result<Config, Vec<String>> {
        let c = &p.configuration;
        let mut problems = Vec::new();
        let at = |key: &str| format!("/configurationProperties/{key}");

        let string = |key: &str, problems: &mut Vec<String>| -> Option<String> {
            match c.get(key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    problems.push(format!("{}: must be a string", at(key)));
                    None
                }
            }
        };
        let boolean = |key: &str, default: bool, problems: &mut Vec<String>| match c.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                problems.push(format!("{}: must be true or false", at(key)));
                default
            }
        };
        let strings = |key: &str, default: &[&str], problems: &mut Vec<String>| -> Vec<String> {
            match c.get(key) {
                None | Some(Value::Null) => default.iter().map(|s| s.to_string()).collect(),
                Some(Value::Array(items)) => {
                    let mut out = Vec::new();
                    for item in items {
                        match item.as_str() {
                            Some(s) if !s.trim().is_empty() => out.push(s.trim().to_owned()),
                            _ => {
                                problems.push(format!("{}: must hold non-empty strings", at(key)));
                                return Vec::new();
                            }
                        }
                    }
                    out
                }
                Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_owned()],
                Some(_) => {
                    problems.push(format!("{}: must be an array of strings", at(key)));
                    Vec::new()
                }
            }
        };
        let number = |key: &str, default: u64, problems: &mut Vec<String>| -> u64 {
            match c.get(key) {
                None | Some(Value::Null) => default,
                Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(default),
                Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => {
                    s.trim().parse().unwrap_or(default)
                }
                Some(_) => {
                    problems.push(format!("{}: must be a non-negative integer", at(key)));
                    default
                }
            }
        };

        let host = string("host", &mut problems);
        let host = match host {
            None => {
                if !problems.iter().any(|m| m.starts_with(&at("host"))) {
                    problems.push(format!(
                        "{}: missing (the LDAP server's host name)",
                        at("host")
                    ));
                }
                String::new()
            }
            Some(h) if !valid_host(h.trim()) => {
                problems.push(format!(
                    "{}: '{h}' is not a host name or IP address",
                    at("host")
                ));
                String::new()
            }
            Some(h) => h.trim().to_owned(),
        };
        let ssl = boolean("ssl", false, &mut problems);
        let start_tls = boolean("startTLS", false, &mut problems);
        if ssl && start_tls {
            problems.push(format!(
                "{}: ssl (ldaps) and startTLS cannot both be true",
                at("startTLS")
            ));
        }
        let port = number("port", if ssl { 636 } else { 389 }, &mut problems);
        if port == 0 || port > 65535 {
            problems.push(format!("{}: must be between 1 and 65535", at("port")));
        }
        let principal = string("principal", &mut problems);
        // Never echo the value of credentials.
        let credentials = match c.get("credentials") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) if o.contains_key("$crypto") => {
                problems.push(format!(
                    "{}: encrypted values ($crypto) are not supported; use a &{{ENV}} reference",
                    at("credentials")
                ));
                None
            }
            Some(_) => {
                problems.push(format!("{}: must be a string", at("credentials")));
                None
            }
        };
        if credentials.is_some() && principal.is_none() {
            problems.push(format!(
                "{}: credentials are set but no principal (the DN to bind as)",
                at("principal")
            ));
        }
        let base_contexts = match c.get("baseContexts") {
            None | Some(Value::Null) => {
                problems.push(format!(
                    "{}: missing; list the DNs to search under, e.g. [\"ou=people,dc=example,dc=com\"]",
                    at("baseContexts")
                ));
                Vec::new()
            }
            _ => strings("baseContexts", &[], &mut problems),
        };
        if c.get("baseContexts").is_some_and(|v| !v.is_null())
            && base_contexts.is_empty()
            && !problems.iter().any(|m| m.starts_with(&at("baseContexts")))
        {
            problems.push(format!("{}: must not be empty", at("baseContexts")));
        }
        for b in &base_contexts {
            if !b.contains('=') {
                problems.push(format!("{}: '{b}' is not a DN", at("baseContexts")));
            }
        }
        let account_object_classes = strings(
            "accountObjectClasses",
            &["top", "person", "organizationalPerson", "inetOrgPerson"],
            &mut problems,
        );
        let group_object_classes = strings(
            "groupObjectClasses",
            &["top", "groupOfUniqueNames"],
            &mut problems,
        );
        let account_user_name_attributes =
            strings("accountUserNameAttributes", &["uid"], &mut problems);
        for (key, list) in [
            ("accountObjectClasses", &account_object_classes),
            ("groupObjectClasses", &group_object_classes),
            ("accountUserNameAttributes", &account_user_name_attributes),
        ] {
            for name in list.iter() {
                if !valid_attribute(name) {
                    problems.push(format!("{}: '{name}' is not a valid name", at(key)));
                }
            }
        }
        let filter = |key: &str, problems: &mut Vec<String>| {
            let f = string(key, problems)?;
            let f = f.trim();
            let f = if f.starts_with('(') {
                f.to_owned()
            } else {
                format!("({f})")
            };
            if ldap3::parse_filter(&f).is_err() {
                problems.push(format!(
                    "{}: '{f}' is not an LDAP filter (RFC 4515)",
                    at(key)
                ));
                return None;
            }
            Some(f)
        };
        let account_search_filter = filter("accountSearchFilter", &mut problems);
        let group_search_filter = filter("groupSearchFilter", &mut problems);
        let attribute = |key: &str, default: &str, problems: &mut Vec<String>| {
            let v = string(key, problems).unwrap_or_else(|| default.to_owned());
            if !valid_attribute(&v) {
                problems.push(format!("{}: '{v}' is not an attribute name", at(key)));
            }
            v
        };
        let uid_attribute = attribute("uidAttribute", "entryUUID", &mut problems);
        let password_attribute = attribute("passwordAttribute", "userPassword", &mut problems);
        let use_paged_results = boolean("usePagedResultControl", true, &mut problems);
        let block_size = number("blockSize", 100, &mut problems).clamp(1, 10_000) as usize;
        let access_log_base = string("accessLogBase", &mut problems);
        if let Some(b) = &access_log_base {
            if !b.contains('=') {
                problems.push(format!("{}: '{b}' is not a DN", at("accessLogBase")));
            }
        }
        let connect_timeout = match number("connectTimeout", 0, &mut problems) {
            0 => DEFAULT_CONNECT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };

        if !problems.is_empty() {
            return Err(problems);
        }
        let scheme = if ssl { "ldaps" } else { "ldap" };
        Ok(Config {
            system: p.name.clone(),
            url: format!("{scheme}://{host}:{port}"),
            tls: ssl || start_tls,
            start_tls,
            principal,
            credentials,
            base_contexts,
            account_object_classes,
            group_object_classes,
            account_user_name_attributes,
            account_search_filter,
            group_search_filter,
            uid_attribute,
            password_attribute,
            use_paged_results,
            block_size,
            access_log_base,
            connect_timeout,
            timeouts: p.timeouts.clone(),
            pool_size: p.pool.max_objects.clamp(1, 64),
        })
    }

    /// The uid is the DN itself.
    fn uid_is_dn(&self) -> bool {
        self.uid_attribute.eq_ignore_ascii_case("dn")
            || self.uid_attribute.eq_ignore_ascii_case("entryDN")
    }
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

/// Escapes a value for an RFC 4515 filter: `*`, `(`, `)`, `\` and NUL as `\xx`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

fn filter_value_text(v: &FilterValue) -> String {
    match v {
        FilterValue::String(s) => s.clone(),
        FilterValue::Integer(i) => i.to_string(),
        FilterValue::Float(x) => x.to_string(),
        FilterValue::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
    }
}

/// Translates a filter on native names to an RFC 4515 LDAP filter. `__UID__` becomes
/// `uid_attribute`, `__NAME__` `entryDN`; other names must be attribute descriptions.
pub fn to_ldap_filter(filter: &QueryFilter, uid_attribute: &str) -> Result<String, String> {
    let attr = |field: &crate::crest::filter::JsonPointer| -> Result<String, String> {
        let name = match field.tokens() {
            [one] => one.as_str(),
            _ => return Err(format!("cannot filter on '{field}': not an LDAP attribute")),
        };
        let name = match name {
            UID => uid_attribute,
            NAME => "entryDN",
            PASSWORD => return Err("cannot filter on the password".into()),
            other => other,
        };
        if name.eq_ignore_ascii_case("dn") {
            return Ok("entryDN".into());
        }
        if !valid_attribute(name) {
            return Err(format!(
                "cannot filter on '{name}': not an LDAP attribute name"
            ));
        }
        Ok(name.to_owned())
    };
    Ok(match filter {
        QueryFilter::True => "(objectClass=*)".into(),
        QueryFilter::False => "(!(objectClass=*))".into(),
        QueryFilter::And(items) if items.is_empty() => "(objectClass=*)".into(),
        QueryFilter::Or(items) if items.is_empty() => "(!(objectClass=*))".into(),
        QueryFilter::And(items) | QueryFilter::Or(items) => {
            let op = if matches!(filter, QueryFilter::And(_)) {
                '&'
            } else {
                '|'
            };
            let mut out = format!("({op}");
            for item in items {
                out.push_str(&to_ldap_filter(item, uid_attribute)?);
            }
            out.push(')');
            out
        }
        QueryFilter::Not(inner) => format!("(!{})", to_ldap_filter(inner, uid_attribute)?),
        QueryFilter::Present(field) => format!("({}=*)", attr(field)?),
        QueryFilter::Compare { field, op, value } => {
            let a = attr(field)?;
            let v = escape_filter_value(&filter_value_text(value));
            match op {
                CompareOp::Eq => format!("({a}={v})"),
                CompareOp::Co if v.is_empty() => format!("({a}=*)"),
                CompareOp::Co => format!("({a}=*{v}*)"),
                CompareOp::Sw if v.is_empty() => format!("({a}=*)"),
                CompareOp::Sw => format!("({a}={v}*)"),
                CompareOp::Ge => format!("({a}>={v})"),
                CompareOp::Le => format!("({a}<={v})"),
                CompareOp::Gt => format!("(&({a}>={v})(!({a}={v})))"),
                CompareOp::Lt => format!("(&({a}<={v})(!({a}={v})))"),
            }
        }
        QueryFilter::In { field, values } => {
            let a = attr(field)?;
            match values.as_slice() {
                [] => "(!(objectClass=*))".into(),
                [one] => format!("({a}={})", escape_filter_value(one)),
                many => {
                    let mut out = "(|".to_owned();
                    for v in many {
                        out.push_str(&format!("({a}={})", escape_filter_value(v)));
                    }
                    out.push(')');
                    out
                }
            }
        }
    })
}

/// `(&a b …)` of the non-empty parts, or the single part.
fn and_filters(parts: Vec<String>) -> String {
    let parts: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    match parts.len() {
        0 => "(objectClass=*)".into(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("(&{})", parts.concat()),
    }
}

/// If the filter pins `__NAME__` (the DN) with `eq` at its top, the DN and the rest.
fn split_dn_filter(filter: &QueryFilter) -> Option<(String, Option<QueryFilter>)> {
    let is_dn_eq = |f: &QueryFilter| match f {
        QueryFilter::Compare {
            field,
            op: CompareOp::Eq,
            value: FilterValue::String(dn),
        } if field.tokens().len() == 1 && field.tokens()[0] == NAME => Some(dn.clone()),
        _ => None,
    };
    if let Some(dn) = is_dn_eq(filter) {
        return Some((dn, None));
    }
    if let QueryFilter::And(items) = filter {
        let pos = items.iter().position(|f| is_dn_eq(f).is_some())?;
        let dn = is_dn_eq(&items[pos])?;
        let rest: Vec<QueryFilter> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != pos)
            .map(|(_, f)| f.clone())
            .collect();
        let rest = match rest.len() {
            0 => None,
            1 => rest.into_iter().next(),
            _ => Some(QueryFilter::And(rest)),
        };
        return Some((dn, rest));
    }
    None
}

// ---------------------------------------------------------------------------------------
// DNs
// ---------------------------------------------------------------------------------------

/// The RDNs of a DN, split at unescaped commas, trimmed.
fn split_dn(dn: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    let mut quoted = false;
    for c in dn.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' | ';' if !quoted => {
                out.push(cur.trim().to_owned());
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() || !out.is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// A DN for comparison: RDNs trimmed, spaces around `=` dropped, lowercase.
fn normalize_dn(dn: &str) -> String {
    split_dn(dn)
        .iter()
        .map(|rdn| {
            rdn.split('+')
                .map(|ava| match ava.split_once('=') {
                    Some((a, v)) => format!("{}={}", a.trim(), v.trim()),
                    None => ava.trim().to_owned(),
                })
                .collect::<Vec<_>>()
                .join("+")
                .to_lowercase()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `dn` is `base` or below it.
fn dn_under(dn: &str, base: &str) -> bool {
    let (dn, base) = (normalize_dn(dn), normalize_dn(base));
    dn == base || dn.ends_with(&format!(",{base}"))
}

/// The first RDN and the parent DN.
fn rdn_and_parent(dn: &str) -> (String, String) {
    let parts = split_dn(dn);
    match parts.split_first() {
        Some((rdn, rest)) => (rdn.clone(), rest.join(",")),
        None => (String::new(), String::new()),
    }
}

// ---------------------------------------------------------------------------------------
// Controls
// ---------------------------------------------------------------------------------------

/// The Server Side Sort request control (RFC 2891), critical.
fn sort_control(keys: &[(String, bool)]) -> RawControl {
    let inner = keys
        .iter()
        .map(|(attr, ascending)| {
            let mut key = vec![Tag::OctetString(OctetString {
                inner: attr.as_bytes().to_vec(),
                ..Default::default()
            })];
            if !ascending {
                key.push(Tag::Boolean(Boolean {
                    id: 1,
                    class: TagClass::Context,
                    inner: true,
                }));
            }
            Tag::Sequence(Sequence {
                inner: key,
                ..Default::default()
            })
        })
        .collect();
    let value = Tag::Sequence(Sequence {
        inner,
        ..Default::default()
    })
    .into_structure();
    let mut buf = bytes::BytesMut::new();
    let val = match ldap3::asn1::write::encode_into(&mut buf, value) {
        Ok(()) => Some(buf.to_vec()),
        Err(_) => None,
    };
    RawControl {
        ctype: SSS_OID.to_owned(),
        crit: true,
        val,
    }
}

/// The cookie of a Paged Results response control, parsed without panicking.
fn paged_cookie(ctrls: &[ldap3::controls::Control]) -> Option<Vec<u8>> {
    let raw = ctrls.iter().find(|c| c.1.ctype == PAGED_OID)?;
    let val = raw.1.val.as_deref()?;
    let (_, tag) = ldap3::asn1::parse_tag(val).ok()?;
    let mut parts = tag.expect_constructed()?.into_iter();
    let _size = parts.next()?;
    parts.next()?.expect_primitive()
}

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

fn value_bytes(attr: &str, v: &Value, binary: bool, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) if binary => match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(b) => {
                out.push(b);
                Ok(())
            }
            Err(_) => Err(format!("'{attr}' must be base64 (a binary attribute)")),
        },
        Value::String(s) => {
            out.push(s.as_bytes().to_vec());
            Ok(())
        }
        Value::Number(n) => {
            out.push(n.to_string().into_bytes());
            Ok(())
        }
        Value::Bool(b) => {
            out.push(if *b {
                b"TRUE".to_vec()
            } else {
                b"FALSE".to_vec()
            });
            Ok(())
        }
        Value::Array(items) => {
            for item in items {
                if matches!(item, Value::Array(_) | Value::Object(_)) {
                    return Err(format!("'{attr}' must hold strings, numbers or booleans"));
                }
                value_bytes(attr, item, binary, out)?;
            }
            Ok(())
        }
        Value::Object(_) => Err(format!(
            "'{attr}' must be a string, a number, a boolean or an array of them"
        )),
    }
}

/// An entry's values of `attr` (case-insensitive), as JSON strings.
fn entry_values(entry: &SearchEntry, attr: &str) -> Option<Vec<Value>> {
    if let Some((_, vals)) = entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
    {
        return Some(vals.iter().map(|v| Value::String(v.clone())).collect());
    }
    entry
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, vals)| {
            vals.iter()
                .map(|v| Value::String(base64::engine::general_purpose::STANDARD.encode(v)))
                .collect()
        })
}

fn first_value(entry: &SearchEntry, attr: &str) -> Option<String> {
    entry_values(entry, attr)?
        .into_iter()
        .next()
        .and_then(|v| v.as_str().map(str::to_owned))
}

fn construct(re: ldap3::ResultEntry) -> Option<SearchEntry> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(re))).ok()
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

fn rc_name(rc: u32) -> &'static str {
    match rc {
        1 => "operations error",
        2 => "protocol error",
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        11 => "admin limit exceeded",
        12 => "unavailable critical extension",
        16 => "no such attribute",
        17 => "undefined attribute type",
        18 => "inappropriate matching",
        19 => "constraint violation",
        20 => "attribute or value exists",
        21 => "invalid attribute syntax",
        32 => "no such object",
        34 => "invalid DN syntax",
        48 => "inappropriate authentication",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwilling to perform",
        64 => "naming violation",
        65 => "object class violation",
        66 => "not allowed on non-leaf",
        67 => "not allowed on RDN",
        68 => "entry already exists",
        69 => "object class modifications prohibited",
        80 => "other",
        _ => "error",
    }
}

/// The TLS failure behind a connection error, if that is what it is.
fn tls_failure(e: &LdapError) -> Option<String> {
    let LdapError::Io { source } = e else {
        return None;
    };
    let inner = source.get_ref()?;
    let tls = inner.downcast_ref::<rustls::Error>()?;
    let hint = match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            " (the server's certificate must chain to a platform root or a CA in certs/)"
        }
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => " (the server's certificate does not name the configured host)",
        _ => "",
    };
    Some(format!("{tls}{hint}"))
}

/// Whether a provisioner configures an LDAP connector over TLS (`ssl` or `startTLS`): its
/// connector depends on the trust of `certs/`.
pub fn uses_tls(p: &Provisioner) -> bool {
    p.kind == ConnectorKind::Ldap
        && ["ssl", "startTLS"]
            .iter()
            .any(|k| p.configuration.get(*k) == Some(&Value::Bool(true)))
}

fn is_connection_error(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Io { .. }
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::EndOfStream
    )
}

// ---------------------------------------------------------------------------------------
// Paged sessions
// ---------------------------------------------------------------------------------------

/// One open query: its own connection and where it is.
struct PagedSearch {
    ldap: Ldap,
    bases: Vec<String>,
    base_idx: usize,
    scope: Scope,
    filter: String,
    attrs: Vec<String>,
    requested: Vec<String>,
    sort: Option<RawControl>,
    server_page: usize,
    paged: bool,
    server_cookie: Vec<u8>,
    buffer: VecDeque<ConnectorObject>,
    done: bool,
    fetched_any: bool,
}

#[derive(Default)]
struct Sessions {
    open: HashMap<String, (Instant, PagedSearch)>,
    /// Connections of finished sessions, for the next paged query.
    spare: Vec<Ldap>,
}

// ---------------------------------------------------------------------------------------
// The connector
// ---------------------------------------------------------------------------------------

pub struct LdapConnector {
    cfg: Arc<Config>,
    /// Trust anchors of `certs/` (with the platform roots) for `ssl`/`startTLS`.
    trust: Arc<Trust>,
    /// Built from `trust` on the first TLS connection.
    tls_config: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    slots: Vec<tokio::sync::Mutex<Option<Ldap>>>,
    next_slot: AtomicUsize,
    sessions: Mutex<Sessions>,
}

impl std::fmt::Debug for LdapConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConnector")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Where and how to search.
struct SearchSpec {
    bases: Vec<String>,
    scope: Scope,
    filter: String,
}

impl LdapConnector {
    /// Checks `configurationProperties`; touches no network. `trust` (platform roots plus
    /// `certs/`) verifies the server's certificate with `ssl` or `startTLS`.
    pub fn new(p: &Provisioner, trust: Arc<Trust>) -> Result<Self, Vec<String>> {
        let cfg = Config::parse(p)?;
        let slots = (0..cfg.pool_size)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        Ok(Self {
            cfg: Arc::new(cfg),
            trust,
            tls_config: std::sync::OnceLock::new(),
            slots,
            next_slot: AtomicUsize::new(0),
            sessions: Mutex::new(Sessions::default()),
        })
    }

    fn sys(&self) -> &str {
        &self.cfg.system
    }

    // --- errors -------------------------------------------------------------------------

    /// Maps an ldap3 error of `op` on `what` (a uid or DN).
    fn map_err(&self, op: &str, what: &str, e: LdapError) -> ConnectorError {
        let sys = self.sys();
        match e {
            LdapError::LdapResult { result } => {
                let rc = result.rc;
                let text = if result.text.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", result.text)
                };
                let msg = format!(
                    "system {sys}: cannot {op} {what}: {} [LDAP {rc}]{text}",
                    rc_name(rc)
                );
                match rc {
                    32 => ConnectorError::NotFound(msg),
                    68 => ConnectorError::AlreadyExists(msg),
                    16 | 17 | 18 | 19 | 20 | 21 | 34 | 64 | 65 | 67 | 69 => {
                        ConnectorError::InvalidAttribute(msg)
                    }
                    49 => ConnectorError::InvalidCredential(msg),
                    3 => ConnectorError::Timeout(msg),
                    12 => ConnectorError::NotSupported(msg),
                    51 | 52 => ConnectorError::Unavailable(msg),
                    _ => ConnectorError::Other(msg),
                }
            }
            LdapError::Timeout { .. } => {
                ConnectorError::Timeout(format!("system {sys}: {op} {what}: timed out"))
            }
            e if is_connection_error(&e) => ConnectorError::Unavailable(format!(
                "system {sys}: cannot {op} {what}: the LDAP server {} is unavailable: {e}",
                self.cfg.url
            )),
            e => ConnectorError::Other(format!("system {sys}: cannot {op} {what}: {e}")),
        }
    }

    /// Runs `fut` within the `operation`'s timeout, if one is set.
    async fn timed<T>(
        &self,
        operation: &str,
        what: &str,
        fut: impl std::future::Future<Output = ConnectorResult<T>>,
    ) -> ConnectorResult<T> {
        match self.cfg.timeouts.get(operation) {
            Some(d) => match tokio::time::timeout(*d, fut).await {
                Ok(r) => r,
                Err(_) => Err(ConnectorError::Timeout(format!(
                    "system {}: {operation} {what} took longer than {} ms",
                    self.sys(),
                    d.as_millis()
                ))),
            },
            None => fut.await,
        }
    }

    // --- connections --------------------------------------------------------------------

    /// A new connection, not bound.
    async fn open(&self) -> ConnectorResult<Ldap> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.connect_timeout)
            .set_starttls(self.cfg.start_tls);
        if self.cfg.tls {
            let config = self
                .tls_config
                .get_or_init(|| crate::remote::rustls_client_config(&self.trust));
            settings = settings.set_config(config.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url)
            .await
            .map_err(|e| match e {
                LdapError::Timeout { .. } => ConnectorError::Timeout(format!(
                    "system {}: connecting to {} timed out",
                    self.sys(),
                    self.cfg.url
                )),
                e if tls_failure(&e).is_some() => ConnectorError::Unavailable(format!(
                    "system {}: TLS handshake with {}{} failed: {}",
                    self.sys(),
                    self.cfg.url,
                    if self.cfg.start_tls {
                        " (StartTLS)"
                    } else {
                        ""
                    },
                    tls_failure(&e).unwrap_or_default()
                )),
                e => ConnectorError::Unavailable(format!(
                    "system {}: cannot connect to {}: {e}",
                    self.sys(),
                    self.cfg.url
                )),
            })?;
        let system = self.cfg.system.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(system = %system, error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }

    /// A new connection bound as `principal` (anonymous without one).
    async fn open_bound(&self) -> ConnectorResult<Ldap> {
        let mut ldap = self.open().await?;
        if let Some(principal) = &self.cfg.principal {
            let pw = self.cfg.credentials.as_deref().unwrap_or("");
            let res = ldap
                .with_timeout(self.cfg.connect_timeout)
                .simple_bind(principal, pw)
                .await
                .and_then(|r| r.success());
            if let Err(e) = res {
                let _ = ldap.unbind().await;
                return Err(match e {
                    LdapError::LdapResult { result } => ConnectorError::Unavailable(format!(
                        "system {}: cannot bind as the configured principal '{principal}': {} [LDAP {}]",
                        self.sys(),
                        rc_name(result.rc),
                        result.rc
                    )),
                    e => self.map_err("bind as", &format!("'{principal}'"), e),
                });
            }
        }
        Ok(ldap)
    }

    /// A pooled connection (a handle on a shared connection), reconnecting a dead slot.
    async fn conn(&self) -> ConnectorResult<Ldap> {
        let i = self.next_slot.fetch_add(1, AtomicOrdering::Relaxed) % self.slots.len().max(1);
        let Some(slot) = self.slots.get(i) else {
            return self.open_bound().await;
        };
        let mut slot = slot.lock().await;
        if let Some(ldap) = slot.as_mut() {
            if !ldap.is_closed() {
                return Ok(ldap.clone());
            }
        }
        *slot = None;
        let ldap = self.open_bound().await?;
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    // --- searches -----------------------------------------------------------------------

    /// The LDAP object classes of a native type.
    fn object_classes(&self, class: &ObjectClass) -> Vec<String> {
        match class.native_type.as_str() {
            "__ACCOUNT__" => self.cfg.account_object_classes.clone(),
            "__GROUP__" => self.cfg.group_object_classes.clone(),
            other => vec![other.to_owned()],
        }
    }

    /// The filter every search of `class` ANDs in.
    fn class_filter(&self, class: &ObjectClass) -> String {
        and_filters(self.class_parts(class))
    }

    /// A search of `class` restricted by `first` (RFC 4515 filters): one flat AND with `first`
    /// ahead of the class's parts. Same result as `(&<class filter><first>)`, but OpenLDAP
    /// (back-mdb) builds the candidate list component by component, in filter order, and the
    /// `(objectClass=…)` parts match every entry: with 50 000 inetOrgPersons (indexed
    /// objectClass and uid), `(&(&(objectClass=person)…)(uid=x))` costs slapd ~0.5 ms,
    /// `(&(uid=x)(objectClass=person)…)` ~0.2–0.3 ms and `(uid=x)` alone ~0.05 ms.
    fn class_search_filter(&self, class: &ObjectClass, first: Vec<String>) -> String {
        let mut parts = first;
        parts.extend(self.class_parts(class));
        and_filters(parts)
    }

    /// The parts of [`Self::class_filter`]: `(objectClass=…)` of each class but `top`, then
    /// the configured search filter.
    fn class_parts(&self, class: &ObjectClass) -> Vec<String> {
        let mut parts: Vec<String> = self
            .object_classes(class)
            .iter()
            .filter(|c| !c.eq_ignore_ascii_case("top"))
            .map(|c| format!("(objectClass={})", escape_filter_value(c)))
            .collect();
        if parts.is_empty() {
            parts.push("(objectClass=*)".into());
        }
        match class.native_type.as_str() {
            "__ACCOUNT__" => parts.extend(self.cfg.account_search_filter.clone()),
            "__GROUP__" => parts.extend(self.cfg.group_search_filter.clone()),
            _ => {}
        }
        parts
    }

    /// The attributes to ask the server for: the requested ones, mapped, plus the uid.
    fn wire_attributes(&self, requested: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |a: &str| {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
                out.push(a.to_owned());
            }
        };
        if !self.cfg.uid_is_dn() {
            push(&self.cfg.uid_attribute);
        }
        for a in requested {
            match a.as_str() {
                UID | NAME | PASSWORD | ENABLE => {}
                a if valid_attribute(a) => push(a),
                _ => {}
            }
        }
        if out.is_empty() {
            // "1.1": no attributes (RFC 4511).
            out.push("1.1".into());
        }
        out
    }

    /// An entry as the connector returns it, with the `requested` native attributes.
    fn to_object(&self, entry: &SearchEntry, requested: &[String]) -> Option<ConnectorObject> {
        let uid = if self.cfg.uid_is_dn() {
            entry.dn.clone()
        } else {
            first_value(entry, &self.cfg.uid_attribute)?
        };
        let mut attributes = Map::new();
        for a in requested {
            match a.as_str() {
                NAME => {
                    attributes.insert(NAME.into(), Value::String(entry.dn.clone()));
                }
                UID | PASSWORD | ENABLE => {}
                a => {
                    if let Some(vals) = entry_values(entry, a) {
                        attributes.insert(a.to_owned(), Value::Array(vals));
                    }
                }
            }
        }
        Some(ConnectorObject { uid, attributes })
    }

    /// A whole (unpaged) search on `ldap`: every entry under every base.
    async fn search_all(
        &self,
        ldap: &mut Ldap,
        spec: &SearchSpec,
        attrs: &[String],
        sort: Option<&RawControl>,
        what: &str,
    ) -> ConnectorResult<Vec<SearchEntry>> {
        let mut out = Vec::new();
        for base in &spec.bases {
            if let Some(sort) = sort {
                ldap.with_controls(sort.clone());
            }
            let res = ldap
                .search(base, spec.scope, &spec.filter, attrs.to_vec())
                .await
                .map_err(|e| self.map_err("search", what, e))?;
            let (entries, result) = (res.0, res.1);
            match result.rc {
                0 => {}
                // A base that does not exist (or a base-scope DN) holds nothing.
                32 => continue,
                12 | 18 | 53 if sort.is_some() => {
                    return Err(ConnectorError::NotSupported(format!(
                        "system {}: the LDAP server cannot sort this query: {} [LDAP {}] {}",
                        self.sys(),
                        rc_name(result.rc),
                        result.rc,
                        result.text
                    )))
                }
                4 => {
                    return Err(ConnectorError::Other(format!(
                        "system {}: {what}: the LDAP server's size limit was exceeded; page the query (_pageSize)",
                        self.sys()
                    )))
                }
                _ => {
                    return Err(self.map_err(
                        "search",
                        what,
                        LdapError::LdapResult { result },
                    ))
                }
            }
            out.extend(entries.into_iter().filter_map(construct));
        }
        Ok(out)
    }

    /// The entry of `uid` in `class` (its DN and the `attrs`), or None.
    async fn find(
        &self,
        ldap: &mut Ldap,
        class: &ObjectClass,
        uid: &str,
        attrs: &[String],
    ) -> ConnectorResult<Option<SearchEntry>> {
        let spec = if self.cfg.uid_is_dn() {
            if !self.cfg.base_contexts.iter().any(|b| dn_under(uid, b)) {
                return Ok(None);
            }
            SearchSpec {
                bases: vec![uid.to_owned()],
                scope: Scope::Base,
                filter: self.class_filter(class),
            }
        } else {
            SearchSpec {
                bases: self.cfg.base_contexts.clone(),
                scope: Scope::Subtree,
                filter: self.class_search_filter(
                    class,
                    vec![format!(
                        "({}={})",
                        self.cfg.uid_attribute,
                        escape_filter_value(uid)
                    )],
                ),
            }
        };
        let what = format!("{} '{uid}'", class.name);
        let entries = match self.search_all(ldap, &spec, attrs, None, &what).await {
            Ok(e) => e,
            // An invalid uid (e.g. not a UUID for entryUUID) matches nothing.
            Err(ConnectorError::InvalidAttribute(_)) => return Ok(None),
            Err(ConnectorError::Other(m)) if m.contains("[LDAP 34]") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(entries.into_iter().next())
    }

    /// Like [`Self::find`], NotFound when missing.
    async fn find_dn(
        &self,
        ldap: &mut Ldap,
        class: &ObjectClass,
        uid: &str,
    ) -> ConnectorResult<String> {
        match self.find(ldap, class, uid, &["1.1".to_owned()]).await? {
            Some(e) => Ok(e.dn),
            None => Err(ConnectorError::NotFound(format!(
                "system {}: {} '{uid}' not found",
                self.sys(),
                class.name
            ))),
        }
    }

    /// The uid of the entry at `dn`.
    async fn uid_of(&self, ldap: &mut Ldap, dn: &str) -> ConnectorResult<String> {
        if self.cfg.uid_is_dn() {
            return Ok(dn.to_owned());
        }
        let what = format!("'{dn}'");
        let res = ldap
            .search(
                dn,
                Scope::Base,
                "(objectClass=*)",
                vec![self.cfg.uid_attribute.clone()],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.map_err("read", &what, e))?;
        res.0
            .into_iter()
            .filter_map(construct)
            .find_map(|e| first_value(&e, &self.cfg.uid_attribute))
            .ok_or_else(|| {
                ConnectorError::Other(format!(
                    "system {}: {what} has no {}",
                    self.sys(),
                    self.cfg.uid_attribute
                ))
            })
    }

    /// Turns JSON attributes into LDAP (attribute, values) pairs, native names mapped.
    fn ldap_values(
        &self,
        class: &ObjectClass,
        attributes: &Map<String, Value>,
    ) -> ConnectorResult<Vec<(String, Vec<Vec<u8>>)>> {
        let mut out: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for (name, v) in attributes {
            let ldap_name = match name.as_str() {
                NAME | UID => continue,
                PASSWORD => self.cfg.password_attribute.clone(),
                ENABLE => {
                    return Err(ConnectorError::InvalidAttribute(format!(
                        "system {}: __ENABLE__ is not supported by the LDAP connector",
                        self.sys()
                    )))
                }
                n if valid_attribute(n) => n.to_owned(),
                n => {
                    return Err(ConnectorError::InvalidAttribute(format!(
                        "system {}: '{n}' is not an LDAP attribute name",
                        self.sys()
                    )))
                }
            };
            let binary = class.by_native(name).is_some_and(|p| {
                matches!(
                    p.native_type.as_str(),
                    "JAVA_TYPE_BYTE_ARRAY" | "byte[]" | "JAVA_TYPE_GUARDEDBYTEARRAY"
                )
            });
            let mut vals = Vec::new();
            value_bytes(&ldap_name, v, binary, &mut vals).map_err(|m| {
                ConnectorError::InvalidAttribute(format!("system {}: {m}", self.sys()))
            })?;
            // Duplicate values are one value in LDAP.
            let mut seen = HashSet::new();
            vals.retain(|v| seen.insert(v.clone()));
            match out
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(&ldap_name))
            {
                Some((_, existing)) => existing.extend(vals),
                None => out.push((ldap_name, vals)),
            }
        }
        Ok(out)
    }

    // --- paged queries ------------------------------------------------------------------

    /// Fetches the next server page (or the whole base without paging) into the buffer.
    async fn fetch_more(&self, s: &mut PagedSearch) -> ConnectorResult<()> {
        let Some(base) = s.bases.get(s.base_idx).cloned() else {
            s.done = true;
            return Ok(());
        };
        let mut ctrls = Vec::new();
        if s.paged {
            ctrls.push(RawControl::from(PagedResults {
                size: s.server_page.min(i32::MAX as usize) as i32,
                cookie: s.server_cookie.clone(),
            }));
        }
        if let Some(sort) = &s.sort {
            ctrls.push(sort.clone());
        }
        if !ctrls.is_empty() {
            s.ldap.with_controls(ctrls);
        }
        let res = s
            .ldap
            .search(&base, s.scope, &s.filter, s.attrs.clone())
            .await
            .map_err(|e| self.map_err("search", &format!("under '{base}'"), e))?;
        let (entries, result) = (res.0, res.1);
        s.fetched_any = true;
        let next_cookie = match result.rc {
            0 => paged_cookie(&result.ctrls).unwrap_or_default(),
            32 => Vec::new(),
            12 | 18 | 53 if s.sort.is_some() => {
                return Err(ConnectorError::NotSupported(format!(
                    "system {}: the LDAP server cannot sort this query: {} [LDAP {}] {}",
                    self.sys(),
                    rc_name(result.rc),
                    result.rc,
                    result.text
                )))
            }
            4 => {
                return Err(ConnectorError::Other(format!(
                    "system {}: the LDAP server's size limit was exceeded",
                    self.sys()
                )))
            }
            _ => {
                return Err(self.map_err(
                    "search",
                    &format!("under '{base}'"),
                    LdapError::LdapResult { result },
                ))
            }
        };
        for e in entries.into_iter().filter_map(construct) {
            if let Some(o) = self.to_object(&e, &s.requested) {
                s.buffer.push_back(o);
            }
        }
        if next_cookie.is_empty() || !s.paged {
            s.base_idx += 1;
            s.server_cookie.clear();
            if s.base_idx >= s.bases.len() {
                s.done = true;
            }
        } else {
            s.server_cookie = next_cookie;
        }
        Ok(())
    }

    /// Takes a paged session by its cookie.
    fn take_session(&self, cookie: &str) -> ConnectorResult<PagedSearch> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.open.remove(cookie) {
            Some((at, s)) if at.elapsed() <= PAGED_SESSION_TTL => Ok(s),
            found => {
                if let Some((_, s)) = found {
                    sessions.spare.push(s.ldap);
                }
                Err(ConnectorError::InvalidAttribute(format!(
                    "system {}: the paged results cookie is unknown or expired (a cookie is valid once, for {} s); start the query again without one",
                    self.sys(),
                    PAGED_SESSION_TTL.as_secs()
                )))
            }
        }
    }

    /// Keeps a session for its next page; its new cookie.
    fn keep_session(&self, s: PagedSearch) -> String {
        let cookie = random_cookie();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let expired: Vec<String> = sessions
            .open
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) > PAGED_SESSION_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some((_, old)) = sessions.open.remove(&k) {
                drop(old);
            }
        }
        while sessions.open.len() >= MAX_PAGED_SESSIONS {
            let oldest = sessions
                .open
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    sessions.open.remove(&k);
                }
                None => break,
            }
        }
        sessions.open.insert(cookie.clone(), (now, s));
        cookie
    }

    /// Gives a finished session's connection back.
    fn finish_session(&self, s: PagedSearch) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.spare.len() < self.cfg.pool_size {
            sessions.spare.push(s.ldap);
        }
    }

    /// A connection for a new paged session: a spare one or a new one.
    async fn session_conn(&self) -> ConnectorResult<Ldap> {
        loop {
            let spare = {
                let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                sessions.spare.pop()
            };
            match spare {
                Some(mut l) => {
                    if !l.is_closed() {
                        return Ok(l);
                    }
                }
                None => return self.open_bound().await,
            }
        }
    }

    async fn query_inner(
        &self,
        class: &ObjectClass,
        filter: Option<&QueryFilter>,
        options: &QueryOptions,
    ) -> ConnectorResult<QueryPage> {
        let sort = if options.sort.is_empty() {
            None
        } else {
            let mut keys = Vec::new();
            for (a, asc) in &options.sort {
                let a = match a.as_str() {
                    UID if !self.cfg.uid_is_dn() => self.cfg.uid_attribute.clone(),
                    UID | NAME => "entryDN".to_owned(),
                    a if valid_attribute(a) => a.to_owned(),
                    a => {
                        return Err(ConnectorError::InvalidAttribute(format!(
                            "system {}: cannot sort on '{a}'",
                            self.sys()
                        )))
                    }
                };
                keys.push((a, *asc));
            }
            Some(sort_control(&keys))
        };

        let mut requested = options.attributes.clone();
        if !requested.iter().any(|a| a == NAME) {
            requested.push(NAME.to_owned());
        }
        let attrs = self.wire_attributes(&requested);

        // Continue an open paged query.
        if let Some(cookie) = options.cookie.as_deref().filter(|c| !c.is_empty()) {
            let mut s = self.take_session(cookie)?;
            return self
                .next_page(&mut s, options, 0)
                .await
                .map(|(page, keep)| {
                    let cookie = if keep {
                        Some(self.keep_session(s))
                    } else {
                        self.finish_session(s);
                        None
                    };
                    QueryPage { cookie, ..page }
                });
        }

        let spec = match filter.and_then(split_dn_filter) {
            Some((dn, rest)) => {
                let rest = match rest {
                    Some(f) => to_ldap_filter(&f, &self.cfg.uid_attribute),
                    None => Ok(String::new()),
                }
                .map_err(|m| {
                    ConnectorError::InvalidAttribute(format!("system {}: {m}", self.sys()))
                })?;
                let bases = if self.cfg.base_contexts.iter().any(|b| dn_under(&dn, b)) {
                    vec![dn]
                } else {
                    Vec::new()
                };
                SearchSpec {
                    bases,
                    scope: Scope::Base,
                    filter: self.class_search_filter(class, vec![rest]),
                }
            }
            None => {
                let f = match filter {
                    None | Some(QueryFilter::True) => String::new(),
                    Some(f) => to_ldap_filter(f, &self.cfg.uid_attribute).map_err(|m| {
                        ConnectorError::InvalidAttribute(format!("system {}: {m}", self.sys()))
                    })?,
                };
                SearchSpec {
                    bases: self.cfg.base_contexts.clone(),
                    scope: Scope::Subtree,
                    filter: self.class_search_filter(class, vec![f]),
                }
            }
        };
        if spec.bases.is_empty() {
            return Ok(QueryPage {
                total: options.count.then_some(0),
                remaining: Some(0),
                ..Default::default()
            });
        }

        let ldap = self.session_conn().await?;
        let mut s = PagedSearch {
            ldap,
            bases: spec.bases,
            base_idx: 0,
            scope: spec.scope,
            filter: spec.filter,
            attrs,
            requested,
            sort,
            // Everything (page_size 0) is fetched in blocks of blockSize.
            server_page: if options.page_size == 0 {
                self.cfg.block_size
            } else {
                options.page_size
            },
            paged: self.cfg.use_paged_results,
            server_cookie: Vec::new(),
            buffer: VecDeque::new(),
            done: false,
            fetched_any: false,
        };
        if options.page_size == 0 {
            let mut objects = Vec::new();
            loop {
                objects.extend(s.buffer.drain(..));
                if s.done {
                    break;
                }
                self.fetch_more(&mut s).await?;
            }
            self.finish_session(s);
            let total = options.count.then_some(objects.len() as i64);
            let objects: Vec<ConnectorObject> = objects.into_iter().skip(options.offset).collect();
            return Ok(QueryPage {
                objects,
                cookie: None,
                remaining: Some(0),
                total,
            });
        }
        let result = self.next_page(&mut s, options, options.offset).await;
        match result {
            Ok((page, keep)) => {
                let cookie = if keep {
                    Some(self.keep_session(s))
                } else {
                    self.finish_session(s);
                    None
                };
                Ok(QueryPage { cookie, ..page })
            }
            Err(e) => Err(e),
        }
    }

    /// The next page of a session after skipping `skip`; whether the session goes on.
    async fn next_page(
        &self,
        s: &mut PagedSearch,
        options: &QueryOptions,
        skip: usize,
    ) -> ConnectorResult<(QueryPage, bool)> {
        let first = !s.fetched_any;
        let mut skipped = 0;
        while skipped < skip {
            if s.buffer.is_empty() {
                if s.done {
                    break;
                }
                self.fetch_more(s).await?;
                continue;
            }
            s.buffer.pop_front();
            skipped += 1;
        }
        let n = options.page_size.max(1);
        // Fill the page, and look one entry ahead so the last page carries no cookie.
        while s.buffer.len() <= n && !s.done {
            self.fetch_more(s).await?;
        }
        let take = n.min(s.buffer.len());
        let objects: Vec<ConnectorObject> = s.buffer.drain(..take).collect();
        let more = !s.buffer.is_empty() || !s.done;
        let total = (options.count && first && !more).then_some((skipped + objects.len()) as i64);
        let remaining = (!more)
            .then_some(0)
            .or_else(|| s.done.then_some(s.buffer.len() as i64));
        Ok((
            QueryPage {
                objects,
                cookie: None,
                remaining,
                total,
            },
            more,
        ))
    }

    // --- liveSync -----------------------------------------------------------------------

    async fn max_csn(&self, ldap: &mut Ldap) -> ConnectorResult<String> {
        // contextCSN of the naming contexts, when the server keeps one (syncprov).
        let mut best: Option<String> = None;
        let root = ldap
            .search("", Scope::Base, "(objectClass=*)", vec!["namingContexts"])
            .await
            .and_then(|r| r.success());
        if let Ok((entries, _)) = root {
            let contexts: Vec<String> = entries
                .into_iter()
                .filter_map(construct)
                .flat_map(|e| entry_values(&e, "namingContexts").unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .filter(|nc| self.cfg.base_contexts.iter().any(|b| dn_under(b, nc)))
                .collect();
            for nc in contexts {
                if let Ok((entries, _)) = ldap
                    .search(&nc, Scope::Base, "(objectClass=*)", vec!["contextCSN"])
                    .await
                    .and_then(|r| r.success())
                {
                    for e in entries.into_iter().filter_map(construct) {
                        for v in entry_values(&e, "contextCSN").unwrap_or_default() {
                            if let Some(v) = v.as_str() {
                                if best.as_deref().is_none_or(|b| v > b) {
                                    best = Some(v.to_owned());
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(b) = best {
            return Ok(b);
        }
        // Otherwise the greatest entryCSN under the base contexts.
        let spec = SearchSpec {
            bases: self.cfg.base_contexts.clone(),
            scope: Scope::Subtree,
            filter: "(objectClass=*)".into(),
        };
        let mut entries = self
            .search_all(
                ldap,
                &spec,
                &["entryCSN".to_owned()],
                None,
                "the sync token",
            )
            .await?;
        if let Some(log) = &self.cfg.access_log_base {
            let spec = SearchSpec {
                bases: vec![log.clone()],
                scope: Scope::Subtree,
                filter: "(objectClass=auditDelete)".into(),
            };
            entries.extend(
                self.search_all(
                    ldap,
                    &spec,
                    &["entryCSN".to_owned()],
                    None,
                    "the sync token",
                )
                .await?,
            );
        }
        Ok(entries
            .iter()
            .filter_map(|e| first_value(e, "entryCSN"))
            .max()
            .unwrap_or_else(|| ZERO_CSN.to_owned()))
    }

    fn check_token(&self, token: &Value) -> ConnectorResult<Option<String>> {
        match token {
            Value::Null => Ok(None),
            Value::String(s)
                if !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'#')) =>
            {
                Ok(Some(s.clone()))
            }
            other => Err(ConnectorError::InvalidAttribute(format!(
                "system {}: the sync token {other} is not an LDAP entryCSN",
                self.sys()
            ))),
        }
    }

    /// Deletes of `class` logged by the accesslog overlay after `token`, with their CSN.
    async fn logged_deletes(
        &self,
        ldap: &mut Ldap,
        class: &ObjectClass,
        token: &str,
    ) -> ConnectorResult<Vec<(String, SyncDelta)>> {
        let Some(log) = &self.cfg.access_log_base else {
            return Ok(Vec::new());
        };
        let t = escape_filter_value(token);
        let spec = SearchSpec {
            bases: vec![log.clone()],
            scope: Scope::Subtree,
            filter: format!(
                "(&(objectClass=auditDelete)(reqResult=0)(entryCSN>={t})(!(entryCSN={t})))"
            ),
        };
        let attrs = ["entryCSN", "reqDN", "reqEntryUUID", "reqOld"].map(str::to_owned);
        let entries = self
            .search_all(ldap, &spec, &attrs, None, "liveSync (accesslog)")
            .await?;
        let classes: Vec<String> = self
            .object_classes(class)
            .into_iter()
            .filter(|c| !c.eq_ignore_ascii_case("top"))
            .collect();
        let mut out = Vec::new();
        for e in &entries {
            let (Some(csn), Some(dn)) = (first_value(e, "entryCSN"), first_value(e, "reqDN"))
            else {
                continue;
            };
            if !self.cfg.base_contexts.iter().any(|b| dn_under(&dn, b)) {
                continue;
            }
            // The old entry's attributes, as "name: value" lines.
            let old: Vec<(String, String)> = entry_values(e, "reqOld")
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| {
                    let v = v.as_str()?;
                    let (a, val) = v.split_once(':')?;
                    Some((a.trim().to_owned(), val.trim().to_owned()))
                })
                .collect();
            let old_classes: Vec<&str> = old
                .iter()
                .filter(|(a, _)| a.eq_ignore_ascii_case("objectClass"))
                .map(|(_, v)| v.as_str())
                .collect();
            // Without the old entry (no logold) the class is unknown: report the delete.
            if !old_classes.is_empty()
                && !classes
                    .iter()
                    .all(|c| old_classes.iter().any(|o| o.eq_ignore_ascii_case(c)))
            {
                continue;
            }
            let old_value = |attr: &str| {
                old.iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(attr))
                    .map(|(_, v)| v.clone())
            };
            let uid = if self.cfg.uid_is_dn() {
                Some(dn)
            } else if self.cfg.uid_attribute.eq_ignore_ascii_case("entryUUID") {
                first_value(e, "reqEntryUUID").or_else(|| old_value("entryUUID"))
            } else {
                old_value(&self.cfg.uid_attribute)
            };
            if let Some(uid) = uid {
                out.push((csn, SyncDelta::Delete(uid)));
            }
        }
        Ok(out)
    }
}

fn random_cookie() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------
// Schema (RFC 4512 descriptions)
// ---------------------------------------------------------------------------------------

/// The parts of an objectClass/attributeType description the schema needs.
#[derive(Debug, Default, Clone, PartialEq)]
struct SchemaDef {
    names: Vec<String>,
    sup: Vec<String>,
    must: Vec<String>,
    may: Vec<String>,
    single_value: bool,
    no_user_modification: bool,
    syntax: Option<String>,
}

fn schema_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' || c == '$' {
            out.push(c.to_string());
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            for c in chars.by_ref() {
                if c == '\'' {
                    break;
                }
                s.push(c);
            }
            out.push(format!("'{s}"));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '(' || c == ')' || c == '$' || c == '\'' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            out.push(s);
        }
    }
    out
}

/// Parses `( oid NAME 'x' SUP y MUST ( a $ b ) MAY c SINGLE-VALUE … )`.
fn parse_schema_def(text: &str) -> SchemaDef {
    let tokens = schema_tokens(text);
    let mut def = SchemaDef::default();
    let mut i = 0;
    // One value or a parenthesised list; quoted strings lose their leading quote mark.
    let list = |i: &mut usize| -> Vec<String> {
        let mut out = Vec::new();
        let clean = |t: &str| t.trim_start_matches('\'').to_owned();
        match tokens.get(*i).map(String::as_str) {
            Some("(") => {
                *i += 1;
                while let Some(t) = tokens.get(*i) {
                    *i += 1;
                    match t.as_str() {
                        ")" => break,
                        "$" => {}
                        t => out.push(clean(t)),
                    }
                }
            }
            Some(t) => {
                out.push(clean(t));
                *i += 1;
            }
            None => {}
        }
        out
    };
    while i < tokens.len() {
        let t = tokens[i].clone();
        i += 1;
        match t.as_str() {
            "NAME" => def.names = list(&mut i),
            "SUP" => def.sup = list(&mut i),
            "MUST" => def.must = list(&mut i),
            "MAY" => def.may = list(&mut i),
            "SYNTAX" => def.syntax = list(&mut i).into_iter().next(),
            "SINGLE-VALUE" => def.single_value = true,
            "NO-USER-MODIFICATION" => def.no_user_modification = true,
            _ => {}
        }
    }
    def
}

/// Binary syntaxes (octet string, JPEG, certificates, …).
fn binary_syntax(syntax: &str) -> bool {
    let oid = syntax.split('{').next().unwrap_or("");
    matches!(
        oid,
        "1.3.6.1.4.1.1466.115.121.1.5"
            | "1.3.6.1.4.1.1466.115.121.1.8"
            | "1.3.6.1.4.1.1466.115.121.1.9"
            | "1.3.6.1.4.1.1466.115.121.1.10"
            | "1.3.6.1.4.1.1466.115.121.1.28"
            | "1.3.6.1.4.1.1466.115.121.1.40"
    )
}

struct Subschema {
    classes: HashMap<String, SchemaDef>,
    attributes: HashMap<String, SchemaDef>,
}

impl Subschema {
    fn parse(object_classes: &[String], attribute_types: &[String]) -> Self {
        let index = |defs: &[String]| {
            let mut map = HashMap::new();
            for text in defs {
                let def = parse_schema_def(text);
                for n in &def.names {
                    map.insert(n.to_lowercase(), def.clone());
                }
            }
            map
        };
        Subschema {
            classes: index(object_classes),
            attributes: index(attribute_types),
        }
    }

    /// MUST and MAY attributes of `classes` and their superclasses, in order.
    fn attributes_of(&self, classes: &[String]) -> (Vec<String>, Vec<String>) {
        let (mut must, mut may) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        let mut todo: Vec<String> = classes.to_vec();
        let mut order = Vec::new();
        while let Some(c) = todo.pop() {
            if !seen.insert(c.to_lowercase()) || seen.len() > 1000 {
                continue;
            }
            if let Some(def) = self.classes.get(&c.to_lowercase()) {
                order.push(def.clone());
                todo.extend(def.sup.iter().cloned());
            }
        }
        order.reverse();
        let push = |list: &mut Vec<String>, a: &str| {
            if !list.iter().any(|x: &String| x.eq_ignore_ascii_case(a)) {
                list.push(a.to_owned());
            }
        };
        for def in &order {
            for a in &def.must {
                push(&mut must, a);
            }
        }
        for def in &order {
            for a in &def.may {
                if !must.iter().any(|m| m.eq_ignore_ascii_case(a)) {
                    push(&mut may, a);
                }
            }
        }
        (must, may)
    }

    /// An attribute type, following SUP for the syntax.
    fn attribute(&self, name: &str) -> (bool, bool, bool) {
        let mut def = self.attributes.get(&name.to_lowercase());
        let single = def.is_some_and(|d| d.single_value);
        let read_only = def.is_some_and(|d| d.no_user_modification);
        let mut binary = false;
        for _ in 0..10 {
            let Some(d) = def else { break };
            if let Some(s) = &d.syntax {
                binary = binary_syntax(s);
                break;
            }
            def = d
                .sup
                .first()
                .and_then(|s| self.attributes.get(&s.to_lowercase()));
        }
        (single, read_only, binary)
    }
}

impl LdapConnector {
    fn object_type_schema(&self, schema: &Subschema, native: &str, classes: &[String]) -> Value {
        let (must, may) = schema.attributes_of(classes);
        let mut props = Map::new();
        props.insert(
            "dn".into(),
            json!({"type": "string", "nativeName": NAME, "nativeType": "string", "required": true}),
        );
        for (attr, required) in must
            .iter()
            .map(|a| (a, true))
            .chain(may.iter().map(|a| (a, false)))
        {
            if attr.eq_ignore_ascii_case("objectClass") || props.contains_key(attr.as_str()) {
                continue;
            }
            let (single, read_only, binary) = schema.attribute(attr);
            if attr.eq_ignore_ascii_case(&self.cfg.password_attribute) {
                props.insert(
                    attr.clone(),
                    json!({"type": "string", "nativeName": PASSWORD,
                           "nativeType": "JAVA_TYPE_GUARDEDSTRING",
                           "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]}),
                );
                continue;
            }
            let native_type = if binary {
                "JAVA_TYPE_BYTE_ARRAY"
            } else {
                "string"
            };
            let mut p = if single {
                json!({"type": "string", "nativeName": attr, "nativeType": native_type})
            } else {
                json!({"type": "array", "items": {"type": "string", "nativeType": native_type},
                       "nativeName": attr, "nativeType": native_type})
            };
            if required {
                p["required"] = Value::Bool(true);
            }
            if read_only {
                p["flags"] = json!(["NOT_CREATABLE", "NOT_UPDATEABLE"]);
            }
            props.insert(attr.clone(), p);
        }
        json!({
            "$schema": "http://json-schema.org/draft-03/schema",
            "id": native,
            "type": "object",
            "nativeType": native,
            "properties": props,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The Connector trait
// ---------------------------------------------------------------------------------------

#[async_trait::async_trait]
impl Connector for LdapConnector {
    async fn test(&self) -> ConnectorResult<()> {
        self.timed("TEST", "test", async {
            let mut ldap = self.open_bound().await?;
            let mut result = Ok(());
            for base in &self.cfg.base_contexts {
                let res = ldap
                    .search(base, Scope::Base, "(objectClass=*)", vec!["1.1"])
                    .await
                    .and_then(|r| r.success());
                if let Err(e) = res {
                    result = Err(match self.map_err("read the base context", &format!("'{base}'"), e) {
                        ConnectorError::NotFound(m) => ConnectorError::Config(format!(
                            "{m}: /configurationProperties/baseContexts names an entry that does not exist"
                        )),
                        e => e,
                    });
                    break;
                }
            }
            let _ = ldap.unbind().await;
            result
        })
        .await
    }

    async fn schema(&self) -> ConnectorResult<Map<String, Value>> {
        self.timed("SCHEMA", "schema", async {
            let mut ldap = self.conn().await?;
            let root = ldap
                .search(
                    "",
                    Scope::Base,
                    "(objectClass=*)",
                    vec!["subschemaSubentry"],
                )
                .await
                .and_then(|r| r.success())
                .map_err(|e| self.map_err("read", "the root DSE", e))?;
            let sub = root
                .0
                .into_iter()
                .filter_map(construct)
                .find_map(|e| first_value(&e, "subschemaSubentry"))
                .unwrap_or_else(|| "cn=Subschema".to_owned());
            let res = ldap
                .search(
                    &sub,
                    Scope::Base,
                    "(objectClass=subschema)",
                    vec!["objectClasses", "attributeTypes"],
                )
                .await
                .and_then(|r| r.success())
                .map_err(|e| self.map_err("read", &format!("the schema '{sub}'"), e))?;
            let entry = res.0.into_iter().find_map(construct).ok_or_else(|| {
                ConnectorError::Other(format!("system {}: no subschema entry", self.sys()))
            })?;
            let strings = |a: &str| -> Vec<String> {
                entry_values(&entry, a)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            let schema = Subschema::parse(&strings("objectClasses"), &strings("attributeTypes"));
            let mut out = Map::new();
            out.insert(
                "account".into(),
                self.object_type_schema(&schema, "__ACCOUNT__", &self.cfg.account_object_classes),
            );
            out.insert(
                "group".into(),
                self.object_type_schema(&schema, "__GROUP__", &self.cfg.group_object_classes),
            );
            Ok(out)
        })
        .await
    }

    async fn authenticate(
        &self,
        class: &ObjectClass,
        username: &str,
        password: &str,
    ) -> ConnectorResult<String> {
        let denied = || {
            ConnectorError::InvalidCredential(format!(
                "system {}: wrong username or password for '{username}'",
                self.sys()
            ))
        };
        if username.is_empty() || password.is_empty() {
            // An empty password would be an unauthenticated bind, which "succeeds".
            return Err(denied());
        }
        self.timed("AUTHENTICATE", &format!("'{username}'"), async {
            let mut admin = self.conn().await?;
            let names: Vec<String> = self
                .cfg
                .account_user_name_attributes
                .iter()
                .map(|a| format!("({a}={})", escape_filter_value(username)))
                .collect();
            let by_name = if names.len() == 1 {
                names.concat()
            } else {
                format!("(|{})", names.concat())
            };
            let spec = SearchSpec {
                bases: self.cfg.base_contexts.clone(),
                scope: Scope::Subtree,
                filter: self.class_search_filter(class, vec![by_name]),
            };
            let attrs = self.wire_attributes(&[]);
            let entries = self
                .search_all(&mut admin, &spec, &attrs, None, &format!("'{username}'"))
                .await?;
            let [entry] = entries.as_slice() else {
                return Err(denied());
            };
            let uid = self
                .to_object(entry, &[])
                .map(|o| o.uid)
                .ok_or_else(denied)?;
            let mut user = self.open().await?;
            let res = user
                .simple_bind(&entry.dn, password)
                .await
                .and_then(|r| r.success());
            let _ = user.unbind().await;
            match res {
                Ok(_) => Ok(uid),
                Err(LdapError::LdapResult { result }) if matches!(result.rc, 48 | 49 | 50 | 53) => {
                    Err(denied())
                }
                Err(e) => Err(self.map_err("authenticate", &format!("'{username}'"), e)),
            }
        })
        .await
    }

    async fn create(
        &self,
        class: &ObjectClass,
        uid: Option<&str>,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        let dn = attributes
            .get(NAME)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Array(a) if a.len() == 1 => a[0].as_str().map(str::to_owned),
                _ => None,
            })
            .or_else(|| uid.filter(|_| self.cfg.uid_is_dn()).map(str::to_owned))
            .ok_or_else(|| {
                ConnectorError::InvalidAttribute(format!(
                    "system {}: a new {} needs its DN (__NAME__)",
                    self.sys(),
                    class.name
                ))
            })?;
        let what = format!("{} '{dn}'", class.name);
        let mut values = self.ldap_values(class, &attributes)?;
        if let Some(uid) = uid {
            if self.cfg.uid_is_dn() {
                if normalize_dn(uid) != normalize_dn(&dn) {
                    return Err(ConnectorError::InvalidAttribute(format!(
                        "system {}: the id '{uid}' differs from the DN '{dn}'",
                        self.sys()
                    )));
                }
            } else if self.cfg.uid_attribute.eq_ignore_ascii_case("entryUUID") {
                return Err(ConnectorError::NotSupported(format!(
                    "system {}: ids (entryUUID) are assigned by the LDAP server; create {} without an id",
                    self.sys(),
                    class.name
                )));
            } else {
                values.retain(|(n, _)| !n.eq_ignore_ascii_case(&self.cfg.uid_attribute));
                values.push((
                    self.cfg.uid_attribute.clone(),
                    vec![uid.as_bytes().to_vec()],
                ));
            }
        }
        if !values
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("objectClass"))
        {
            values.push((
                "objectClass".into(),
                self.object_classes(class)
                    .into_iter()
                    .map(String::into_bytes)
                    .collect(),
            ));
        }
        let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = values
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (n.into_bytes(), v.into_iter().collect()))
            .collect();
        self.timed("CREATE", &what, async {
            let mut ldap = self.conn().await?;
            ldap.add(&dn, attrs)
                .await
                .and_then(|r| r.success())
                .map_err(|e| self.map_err("create", &what, e))?;
            self.uid_of(&mut ldap, &dn).await
        })
        .await
    }

    async fn read(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: &[String],
    ) -> ConnectorResult<Option<ConnectorObject>> {
        let what = format!("{} '{uid}'", class.name);
        self.timed("GET", &what, async {
            let mut ldap = self.conn().await?;
            let wire = self.wire_attributes(attributes);
            Ok(self
                .find(&mut ldap, class, uid, &wire)
                .await?
                .and_then(|e| self.to_object(&e, attributes)))
        })
        .await
    }

    async fn update(
        &self,
        class: &ObjectClass,
        uid: &str,
        attributes: Map<String, Value>,
    ) -> ConnectorResult<String> {
        let what = format!("{} '{uid}'", class.name);
        let values = self.ldap_values(class, &attributes)?;
        let new_dn = match attributes.get(NAME) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().map(str::to_owned)
            }
            Some(_) => {
                return Err(ConnectorError::InvalidAttribute(format!(
                    "system {}: __NAME__ (the DN) must be a string",
                    self.sys()
                )))
            }
        };
        self.timed("UPDATE", &what, async {
            let mut ldap = self.conn().await?;
            let mut dn = self.find_dn(&mut ldap, class, uid).await?;
            if let Some(new_dn) = new_dn.filter(|n| normalize_dn(n) != normalize_dn(&dn)) {
                let (rdn, parent) = rdn_and_parent(&new_dn);
                let (_, old_parent) = rdn_and_parent(&dn);
                if rdn.is_empty() || !rdn.contains('=') {
                    return Err(ConnectorError::InvalidAttribute(format!(
                        "system {}: '{new_dn}' is not a DN",
                        self.sys()
                    )));
                }
                let new_sup =
                    (normalize_dn(&parent) != normalize_dn(&old_parent)).then_some(parent.as_str());
                ldap.modifydn(&dn, &rdn, true, new_sup)
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| self.map_err("rename", &format!("{what} to '{new_dn}'"), e))?;
                dn = new_dn;
            }
            let touches_uid = values
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&self.cfg.uid_attribute));
            let mods: Vec<Mod<Vec<u8>>> = values
                .into_iter()
                .map(|(n, v)| Mod::Replace(n.into_bytes(), v.into_iter().collect()))
                .collect();
            if !mods.is_empty() {
                ldap.modify(&dn, mods)
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| self.map_err("update", &what, e))?;
            }
            if self.cfg.uid_is_dn() || touches_uid {
                self.uid_of(&mut ldap, &dn).await
            } else {
                Ok(uid.to_owned())
            }
        })
        .await
    }

    async fn delete(&self, class: &ObjectClass, uid: &str) -> ConnectorResult<()> {
        let what = format!("{} '{uid}'", class.name);
        self.timed("DELETE", &what, async {
            let mut ldap = self.conn().await?;
            let dn = self.find_dn(&mut ldap, class, uid).await?;
            ldap.delete(&dn)
                .await
                .and_then(|r| r.success())
                .map_err(|e| self.map_err("delete", &what, e))?;
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
        let what = format!("query of {}", class.name);
        self.timed("SEARCH", &what, self.query_inner(class, filter, options))
            .await
    }

    async fn latest_sync_token(&self, _class: &ObjectClass) -> ConnectorResult<Value> {
        self.timed("SYNC", "the latest sync token", async {
            let mut ldap = self.conn().await?;
            Ok(Value::String(self.max_csn(&mut ldap).await?))
        })
        .await
    }

    async fn sync(
        &self,
        class: &ObjectClass,
        token: &Value,
        max: usize,
    ) -> ConnectorResult<SyncBatch> {
        let token = self.check_token(token)?;
        self.timed("SYNC", &format!("liveSync of {}", class.name), async {
            let mut ldap = self.conn().await?;
            let Some(token) = token else {
                // No token yet: start from now.
                return Ok(SyncBatch {
                    deltas: Vec::new(),
                    token: Value::String(self.max_csn(&mut ldap).await?),
                });
            };
            let t = escape_filter_value(&token);
            let spec = SearchSpec {
                bases: self.cfg.base_contexts.clone(),
                scope: Scope::Subtree,
                filter: self.class_search_filter(
                    class,
                    vec![format!("(entryCSN>={t})"), format!("(!(entryCSN={t}))")],
                ),
            };
            let mut requested = class.default_attributes();
            if !requested.iter().any(|a| a == NAME) {
                requested.push(NAME.to_owned());
            }
            let mut wire = self.wire_attributes(&requested);
            wire.retain(|a| a != "1.1");
            wire.push("entryCSN".into());
            let entries = self
                .search_all(&mut ldap, &spec, &wire, None, "liveSync")
                .await?;
            let mut changed: Vec<(String, SyncDelta)> = entries
                .iter()
                .filter_map(|e| {
                    Some((
                        first_value(e, "entryCSN")?,
                        SyncDelta::CreateOrUpdate(self.to_object(e, &requested)?),
                    ))
                })
                .collect();
            changed.extend(self.logged_deletes(&mut ldap, class, &token).await?);
            changed.sort_by(|a, b| a.0.cmp(&b.0));
            if max > 0 {
                changed.truncate(max);
            }
            let next = changed.last().map(|(csn, _)| csn.clone()).unwrap_or(token);
            Ok(SyncBatch {
                deltas: changed.into_iter().map(|(_, d)| d).collect(),
                token: Value::String(next),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::filter::JsonPointer;
    use crate::system::provisioner::parse;

    fn provisioner(props: Value) -> Provisioner {
        parse(
            "ldap",
            &json!({
                "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
                "configurationProperties": props,
            }),
        )
        .unwrap()
    }

    fn cmp(field: &str, op: CompareOp, v: &str) -> QueryFilter {
        QueryFilter::Compare {
            field: JsonPointer::parse(field),
            op,
            value: FilterValue::String(v.into()),
        }
    }

    #[test]
    fn filter_translation_table() {
        use CompareOp::*;
        let cases: Vec<(QueryFilter, &str)> = vec![
            (cmp("cn", Eq, "Bob"), "(cn=Bob)"),
            (cmp("cn", Co, "ob"), "(cn=*ob*)"),
            (cmp("cn", Sw, "Bo"), "(cn=Bo*)"),
            (cmp("cn", Ge, "b"), "(cn>=b)"),
            (cmp("cn", Le, "b"), "(cn<=b)"),
            (cmp("cn", Gt, "b"), "(&(cn>=b)(!(cn=b)))"),
            (cmp("cn", Lt, "b"), "(&(cn<=b)(!(cn=b)))"),
            (cmp("cn", Co, ""), "(cn=*)"),
            (QueryFilter::Present(JsonPointer::parse("mail")), "(mail=*)"),
            (QueryFilter::True, "(objectClass=*)"),
            (QueryFilter::False, "(!(objectClass=*))"),
            (cmp("__UID__", Eq, "abc"), "(entryUUID=abc)"),
            (cmp("__NAME__", Eq, "uid=a,dc=x"), "(entryDN=uid=a,dc=x)"),
            // Escaping of every special character.
            (
                cmp("cn", Eq, "a*b(c)d\\e\0f"),
                "(cn=a\\2ab\\28c\\29d\\5ce\\00f)",
            ),
            (cmp("cn", Co, "*)(uid=*"), "(cn=*\\2a\\29\\28uid=\\2a*)"),
            (cmp("cn", Eq, "Åsa Ünal"), "(cn=Åsa Ünal)"),
            (
                QueryFilter::And(vec![cmp("sn", Eq, "x"), cmp("cn", Eq, "y")]),
                "(&(sn=x)(cn=y))",
            ),
            (
                QueryFilter::Or(vec![cmp("sn", Eq, "x"), cmp("cn", Eq, "y")]),
                "(|(sn=x)(cn=y))",
            ),
            (QueryFilter::Not(Box::new(cmp("sn", Eq, "x"))), "(!(sn=x))"),
            (
                QueryFilter::In {
                    field: JsonPointer::parse("uid"),
                    values: vec!["a".into(), "b)".into()],
                },
                "(|(uid=a)(uid=b\\29))",
            ),
            (
                QueryFilter::In {
                    field: JsonPointer::parse("uid"),
                    values: vec![],
                },
                "(!(objectClass=*))",
            ),
            (
                QueryFilter::Compare {
                    field: JsonPointer::parse("uidNumber"),
                    op: Ge,
                    value: FilterValue::Integer(42),
                },
                "(uidNumber>=42)",
            ),
            (
                QueryFilter::Compare {
                    field: JsonPointer::parse("flag"),
                    op: Eq,
                    value: FilterValue::Bool(true),
                },
                "(flag=TRUE)",
            ),
        ];
        for (filter, want) in cases {
            let got = to_ldap_filter(&filter, "entryUUID").unwrap();
            assert_eq!(got, want, "{filter:?}");
            assert!(ldap3::parse_filter(&got).is_ok(), "{got} must parse");
        }
    }

    #[test]
    fn filter_rejects_bad_attribute_names() {
        for field in ["a=b)(x", "x y", "a/b", "__PASSWORD__"] {
            let f = QueryFilter::Present(JsonPointer(vec![field.into()]));
            assert!(to_ldap_filter(&f, "entryUUID").is_err(), "{field}");
        }
        let nested = QueryFilter::Present(JsonPointer::parse("/a/b"));
        assert!(to_ldap_filter(&nested, "entryUUID").is_err());
    }

    #[test]
    fn dn_filter_becomes_a_base_search() {
        let f = cmp("__NAME__", CompareOp::Eq, "uid=a,dc=x");
        assert_eq!(split_dn_filter(&f), Some(("uid=a,dc=x".into(), None)));
        let f = QueryFilter::And(vec![
            cmp("cn", CompareOp::Eq, "y"),
            cmp("__NAME__", CompareOp::Eq, "uid=a,dc=x"),
        ]);
        assert_eq!(
            split_dn_filter(&f),
            Some(("uid=a,dc=x".into(), Some(cmp("cn", CompareOp::Eq, "y"))))
        );
        assert_eq!(split_dn_filter(&cmp("cn", CompareOp::Eq, "y")), None);
    }

    #[test]
    fn dns() {
        assert_eq!(
            normalize_dn("UID=A, ou=People ,dc=X"),
            "uid=a,ou=people,dc=x"
        );
        assert!(dn_under("uid=a,ou=people,dc=x", "ou=People, dc=X"));
        assert!(!dn_under("uid=a,ou=people2,dc=x", "ou=people,dc=x"));
        assert_eq!(
            rdn_and_parent("cn=a\\,b,ou=p,dc=x"),
            ("cn=a\\,b".into(), "ou=p,dc=x".into())
        );
    }

    #[test]
    fn config_defaults_and_url() {
        let p = provisioner(
            json!({"host": "ldap.example.com", "baseContexts": ["dc=example,dc=com"],
                                   "principal": "cn=admin", "credentials": "hunter2-secret"}),
        );
        let c = LdapConnector::new(&p, Arc::default()).unwrap();
        assert_eq!(c.cfg.url, "ldap://ldap.example.com:389");
        assert_eq!(c.cfg.uid_attribute, "entryUUID");
        assert_eq!(c.cfg.password_attribute, "userPassword");
        assert_eq!(c.cfg.account_user_name_attributes, vec!["uid"]);
        assert_eq!(
            c.cfg.account_object_classes,
            vec!["top", "person", "organizationalPerson", "inetOrgPerson"]
        );
        assert_eq!(
            c.cfg.group_object_classes,
            vec!["top", "groupOfUniqueNames"]
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let p = provisioner(json!({"host": "h", "ssl": true, "baseContexts": ["dc=x"]}));
        assert_eq!(
            LdapConnector::new(&p, Arc::default()).unwrap().cfg.url,
            "ldaps://h:636"
        );
    }

    #[test]
    fn tls_is_ssl_or_starttls() {
        let tls = |props: Value| uses_tls(&provisioner(props));
        assert!(!tls(json!({"host": "h", "baseContexts": ["dc=x"]})));
        assert!(!tls(
            json!({"host": "h", "baseContexts": ["dc=x"], "ssl": false})
        ));
        assert!(tls(
            json!({"host": "h", "baseContexts": ["dc=x"], "ssl": true})
        ));
        assert!(tls(
            json!({"host": "h", "baseContexts": ["dc=x"], "startTLS": true})
        ));
        let c = LdapConnector::new(
            &provisioner(json!({"host": "h", "baseContexts": ["dc=x"], "startTLS": true})),
            Arc::default(),
        )
        .unwrap();
        assert!(c.cfg.tls && c.cfg.start_tls);
        assert_eq!(c.cfg.url, "ldap://h:389");
    }

    #[test]
    fn config_reports_every_problem() {
        let p = provisioner(json!({
            "host": "bad host/x", "port": "nope", "ssl": "yes", "principal": 5,
            "credentials": ["hunter2-secret"],
            "accountObjectClasses": "", "accountUserNameAttributes": [1],
            "accountSearchFilter": "(uid=", "uidAttribute": "a b",
            "usePagedResultControl": 1, "blockSize": -3,
        }));
        let problems = LdapConnector::new(&p, Arc::default()).err().unwrap();
        let all = problems.join("\n");
        for want in [
            "/configurationProperties/host: 'bad host/x' is not a host name",
            "/configurationProperties/port: must be",
            "/configurationProperties/ssl: must be true or false",
            "/configurationProperties/principal: must be a string",
            "/configurationProperties/credentials: must be a string",
            "/configurationProperties/baseContexts: missing",
            "/configurationProperties/accountObjectClasses: must be an array",
            "/configurationProperties/accountUserNameAttributes: must hold non-empty strings",
            "/configurationProperties/accountSearchFilter: '(uid=' is not an LDAP filter",
            "/configurationProperties/uidAttribute: 'a b' is not an attribute name",
            "/configurationProperties/usePagedResultControl: must be true or false",
            "/configurationProperties/blockSize: must be a non-negative integer",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert!(!all.contains("hunter2-secret"), "{all}");

        let p = provisioner(json!({"baseContexts": []}));
        let all = LdapConnector::new(&p, Arc::default())
            .err()
            .unwrap()
            .join("\n");
        assert!(
            all.contains("/configurationProperties/host: missing"),
            "{all}"
        );
        assert!(
            all.contains("/configurationProperties/baseContexts: must not be empty"),
            "{all}"
        );
        let p = provisioner(
            json!({"host": "h", "baseContexts": ["example"], "ssl": true, "startTLS": true}),
        );
        let all = LdapConnector::new(&p, Arc::default())
            .err()
            .unwrap()
            .join("\n");
        assert!(all.contains("'example' is not a DN"), "{all}");
        assert!(
            all.contains("/configurationProperties/startTLS: ssl (ldaps) and startTLS"),
            "{all}"
        );
    }

    #[test]
    fn searches_are_one_flat_and_with_the_selective_part_first() {
        let p = parse(
            "ldap",
            &json!({
                "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
                "configurationProperties": {"host": "h", "baseContexts": ["dc=x"],
                                            "accountSearchFilter": "(employeeType=staff)"},
                "objectTypes": {
                    "account": {"nativeType": "__ACCOUNT__", "properties": {"uid": {"type": "string"}}},
                    "device": {"nativeType": "device", "properties": {"cn": {"type": "string"}}}
                }
            }),
        )
        .unwrap();
        let c = LdapConnector::new(&p, Arc::default()).unwrap();
        let account = p.object_type("account").unwrap();
        let classes = "(objectClass=person)(objectClass=organizationalPerson)\
                       (objectClass=inetOrgPerson)(employeeType=staff)";
        assert_eq!(c.class_filter(account), format!("(&{classes})"));
        assert_eq!(
            c.class_search_filter(account, vec!["(uid=u1)".into()]),
            format!("(&(uid=u1){classes})")
        );
        assert_eq!(
            c.class_search_filter(
                account,
                vec!["(entryCSN>=1)".into(), "(!(entryCSN=1))".into()]
            ),
            format!("(&(entryCSN>=1)(!(entryCSN=1)){classes})")
        );
        // No query filter: the class filter alone.
        assert_eq!(
            c.class_search_filter(account, vec![String::new()]),
            c.class_filter(account)
        );
        let device = p.object_type("device").unwrap();
        assert_eq!(
            c.class_search_filter(device, vec!["(cn=a)".into()]),
            "(&(cn=a)(objectClass=device))"
        );
        assert_eq!(
            c.class_search_filter(device, vec![]),
            "(objectClass=device)"
        );
    }

    #[test]
    fn sort_control_encodes_keys() {
        let c = sort_control(&[("cn".into(), true), ("sn".into(), false)]);
        assert_eq!(c.ctype, SSS_OID);
        assert!(c.crit);
        // SEQUENCE { SEQUENCE { "cn" } SEQUENCE { "sn" [1] TRUE } }
        assert_eq!(
            c.val.unwrap(),
            vec![
                0x30, 0x0f, 0x30, 0x04, 0x04, 0x02, b'c', b'n', 0x30, 0x07, 0x04, 0x02, b's', b'n',
                0x81, 0x01, 0xff
            ]
        );
    }

    #[test]
    fn schema_descriptions() {
        let d = parse_schema_def(
            "( 2.5.6.6 NAME 'person' DESC 'RFC2256: a person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( userPassword $ telephoneNumber ) )",
        );
        assert_eq!(d.names, vec!["person"]);
        assert_eq!(d.sup, vec!["top"]);
        assert_eq!(d.must, vec!["sn", "cn"]);
        assert_eq!(d.may, vec!["userPassword", "telephoneNumber"]);
        let a = parse_schema_def(
            "( 0.9.2342.19200300.100.1.1 NAME ( 'uid' 'userid' ) EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{256} SINGLE-VALUE )",
        );
        assert_eq!(a.names, vec!["uid", "userid"]);
        assert!(a.single_value);
        assert_eq!(
            a.syntax.as_deref(),
            Some("1.3.6.1.4.1.1466.115.121.1.15{256}")
        );
        // Garbage never panics.
        let _ = parse_schema_def("( ( ' $ NAME");
        let _ = parse_schema_def("");
    }

    #[test]
    fn write_values() {
        let mut out = Vec::new();
        value_bytes("a", &json!(["x", 1, true, null]), false, &mut out).unwrap();
        assert_eq!(out, vec![b"x".to_vec(), b"1".to_vec(), b"TRUE".to_vec()]);
        assert!(value_bytes("a", &json!({"k": 1}), false, &mut Vec::new()).is_err());
        assert!(value_bytes("a", &json!([[1]]), false, &mut Vec::new()).is_err());
        let mut out = Vec::new();
        value_bytes("p", &json!("AAEC"), true, &mut out).unwrap();
        assert_eq!(out, vec![vec![0, 1, 2]]);
    }
}
