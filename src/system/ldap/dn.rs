//! Distinguished names: parsing (RFC 4514), the comparison form, whether one DN lies under
//! another, and DNs built from values.
//!
//! A DN the connector writes (a create's or a rename's) must parse and lie under one of
//! `baseContexts`; a value placed into a DN is escaped with [`ldap3::dn_escape`], so no
//! value can add an RDN or change the parent. ldap3 escapes but does not parse, hence the
//! parser here.

/// One attribute value assertion: the type lowercased, the value decoded (escapes
/// resolved; a `#hex` value kept as written, lowercased).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Ava {
    attr: String,
    value: String,
}

/// A parsed DN: its RDNs, leaf first, each a sorted set of AVAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dn(Vec<Vec<Ava>>);

impl Dn {
    /// Parses an RFC 4514 string. Also accepted, as most LDAP servers do: spaces around
    /// `,`, `+` and `=` and `;` as a separator (RFC 2253 producers), and quoted values
    /// (RFC 1779).
    pub(super) fn parse(text: &str) -> Result<Dn, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let mut rdns = Vec::new();
        p.spaces();
        if p.at_end() {
            return Ok(Dn(rdns));
        }
        loop {
            let mut rdn = vec![p.ava()?];
            loop {
                p.spaces();
                match p.peek() {
                    Some(b'+') => {
                        p.i += 1;
                        rdn.push(p.ava()?);
                    }
                    _ => break,
                }
            }
            rdn.sort();
            rdns.push(rdn);
            match p.peek() {
                None => break,
                Some(b',' | b';') => p.i += 1,
                Some(c) => return Err(format!("unexpected '{}'", c as char)),
            }
        }
        Ok(Dn(rdns))
    }

    /// `self` is `base` or below it.
    pub(super) fn is_under(&self, base: &Dn) -> bool {
        self.0.len() >= base.0.len() && self.0[self.0.len() - base.0.len()..] == base.0[..]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical text: types and values lowercased, values escaped.
    fn canonical(&self) -> String {
        self.0
            .iter()
            .map(|rdn| {
                rdn.iter()
                    .map(|a| format!("{}={}", a.attr, ldap3::dn_escape(a.value.as_str())))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn ava(&mut self) -> Result<Ava, String> {
        self.spaces();
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        {
            self.i += 1;
        }
        let attr = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        let valid = attr.bytes().next().is_some_and(|c| c.is_ascii_alphabetic())
            || (!attr.is_empty() && attr.bytes().all(|c| c.is_ascii_digit() || c == b'.'));
        if !valid {
            return Err("an RDN needs an attribute type".into());
        }
        let attr = attr.to_ascii_lowercase();
        self.spaces();
        if self.peek() != Some(b'=') {
            return Err(format!("'{attr}' is not followed by '='"));
        }
        self.i += 1;
        self.spaces();
        let value = match self.peek() {
            Some(b'#') => self.hex_value()?,
            Some(b'"') => self.quoted_value()?,
            _ => self.string_value()?,
        };
        Ok(Ava {
            attr,
            value: value.to_lowercase(),
        })
    }

    fn hex_value(&mut self) -> Result<String, String> {
        let start = self.i;
        self.i += 1;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.i += 1;
        }
        let hex = &self.s[start + 1..self.i];
        if hex.is_empty() || !hex.len().is_multiple_of(2) {
            return Err("a '#' value needs hex pairs".into());
        }
        self.spaces();
        Ok(String::from_utf8_lossy(&self.s[start..start + 1 + hex.len()]).into_owned())
    }

    fn quoted_value(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("a quoted value is not closed".into()),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => out.push(self.escape()?),
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        self.spaces();
        String::from_utf8(out).map_err(|_| "a value is not UTF-8".into())
    }

    fn string_value(&mut self) -> Result<String, String> {
        let mut out = Vec::new();
        // Bytes up to here came from escapes and are kept even if they are spaces.
        let mut kept = 0;
        loop {
            match self.peek() {
                None | Some(b',' | b';' | b'+') => break,
                Some(b'\\') => {
                    out.push(self.escape()?);
                    kept = out.len();
                }
                Some(c @ (b'"' | b'<' | b'>' | b'=' | 0)) => {
                    return Err(format!("'{}' must be escaped in a value", c as char))
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        // Unescaped trailing spaces are not part of the value.
        while out.len() > kept && out.last() == Some(&b' ') {
            out.pop();
        }
        String::from_utf8(out).map_err(|_| "a value is not UTF-8".into())
    }

    /// `\` followed by a special character or two hex digits: the byte.
    fn escape(&mut self) -> Result<u8, String> {
        self.i += 1;
        match self.peek() {
            Some(c) if b" \"#+,;<=>\\".contains(&c) => {
                self.i += 1;
                Ok(c)
            }
            Some(h) if h.is_ascii_hexdigit() => {
                let pair = self
                    .s
                    .get(self.i..self.i + 2)
                    .filter(|p| p.iter().all(u8::is_ascii_hexdigit))
                    .ok_or("'\\' must be followed by two hex digits or a special character")?;
                self.i += 2;
                u8::from_str_radix(std::str::from_utf8(pair).unwrap_or_default(), 16)
                    .map_err(|e| e.to_string())
            }
            _ => Err("'\\' must be followed by two hex digits or a special character".into()),
        }
    }
}

/// The RDNs of a DN, split at unescaped commas, trimmed, as written.
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

/// A DN for comparison: the canonical form when it parses, else lowercased.
pub(super) fn normalize_dn(dn: &str) -> String {
    match Dn::parse(dn) {
        Ok(d) => d.canonical(),
        Err(_) => dn.to_lowercase(),
    }
}

/// `dn` is `base` or below it (both must parse).
pub(super) fn dn_under(dn: &str, base: &str) -> bool {
    match (Dn::parse(dn), Dn::parse(base)) {
        (Ok(dn), Ok(base)) => dn.is_under(&base),
        _ => false,
    }
}

/// The DN `<attr>=<value>,<parent>`, the value escaped (RFC 4514).
pub(super) fn child_dn(attr: &str, value: &str, parent: &str) -> String {
    format!("{attr}={},{parent}", ldap3::dn_escape(value))
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

    #[test]
    fn dn_parsing() {
        let ok = |t: &str| Dn::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        // (text, same DN as)
        let same = [
            ("uid=a,ou=p,dc=x", "UID=A, ou=P ,dc=X"),
            ("cn=a\\,b,dc=x", "cn=a\\2cb,dc=x"),
            ("cn=a\\,b,dc=x", "cn=\"a,b\",dc=x"),
            ("cn=a+sn=b,dc=x", "sn=b+cn=a,dc=x"),
            ("cn=\\20x\\20,dc=x", "cn=\\ x\\ ,dc=x"),
            ("cn=#0401,dc=x", "cn=#0401 ,dc=x"),
            ("cn=a;dc=x", "cn=a,dc=x"),
            ("2.5.4.3=a,dc=x", "2.5.4.3=A,dc=x"),
            ("cn=\\c3\\a9,dc=x", "cn=é,dc=x"),
            ("", "  "),
        ];
        for (a, b) in same {
            assert_eq!(ok(a), ok(b), "{a} vs {b}");
            assert_eq!(normalize_dn(a), normalize_dn(b), "{a} vs {b}");
        }
        let different = [
            ("cn=a\\,b,dc=x", "cn=a,cn=b,dc=x"),
            ("cn=\\20x,dc=x", "cn=x,dc=x"),
            ("cn=a+sn=b,dc=x", "cn=a,sn=b,dc=x"),
        ];
        for (a, b) in different {
            assert_ne!(ok(a), ok(b), "{a} vs {b}");
        }
        for bad in [
            "x",
            "=a",
            "cn=a,,dc=x",
            "cn=a,",
            "cn=a\\zz",
            "cn=a\\",
            "cn=a=b",
            "cn=a\"b",
            "cn=\"a",
            "cn=#abc",
            "cn=a<b",
            "-cn=a",
            "cn=\\ff",
        ] {
            assert!(Dn::parse(bad).is_err(), "{bad}");
        }
        assert!(dn_under("uid=a\\,b,ou=p,dc=x", "OU=P,DC=X"));
        assert!(!dn_under("uid=a\\,ou=p,dc=x", "ou=p,dc=x"));
        assert!(!dn_under("uid=a,ou=p,dc=x,dc=y", "ou=p,dc=x"));
        assert!(dn_under("ou=p,dc=x", "ou=p,dc=x"));
        assert!(!dn_under("uid=a,ou=p,dc=x", "not a dn"));
    }

    #[test]
    fn child_dns_escape_the_value() {
        // (value, its RDN) — every RFC 4514 special, and leading/trailing characters.
        let cases = [
            ("a,b", "uid=a\\2cb"),
            ("a+b", "uid=a\\2bb"),
            ("a=b", "uid=a\\3db"),
            ("a\"b", "uid=a\\22b"),
            ("a\\b", "uid=a\\5cb"),
            ("a;b<c>", "uid=a\\3bb\\3cc\\3e"),
            (" lead", "uid=\\20lead"),
            ("#hash", "uid=\\23hash"),
            ("trail ", "uid=trail\\20"),
            ("x,ou=evil,dc=x", "uid=x\\2cou\\3devil\\2cdc\\3dx"),
        ];
        for (value, rdn) in cases {
            let dn = child_dn("uid", value, "ou=p,dc=x");
            assert_eq!(dn, format!("{rdn},ou=p,dc=x"));
            let parsed = Dn::parse(&dn).unwrap();
            assert!(parsed.is_under(&Dn::parse("ou=p,dc=x").unwrap()));
            assert_eq!(parsed.0.len(), 3, "{dn}");
            assert_eq!(parsed.0[0][0].value, value.to_lowercase(), "{dn}");
        }
    }
}
