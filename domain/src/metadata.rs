//! Metadata stored with every event: who, from where, why.

use std::collections::HashMap;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A GraphQL request.
    Api,
    /// A background worker.
    Worker,
    /// The `corral` command line.
    Cli,
    /// Rule evaluation.
    Rule,
    /// An inventory feed (NATS JetStream).
    Feed,
}

impl Source {
    /// Every source (a test keeps it complete).
    pub const ALL: [Source; 5] = [
        Source::Api,
        Source::Worker,
        Source::Cli,
        Source::Rule,
        Source::Feed,
    ];

    /// The `source` of the events a migration wrote (migration 0011's baseline of the
    /// inventory), which no running code writes.
    pub const MIGRATION: &'static str = "migration";

    /// The value stored in event metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Worker => "worker",
            Source::Cli => "cli",
            Source::Rule => "rule",
            Source::Feed => "feed",
        }
    }
}

/// The metadata every event carries (DESIGN.md, decision 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The authenticated subject that caused the change.
    pub actor_subject: String,
    /// The subject's role at the time.
    pub actor_role: String,
    /// Where the change came from.
    pub source: Source,
    /// Ties together every event caused by one request.
    pub correlation_id: String,
    /// The event or request that directly caused this one.
    pub causation_id: String,
    /// The human reason given with the change, if any.
    pub reason: Option<String>,
    /// The client's network address, when known.
    pub client_addr: Option<String>,
}

impl EventMetadata {
    /// Metadata for a system-initiated change (start-up, workers).
    pub fn system(source: Source, correlation_id: impl Into<String>) -> Self {
        let correlation_id = correlation_id.into();
        Self {
            actor_subject: "corral".into(),
            actor_role: "system".into(),
            source,
            causation_id: correlation_id.clone(),
            correlation_id,
            reason: None,
            client_addr: None,
        }
    }

    /// The flat string map cqrs-es stores in the `metadata` column.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor_subject".to_string(), self.actor_subject.clone()),
            ("actor_role".to_string(), self.actor_role.clone()),
            ("source".to_string(), self.source.as_str().to_string()),
            ("correlation_id".to_string(), self.correlation_id.clone()),
            ("causation_id".to_string(), self.causation_id.clone()),
        ]);
        if let Some(reason) = &self.reason {
            map.insert("reason".into(), reason.clone());
        }
        if let Some(addr) = &self.client_addr {
            map.insert("client_addr".into(), addr.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_omitted_and_required_ones_present() {
        let mut meta = EventMetadata::system(Source::Cli, "req-1");
        let map = meta.to_map();
        assert_eq!(map.get("source").map(String::as_str), Some("cli"));
        assert_eq!(map.get("causation_id").map(String::as_str), Some("req-1"));
        assert!(!map.contains_key("reason"));
        meta.reason = Some("cleanup".into());
        assert_eq!(
            meta.to_map().get("reason").map(String::as_str),
            Some("cleanup")
        );
    }
}

#[cfg(test)]
mod source_tests {
    use super::Source;

    /// A new variant fails to compile here until it has an index, and the test until it is
    /// in [`Source::ALL`] at that index.
    fn index(s: Source) -> usize {
        match s {
            Source::Api => 0,
            Source::Worker => 1,
            Source::Cli => 2,
            Source::Rule => 3,
            Source::Feed => 4,
        }
    }

    #[test]
    fn all_lists_every_source_once() {
        for (i, s) in Source::ALL.iter().enumerate() {
            assert_eq!(index(*s), i, "{}", s.as_str());
        }
        assert_eq!(Source::ALL.len(), index(Source::Feed) + 1);
    }
}
