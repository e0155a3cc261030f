//! `INTERNET` targets: the caller's address as the server sees it, given as one address,
//! a FlexNet wildcard (`10.1.*.*`) or a CIDR range (`10.1.0.0/16`, `2001:db8::/32`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// A set of caller addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpPattern {
    /// Exactly this address.
    Addr(IpAddr),
    /// FlexNet's IPv4 wildcard: `None` octets (`*`) match anything.
    Wildcard([Option<u8>; 4]),
    /// A CIDR range; its host bits are zero (the parser refuses others as a likely typo).
    Cidr { base: IpAddr, prefix: u8 },
}

impl IpPattern {
    /// Parses an address, a wildcard or a range; `Err` says what is wrong.
    pub fn parse(s: &str) -> Result<IpPattern, &'static str> {
        if let Some((base, prefix)) = s.split_once('/') {
            let base: IpAddr = base.parse().map_err(|_| {
                "a CIDR range such as 10.1.0.0/16: the part before '/' is not an address"
            })?;
            let max = if base.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix.parse::<u8>() {
                Ok(p) if p <= max && prefix.bytes().all(|b| b.is_ascii_digit()) => p,
                _ => return Err("a CIDR range such as 10.1.0.0/16: the prefix length is not a number from 0 to 32 (128 for IPv6)"),
            };
            if mask(base, prefix) != base {
                return Err("a CIDR range whose address has no bits set past the prefix (such as 10.1.0.0/16)");
            }
            return Ok(IpPattern::Cidr { base, prefix });
        }
        if s.contains('*') {
            return wildcard(s).map(IpPattern::Wildcard).ok_or(
                "an IPv4 wildcard of four parts, each a number from 0 to 255 or '*' (such as 10.1.*.*); for IPv6 use a CIDR range",
            );
        }
        s.parse().map(IpPattern::Addr).map_err(|_| {
            "an IPv4 or IPv6 address, a wildcard such as 10.1.*.* or a range such as 10.1.0.0/16"
        })
    }

    /// Whether `ip` is in the set. An IPv4 client seen over IPv6 (`::ffff:10.1.2.3`)
    /// matches as its IPv4 address, since the admin wrote the address they know.
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match *self {
            IpPattern::Addr(a) => a == ip,
            IpPattern::Wildcard(parts) => match ip {
                IpAddr::V4(v4) => parts
                    .iter()
                    .zip(v4.octets())
                    .all(|(p, o)| p.is_none_or(|p| p == o)),
                IpAddr::V6(_) => false,
            },
            IpPattern::Cidr { base, prefix } => {
                base.is_ipv4() == ip.is_ipv4() && mask(ip, prefix) == base
            }
        }
    }
}

fn wildcard(s: &str) -> Option<[Option<u8>; 4]> {
    let mut out = [None; 4];
    let mut parts = s.split('.');
    for slot in &mut out {
        let p = parts.next()?;
        *slot = match p {
            "*" => None,
            digits
                if !digits.is_empty()
                    && digits.len() <= 3
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some(digits.parse().ok()?)
            }
            _ => return None,
        };
    }
    parts.next().is_none().then_some(out)
}

/// `ip` with every bit past `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for IpPattern {
    /// The form [`IpPattern::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpPattern::Addr(a) => write!(f, "{a}"),
            IpPattern::Cidr { base, prefix } => write!(f, "{base}/{prefix}"),
            IpPattern::Wildcard(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    match p {
                        Some(o) => write!(f, "{o}")?,
                        None => f.write_str("*")?,
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_match_what_they_say() {
        let cases = [
            ("10.1.*.*", "10.1.200.3", true),
            ("10.1.*.*", "10.2.0.1", false),
            ("*.*.*.7", "192.168.1.7", true),
            ("10.1.*.*", "::ffff:10.1.9.9", true),
            ("10.1.0.0/16", "10.1.255.255", true),
            ("10.1.0.0/16", "10.0.255.255", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("2001:db8::/32", "2001:db8:1::5", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("::1", "::1", true),
            ("192.168.1.7", "192.168.1.8", false),
        ];
        for (pattern, addr, expected) in cases {
            let p = IpPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(ip(addr)), expected, "{pattern} vs {addr}");
            assert_eq!(
                IpPattern::parse(&p.to_string()),
                Ok(p),
                "{pattern} round-trips"
            );
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "10.1.*",
            "10.1.*.*.*",
            "10.1.256.*",
            "10.1.+1.*",
            "10.1.0.1/16",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "2001:db8::*",
            "host.example.com",
            "",
            "*",
        ] {
            assert!(IpPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
