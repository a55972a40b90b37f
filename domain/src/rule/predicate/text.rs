//! Tests on text values: equality, lists, ILIKE needles, regexes, MACs, IP networks and
//! versions.

use std::cmp::Ordering;
use std::net::IpAddr;

use super::super::ast::Op;
use super::super::like::{Anchor, Like};
use super::super::plan::Test;
use super::super::values::{compare_version, mac_digits, IpOperand};

/// A test on a text value, with the SQL's NULL for a missing value (except `Missing`).
pub(super) enum TextTest {
    Missing,
    Eq(Box<str>),
    /// Sorted.
    In(Box<[String]>),
    Like(Pattern),
    Regex(regex::Regex),
    MacEq(String),
    MacIn(Vec<String>),
    MacLike(Like),
    /// Whether any operand needs the parsed address, and the operands.
    Ip(bool, Box<[Net]>),
    Version(Op, Vec<String>),
    /// A test the column does not take: always NULL.
    Null,
}

impl TextTest {
    pub(super) fn of(test: &Test) -> Self {
        match test {
            Test::Missing => TextTest::Missing,
            Test::Eq(v) => TextTest::Eq(v.as_str().into()),
            Test::In(v) => TextTest::In(v.clone().into()),
            Test::Like(like, _) => TextTest::Like(Pattern::of(like)),
            Test::Regex(re) => TextTest::Regex(re.regex.clone()),
            Test::MacEq(v) => TextTest::MacEq(v.clone()),
            Test::MacIn(v) => TextTest::MacIn(v.clone()),
            Test::MacLike(like, _) => TextTest::MacLike(like.clone()),
            Test::Ip(operands) => TextTest::Ip(
                operands.iter().any(|o| !matches!(o, IpOperand::Text(_))),
                operands.iter().map(Net::of).collect(),
            ),
            Test::Version(op, v) => TextTest::Version(*op, v.clone()),
            _ => TextTest::Null,
        }
    }

    /// The common tests inline, the rest out of line (so that evaluating a conjunction
    /// of simple conditions stays a short run of instructions).
    #[inline(always)]
    pub(super) fn eval(&self, value: Option<&str>) -> Option<bool> {
        match self {
            TextTest::Missing => Some(value.is_none_or(str::is_empty)),
            TextTest::Eq(v) => value.map(|s| s.as_bytes() == v.as_bytes()),
            TextTest::Null => None,
            _ => self.eval_present(value?),
        }
    }

    #[inline(never)]
    fn eval_present(&self, s: &str) -> Option<bool> {
        Some(match self {
            TextTest::Eq(v) => s.as_bytes() == v.as_bytes(),
            TextTest::In(values) => {
                if values.len() <= 8 {
                    values.iter().any(|v| v == s)
                } else {
                    values.binary_search_by(|v| v.as_str().cmp(s)).is_ok()
                }
            }
            TextTest::Like(p) => p.matches(s),
            TextTest::Regex(re) => re.is_match(s),
            TextTest::MacEq(v) => mac_digits(s).eq(v.chars()),
            TextTest::MacIn(values) => values.iter().any(|v| mac_digits(s).eq(v.chars())),
            TextTest::MacLike(like) => like.matches_chars(mac_digits(s)),
            TextTest::Ip(parse, nets) => {
                let addr = if *parse {
                    s.parse::<IpAddr>().ok()
                } else {
                    None
                };
                nets.iter().any(|n| n.matches(s, addr))
            }
            TextTest::Version(op, version) => holds(*op, compare_version(s, version)?),
            TextTest::Missing => s.is_empty(),
            TextTest::Null => return None,
        })
    }
}

/// An ILIKE pattern: a lower-cased ASCII needle and where it must occur when the pattern is
/// that simple, else the general matcher.
pub(super) struct Pattern {
    like: Like,
    needle: Option<(Anchor, Box<[u8]>)>,
}

impl Pattern {
    pub(super) fn of(like: &Like) -> Self {
        Pattern {
            needle: like.ascii_ci_shape().map(|(a, n)| (a, n.into())),
            like: like.clone(),
        }
    }

    /// An ASCII window of the text equal to the needle ignoring ASCII case is a match
    /// whatever else the text holds (ASCII bytes are whole characters in UTF-8 and lower-case
    /// to themselves). Only when none is found in a text that is not all ASCII can another
    /// character's lower case (`K` → `k`) still make one: the general matcher decides then.
    #[inline]
    fn matches(&self, s: &str) -> bool {
        let Some((anchor, needle)) = &self.needle else {
            return self.like.matches(s);
        };
        let t = s.as_bytes();
        let n = needle.len();
        let found = match anchor {
            Anchor::Whole => t.len() == n && t.eq_ignore_ascii_case(needle),
            Anchor::Start => t.len() >= n && t[..n].eq_ignore_ascii_case(needle),
            Anchor::End => t.len() >= n && t[t.len() - n..].eq_ignore_ascii_case(needle),
            Anchor::Anywhere => contains_ignore_ascii_case(t, needle),
        };
        found || (!s.is_ascii() && self.like.matches(s))
    }
}

/// Whether `hay` contains `needle` (lower-case ASCII) ignoring ASCII case.
#[inline]
pub(super) fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    // `b | 0x20` is `b` lower-cased when `first` is a letter: one comparison per byte.
    let fold = if first.is_ascii_lowercase() { 0x20 } else { 0 };
    hay[..=last_start].iter().enumerate().any(|(i, &b)| {
        (b | fold) == first && hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest)
    })
}

/// `a == b`, comparing short values in line rather than through `memcmp` (the values of
/// rule conditions are mostly a few bytes long, and the call cost as much as the compare).
#[inline(always)]
pub(super) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && if b.len() <= 16 {
            a.iter().zip(b).all(|(x, y)| x == y)
        } else {
            a == b
        }
}

/// An `ip:` operand with its network pre-computed.
pub(super) enum Net {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
    Range(IpAddr, IpAddr),
    Text(String),
}

impl Net {
    pub(super) fn of(operand: &IpOperand) -> Self {
        match operand {
            IpOperand::Cidr(IpAddr::V4(a), prefix) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                Net::V4 {
                    net: u32::from(*a) & mask,
                    mask,
                }
            }
            IpOperand::Cidr(IpAddr::V6(a), prefix) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                Net::V6 {
                    net: u128::from(*a) & mask,
                    mask,
                }
            }
            IpOperand::Range(a, b) => Net::Range(*a, *b),
            IpOperand::Text(s) => Net::Text(s.clone()),
        }
    }

    /// As [`IpOperand::matches`].
    fn matches(&self, text: &str, addr: Option<IpAddr>) -> bool {
        match (self, addr) {
            (Net::Text(s), _) => s == text,
            (Net::V4 { net, mask }, Some(IpAddr::V4(a))) => u32::from(a) & mask == *net,
            (Net::V6 { net, mask }, Some(IpAddr::V6(a))) => u128::from(a) & mask == *net,
            (Net::Range(start, end), Some(a)) => {
                a.is_ipv4() == start.is_ipv4() && *start <= a && a <= *end
            }
            _ => false,
        }
    }
}

pub(super) fn holds(op: Op, ord: Ordering) -> bool {
    match op {
        Op::Gt => ord == Ordering::Greater,
        Op::Gte => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Lte => ord != Ordering::Greater,
        _ => false,
    }
}
