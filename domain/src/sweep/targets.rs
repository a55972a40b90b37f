//! Sweep targets: IP addresses, CIDR blocks and ranges `a-b`, parsed, checked against the
//! limits and a poller's allow-list, and merged into disjoint address intervals.

use std::net::IpAddr;
use std::str::FromStr;

/// One address family's interval `[start, end]`, addresses as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    /// True for IPv6.
    pub v6: bool,
    /// First address.
    pub start: u128,
    /// Last address (inclusive).
    pub end: u128,
}

impl Interval {
    /// How many addresses it holds.
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Never empty: an interval holds at least its start.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `other` lies wholly inside it.
    pub fn contains(&self, other: &Interval) -> bool {
        self.v6 == other.v6 && self.start <= other.start && other.end <= self.end
    }

    /// The address at integer `n` of this family.
    pub fn addr(&self, n: u128) -> IpAddr {
        to_ip(self.v6, n)
    }
}

fn to_ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(std::net::Ipv6Addr::from(n))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
    }
}

fn to_int(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Its network address (host bits cleared).
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// The addresses it covers.
    pub fn interval(&self) -> Interval {
        let (v6, n) = to_int(self.addr);
        let bits = if v6 { 128 } else { 32 };
        let host_bits = u32::from(bits - self.prefix);
        let size_minus_one = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        Interval {
            v6,
            start: n,
            end: n + size_minus_one,
        }
    }

    /// Whether `ip` is in the block.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        let (v6, n) = to_int(ip);
        self.interval().contains(&Interval {
            v6,
            start: n,
            end: n,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `a.b.c.d/n` or `x::y/n`, host bits clear; a bare address is a /32 (/128).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let bits: u8 = if addr.is_ipv6() { 128 } else { 32 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= bits => p,
                _ => return Err(format!("{s:?}: the prefix must be 0-{bits}")),
            },
        };
        let (v6, n) = to_int(addr);
        let host_bits = u32::from(bits - prefix);
        let mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        if n & mask != 0 {
            let network = to_ip(v6, n & !mask);
            return Err(format!(
                "{s:?} has host bits set; the block is {network}/{prefix}"
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// One target as a caller wrote it, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// One address.
    Host(IpAddr),
    /// A block.
    Block(Cidr),
    /// `first-last`, both included, of one family.
    Range(IpAddr, IpAddr),
}

impl Target {
    /// The addresses it names.
    pub fn interval(&self) -> Interval {
        match *self {
            Target::Host(ip) => {
                let (v6, n) = to_int(ip);
                Interval {
                    v6,
                    start: n,
                    end: n,
                }
            }
            Target::Block(c) => c.interval(),
            Target::Range(a, b) => {
                let ((v6, x), (_, y)) = (to_int(a), to_int(b));
                Interval {
                    v6,
                    start: x,
                    end: y,
                }
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Host(ip) => write!(f, "{ip}"),
            Target::Block(c) => write!(f, "{c}"),
            Target::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    /// `10.0.0.5`, `10.0.0.0/24`, `10.0.0.5-10.0.0.9` (IPv6 likewise).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a target must not be empty".into());
        }
        if s.contains('/') {
            return s.parse::<Cidr>().map(Target::Block);
        }
        if let Some((a, b)) = s.split_once('-') {
            let parse = |x: &str| {
                x.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{s:?}: {:?} is not an IP address", x.trim()))
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a.is_ipv6() != b.is_ipv6() {
                return Err(format!("{s:?}: both ends must be of one address family"));
            }
            if to_int(a).1 > to_int(b).1 {
                return Err(format!("{s:?}: the first address is after the last"));
            }
            return Ok(Target::Range(a, b));
        }
        s.parse::<IpAddr>()
            .map(Target::Host)
            .map_err(|_| format!("{s:?} is not an IP address, CIDR or range a-b"))
    }
}

/// Merges intervals into sorted, disjoint ones (adjacent ones joined).
pub fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort();
    let mut out: Vec<Interval> = Vec::with_capacity(intervals.len());
    for i in intervals {
        match out.last_mut() {
            Some(last) if last.v6 == i.v6 && i.start <= last.end.saturating_add(1) => {
                last.end = last.end.max(i.end);
            }
            _ => out.push(i),
        }
    }
    out
}

/// Addresses in disjoint intervals.
pub fn count(intervals: &[Interval]) -> u128 {
    intervals
        .iter()
        .fold(0u128, |n, i| n.saturating_add(i.len()))
}

/// Writes disjoint intervals compactly: single addresses as such, others as `a-b`.
pub fn compact(intervals: &[Interval]) -> Vec<String> {
    intervals
        .iter()
        .map(|i| {
            if i.start == i.end {
                i.addr(i.start).to_string()
            } else {
                format!("{}-{}", i.addr(i.start), i.addr(i.end))
            }
        })
        .collect()
}

/// The allow-list of pollers that have no list of their own: the private (RFC 1918, RFC 4193)
/// and loopback ranges.
pub const DEFAULT_ALLOW: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "fc00::/7",
    "::1/128",
];

/// The smallest block of `cidrs` that holds `ip`, or `ip` itself as a /32 (/128): the
/// `network_cidr` a result is filed under.
pub fn network_of(ip: IpAddr, cidrs: &[Cidr]) -> Cidr {
    cidrs
        .iter()
        .filter(|c| c.contains_ip(ip))
        .max_by_key(|c| c.prefix)
        .copied()
        .unwrap_or(Cidr {
            addr: ip,
            prefix: if ip.is_ipv6() { 128 } else { 32 },
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        s.parse().expect(s)
    }

    #[test]
    fn targets_parse_and_name_their_addresses() {
        assert_eq!(t("127.0.0.0/28").interval().len(), 16);
        assert_eq!(t("127.0.0.1").interval().len(), 1);
        assert_eq!(t("127.0.0.1 - 127.0.0.10").interval().len(), 10);
        assert_eq!(t("10.0.0.0/16").interval().len(), 65_536);
        assert_eq!(t("fd00::/120").interval().len(), 256);
        assert_eq!(t("::/0").interval().len(), u128::MAX);
        assert_eq!(t("127.0.0.5-127.0.0.9").to_string(), "127.0.0.5-127.0.0.9");
        for bad in [
            "",
            "127.0.0.1/33",
            "127.0.0.1/24",
            "127.0.0.9-127.0.0.1",
            "127.0.0.1-::1",
            "host.example",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overlapping_targets_count_once() {
        let merged = merge(vec![
            t("127.0.0.0/28").interval(),
            t("127.0.0.8-127.0.0.20").interval(),
            t("127.0.0.21").interval(),
            t("127.0.1.1").interval(),
            t("::1").interval(),
        ]);
        assert_eq!(merged.len(), 3);
        assert_eq!(count(&merged), 22 + 1 + 1);
        assert_eq!(
            compact(&merged),
            vec!["127.0.0.0-127.0.0.21", "127.0.1.1", "::1"]
        );
    }

    #[test]
    fn results_are_filed_under_the_smallest_block() {
        let blocks: Vec<Cidr> = ["127.0.0.0/8", "127.0.0.0/28"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(network_of(ip, &blocks).to_string(), "127.0.0.0/28");
        let far: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(network_of(far, &blocks).to_string(), "10.1.1.1/32");
    }
}
