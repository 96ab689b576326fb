//! liveSync: the `entryCSN` token, the latest token of the server, and the changes after a
//! token, read window by window.
//!
//! Every search here must stay within a size limit: the client's (`blockSize`) and the
//! server's for the principal (`olcLimits`; OpenLDAP applies the hard limit to paged
//! searches too, so paging would not lift it). A search that hits either is narrowed and
//! retried, never read whole:
//! * changes after the token are read in windows `token < entryCSN <= bound`, from the
//!   token forward, each window sorted by CSN: first the open window (everything left),
//!   then, when that holds too many, bounded windows whose width is halved until one fits
//!   and doubled after one does. A call stops at the first window that brings it to
//!   `max` changes, so a batch reads at most about `max` plus one window's worth;
//! * the latest CSN is found the other way round: `entryCSN >= now - width` for a width
//!   bisected between "nothing" and "too many" (the gateway's clock only places the first
//!   guess; the server's CSNs decide).
//!
//! Windows are placed on a CSN's (time, change counter) pair; OpenLDAP's CSN is
//! `YYYYmmddHHMMSS.ffffffZ#counter#sid#mod` (hex counter, sid and mod).

use chrono::{DateTime, NaiveDateTime};
use ldap3::SearchOptions;

use super::*;

/// Width of the first bounded window after the open one held too many changes.
const FIRST_WINDOW: i128 = 1_000_000 << COUNTER_BITS;
/// Width of the first window back from now when looking for the latest CSN.
const FIRST_LOOKBACK: i128 = (60 * 1_000_000) << COUNTER_BITS;
/// Bisection steps before giving up (each halves or doubles a width; 2^64 > 500 000 years in µs).
const MAX_STEPS: usize = 200;
const COUNTER_BITS: u32 = 24;

/// A CSN's position: microseconds since the epoch and the change counter, ordered as the
/// CSNs are. None when `csn` is not an OpenLDAP CSN.
pub(super) fn csn_key(csn: &str) -> Option<i128> {
    let (time, rest) = csn.split_once('Z')?;
    if time.len() != 21 || time.as_bytes()[14] != b'.' {
        return None;
    }
    let at = NaiveDateTime::parse_from_str(time, "%Y%m%d%H%M%S%.6f").ok()?;
    let counter = rest.strip_prefix('#')?.split('#').next()?;
    if counter.len() != 6 {
        return None;
    }
    let counter = i128::from_str_radix(counter, 16).ok()?;
    Some(((at.and_utc().timestamp_micros() as i128) << COUNTER_BITS) | counter)
}

/// The greatest CSN at `key` (any server id and modification number): `entryCSN <= it`
/// takes every change at that position.
pub(super) fn key_csn(key: i128) -> Option<String> {
    let micros = i64::try_from(key >> COUNTER_BITS).ok()?;
    let at = DateTime::from_timestamp_micros(micros)?;
    let counter = key & ((1 << COUNTER_BITS) - 1);
    Some(format!(
        "{}#{counter:06x}#fff#ffffff",
        at.format("%Y%m%d%H%M%S%.6fZ")
    ))
}

/// What a size-limited search found.
enum Window<T> {
    Fits(T),
    TooMany,
}

impl LdapConnector {
    /// The latest sync token: the greatest `contextCSN` of the naming contexts holding the
    /// base contexts when the server keeps one (syncprov), otherwise the greatest
    /// `entryCSN` under the base contexts (and of the logged deletes).
    pub(super) async fn max_csn(&self, ldap: &mut Ldap) -> ConnectorResult<String> {
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
        let mut best = self
            .greatest_csn(ldap, &self.cfg.base_contexts, "(objectClass=*)")
            .await?;
        if let Some(log) = &self.cfg.access_log_base {
            let logged = self
                .greatest_csn(ldap, std::slice::from_ref(log), "(objectClass=auditDelete)")
                .await?;
            best = best.max(logged);
        }
        Ok(best.unwrap_or_else(|| ZERO_CSN.to_owned()))
    }

    /// The greatest `entryCSN` of the entries matching `filter` under `bases`, reading at
    /// most `blockSize` entries per search.
    async fn greatest_csn(
        &self,
        ldap: &mut Ldap,
        bases: &[String],
        filter: &str,
    ) -> ConnectorResult<Option<String>> {
        let search = |from: Option<String>| SearchSpec {
            bases: bases.to_vec(),
            scope: Scope::Subtree,
            filter: match from {
                Some(csn) => and_filters(vec![
                    filter.to_owned(),
                    format!("(entryCSN>={})", escape_filter_value(&csn)),
                ]),
                None => filter.to_owned(),
            },
        };
        let greatest = |entries: Vec<SearchEntry>| {
            entries
                .iter()
                .filter_map(|e| first_value(e, "entryCSN"))
                .max()
        };
        let attrs = ["entryCSN".to_owned()];
        let what = "the sync token";
        if let Window::Fits(all) = self
            .search_within(ldap, &search(None), &attrs, what)
            .await?
        {
            return Ok(greatest(all));
        }
        // Too many for one search: look back from now, widening while nothing is found
        // and narrowing while too much is.
        let now = (chrono::Utc::now().timestamp_micros() as i128) << COUNTER_BITS;
        let (mut empty, mut full): (i128, Option<i128>) = (0, None);
        let mut width = FIRST_LOOKBACK;
        for _ in 0..MAX_STEPS {
            let from = key_csn(now - width).unwrap_or_else(|| ZERO_CSN.to_owned());
            match self
                .search_within(ldap, &search(Some(from)), &attrs, what)
                .await?
            {
                Window::Fits(found) if !found.is_empty() => return Ok(greatest(found)),
                Window::Fits(_) => empty = width,
                Window::TooMany => full = Some(width),
            }
            width = match full {
                Some(full) if full - empty <= 1 => break,
                Some(full) => empty + (full - empty) / 2,
                None => width.saturating_mul(2),
            };
        }
        Err(self.too_many_at_once("the sync token"))
    }

    fn too_many_at_once(&self, what: &str) -> ConnectorError {
        ConnectorError::Other(format!(
            "system {}: {what}: more than blockSize ({}) changes, or than the server's size limit for the principal, share one entryCSN position",
            self.sys(),
            self.cfg.block_size
        ))
    }

    /// Up to `max` (0: no limit) changes of `class` after `token`, oldest first, and the
    /// CSN of the last one as the next token (`token` itself when there is none).
    pub(super) async fn changes_since(
        &self,
        ldap: &mut Ldap,
        class: &ObjectClass,
        token: String,
        max: usize,
    ) -> ConnectorResult<SyncBatch> {
        let want = if max == 0 { usize::MAX } else { max };
        let mut requested = class.default_attributes();
        if !requested.iter().any(|a| a == NAME) {
            requested.push(NAME.to_owned());
        }
        let mut wire = self.wire_attributes(&requested);
        wire.retain(|a| a != "1.1");
        wire.push("entryCSN".into());

        let bad_token = || {
            ConnectorError::InvalidAttribute(format!(
                "system {}: the sync token '{token}' is not an LDAP entryCSN",
                self.sys()
            ))
        };
        let mut changes: Vec<(String, SyncDelta)> = Vec::new();
        let mut after = token.clone();
        // None: the open window; Some(w): the window of width w after `after`.
        let mut width: Option<i128> = None;
        let mut fitted: Option<i128> = None;
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > MAX_STEPS {
                return Err(self.too_many_at_once("liveSync"));
            }
            let upto = match width {
                None => None,
                Some(w) => {
                    let from = csn_key(&after).ok_or_else(bad_token)?;
                    Some(key_csn(from.saturating_add(w)).ok_or_else(bad_token)?)
                }
            };
            match self
                .window(ldap, class, &requested, &wire, &after, upto.as_deref())
                .await?
            {
                Window::TooMany => {
                    width = Some(match (width, fitted) {
                        (None, Some(f)) => f.saturating_mul(2),
                        (None, None) => FIRST_WINDOW,
                        (Some(w), _) if w > 1 => w / 2,
                        (Some(_), _) => return Err(self.too_many_at_once("liveSync")),
                    });
                }
                Window::Fits(mut found) => {
                    found.sort_by(|a, b| a.0.cmp(&b.0));
                    changes.extend(found);
                    let Some(upto) = upto else { break };
                    if changes.len() >= want {
                        break;
                    }
                    fitted = width;
                    width = None;
                    after = upto;
                    steps = 0;
                }
            }
        }
        changes.truncate(want);
        let next = changes.last().map(|(csn, _)| csn.clone()).unwrap_or(token);
        Ok(SyncBatch {
            deltas: changes.into_iter().map(|(_, d)| d).collect(),
            token: Value::String(next),
        })
    }

    /// The changes of `class` with `after < entryCSN <= upto` (no upper bound without
    /// `upto`): changed entries and logged deletes, with their CSNs, unsorted.
    async fn window(
        &self,
        ldap: &mut Ldap,
        class: &ObjectClass,
        requested: &[String],
        wire: &[String],
        after: &str,
        upto: Option<&str>,
    ) -> ConnectorResult<Window<Vec<(String, SyncDelta)>>> {
        let range = csn_range(after, upto);
        let spec = SearchSpec {
            bases: self.cfg.base_contexts.clone(),
            scope: Scope::Subtree,
            filter: self.class_search_filter(class, range.clone()),
        };
        let Window::Fits(entries) = self.search_within(ldap, &spec, wire, "liveSync").await? else {
            return Ok(Window::TooMany);
        };
        let mut changes: Vec<(String, SyncDelta)> = entries
            .iter()
            .filter_map(|e| {
                Some((
                    first_value(e, "entryCSN")?,
                    SyncDelta::CreateOrUpdate(self.to_object(e, requested)?),
                ))
            })
            .collect();
        let Some(log) = &self.cfg.access_log_base else {
            return Ok(Window::Fits(changes));
        };
        let mut parts = vec![
            "(objectClass=auditDelete)".to_owned(),
            "(reqResult=0)".into(),
        ];
        parts.extend(range);
        let spec = SearchSpec {
            bases: vec![log.clone()],
            scope: Scope::Subtree,
            filter: and_filters(parts),
        };
        let attrs = ["entryCSN", "reqDN", "reqEntryUUID", "reqOld"].map(str::to_owned);
        match self
            .search_within(ldap, &spec, &attrs, "liveSync (accesslog)")
            .await?
        {
            Window::Fits(logged) => {
                changes.extend(self.logged_deletes(class, &logged));
                Ok(Window::Fits(changes))
            }
            Window::TooMany => Ok(Window::TooMany),
        }
    }

    /// A search of at most `blockSize` entries per base: [`Window::TooMany`] when the
    /// client's or the server's size limit cuts it short.
    async fn search_within(
        &self,
        ldap: &mut Ldap,
        spec: &SearchSpec,
        attrs: &[String],
        what: &str,
    ) -> ConnectorResult<Window<Vec<SearchEntry>>> {
        let limit = i32::try_from(self.cfg.block_size).unwrap_or(i32::MAX);
        let mut out = Vec::new();
        for base in &spec.bases {
            ldap.with_search_options(SearchOptions::new().sizelimit(limit));
            let res = ldap
                .search(base, spec.scope, &spec.filter, attrs.to_vec())
                .await
                .map_err(|e| self.map_err("search", what, e))?;
            let (entries, result) = (res.0, res.1);
            match result.rc {
                0 => {}
                // A base that does not exist holds nothing.
                32 => continue,
                // sizeLimitExceeded, adminLimitExceeded.
                4 | 11 => return Ok(Window::TooMany),
                _ => return Err(self.map_err("search", what, LdapError::LdapResult { result })),
            }
            out.extend(entries.into_iter().filter_map(construct));
        }
        Ok(Window::Fits(out))
    }

    pub(super) fn check_token(&self, token: &Value) -> ConnectorResult<Option<String>> {
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

    /// The deletes of `class` among logged `auditDelete` entries, with their CSN.
    fn logged_deletes(
        &self,
        class: &ObjectClass,
        entries: &[SearchEntry],
    ) -> Vec<(String, SyncDelta)> {
        let classes: Vec<String> = self
            .object_classes(class)
            .into_iter()
            .filter(|c| !c.eq_ignore_ascii_case("top"))
            .collect();
        let mut out = Vec::new();
        for e in entries {
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
        out
    }
}

/// The filter parts of `after < entryCSN <= upto`.
fn csn_range(after: &str, upto: Option<&str>) -> Vec<String> {
    let after = escape_filter_value(after);
    let mut parts = vec![
        format!("(entryCSN>={after})"),
        format!("(!(entryCSN={after}))"),
    ];
    if let Some(upto) = upto {
        parts.push(format!("(entryCSN<={})", escape_filter_value(upto)));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csn_positions() {
        let cases = [
            "20261203081000.123456Z#000000#000#000000",
            "20261203081000.123456Z#000001#001#000000",
            "20261203081000.123457Z#000000#000#000000",
            "20261203081001.000000Z#00000a#000#000000",
            "20270101000000.000000Z#000000#000#000000",
        ];
        let keys: Vec<i128> = cases.iter().map(|c| csn_key(c).unwrap()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for (csn, key) in cases.iter().zip(&keys) {
            // The bound of a position takes every CSN at it, and nothing after it.
            let bound = key_csn(*key).unwrap();
            assert_eq!(&bound[..29], &csn[..29], "{csn}");
            assert!(bound.as_str() >= *csn);
            assert_eq!(csn_key(&bound), Some(*key));
        }
        assert!(key_csn(keys[0]).unwrap().as_str() < cases[1]);
        assert_eq!(
            csn_key(ZERO_CSN).and_then(key_csn).as_deref(),
            Some("00000101000000.000000Z#000000#fff#ffffff")
        );
        for bad in [
            "",
            "x",
            "20261203081000Z#000000#000#000000",
            "20261203081000.123456Z",
            "20261203081000.123456Z#0#000#000000",
            "20261303081000.123456Z#000000#000#000000",
        ] {
            assert_eq!(csn_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn csn_ranges() {
        assert_eq!(
            csn_range("a#1", None),
            vec!["(entryCSN>=a#1)", "(!(entryCSN=a#1))"]
        );
        assert_eq!(
            csn_range("a", Some("b")),
            vec!["(entryCSN>=a)", "(!(entryCSN=a))", "(entryCSN<=b)"]
        );
    }
}
