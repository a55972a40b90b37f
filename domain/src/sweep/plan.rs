//! A sweep request checked against the limits: what `scheduleSweep` commits and
//! `previewSweep` shows.

use crate::codes::Code;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::targets::{compact, count, merge, Cidr, Interval, Target};
use super::SweepError;

/// Limits every request is checked against (configurable; see `docs/sweeps.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepLimits {
    /// Most addresses one run may sweep (targets and group members together).
    pub max_hosts: u64,
    /// Shortest IPv4 prefix a CIDR target may have.
    pub min_prefix_v4: u8,
    /// Shortest IPv6 prefix a CIDR target may have.
    pub min_prefix_v6: u8,
    /// Most ports per run.
    pub max_ports: usize,
    /// Retention bounds, in days.
    pub max_retention_days: u32,
}

impl Default for SweepLimits {
    fn default() -> Self {
        Self {
            max_hosts: 65_536,
            min_prefix_v4: 16,
            min_prefix_v6: 112,
            max_ports: 1024,
            max_retention_days: 90,
        }
    }
}

/// Retention of a run without `retentionDays`.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// Connect timeout without `timeoutMs`.
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
/// Connect timeout bounds.
pub const TIMEOUT_MS_RANGE: (u32, u32) = (10, 60_000);
/// Concurrent probes without `concurrency`.
pub const DEFAULT_CONCURRENCY: u32 = 64;
/// Most concurrent probes of one run.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Longest idempotency key, reason and poller or agent id.
pub const MAX_TEXT: usize = 256;
/// Most separate address ranges one run may name (scattered group members make many): it
/// bounds the size of the run's event and of the poller's job.
pub const MAX_RANGES: usize = 4096;

/// What a caller asks for, before any check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepRequest {
    /// The poller that runs it.
    pub poller_id: String,
    /// The agent behind the poller, if any (recorded, passed on).
    pub agent_id: Option<String>,
    /// Addresses, CIDRs and ranges `a-b`.
    pub targets: Vec<String>,
    /// The group whose effective device members' addresses are swept too.
    pub group_id: Option<uuid::Uuid>,
    /// The addresses of the group's device members (the caller reads them).
    pub group_hosts: Vec<IpAddr>,
    /// TCP ports to try.
    pub ports: Vec<i64>,
    /// Whether to ping.
    pub icmp: bool,
    /// Connect timeout per probe.
    pub timeout_ms: Option<i64>,
    /// Concurrent probes.
    pub concurrency: Option<i64>,
    /// Days results are kept.
    pub retention_days: Option<i64>,
    /// The same key returns the same run.
    pub idempotency_key: String,
    /// Why (for the audit trail).
    pub reason: Option<String>,
}

/// A request that passed every check: what a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SweepPlan {
    /// The poller that runs it.
    pub poller_id: String,
    /// The agent behind the poller.
    pub agent_id: Option<String>,
    /// The targets as given, normalized (`127.0.0.0/28`, `10.0.0.1-10.0.0.9`).
    pub targets: Vec<String>,
    /// The group swept, if any.
    pub group_id: Option<uuid::Uuid>,
    /// The addresses swept, merged into disjoint ranges (targets and group members).
    pub hosts: Vec<String>,
    /// How many addresses that is.
    pub hosts_total: u64,
    /// TCP ports, ascending, each once.
    pub ports: Vec<u16>,
    /// Whether to ping.
    pub icmp: bool,
    /// Connect timeout per probe.
    pub timeout_ms: u32,
    /// Concurrent probes.
    pub concurrency: u32,
    /// Days results are kept.
    pub retention_days: u32,
    /// The idempotency key.
    pub idempotency_key: String,
    /// Why.
    pub reason: Option<String>,
}

fn invalid(field: &str, code: Code, message: impl Into<String>) -> SweepError {
    SweepError::Invalid {
        field: field.to_string(),
        code,
        message: message.into(),
    }
}

fn text(field: &str, raw: &str, required: bool) -> Result<Option<String>, SweepError> {
    let s = raw.trim();
    if s.is_empty() {
        return if required {
            Err(invalid(
                field,
                Code::Invalid,
                format!("{field} must not be empty"),
            ))
        } else {
            Ok(None)
        };
    }
    if s.chars().count() > MAX_TEXT || s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            Code::Invalid,
            format!("{field} must be at most {MAX_TEXT} characters without control characters"),
        ));
    }
    Ok(Some(s.to_string()))
}

fn bounded(field: &str, v: Option<i64>, default: u32, lo: u32, hi: u32) -> Result<u32, SweepError> {
    match v {
        None => Ok(default),
        Some(n) if n >= i64::from(lo) && n <= i64::from(hi) => Ok(n as u32),
        Some(n) => Err(invalid(
            field,
            Code::OutOfRange,
            format!("{field} must be from {lo} to {hi}, got {n}"),
        )),
    }
}

/// Checks `request` against `limits` and the poller's allow-list `allow`; every failure
/// names its field.
pub fn plan(
    request: &SweepRequest,
    limits: &SweepLimits,
    allow: &[Cidr],
) -> Result<SweepPlan, SweepError> {
    let poller_id = text("pollerId", &request.poller_id, true)?.unwrap_or_default();
    if !poller_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "pollerId",
            Code::Invalid,
            "pollerId may hold only letters, digits, '-' and '_' (it is part of a NATS key)",
        ));
    }
    let agent_id = match &request.agent_id {
        Some(a) => text("agentId", a, false)?,
        None => None,
    };
    let idempotency_key =
        text("idempotencyKey", &request.idempotency_key, true)?.unwrap_or_default();
    let reason = match &request.reason {
        Some(r) => text("reason", r, false)?,
        None => None,
    };
    if request.targets.is_empty() && request.group_id.is_none() {
        return Err(invalid(
            "targets",
            Code::Invalid,
            "give targets, a groupId, or both",
        ));
    }
    let mut parsed = Vec::with_capacity(request.targets.len());
    for (i, raw) in request.targets.iter().enumerate() {
        let field = format!("targets[{i}]");
        let target: Target = raw
            .parse()
            .map_err(|m: String| invalid(&field, Code::Invalid, m))?;
        if let Target::Block(c) = target {
            let min = if c.addr.is_ipv6() {
                limits.min_prefix_v6
            } else {
                limits.min_prefix_v4
            };
            if c.prefix < min {
                return Err(invalid(
                    &field,
                    Code::PrefixTooShort,
                    format!("{c}: prefixes shorter than /{min} are refused"),
                ));
            }
        }
        let span = target.interval();
        if span.len() > u128::from(limits.max_hosts) {
            return Err(invalid(
                &field,
                Code::TooManyHosts,
                format!(
                    "{target} holds {} addresses; a run sweeps at most {}",
                    span.len(),
                    limits.max_hosts
                ),
            ));
        }
        if !allow.iter().any(|a| a.interval().contains(&span)) {
            return Err(invalid(
                &field,
                Code::NotAllowed,
                format!("{target} is outside the poller's allow-list"),
            ));
        }
        parsed.push(target);
    }
    let mut spans: Vec<Interval> = parsed.iter().map(Target::interval).collect();
    for ip in &request.group_hosts {
        let host = Target::Host(*ip);
        if !allow.iter().any(|a| a.contains_ip(*ip)) {
            return Err(invalid(
                "groupId",
                Code::NotAllowed,
                format!("the group's member address {ip} is outside the poller's allow-list"),
            ));
        }
        spans.push(host.interval());
    }
    let merged = merge(spans);
    let total = count(&merged);
    if total > u128::from(limits.max_hosts) {
        return Err(invalid(
            "targets",
            Code::TooManyHosts,
            format!(
                "the targets expand to {total} addresses; a run sweeps at most {}",
                limits.max_hosts
            ),
        ));
    }
    if merged.len() > MAX_RANGES {
        return Err(invalid(
            if request.group_id.is_some() {
                "groupId"
            } else {
                "targets"
            },
            Code::TooManyRanges,
            format!(
                "the addresses form {} separate ranges; a run takes at most {MAX_RANGES}",
                merged.len()
            ),
        ));
    }
    if total == 0 {
        return Err(invalid(
            "groupId",
            Code::NoHosts,
            "nothing to sweep: the group's device members have no IP addresses",
        ));
    }
    if request.ports.is_empty() && !request.icmp {
        return Err(invalid(
            "ports",
            Code::Invalid,
            "give at least one port, or icmp: true",
        ));
    }
    let mut ports = Vec::with_capacity(request.ports.len());
    for (i, p) in request.ports.iter().enumerate() {
        match u16::try_from(*p) {
            Ok(p) if p >= 1 => ports.push(p),
            _ => {
                return Err(invalid(
                    &format!("ports[{i}]"),
                    Code::OutOfRange,
                    format!("ports must be 1-65535, got {p}"),
                ))
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.len() > limits.max_ports {
        return Err(invalid(
            "ports",
            Code::TooManyPorts,
            format!(
                "at most {} ports per run, got {}",
                limits.max_ports,
                ports.len()
            ),
        ));
    }
    Ok(SweepPlan {
        poller_id,
        agent_id,
        targets: parsed.iter().map(ToString::to_string).collect(),
        group_id: request.group_id,
        hosts: compact(&merged),
        hosts_total: total as u64,
        ports,
        icmp: request.icmp,
        timeout_ms: bounded(
            "timeoutMs",
            request.timeout_ms,
            DEFAULT_TIMEOUT_MS,
            TIMEOUT_MS_RANGE.0,
            TIMEOUT_MS_RANGE.1,
        )?,
        concurrency: bounded(
            "concurrency",
            request.concurrency,
            DEFAULT_CONCURRENCY,
            1,
            MAX_CONCURRENCY,
        )?,
        retention_days: bounded(
            "retentionDays",
            request.retention_days,
            DEFAULT_RETENTION_DAYS,
            1,
            limits.max_retention_days,
        )?,
        idempotency_key,
        reason,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::targets::DEFAULT_ALLOW;
    use super::*;

    fn allow() -> Vec<Cidr> {
        DEFAULT_ALLOW.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn request(targets: &[&str]) -> SweepRequest {
        SweepRequest {
            poller_id: "p1".into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            ports: vec![22, 80, 22],
            idempotency_key: "k".into(),
            ..Default::default()
        }
    }

    fn code(r: &SweepRequest) -> (String, Code) {
        match plan(r, &SweepLimits::default(), &allow()) {
            Err(SweepError::Invalid { field, code, .. }) => (field, code),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_valid_request_is_normalized() {
        let mut r = request(&["127.0.0.0/28", "127.0.0.4-127.0.0.20"]);
        r.group_hosts = vec!["10.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let p = plan(&r, &SweepLimits::default(), &allow()).unwrap();
        assert_eq!(p.hosts_total, 21 + 1);
        assert_eq!(p.hosts, vec!["10.0.0.1", "127.0.0.0-127.0.0.20"]);
        assert_eq!(p.ports, vec![22, 80]);
        assert_eq!(
            (p.timeout_ms, p.concurrency, p.retention_days),
            (1000, 64, 30)
        );
    }

    #[test]
    fn every_limit_is_a_named_error() {
        assert_eq!(
            code(&request(&["10.0.0.0/15"])),
            ("targets[0]".into(), Code::PrefixTooShort)
        );
        assert_eq!(
            code(&request(&["8.8.8.8"])),
            ("targets[0]".into(), Code::NotAllowed)
        );
        assert_eq!(
            code(&request(&["127.0.0.1", "10.0.0.0-10.1.0.0"])),
            ("targets[1]".into(), Code::TooManyHosts)
        );
        assert_eq!(
            code(&request(&["10.0.0.0/16", "127.0.0.1"])),
            ("targets".into(), Code::TooManyHosts)
        );
        assert_eq!(
            code(&request(&["nope"])),
            ("targets[0]".into(), Code::Invalid)
        );
        assert_eq!(code(&request(&[])), ("targets".into(), Code::Invalid));
        let mut r = request(&["127.0.0.1"]);
        r.ports = vec![0];
        assert_eq!(code(&r), ("ports[0]".into(), Code::OutOfRange));
        r.ports = vec![65_536];
        assert_eq!(code(&r), ("ports[0]".into(), Code::OutOfRange));
        r.ports = (1..=1025).collect();
        assert_eq!(code(&r), ("ports".into(), Code::TooManyPorts));
        r.ports = (1..=1024).collect();
        assert!(plan(&r, &SweepLimits::default(), &allow()).is_ok());
        r.retention_days = Some(0);
        assert_eq!(code(&r), ("retentionDays".into(), Code::OutOfRange));
        r.retention_days = Some(91);
        assert_eq!(code(&r), ("retentionDays".into(), Code::OutOfRange));
        r.retention_days = Some(90);
        r.poller_id = "a.b".into();
        assert_eq!(code(&r), ("pollerId".into(), Code::Invalid));
        r.poller_id = "p".into();
        r.idempotency_key = " ".into();
        assert_eq!(code(&r), ("idempotencyKey".into(), Code::Invalid));
        let mut scattered = request(&[]);
        scattered.group_id = Some(uuid::Uuid::nil());
        scattered.group_hosts = (0..4097u32)
            .map(|i| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 + 2 * i)))
            .collect();
        assert_eq!(code(&scattered), ("groupId".into(), Code::TooManyRanges));
        scattered.group_hosts.pop();
        assert!(plan(&scattered, &SweepLimits::default(), &allow()).is_ok());
        let mut g = request(&[]);
        g.group_id = Some(uuid::Uuid::nil());
        assert_eq!(code(&g), ("groupId".into(), Code::NoHosts));
        g.group_hosts = vec!["1.1.1.1".parse().unwrap()];
        assert_eq!(code(&g), ("groupId".into(), Code::NotAllowed));
    }

    #[test]
    fn limits_are_configurable() {
        let loopback: Vec<Cidr> = vec!["127.0.0.0/8".parse().unwrap()];
        let limits = SweepLimits {
            max_hosts: 16,
            min_prefix_v4: 28,
            ..Default::default()
        };
        assert!(plan(&request(&["127.0.0.0/28"]), &limits, &loopback).is_ok());
        let r = request(&["127.0.0.0/27"]);
        assert!(matches!(
            plan(&r, &limits, &loopback),
            Err(SweepError::Invalid {
                code: Code::PrefixTooShort,
                ..
            })
        ));
        let r = request(&["10.0.0.1"]);
        assert!(matches!(
            plan(&r, &limits, &loopback),
            Err(SweepError::Invalid {
                code: Code::NotAllowed,
                ..
            })
        ));
    }
}
