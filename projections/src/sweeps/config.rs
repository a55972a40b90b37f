//! Sweep settings (`docs/sweeps.md` lists them; the API's settings read them).

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

impl SweepConfig {
    /// The allow-list of `poller`.
    pub fn allow_for(&self, poller: &str) -> &[Cidr] {
        self.poller_allow
            .get(poller)
            .map(Vec::as_slice)
            .unwrap_or(&self.allow)
    }
}
