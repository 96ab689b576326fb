//! Searches and entries: the class filters every search ANDs in, whole (unpaged) searches,
//! finding an entry by uid, and the conversions between LDAP entries and connector
//! objects (JSON values ↔ LDAP values).

use super::*;

pub(super) fn value_bytes(
    attr: &str,
    v: &Value,
    binary: bool,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), String> {
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
pub(super) fn entry_values(entry: &SearchEntry, attr: &str) -> Option<Vec<Value>> {
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

pub(super) fn first_value(entry: &SearchEntry, attr: &str) -> Option<String> {
    entry_values(entry, attr)?
        .into_iter()
        .next()
        .and_then(|v| v.as_str().map(str::to_owned))
}

pub(super) fn construct(re: ldap3::ResultEntry) -> Option<SearchEntry> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(re))).ok()
}

impl LdapConnector {
    // --- searches -----------------------------------------------------------------------

    /// The LDAP object classes of a native type.
    pub(super) fn object_classes(&self, class: &ObjectClass) -> Vec<String> {
        match class.native_type.as_str() {
            "__ACCOUNT__" => self.cfg.account_object_classes.clone(),
            "__GROUP__" => self.cfg.group_object_classes.clone(),
            other => vec![other.to_owned()],
        }
    }

    /// The filter every search of `class` ANDs in.
    pub(super) fn class_filter(&self, class: &ObjectClass) -> String {
        and_filters(self.class_parts(class))
    }

    /// A search of `class` restricted by `first` (RFC 4515 filters): one flat AND with `first`
    /// ahead of the class's parts. Same result as `(&<class filter><first>)`, but OpenLDAP
    /// (back-mdb) builds the candidate list component by component, in filter order, and the
    /// `(objectClass=…)` parts match every entry: with 50 000 inetOrgPersons (indexed
    /// objectClass and uid), `(&(&(objectClass=person)…)(uid=x))` costs slapd ~0.5 ms,
    /// `(&(uid=x)(objectClass=person)…)` ~0.2–0.3 ms and `(uid=x)` alone ~0.05 ms.
    pub(super) fn class_search_filter(&self, class: &ObjectClass, first: Vec<String>) -> String {
        let mut parts = first;
        parts.extend(self.class_parts(class));
        and_filters(parts)
    }

    /// The parts of [`Self::class_filter`]: `(objectClass=…)` of each class but `top`, then
    /// the configured search filter.
    pub(super) fn class_parts(&self, class: &ObjectClass) -> Vec<String> {
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
    pub(super) fn wire_attributes(&self, requested: &[String]) -> Vec<String> {
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
    pub(super) fn to_object(
        &self,
        entry: &SearchEntry,
        requested: &[String],
    ) -> Option<ConnectorObject> {
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
    pub(super) async fn search_all(
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
    pub(super) async fn find(
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
    pub(super) async fn find_dn(
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
    pub(super) async fn uid_of(&self, ldap: &mut Ldap, dn: &str) -> ConnectorResult<String> {
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
    pub(super) fn ldap_values(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::provisioner::parse;

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
