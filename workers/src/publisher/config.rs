//! What the publisher is configured with: the stream, the subject prefix, batching and
//! timeouts, checked before it starts.

use std::time::Duration;

use super::message::{subject_token, Published};
use super::CHECKPOINT_PREFIX;

/// Where and how the publisher writes. Tests give each run its own stream and prefix (two
/// streams on one server cannot share subjects).
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// JetStream stream (file storage), created or updated at start.
    pub stream: String,
    /// Subject prefix; subjects are `<prefix>.<aggregate_type>.<aggregate_id>.<event_type>`.
    pub subject_prefix: String,
    /// Events per batch (read, published pipelined, then checkpointed).
    pub batch: i64,
    /// How long the stream keeps messages (zero: no limit).
    pub max_age: Duration,
    /// The stream's `Nats-Msg-Id` deduplication window.
    pub duplicate_window: Duration,
    /// How often to look for new events when no notification arrives.
    pub poll: Duration,
    /// How long to wait for each JetStream acknowledgement or API reply.
    pub timeout: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            stream: "CORRAL_EVENTS".into(),
            subject_prefix: "corral.events".into(),
            batch: 256,
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl PublisherConfig {
    /// Checks the stream name and the subject prefix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad_name = |c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c);
        if self.stream.is_empty() || self.stream.chars().any(bad_name) {
            return Err(ConfigError(format!(
                "CORRAL_EVENTS_STREAM {:?} is not a valid JetStream stream name",
                self.stream
            )));
        }
        let bad_token = |t: &str| {
            t.is_empty()
                || t.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
        };
        if self.subject_prefix.split('.').any(bad_token) {
            return Err(ConfigError(format!(
                "CORRAL_EVENTS_SUBJECT_PREFIX {:?} must be dot-separated tokens without \
                 wildcards or whitespace",
                self.subject_prefix
            )));
        }
        if self.batch < 1 {
            return Err(ConfigError(
                "the publisher's batch must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The checkpoint this configuration publishes from (`nats-publisher:<stream>`).
    pub fn checkpoint_name(&self) -> String {
        format!("{CHECKPOINT_PREFIX}{}", self.stream)
    }

    /// The subject of one event.
    pub fn subject(&self, entry: &impl Published) -> String {
        format!(
            "{}.{}.{}.{}",
            self.subject_prefix,
            subject_token(entry.aggregate_type()),
            subject_token(entry.aggregate_id()),
            subject_token(entry.event_type())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::message::tests::entry;
    use serde_json::json;

    #[test]
    fn subjects_name_type_id_and_event() {
        let config = PublisherConfig::default();
        let id = "0b7c4a0e-2f55-4a53-9d1d-0f5b8c8c2b11";
        assert_eq!(
            config.subject(&entry("Group", id, json!({}))),
            format!("corral.events.Group.{id}.GroupRenamed")
        );
    }

    #[test]
    fn configuration_is_checked() {
        assert!(PublisherConfig::default().validate().is_ok());
        for prefix in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
            let c = PublisherConfig {
                subject_prefix: prefix.into(),
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{prefix:?} is refused");
        }
        for stream in ["", "A.B", "A B", "A*"] {
            let c = PublisherConfig {
                stream: stream.into(),
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{stream:?} is refused");
        }
        assert_eq!(
            PublisherConfig::default().checkpoint_name(),
            "nats-publisher:CORRAL_EVENTS"
        );
    }
}
