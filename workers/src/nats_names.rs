//! Every NATS name Corral uses, declared once: the JetStream streams and their subjects, the
//! KV buckets, the durable consumers.
//!
//! Two JetStream streams may not share a subject, so a feature whose stream overlaps another's
//! would fail to start whenever the other started first. The tests below check that no two of
//! Corral's streams (KV buckets are streams too, `KV_<bucket>` on `$KV.<bucket>.>`) can hold
//! the same subject, for the production names and for a namespace.
//!
//! A **namespace** (`CORRAL_NATS_NAMESPACE`) gives a deployment names of its own on a NATS
//! server that other deployments (or tests) share: streams and buckets get a `_<namespace>`
//! suffix and subjects a `<namespace>` token after `corral` (`corral.<ns>.inventory.devices`;
//! the sweep buckets and reports keep the form `corral.sweeps.<ns>.reports`).

use std::time::Duration;

use crate::feed::FeedConfig;
use crate::membership_feed::MembershipFeedConfig;
use crate::publisher::PublisherConfig;
use crate::sweeps::SweepNames;

/// The environment variable naming the namespace.
pub const NAMESPACE_VAR: &str = "CORRAL_NATS_NAMESPACE";

/// Longest namespace.
const MAX_NAMESPACE_CHARS: usize = 32;

/// Second subject tokens of the production names: a namespace equal to one of them could
/// make a namespaced subject look like a production one.
const RESERVED: [&str; 6] = [
    "events",
    "inventory",
    "telemetry",
    "sweeps",
    "reports",
    "membership",
];

/// A deployment's NATS names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsNames {
    /// The namespace, when one is set.
    pub namespace: Option<String>,
    /// The inventory feed (`docs/inventory.md`).
    pub inventory: FeedConfig,
    /// The telemetry feed (`docs/health.md`).
    pub telemetry: FeedConfig,
    /// The stream the event log is published to (`docs/integrators.md`).
    pub events_stream: String,
    /// Its subjects' prefix (`<prefix>.<aggregateType>.<aggregateId>.<eventType>`).
    pub events_subject_prefix: String,
    /// The stream of the membership feed (`docs/integrators.md`).
    pub membership_stream: String,
    /// Its subjects' prefix (`<prefix>.<watchId>.<Entered|Left>`).
    pub membership_subject_prefix: String,
    /// The sweep buckets and report stream (`docs/sweeps.md`).
    pub sweeps: SweepNames,
    /// The durable consumer of sweep reports.
    pub sweep_reports_consumer: String,
}

impl Default for NatsNames {
    fn default() -> Self {
        Self::production()
    }
}

impl NatsNames {
    /// The production names.
    pub fn production() -> Self {
        let publisher = PublisherConfig::default();
        let feed = MembershipFeedConfig::default();
        Self {
            namespace: None,
            inventory: FeedConfig::default(),
            telemetry: crate::telemetry_feed::default_config(),
            events_stream: publisher.stream,
            events_subject_prefix: publisher.subject_prefix,
            membership_stream: feed.stream,
            membership_subject_prefix: feed.subject_prefix,
            sweeps: SweepNames::default(),
            sweep_reports_consumer: "corral-sweep-reports".into(),
        }
    }

    /// Names of a namespace of their own (letters, digits, `_`, `-`; 1-32 characters; not
    /// `events`, `inventory`, `telemetry`, `sweeps`, `reports` or `membership`).
    pub fn namespaced(namespace: &str) -> Result<Self, String> {
        let valid = !namespace.is_empty()
            && namespace.len() <= MAX_NAMESPACE_CHARS
            && namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "{NAMESPACE_VAR} must be 1-{MAX_NAMESPACE_CHARS} letters, digits, '_' or '-', got {namespace:?}"
            ));
        }
        if RESERVED.contains(&namespace.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{NAMESPACE_VAR} may not be {namespace:?} (a word of Corral's own subjects)"
            ));
        }
        let base = Self::production();
        let stream = |s: &str| format!("{s}_{namespace}");
        let subject = |s: &str| match s.strip_prefix("corral.") {
            Some(rest) => format!("corral.{namespace}.{rest}"),
            None => format!("{namespace}.{s}"),
        };
        let feed = |f: FeedConfig| FeedConfig {
            stream: stream(&f.stream),
            devices_subject: subject(&f.devices_subject),
            services_subject: subject(&f.services_subject),
            devices_consumer: format!("{}-{namespace}", f.devices_consumer),
            services_consumer: format!("{}-{namespace}", f.services_consumer),
            ..f
        };
        Ok(Self {
            namespace: Some(namespace.to_string()),
            inventory: feed(base.inventory),
            telemetry: feed(base.telemetry),
            events_stream: stream(&base.events_stream),
            events_subject_prefix: subject(&base.events_subject_prefix),
            membership_stream: stream(&base.membership_stream),
            membership_subject_prefix: subject(&base.membership_subject_prefix),
            sweeps: SweepNames::tagged(namespace),
            sweep_reports_consumer: format!("{}-{namespace}", base.sweep_reports_consumer),
        })
    }

    /// Refuses names under which two streams could hold one subject, or two consumers of a
    /// stream share a name (a stream would fail to start whenever the other started first).
    pub fn check_apart(&self) -> Result<(), String> {
        let streams = self.streams();
        for (i, (s1, f1)) in streams.iter().enumerate() {
            for (s2, f2) in &streams[i + 1..] {
                if s1 == s2 {
                    return Err(format!("two of Corral's NATS streams are named {s1}"));
                }
                for a in f1 {
                    if let Some(b) = f2.iter().find(|b| filters_overlap(a, b)) {
                        return Err(format!(
                            "the NATS streams {s1} ({a}) and {s2} ({b}) could hold the same \
                             subject; pick another CORRAL_EVENTS_SUBJECT_PREFIX or namespace"
                        ));
                    }
                }
            }
        }
        let consumers = self.consumers();
        for (i, c) in consumers.iter().enumerate() {
            if consumers[i + 1..].contains(c) {
                return Err(format!("two NATS consumers of {} are named {}", c.0, c.1));
            }
        }
        Ok(())
    }

    /// The publisher's settings for these names.
    pub fn publisher(&self) -> PublisherConfig {
        PublisherConfig {
            stream: self.events_stream.clone(),
            subject_prefix: self.events_subject_prefix.clone(),
            ..PublisherConfig::default()
        }
    }

    /// The membership feed's settings for these names.
    pub fn membership_feed(&self) -> MembershipFeedConfig {
        MembershipFeedConfig {
            stream: self.membership_stream.clone(),
            subject_prefix: self.membership_subject_prefix.clone(),
            ..MembershipFeedConfig::default()
        }
    }

    /// Every stream these names use (KV buckets as the streams behind them) with the subject
    /// filters it holds.
    pub fn streams(&self) -> Vec<(String, Vec<String>)> {
        let feed = |f: &FeedConfig| {
            (
                f.stream.clone(),
                vec![f.devices_subject.clone(), f.services_subject.clone()],
            )
        };
        let kv = |bucket: &str| (format!("KV_{bucket}"), vec![format!("$KV.{bucket}.>")]);
        vec![
            feed(&self.inventory),
            feed(&self.telemetry),
            (
                self.events_stream.clone(),
                vec![format!("{}.>", self.events_subject_prefix)],
            ),
            (
                self.membership_stream.clone(),
                vec![format!("{}.>", self.membership_subject_prefix)],
            ),
            kv(&self.sweeps.jobs_bucket),
            kv(&self.sweeps.pollers_bucket),
            (
                self.sweeps.reports_stream.clone(),
                vec![format!("{}.>", self.sweeps.reports_prefix)],
            ),
        ]
    }

    /// Every durable consumer, with its stream.
    pub fn consumers(&self) -> Vec<(String, String)> {
        vec![
            (
                self.inventory.stream.clone(),
                self.inventory.devices_consumer.clone(),
            ),
            (
                self.inventory.stream.clone(),
                self.inventory.services_consumer.clone(),
            ),
            (
                self.telemetry.stream.clone(),
                self.telemetry.devices_consumer.clone(),
            ),
            (
                self.telemetry.stream.clone(),
                self.telemetry.services_consumer.clone(),
            ),
            (
                self.sweeps.reports_stream.clone(),
                self.sweep_reports_consumer.clone(),
            ),
        ]
    }

    /// Quicker retries, for tests.
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.inventory.retry_delay = delay;
        self.telemetry.retry_delay = delay;
        self
    }
}

/// Whether some subject matches both NATS subject filters (`*` one token, `>` the rest).
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (None, None) => return true,
            (None, _) | (_, None) => return false,
            (Some(x), Some(y)) => {
                if *x != "*" && *y != "*" && x != y {
                    return false;
                }
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn assert_apart(sets: &[&NatsNames]) {
        for set in sets {
            assert_eq!(set.check_apart(), Ok(()));
        }
        let streams: Vec<(String, Vec<String>)> = sets.iter().flat_map(|n| n.streams()).collect();
        let names: HashSet<&str> = streams.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names.len(),
            streams.len(),
            "two streams share a name: {streams:?}"
        );
        for (i, (s1, f1)) in streams.iter().enumerate() {
            for (s2, f2) in &streams[i + 1..] {
                for a in f1 {
                    for b in f2 {
                        assert!(
                            !filters_overlap(a, b),
                            "streams {s1} ({a}) and {s2} ({b}) could hold one subject"
                        );
                    }
                }
            }
        }
        let consumers: Vec<(String, String)> = sets.iter().flat_map(|n| n.consumers()).collect();
        let distinct: HashSet<&(String, String)> = consumers.iter().collect();
        assert_eq!(
            distinct.len(),
            consumers.len(),
            "two consumers share a name"
        );
    }

    #[test]
    fn production_streams_never_hold_one_subject_twice() {
        assert_apart(&[&NatsNames::production()]);
    }

    #[test]
    fn namespaces_are_apart_from_production_and_from_each_other() {
        let prod = NatsNames::production();
        let a = NatsNames::namespaced("site-a").expect("valid");
        let b = NatsNames::namespaced("t1").expect("valid");
        assert_apart(&[&prod, &a, &b]);
        assert_eq!(
            a.inventory.devices_subject,
            "corral.site-a.inventory.devices"
        );
        assert_eq!(a.events_subject_prefix, "corral.site-a.events");
        assert_eq!(a.events_stream, "CORRAL_EVENTS_site-a");
        assert_eq!(a.membership_subject_prefix, "corral.site-a.membership");
        assert_eq!(a.membership_stream, "CORRAL_MEMBERSHIP_site-a");
    }

    #[test]
    fn an_events_prefix_inside_another_streams_subjects_is_refused() {
        let mut names = NatsNames::production();
        names.events_subject_prefix = "corral.inventory".into();
        let err = names.check_apart().expect_err("overlap");
        assert!(err.contains("CORRAL_INVENTORY"), "{err}");
    }

    #[test]
    fn namespaces_that_could_alias_production_subjects_are_refused() {
        for bad in [
            "",
            "a.b",
            "a b",
            "events",
            "Sweeps",
            ">",
            "*",
            &"x".repeat(33),
        ] {
            assert!(NatsNames::namespaced(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subject_filters_overlap_as_nats_matches_them() {
        assert!(filters_overlap(
            "corral.events.>",
            "corral.events.Group.x.y"
        ));
        assert!(filters_overlap(
            "corral.*.devices",
            "corral.inventory.devices"
        ));
        assert!(filters_overlap("a.>", "a.*"));
        assert!(!filters_overlap("corral.events.>", "corral.events"));
        assert!(!filters_overlap(
            "corral.inventory.devices",
            "corral.inventory.services"
        ));
        assert!(!filters_overlap("a.*", "a.b.c"));
    }
}
