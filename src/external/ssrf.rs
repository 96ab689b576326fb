//! Server-side request forgery guard of `external/rest`: which addresses a call may reach.
//!
//! By default every public address may be called and none of the others: loopback,
//! private (RFC 1918), shared (CGNAT), link-local (cloud metadata at 169.254.169.254),
//! unique-local and site-local IPv6, unspecified, multicast, broadcast and reserved
//! addresses, in IPv4, IPv6 and IPv4-in-IPv6 forms (mapped, compatible, NAT64). The
//! gateway extra `allow` of `external.rest.json` opens some of them: CIDR blocks or single
//! addresses (`"10.1.2.0/24"`, `"127.0.0.1"`, `"::1/128"`), or host names with an optional
//! port (`"internal.example"`, `"internal.example:8443"`) whose every address is allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address may not be called by default, `None` for a public one.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 0 {
        "unspecified"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() || a >= 240 {
        "reserved"
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        "reserved (IETF protocol assignments)"
    } else if a == 198 && (b == 18 || b == 19) {
        "reserved (benchmarking)"
    } else {
        return None;
    })
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return restricted_v4(v4);
    }
    let first = ip.segments()[0];
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xffc0 == 0xfec0 {
        "site-local"
    } else if first & 0xfe00 == 0xfc00 {
        "unique-local"
    } else if ip.is_multicast() {
        "multicast"
    } else {
        return None;
    })
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && (s[6] != 0 || s[7] > 1))) {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    None
}

/// One entry of the allow list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Block { net: IpAddr, prefix: u8 },
    Host { name: String, port: Option<u16> },
}

/// The `allow` list of `external.rest.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Entry>);

impl AllowList {
    /// Parses the entries; one problem per entry that is none of the accepted forms.
    pub fn parse(entries: &[String]) -> Result<Self, Vec<String>> {
        let mut list = Vec::new();
        let mut problems = Vec::new();
        for (i, text) in entries.iter().enumerate() {
            match parse_entry(text.trim()) {
                Ok(e) => list.push(e),
                Err(why) => problems.push(format!("allow/{i}: '{text}' {why}")),
            }
        }
        if problems.is_empty() {
            Ok(Self(list))
        } else {
            Err(problems)
        }
    }

    /// Whether `host` (a name, as written in the URL) at `port` is allowed by name.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        let host = normalize_host(host);
        self.0.iter().any(|e| match e {
            Entry::Host { name, port: p } => *name == host && p.is_none_or(|p| p == port),
            Entry::Block { .. } => false,
        })
    }

    /// Whether `ip` falls in an allowed block.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|e| match e {
            Entry::Block { net, prefix } => in_block(ip, *net, *prefix),
            Entry::Host { .. } => false,
        })
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_entry(text: &str) -> Result<Entry, &'static str> {
    if text.is_empty() {
        return Err("is empty");
    }
    if let Some((addr, prefix)) = text.split_once('/') {
        let net: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| "is not an address block (CIDR such as 10.0.0.0/8 or fd00::/8)")?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| "has a prefix that is not a number")?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err("has a prefix longer than the address");
        }
        return Ok(Entry::Block {
            net: canonical(net),
            prefix,
        });
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        return Ok(Entry::Block {
            net: canonical(ip),
            prefix,
        });
    }
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => (
            name,
            Some(
                port.parse::<u16>()
                    .map_err(|_| "has a port that is not a number")?,
            ),
        ),
        None => (text, None),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid {
        return Err("is not a host name, host:port, address or address block");
    }
    Ok(Entry::Host {
        name: normalize_host(name),
        port,
    })
}

fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            masked(u32::from(ip).into(), u32::from(net).into(), prefix, 32)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => masked(ip.into(), net.into(), prefix, 128),
        _ => false,
    }
}

fn masked(ip: u128, net: u128, prefix: u8, bits: u32) -> bool {
    let shift = bits - u32::from(prefix);
    if shift >= 128 {
        return true;
    }
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn restricted_addresses_say_why() {
        for (addr, why) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique-local"),
            ("fc12::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::10.0.0.1", "private"),
        ] {
            assert_eq!(restricted(ip(addr)), Some(why), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(restricted(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn allow_list_blocks_and_hosts() {
        let list = AllowList::parse(&[
            "127.0.0.1/32".into(),
            "10.1.0.0/16".into(),
            "::1".into(),
            "Internal.Example:8443".into(),
            "other.example".into(),
        ])
        .unwrap();
        assert!(list.allows_ip(ip("127.0.0.1")));
        assert!(list.allows_ip(ip("::ffff:127.0.0.1")));
        assert!(!list.allows_ip(ip("127.0.0.2")));
        assert!(list.allows_ip(ip("10.1.255.3")));
        assert!(!list.allows_ip(ip("10.2.0.1")));
        assert!(list.allows_ip(ip("::1")));
        assert!(list.allows_host("internal.example.", 8443));
        assert!(!list.allows_host("internal.example", 443));
        assert!(list.allows_host("OTHER.example", 80));
        assert!(!list.allows_host("evil.example", 80));
        let all = AllowList::parse(&["0.0.0.0/0".into()]).unwrap();
        assert!(all.allows_ip(ip("192.168.0.1")));
        assert!(!all.allows_ip(ip("fd00::1")));
    }

    #[test]
    fn bad_entries_are_named() {
        let problems =
            AllowList::parse(&["10.0.0.0/33".into(), "a b".into(), "h:x".into(), "".into()])
                .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].starts_with("allow/0: '10.0.0.0/33'"),
            "{problems:?}"
        );
    }
}
