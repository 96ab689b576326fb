//! The LDAP connector's `configurationProperties`: parsed and checked once, every problem
//! reported together; `credentials` never shown by `Debug`.

use super::*;

/// The parsed `configurationProperties`.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) system: String,
    pub(super) url: String,
    /// `ssl` or `startTLS`.
    pub(super) tls: bool,
    pub(super) start_tls: bool,
    pub(super) principal: Option<String>,
    pub(super) credentials: Option<String>,
    pub(super) base_contexts: Vec<String>,
    pub(super) account_object_classes: Vec<String>,
    pub(super) group_object_classes: Vec<String>,
    pub(super) account_user_name_attributes: Vec<String>,
    pub(super) account_search_filter: Option<String>,
    pub(super) group_search_filter: Option<String>,
    pub(super) uid_attribute: String,
    pub(super) password_attribute: String,
    pub(super) use_paged_results: bool,
    pub(super) block_size: usize,
    pub(super) access_log_base: Option<String>,
    pub(super) connect_timeout: Duration,
    pub(super) timeouts: HashMap<String, Duration>,
    pub(super) pool_size: usize,
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
pub(super) fn valid_attribute(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b';'))
}

pub(super) fn valid_host(host: &str) -> bool {
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
    pub(super) fn parse(p: &Provisioner) -> Result<Config, Vec<String>> {
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
            match Dn::parse(b) {
                Ok(dn) if !dn.is_empty() => {}
                Ok(_) => problems.push(format!("{}: '{b}' is not a DN", at("baseContexts"))),
                Err(e) => problems.push(format!("{}: '{b}' is not a DN: {e}", at("baseContexts"))),
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
    pub(super) fn uid_is_dn(&self) -> bool {
        self.uid_attribute.eq_ignore_ascii_case("dn")
            || self.uid_attribute.eq_ignore_ascii_case("entryDN")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::ldap::tests::provisioner;

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
}
