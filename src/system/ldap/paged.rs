//! Paged and sorted queries: the Paged Results (RFC 2696) and Server Side Sort (RFC 2891)
//! controls, and the bounded map of paged sessions, each on its own connection, behind
//! random one-use cookies.

use super::*;

/// The Server Side Sort request control (RFC 2891), critical.
pub(super) fn sort_control(keys: &[(String, bool)]) -> RawControl {
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
pub(super) fn paged_cookie(ctrls: &[ldap3::controls::Control]) -> Option<Vec<u8>> {
    let raw = ctrls.iter().find(|c| c.1.ctype == PAGED_OID)?;
    let val = raw.1.val.as_deref()?;
    let (_, tag) = ldap3::asn1::parse_tag(val).ok()?;
    let mut parts = tag.expect_constructed()?.into_iter();
    let _size = parts.next()?;
    parts.next()?.expect_primitive()
}

/// One open query: its own connection and where it is.
pub(super) struct PagedSearch {
    pub(super) ldap: Ldap,
    pub(super) bases: Vec<String>,
    pub(super) base_idx: usize,
    pub(super) scope: Scope,
    pub(super) filter: String,
    pub(super) attrs: Vec<String>,
    pub(super) requested: Vec<String>,
    pub(super) sort: Option<RawControl>,
    pub(super) server_page: usize,
    pub(super) paged: bool,
    pub(super) server_cookie: Vec<u8>,
    pub(super) buffer: VecDeque<ConnectorObject>,
    pub(super) done: bool,
    pub(super) fetched_any: bool,
}

#[derive(Default)]
pub(super) struct Sessions {
    pub(super) open: HashMap<String, (Instant, PagedSearch)>,
    /// Connections of finished sessions, for the next paged query.
    pub(super) spare: Vec<Ldap>,
}

impl LdapConnector {
    /// Fetches the next server page (or the whole base without paging) into the buffer.
    pub(super) async fn fetch_more(&self, s: &mut PagedSearch) -> ConnectorResult<()> {
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
    pub(super) fn take_session(&self, cookie: &str) -> ConnectorResult<PagedSearch> {
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
    pub(super) fn keep_session(&self, s: PagedSearch) -> String {
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
    pub(super) fn finish_session(&self, s: PagedSearch) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.spare.len() < self.cfg.pool_size {
            sessions.spare.push(s.ldap);
        }
    }

    /// A connection for a new paged session: a spare one or a new one.
    pub(super) async fn session_conn(&self) -> ConnectorResult<Ldap> {
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

    pub(super) async fn query_inner(
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
    pub(super) async fn next_page(
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
}

pub(super) fn random_cookie() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
