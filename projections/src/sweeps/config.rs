//! Sweep settings, from the environment (`docs/sweeps.md` lists them).

use std::collections::HashMap;
use std::time::Duration;

use corral_domain::sweep::targets::{Cidr, DEFAULT_ALLOW};
use corral_domain::sweep::{SweepLimits, DEFAULT_IDEMPOTENCY_WINDOW_SECS};

/// The longest a run may be allowed to last (7 days): partitions are kept this much longer
/// than the longest retention.
pub const MAX_RUNTIME_SECS: u64 = 7 * 86_400;

/// Everything the API and the sweep workers need to know.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepConfig {
    /// Limits of a request.
    pub limits: SweepLimits,
    /// The allow-list of pollers without one of their own.
    pub allow: Vec<Cidr>,
    /// Allow-lists by poller id.
    pub poller_allow: HashMap<String, Vec<Cidr>>,
    /// How long a dispatched job may stay unclaimed before the run is `EXPIRED`.
    pub claim_ttl: Duration,
    /// A poller whose last heartbeat is older than this is offline.
    pub offline_after: Duration,
    /// How long a run may last when the request does not say (`deadlineSecs`).
    pub default_runtime: Duration,
    /// The longest `deadlineSecs` a request may give.
    pub max_runtime: Duration,
    /// How often the dispatcher and monitor look for work.
    pub poll: Duration,
    /// How long a subject's idempotency key names its run (a day, as payment APIs do).
    pub idempotency_window: Duration,
    /// Whether this deployment runs the sweep workers (they need NATS): without them a run
    /// would never leave `QUEUED`, so `scheduleSweep` refuses.
    pub enabled: bool,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            limits: SweepLimits::default(),
            allow: DEFAULT_ALLOW
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            poller_allow: HashMap::new(),
            claim_ttl: Duration::from_secs(120),
            offline_after: Duration::from_secs(30),
            default_runtime: Duration::from_secs(3600),
            max_runtime: Duration::from_secs(86_400),
            poll: Duration::from_millis(500),
            idempotency_window: Duration::from_secs(DEFAULT_IDEMPOTENCY_WINDOW_SECS),
            enabled: false,
        }
    }
}

fn cidrs(name: &str, raw: &str) -> Result<Vec<Cidr>, String> {
    raw.split([',', ' '])
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse::<Cidr>().map_err(|e| format!("{name}: {e}")))
        .collect()
}

fn number<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} must be a number, got {v:?}")),
        _ => Ok(None),
    }
}

impl SweepConfig {
    /// The allow-list of `poller`.
    pub fn allow_for(&self, poller: &str) -> &[Cidr] {
        self.poller_allow
            .get(poller)
            .map(Vec::as_slice)
            .unwrap_or(&self.allow)
    }

    /// Reads `CORRAL_SWEEP_*` and `CORRAL_POLLER_OFFLINE_SECS`, refusing bad values.
    pub fn from_env() -> Result<Self, String> {
        let mut c = SweepConfig {
            enabled: std::env::var("NATS_URL").is_ok_and(|u| !u.trim().is_empty()),
            ..SweepConfig::default()
        };
        if let Some(n) = number::<u64>("CORRAL_SWEEP_MAX_HOSTS")? {
            c.limits.max_hosts = n.max(1);
        }
        if let Some(n) = number::<u8>("CORRAL_SWEEP_MIN_PREFIX_V4")? {
            if n > 32 {
                return Err("CORRAL_SWEEP_MIN_PREFIX_V4 must be 0-32".into());
            }
            c.limits.min_prefix_v4 = n;
        }
        if let Some(n) = number::<u8>("CORRAL_SWEEP_MIN_PREFIX_V6")? {
            if n > 128 {
                return Err("CORRAL_SWEEP_MIN_PREFIX_V6 must be 0-128".into());
            }
            c.limits.min_prefix_v6 = n;
        }
        if let Ok(raw) = std::env::var("CORRAL_SWEEP_ALLOW") {
            c.allow = cidrs("CORRAL_SWEEP_ALLOW", &raw)?;
        }
        if let Ok(raw) = std::env::var("CORRAL_SWEEP_POLLER_ALLOW") {
            // `poller-1=10.0.0.0/8,127.0.0.0/8;poller-2=192.168.0.0/16`
            for part in raw.split(';').filter(|p| !p.trim().is_empty()) {
                let (id, list) = part.split_once('=').ok_or_else(|| {
                    format!("CORRAL_SWEEP_POLLER_ALLOW: {part:?} is not poller=cidr,cidr")
                })?;
                c.poller_allow.insert(
                    id.trim().to_string(),
                    cidrs("CORRAL_SWEEP_POLLER_ALLOW", list)?,
                );
            }
        }
        if let Some(n) = number::<u64>("CORRAL_SWEEP_CLAIM_SECS")? {
            c.claim_ttl = Duration::from_secs(n.max(1));
        }
        if let Some(n) = number::<u64>("CORRAL_POLLER_OFFLINE_SECS")? {
            // Heartbeats are kept 60 s: a poller silent for longer has no entry at all.
            c.offline_after = Duration::from_secs(n.clamp(1, 60));
        }
        if let Some(n) = number::<u64>("CORRAL_SWEEP_MAX_RUNTIME_SECS")? {
            c.max_runtime = Duration::from_secs(n.clamp(1, MAX_RUNTIME_SECS));
        }
        if let Some(n) = number::<u64>("CORRAL_SWEEP_DEFAULT_RUNTIME_SECS")? {
            c.default_runtime = Duration::from_secs(n.max(1));
        }
        c.default_runtime = c.default_runtime.min(c.max_runtime);
        if let Some(n) = number::<u64>("CORRAL_SWEEP_IDEMPOTENCY_WINDOW_SECS")? {
            c.idempotency_window = Duration::from_secs(n.max(1));
        }
        Ok(c)
    }
}
