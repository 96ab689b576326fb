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
//! reads the entries with `entryCSN` after T, oldest first, as
//! [`SyncDelta::CreateOrUpdate`], up to `max`; the next token is the last returned CSN, so
//! nothing is returned twice and entries sharing a timestamp are not missed. It reads them
//! in CSN windows of at most `blockSize` entries each, narrowed when a search hits the
//! client's or the server's size limit (a non-root principal's `olcLimits`), so a batch
//! never reads everything since the token (see `sync`).
//! `latest_sync_token` is the greatest `contextCSN` of the naming contexts when the server
//! keeps one (syncprov), otherwise the greatest `entryCSN` under `baseContexts`, found by
//! looking back from now in windows of the same bound.
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
//!
//! # Files
//! This file holds the connector, its error mapping and the [`Connector`] impl; the rest is
//! one file per concern: `config` (configurationProperties), `filter` (RFC 4515 filters),
//! `dn` (DNs), `pool` (connections), `search` (searches and entry conversion), `paged`
//! (paged and sorted queries), `sync` (liveSync) and `schema` (the subschema).

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

mod config;
mod dn;
mod filter;
mod paged;
mod pool;
mod schema;
mod search;
mod sync;

use config::{valid_attribute, Config};
use dn::{child_dn, dn_under, normalize_dn, rdn_and_parent, Dn};
use filter::{and_filters, split_dn_filter};
pub use filter::{escape_filter_value, to_ldap_filter};
use paged::Sessions;
use pool::is_connection_error;
pub use pool::uses_tls;
use schema::Subschema;
use search::{construct, entry_values, first_value};

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

// ---------------------------------------------------------------------------------------
// The connector
// ---------------------------------------------------------------------------------------

pub struct LdapConnector {
    cfg: Arc<Config>,
    /// Trust anchors of `certs/` (with the platform roots) for `ssl`/`startTLS`.
    trust: Arc<Trust>,
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

    /// A DN the connector is about to write (a create's or a rename's) must parse and lie
    /// below one of `baseContexts`.
    fn check_placement(&self, dn: &str) -> ConnectorResult<()> {
        let parsed = Dn::parse(dn).map_err(|e| {
            ConnectorError::InvalidAttribute(format!(
                "system {}: '{dn}' is not a DN: {e}",
                self.sys()
            ))
        })?;
        let under = self
            .cfg
            .base_contexts
            .iter()
            .any(|b| Dn::parse(b).is_ok_and(|base| parsed != base && parsed.is_under(&base)));
        if under {
            return Ok(());
        }
        Err(ConnectorError::InvalidAttribute(format!(
            "system {}: the DN '{dn}' is not under the base contexts ({})",
            self.sys(),
            self.cfg
                .base_contexts
                .iter()
                .map(|b| format!("'{b}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
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
        let given = attributes.get(NAME).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) if a.len() == 1 => a[0].as_str().map(str::to_owned),
            _ => None,
        });
        let dn = match (given, uid) {
            (Some(dn), _) => dn,
            (None, Some(uid)) if self.cfg.uid_is_dn() => uid.to_owned(),
            // Gateway extra: named by its id, in the first base context.
            (None, Some(uid))
                if !self.cfg.uid_attribute.eq_ignore_ascii_case("entryUUID")
                    && !self.cfg.base_contexts.is_empty() =>
            {
                child_dn(&self.cfg.uid_attribute, uid, &self.cfg.base_contexts[0])
            }
            _ => {
                return Err(ConnectorError::InvalidAttribute(format!(
                    "system {}: a new {} needs its DN (__NAME__)",
                    self.sys(),
                    class.name
                )))
            }
        };
        self.check_placement(&dn)?;
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
            if let Some(new_dn) = &new_dn {
                self.check_placement(new_dn)?;
            }
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
            self.changes_since(&mut ldap, class, token, max).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn provisioner(props: Value) -> Provisioner {
        crate::system::provisioner::parse(
            "ldap",
            &json!({
                "connectorRef": {"connectorName": "org.identityconnectors.ldap.LdapConnector"},
                "configurationProperties": props,
            }),
        )
        .unwrap()
    }
}
