//! Typed values: booleans, integers, times, versions, IP addresses and MACs, each parsed the
//! way SRQL parses it (where SRQL has the field) and printed canonically.

use std::cmp::Ordering;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};

/// SRQL's booleans: true/false/yes/no/1/0, any case.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.to_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

pub(crate) fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The largest relative offset accepted (about 100 years), which keeps `now±offset` inside
/// PostgreSQL's timestamp range.
const MAX_OFFSET_SECS: i64 = 100 * 366 * 86_400;

/// A time operand: an absolute instant (microsecond precision, like PostgreSQL) or an offset
/// from the evaluation's `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeValue {
    Absolute(DateTime<Utc>),
    /// `now` plus `amount` `unit`s (`amount` may be negative).
    Relative {
        amount: i64,
        unit: char,
    },
}

impl TimeValue {
    pub(crate) fn parse(s: &str) -> Result<TimeValue, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("now") {
            if rest.is_empty() {
                return Ok(TimeValue::Relative {
                    amount: 0,
                    unit: 's',
                });
            }
            let (sign, rest) = match rest.as_bytes()[0] {
                b'-' => (-1, &rest[1..]),
                b'+' => (1, &rest[1..]),
                _ => return Err(time_error(s)),
            };
            let unit = rest.chars().last().ok_or_else(|| time_error(s))?;
            let number = &rest[..rest.len() - unit.len_utf8()];
            let secs = unit_seconds(unit).ok_or_else(|| time_error(s))?;
            let amount = parse_int(number)
                .filter(|n| *n >= 0)
                .ok_or_else(|| time_error(s))?;
            if amount.checked_mul(secs).is_none_or(|t| t > MAX_OFFSET_SECS) {
                return Err(format!("`{s}` is too far from now (at most 100 years)"));
            }
            if amount == 0 {
                return Ok(TimeValue::Relative {
                    amount: 0,
                    unit: 's',
                });
            }
            return Ok(TimeValue::Relative {
                amount: sign * amount,
                unit,
            });
        }
        let instant = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            t.with_timezone(&Utc)
        } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            let midnight = d.and_hms_opt(0, 0, 0).ok_or_else(|| time_error(s))?;
            Utc.from_utc_datetime(&midnight)
        } else {
            return Err(time_error(s));
        };
        Ok(TimeValue::Absolute(floor_micros(instant)))
    }

    /// The instant, given the evaluation's `now`.
    pub(crate) fn at(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            TimeValue::Absolute(t) => t,
            TimeValue::Relative { amount, unit } => {
                let secs = amount * unit_seconds(unit).unwrap_or(1);
                floor_micros(now) + chrono::Duration::seconds(secs)
            }
        }
    }

    pub(crate) fn is_relative(self) -> bool {
        matches!(self, TimeValue::Relative { .. })
    }

    pub(crate) fn to_text(self) -> String {
        match self {
            TimeValue::Absolute(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            TimeValue::Relative { amount: 0, .. } => "now".into(),
            TimeValue::Relative { amount, unit } if amount < 0 => format!("now-{}{unit}", -amount),
            TimeValue::Relative { amount, unit } => format!("now+{amount}{unit}"),
        }
    }
}

fn time_error(s: &str) -> String {
    format!(
        "`{s}` is not a time: write an RFC 3339 time (2024-05-01T12:00:00Z), a date (2024-05-01), `now`, or `now-7d` / `now+1h` (units s, m, h, d, w)"
    )
}

fn unit_seconds(unit: char) -> Option<i64> {
    Some(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    })
}

/// PostgreSQL keeps microseconds; rounding down the same way on both sides keeps SQL and
/// memory in agreement at the boundary.
pub(crate) fn floor_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.timestamp_subsec_nanos();
    t - chrono::Duration::nanoseconds(i64::from(nanos % 1_000))
}

/// A comparison version: dotted decimal components, leading zeros removed (`""` is zero).
pub(crate) fn parse_version(s: &str) -> Option<Vec<String>> {
    if s.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for part in s.split('.') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parts.push(part.trim_start_matches('0').to_string());
    }
    Some(parts)
}

/// Compares the leading `[0-9]+(\.[0-9]+)*` of `text` with `version`, as PostgreSQL compares
/// the two as `numeric[]`. `None` when `text` has no numeric prefix.
pub(crate) fn compare_version(text: &str, version: &[String]) -> Option<Ordering> {
    let bytes = text.as_bytes();
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let first = digits(0);
    if first == 0 {
        return None;
    }
    let mut pos = 0;
    let mut len = first;
    let mut index = 0;
    loop {
        let component = text[pos..pos + len].trim_start_matches('0');
        let Some(theirs) = version.get(index) else {
            return Some(Ordering::Greater);
        };
        let ord = component
            .len()
            .cmp(&theirs.len())
            .then_with(|| component.cmp(theirs.as_str()));
        if ord != Ordering::Equal {
            return Some(ord);
        }
        index += 1;
        let next = pos + len;
        if next < bytes.len() && bytes[next] == b'.' && digits(next + 1) > 0 {
            pos = next + 1;
            len = digits(pos);
        } else {
            break;
        }
    }
    Some(if index < version.len() {
        Ordering::Less
    } else {
        Ordering::Equal
    })
}

/// One `ip:` operand, as SRQL reads it: a CIDR when it has `/`, an inclusive range when it
/// has `-`, the text of the column otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IpOperand {
    Cidr(IpAddr, u8),
    Range(IpAddr, IpAddr),
    Text(String),
}

impl IpOperand {
    pub(crate) fn parse(s: &str) -> Result<IpOperand, String> {
        if let Some((addr, prefix)) = s.split_once('/') {
            let invalid = || format!("`{s}` is not a valid CIDR");
            let addr: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
            let prefix: u8 = prefix.trim().parse().map_err(|_| invalid())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(invalid());
            }
            if network(addr, prefix) != addr {
                return Err(format!(
                    "CIDR `{s}` has host bits set (PostgreSQL rejects it): did you mean `{}/{prefix}`?",
                    network(addr, prefix)
                ));
            }
            return Ok(IpOperand::Cidr(addr, prefix));
        }
        if let Some((start, end)) = s.split_once('-') {
            let invalid = || {
                format!(
                    "`{s}` is not a valid IP range (write `a-b` with two addresses of one family)"
                )
            };
            let start: IpAddr = start.trim().parse().map_err(|_| invalid())?;
            let end: IpAddr = end.trim().parse().map_err(|_| invalid())?;
            if start.is_ipv4() != end.is_ipv4() {
                return Err(invalid());
            }
            return Ok(IpOperand::Range(start, end));
        }
        Ok(IpOperand::Text(s.to_string()))
    }

    pub(crate) fn to_text(&self) -> String {
        match self {
            IpOperand::Cidr(addr, prefix) => format!("{addr}/{prefix}"),
            IpOperand::Range(a, b) => format!("{a}-{b}"),
            IpOperand::Text(s) => s.clone(),
        }
    }

    /// Whether the address (the column's text `text`, its parsed form `addr`) matches:
    /// `inet <<= cidr`, `inet >= a AND inet <= b` (false across families), or text `=`.
    pub(crate) fn matches(&self, text: &str, addr: Option<IpAddr>) -> bool {
        match self {
            IpOperand::Text(s) => s == text,
            IpOperand::Cidr(net, prefix) => {
                addr.is_some_and(|a| a.is_ipv4() == net.is_ipv4() && network(a, *prefix) == *net)
            }
            IpOperand::Range(start, end) => {
                addr.is_some_and(|a| a.is_ipv4() == start.is_ipv4() && *start <= a && a <= *end)
            }
        }
    }
}

fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// SRQL's MAC normalisation of a filter value: lower-case hex digits, everything else
/// dropped (`%` and `_` kept for LIKE).
pub(crate) fn normalize_mac(s: &str, wildcards: bool) -> Result<String, String> {
    let out: String = s
        .chars()
        .filter(|c| c.is_ascii_hexdigit() || (wildcards && (*c == '%' || *c == '_')))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if out.is_empty() {
        return Err(format!(
            "`{s}` has no hex digits: a mac filter expects hex digits"
        ));
    }
    Ok(out)
}

/// The stored MAC as SRQL's SQL sees it: `lower(regexp_replace(mac, '[^0-9a-fA-F]', '', 'g'))`.
pub(crate) fn mac_digits(mac: &str) -> impl Iterator<Item = char> + Clone + '_ {
    mac.bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| char::from(b.to_ascii_lowercase()))
}
