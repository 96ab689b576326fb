//! Distinguished names: splitting into RDNs, comparison form, and whether one DN lies
//! under another.

/// The RDNs of a DN, split at unescaped commas, trimmed.
pub(super) fn split_dn(dn: &str) -> Vec<String> {
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
pub(super) fn normalize_dn(dn: &str) -> String {
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
pub(super) fn dn_under(dn: &str, base: &str) -> bool {
    let (dn, base) = (normalize_dn(dn), normalize_dn(base));
    dn == base || dn.ends_with(&format!(",{base}"))
}

/// The first RDN and the parent DN.
pub(super) fn rdn_and_parent(dn: &str) -> (String, String) {
    let parts = split_dn(dn);
    match parts.split_first() {
        Some((rdn, rest)) => (rdn.clone(), rest.join(",")),
        None => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
