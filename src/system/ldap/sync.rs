//! liveSync: the `entryCSN` token, the latest token of the server, and the deletes the
//! accesslog overlay records.

use super::*;

impl LdapConnector {
    pub(super) async fn max_csn(&self, ldap: &mut Ldap) -> ConnectorResult<String> {
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

    /// Deletes of `class` logged by the accesslog overlay after `token`, with their CSN.
    pub(super) async fn logged_deletes(
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
