//! The membership feed's decisions, without I/O: where to resume after a sync with the stream,
//! and what one change's message is (subject, headers, body). Tested below.

use corral_projections::canonical::format_time;
use corral_projections::watch::NumberedChange;
use serde::Serialize;
use uuid::Uuid;

use crate::publisher::{subject_token, POSITION_HEADER};

/// Header: the change's index among its watch's changes at that position.
pub const INDEX_HEADER: &str = "Corral-Change-Index";
/// Header: the message's ordinal among every watch's messages of that position (the resume
/// point inside a position).
pub const ORDINAL_HEADER: &str = "Corral-Feed-Ordinal";
/// Header: the watch's id.
pub const WATCH_HEADER: &str = "Corral-Watch-Id";

/// Where the feed resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The watches are folded as of this position, and the log is read after it.
    pub after: i64,
    /// The messages of position `.0` up to ordinal `.1` are in the stream already.
    pub skip: Option<(i64, u64)>,
}

/// Where to resume from the checkpoint (every message of positions up to it is in the stream)
/// and the stream's newest message (its position and ordinal): inside that message's position
/// when it is past the checkpoint (a feed that stopped in the middle of a position), else
/// after the checkpoint.
pub fn resume(checkpoint: i64, in_stream: Option<(i64, u64)>) -> Resume {
    match in_stream {
        Some((p, ordinal)) if p > checkpoint => Resume {
            after: p - 1,
            skip: Some((p, ordinal)),
        },
        // Most positions cause no message, so a stream whose newest message is older than
        // the checkpoint is the normal case.
        _ => Resume {
            after: checkpoint,
            skip: None,
        },
    }
}

/// Whether the message of `position` and `ordinal` is still to be sent.
pub fn to_send(skip: Option<(i64, u64)>, position: i64, ordinal: u64) -> bool {
    match skip {
        Some((p, o)) => position > p || (position == p && ordinal > o),
        None => true,
    }
}

/// A change's message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `<prefix>.<watchId>.<Entered|Left>`.
    pub subject: String,
    /// Its headers.
    pub headers: Vec<(&'static str, String)>,
    /// Its JSON body.
    pub body: Vec<u8>,
}

/// The body of one membership-feed message (JSON; its schema is
/// `docs/schemas/membership/change.json`).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedChange {
    /// The watch.
    pub watch_id: Uuid,
    /// The watched group.
    pub group_id: Uuid,
    /// The log position of the event that caused the change.
    pub position: i64,
    /// Its index among the changes that event caused in this watch (from 0).
    pub index: u32,
    /// Whether it is the last change of its position in this watch.
    pub last_of_position: bool,
    /// `<position>:<index>`: `membershipChanges(after:)` resumes right after it.
    pub cursor: String,
    /// When the event was recorded (RFC 3339, UTC, microseconds).
    pub recorded_at: String,
    /// `ENTERED` or `LEFT`.
    pub change: &'static str,
    /// The device or service id.
    pub member_id: String,
    /// `STATIC` or `RULE`: how it is (entered) or was (left) a direct member of `viaGroupId`.
    pub source: &'static str,
    /// The group whose direct membership changed: the watched group, or the descendant
    /// through which the member entered or left.
    pub via_group_id: Uuid,
    /// Why: the rule evaluation's cause, `moved`, `deleted`, or null for a direct edit.
    pub cause: Option<String>,
}

/// The message of `change`, the `ordinal`th of its position, for watch `watch` of `group`.
pub fn message(
    prefix: &str,
    watch: Uuid,
    group: Uuid,
    ordinal: u64,
    change: &NumberedChange,
) -> Message {
    let c = &change.change;
    let id = format!("{watch}:{}:{}", change.position, change.index);
    let body = FeedChange {
        watch_id: watch,
        group_id: group,
        position: change.position,
        index: change.index,
        last_of_position: change.last,
        cursor: change.cursor().to_string(),
        recorded_at: format_time(change.recorded_at),
        change: c.kind.as_str(),
        member_id: c.member_id.clone(),
        source: c.source.as_str(),
        via_group_id: c.group,
        cause: c.cause.clone(),
    };
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    Message {
        subject: format!("{prefix}.{watch}.{}", subject_token(c.kind.word())),
        headers: vec![
            ("Nats-Msg-Id", id.clone()),
            (POSITION_HEADER, change.position.to_string()),
            (INDEX_HEADER, change.index.to_string()),
            (ORDINAL_HEADER, ordinal.to_string()),
            (WATCH_HEADER, watch.to_string()),
            ("ce-specversion", "1.0".into()),
            ("ce-id", id),
            ("ce-source", "/corral".into()),
            ("ce-type", format!("io.corral.membership.{}", c.kind.word())),
            (
                "ce-subject",
                format!("Group/{group}/members/{}", clean(&c.member_id)),
            ),
            ("ce-time", format_time(change.recorded_at)),
            ("Content-Type", "application/json".into()),
        ],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// The message of a sample change (for the AsyncAPI document's headers).
pub(crate) fn sample_message() -> Message {
    use corral_domain::membership::MemberSource;
    use corral_projections::watch::{number, MembershipChangeKind, WatchChange};
    let changes = number(
        1,
        chrono::DateTime::UNIX_EPOCH,
        vec![WatchChange {
            kind: MembershipChangeKind::Entered,
            member_id: "d1".into(),
            source: MemberSource::Static,
            group: Uuid::nil(),
            cause: None,
        }],
    );
    message(
        "corral.membership",
        Uuid::nil(),
        Uuid::nil(),
        0,
        &changes[0],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use corral_domain::membership::MemberSource;
    use corral_projections::watch::{number, MembershipChangeKind, WatchChange};

    #[test]
    fn a_feed_stopped_inside_a_position_resumes_inside_it() {
        let r = resume(10, Some((14, 3)));
        assert_eq!((r.after, r.skip), (13, Some((14, 3))));
        assert!(!to_send(r.skip, 14, 3));
        assert!(to_send(r.skip, 14, 4));
        assert!(to_send(r.skip, 15, 0));
        let r = resume(14, Some((14, 3)));
        assert_eq!((r.after, r.skip), (14, None), "position 14 was complete");
        assert_eq!(resume(9, None).after, 9);
        assert_eq!(resume(20, Some((14, 0))).after, 20);
    }

    #[test]
    fn a_message_carries_its_place_and_the_cloudevents_attributes() {
        let (watch, group) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let changes = number(
            42,
            Utc::now(),
            vec![
                WatchChange {
                    kind: MembershipChangeKind::Entered,
                    member_id: "d1".into(),
                    source: MemberSource::Rule,
                    group,
                    cause: Some("rule_changed".into()),
                },
                WatchChange {
                    kind: MembershipChangeKind::Left,
                    member_id: "d2".into(),
                    source: MemberSource::Static,
                    group,
                    cause: None,
                },
            ],
        );
        let m = message("corral.membership", watch, group, 5, &changes[1]);
        assert_eq!(m.subject, format!("corral.membership.{watch}.Left"));
        let h = |name: &str| {
            m.headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("Nats-Msg-Id"), Some(format!("{watch}:42:1")));
        assert_eq!(h(POSITION_HEADER).as_deref(), Some("42"));
        assert_eq!(h(INDEX_HEADER).as_deref(), Some("1"));
        assert_eq!(h(ORDINAL_HEADER).as_deref(), Some("5"));
        assert_eq!(h("ce-type").as_deref(), Some("io.corral.membership.Left"));
        assert_eq!(h("ce-specversion").as_deref(), Some("1.0"));
        let body: serde_json::Value = serde_json::from_slice(&m.body).expect("json");
        assert_eq!(body["change"], "LEFT");
        assert_eq!(body["lastOfPosition"], true);
        assert_eq!(body["cursor"], "42:1");
        assert_eq!(body["source"], "STATIC");
    }
}
