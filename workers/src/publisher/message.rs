//! What is published for one event: its subject and headers.

use corral_projections::public_log::{LogEntry, RawEntry};

use super::{CORRELATION_HEADER, POSITION_HEADER};

/// What the subject and headers of a published event are made of.
pub trait Published {
    /// Aggregate type.
    fn aggregate_type(&self) -> &str;
    /// Aggregate id.
    fn aggregate_id(&self) -> &str;
    /// Event type.
    fn event_type(&self) -> &str;
    /// Event id.
    fn event_id(&self) -> uuid::Uuid;
    /// Log position.
    fn position(&self) -> i64;
    /// `metadata.correlation_id`.
    fn correlation_id(&self) -> Option<&str>;
    /// When it was recorded.
    fn recorded_at(&self) -> chrono::DateTime<chrono::Utc>;
}

impl Published for LogEntry {
    fn aggregate_type(&self) -> &str {
        &self.event.aggregate_type
    }
    fn aggregate_id(&self) -> &str {
        &self.event.aggregate_id
    }
    fn event_type(&self) -> &str {
        &self.event.event_type
    }
    fn event_id(&self) -> uuid::Uuid {
        self.event.event_id
    }
    fn position(&self) -> i64 {
        self.position
    }
    fn correlation_id(&self) -> Option<&str> {
        LogEntry::correlation_id(self)
    }
    fn recorded_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.event.recorded_at
    }
}

impl Published for RawEntry {
    fn aggregate_type(&self) -> &str {
        &self.aggregate_type
    }
    fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn event_id(&self) -> uuid::Uuid {
        self.event_id
    }
    fn position(&self) -> i64 {
        self.position
    }
    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
    fn recorded_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.recorded_at
    }
}

/// One subject token: ids are UUIDs and types alphanumeric, but anything that would change the
/// subject's shape (`.`, `*`, `>`, whitespace, control characters) becomes `_`, and an empty
/// token `_`.
pub fn subject_token(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    s.chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The headers of one event's message, as (name, value) pairs: `Nats-Msg-Id` (the event id),
/// `Corral-Position`, the CloudEvents 1.0 attributes of the binary content mode (`ce-specversion`,
/// `ce-id` = the event id, `ce-source` = `/corral`, `ce-type` =
/// `io.corral.<AggregateType>.<EventType>`, `ce-subject` = `<AggregateType>/<aggregateId>`,
/// `ce-time` = when it was recorded, and `Content-Type` for the JSON envelope) and, when the
/// metadata has one, `Corral-Correlation-Id`.
pub fn headers(entry: &impl Published) -> Vec<(&'static str, String)> {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    let mut out = vec![
        ("Nats-Msg-Id", entry.event_id().to_string()),
        (POSITION_HEADER, entry.position().to_string()),
        ("ce-specversion", "1.0".to_string()),
        ("ce-id", entry.event_id().to_string()),
        ("ce-source", "/corral".to_string()),
        (
            "ce-type",
            format!(
                "io.corral.{}.{}",
                clean(entry.aggregate_type()),
                clean(entry.event_type())
            ),
        ),
        (
            "ce-subject",
            format!(
                "{}/{}",
                clean(entry.aggregate_type()),
                clean(entry.aggregate_id())
            ),
        ),
        (
            "ce-time",
            corral_projections::canonical::format_time(entry.recorded_at()),
        ),
        ("Content-Type", "application/json".to_string()),
    ];
    if let Some(id) = entry.correlation_id() {
        // A header value cannot hold line breaks.
        let id: String = id.chars().filter(|c| !c.is_control()).collect();
        if !id.is_empty() {
            out.push((CORRELATION_HEADER, id));
        }
    }
    out
}

/// The headers of a sample event that has a correlation id: every header an event message may
/// carry (for the AsyncAPI document).
pub(crate) fn sample_headers() -> Vec<(&'static str, String)> {
    headers(&RawEntry {
        position: 1,
        event_id: uuid::Uuid::nil(),
        aggregate_type: "Group".into(),
        aggregate_id: uuid::Uuid::nil().to_string(),
        event_type: "GroupCreated".into(),
        correlation_id: Some("request".into()),
        recorded_at: chrono::DateTime::UNIX_EPOCH,
        envelope: String::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::publisher::PublisherConfig;
    use corral_projections::EventRecord;
    use serde_json::json;
    use uuid::Uuid;

    /// A log entry of a `GroupRenamed` for the tests of the publisher's modules.
    pub(crate) fn entry(
        aggregate_type: &str,
        aggregate_id: &str,
        metadata: serde_json::Value,
    ) -> LogEntry {
        LogEntry {
            position: 42,
            hash: vec![0xab; 32],
            event: EventRecord {
                global_position: 7,
                transaction_id: 1,
                event_id: Uuid::nil(),
                aggregate_type: aggregate_type.into(),
                aggregate_id: aggregate_id.into(),
                sequence: 3,
                event_type: "GroupRenamed".into(),
                event_version: "1".into(),
                payload: json!({"GroupRenamed": {"name": "x"}}),
                metadata,
                recorded_at: chrono::Utc::now(),
            },
        }
    }

    #[test]
    fn subject_tokens_cannot_change_the_subject_shape() {
        assert_eq!(subject_token("a.b"), "a_b");
        assert_eq!(subject_token("*"), "_");
        assert_eq!(subject_token(">"), "_");
        assert_eq!(subject_token("a b\tc\n"), "a_b_c_");
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject_token("Membership"), "Membership");
        let config = PublisherConfig {
            subject_prefix: "t.x".into(),
            ..Default::default()
        };
        let subject = config.subject(&entry("Gr.oup", "a.*.>", json!({})));
        assert_eq!(subject, "t.x.Gr_oup.a____.GroupRenamed");
        assert_eq!(subject.split('.').count(), 5);
    }

    #[test]
    fn headers_carry_id_position_and_correlation() {
        let e = entry("Group", "g", json!({"correlation_id": "req-1"}));
        let time = corral_projections::canonical::format_time(e.event.recorded_at);
        assert_eq!(
            headers(&e),
            vec![
                ("Nats-Msg-Id", Uuid::nil().to_string()),
                (POSITION_HEADER, "42".to_string()),
                ("ce-specversion", "1.0".to_string()),
                ("ce-id", Uuid::nil().to_string()),
                ("ce-source", "/corral".to_string()),
                ("ce-type", "io.corral.Group.GroupRenamed".to_string()),
                ("ce-subject", "Group/g".to_string()),
                ("ce-time", time),
                ("Content-Type", "application/json".to_string()),
                (CORRELATION_HEADER, "req-1".to_string()),
            ]
        );
        let h = headers(&entry("Group", "g", json!({"actor_subject": "alice"})));
        assert!(
            !h.iter().any(|(k, _)| *k == CORRELATION_HEADER),
            "no correlation id, no header"
        );
        let h = headers(&entry("Group", "g", json!({"correlation_id": "a\r\nb"})));
        assert_eq!(h.last(), Some(&(CORRELATION_HEADER, "ab".to_string())));
    }
}
