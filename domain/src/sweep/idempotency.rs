//! Idempotency keys of `scheduleSweep`, the way payment APIs scope them: a key names a run only
//! for the subject that used it, and only for a window (a day by default). Within the window
//! the same subject and key return the run; with a different request they are refused
//! ([`SweepError::IdempotencyKeyReused`](super::SweepError::IdempotencyKeyReused)) rather than
//! silently answered with a run that is not what was asked. After it the key makes a new run.
//!
//! The run id itself is random (never derived from the key), so two subjects, two windows or
//! two deployments never share a run; the API reserves it against the subject and key before
//! the run is created.

use serde::Serialize;

use super::{SweepRequest, DEFAULT_CONCURRENCY, DEFAULT_RETENTION_DAYS, DEFAULT_TIMEOUT_MS};

/// How long an idempotency key names its run unless configured otherwise: 24 hours.
pub const DEFAULT_IDEMPOTENCY_WINDOW_SECS: u64 = 86_400;

/// What a repeated request is compared on: everything that decides what the run does,
/// normalized so that a faithful retry matches (strings trimmed, ports and targets sorted and
/// each once, defaults filled in). The `reason` is not compared: it only explains the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestFingerprint {
    poller_id: String,
    agent_id: Option<String>,
    targets: Vec<String>,
    group_id: Option<uuid::Uuid>,
    ports: Vec<i64>,
    icmp: bool,
    timeout_ms: i64,
    concurrency: i64,
    retention_days: i64,
    deadline_secs: u64,
}

impl RequestFingerprint {
    /// The fingerprint of `request` asking for a run of at most `deadline_secs` seconds.
    pub fn of(request: &SweepRequest, deadline_secs: u64) -> Self {
        let mut targets: Vec<String> = request
            .targets
            .iter()
            .map(|t| t.trim().to_string())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        let mut ports = request.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        Self {
            poller_id: request.poller_id.trim().to_string(),
            agent_id: request
                .agent_id
                .as_deref()
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            targets,
            group_id: request.group_id,
            ports,
            icmp: request.icmp,
            timeout_ms: request.timeout_ms.unwrap_or(i64::from(DEFAULT_TIMEOUT_MS)),
            concurrency: request
                .concurrency
                .unwrap_or(i64::from(DEFAULT_CONCURRENCY)),
            retention_days: request
                .retention_days
                .unwrap_or(i64::from(DEFAULT_RETENTION_DAYS)),
            deadline_secs,
        }
    }

    /// As stored with the key's reservation.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Whether `stored` (a reservation's fingerprint) is this request's.
    pub fn matches(&self, stored: &serde_json::Value) -> bool {
        &self.to_json() == stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SweepRequest {
        SweepRequest {
            poller_id: "p1".into(),
            targets: vec!["127.0.0.0/28".into(), "127.0.1.1".into()],
            ports: vec![80, 22],
            idempotency_key: "k".into(),
            reason: Some("first".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_faithful_retry_has_the_fingerprint_of_the_first_request() {
        let first = RequestFingerprint::of(&request(), 600);
        let retry = SweepRequest {
            poller_id: " p1 ".into(),
            agent_id: Some(" ".into()),
            targets: vec!["127.0.1.1".into(), " 127.0.0.0/28".into()],
            ports: vec![22, 80, 22],
            timeout_ms: Some(i64::from(DEFAULT_TIMEOUT_MS)),
            reason: Some("retried".into()),
            ..request()
        };
        assert!(first.matches(&RequestFingerprint::of(&retry, 600).to_json()));
    }

    #[test]
    fn anything_that_changes_the_run_changes_the_fingerprint() {
        let first = RequestFingerprint::of(&request(), 600).to_json();
        let changed = [
            SweepRequest {
                poller_id: "p2".into(),
                ..request()
            },
            SweepRequest {
                agent_id: Some("a".into()),
                ..request()
            },
            SweepRequest {
                targets: vec!["127.0.0.0/28".into()],
                ..request()
            },
            SweepRequest {
                group_id: Some(uuid::Uuid::nil()),
                ..request()
            },
            SweepRequest {
                ports: vec![22],
                ..request()
            },
            SweepRequest {
                icmp: true,
                ..request()
            },
            SweepRequest {
                timeout_ms: Some(10),
                ..request()
            },
            SweepRequest {
                concurrency: Some(1),
                ..request()
            },
            SweepRequest {
                retention_days: Some(1),
                ..request()
            },
        ];
        for other in changed {
            assert!(
                !RequestFingerprint::of(&other, 600).matches(&first),
                "{other:?}"
            );
        }
        assert!(!RequestFingerprint::of(&request(), 60).matches(&first));
    }
}
