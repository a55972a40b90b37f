//! Follow-ups: work that a command's events call for, too long to finish inside the request
//! that wrote them, done by a worker that reads the log like a projector and resumes from its
//! checkpoint after a crash.
//!
//! The one follow-up today: a deleted group's memberships go too, as Membership events
//! (`Purge` commands of at most 10,000 ids per kind). The worker reads `GroupDeleted` events
//! below the log's horizon, purges each group, and only then moves its checkpoint (a row of
//! `projection_checkpoints`, announced like a projector's), so a mutation can wait for it
//! as for a read model, and a crash in the middle means the purge is simply done again
//! (purging what is already gone is a no-op). One process of a cluster runs it
//! ([`Lock::MembershipPurge`](crate::locks::Lock::MembershipPurge)).

use std::sync::Arc;
use std::time::Duration;

use corral_domain::group::{Group, GroupEvent};
use corral_domain::metadata::{EventMetadata, Source};
use cqrs_es::Aggregate;
use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use super::membership::MembershipCommands;
use crate::leader::{Leadership, Leading};
use crate::locks::Lock;
use crate::log::{CatchUpReader, Cursor, EventRecord};
use crate::runner::{claim_checkpoint, ensure_checkpoint, save_checkpoint};
use crate::StoreError;

/// The checkpoint (and read-model name a mutation waits for) of the membership purge.
pub const MEMBERSHIP_PURGE: &str = "membership_purge";

/// A follow-up: its checkpoint name and the events it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowUp {
    /// Its checkpoint's name.
    pub name: &'static str,
    /// The aggregate type of the events it acts on.
    pub aggregate_type: &'static str,
    /// The event type it acts on.
    pub event_type: &'static str,
}

/// Every follow-up.
pub const FOLLOW_UPS: [FollowUp; 1] = [FollowUp {
    name: MEMBERSHIP_PURGE,
    aggregate_type: Group::TYPE,
    event_type: GroupEvent::DELETED,
}];

/// Events read per batch.
const BATCH: i64 = 500;

/// The metadata of a purge: the deletion's own (actor, correlation, reason), caused by the
/// `GroupDeleted` event.
fn purge_metadata(event: &EventRecord) -> EventMetadata {
    let text = |key: &str| event.metadata.get(key).and_then(|v| v.as_str());
    let source = match text("source") {
        Some("worker") => Source::Worker,
        Some("cli") => Source::Cli,
        Some("rule") => Source::Rule,
        Some("feed") => Source::Feed,
        _ => Source::Api,
    };
    EventMetadata {
        actor_subject: text("actor_subject").unwrap_or("corral").to_string(),
        actor_role: text("actor_role").unwrap_or("system").to_string(),
        source,
        correlation_id: text("correlation_id")
            .map_or_else(|| event.event_id.to_string(), str::to_string),
        causation_id: event.event_id.to_string(),
        reason: text("reason").map(str::to_string),
        client_addr: text("client_addr").map(str::to_string),
    }
}

/// The groups a batch deletes, with the metadata their purges carry.
fn deletions(events: &[EventRecord]) -> Result<Vec<(Uuid, EventMetadata)>, StoreError> {
    let mut out = Vec::new();
    for event in events {
        let deleted = match event.decode::<GroupEvent>()? {
            GroupEvent::GroupDeleted { .. } => true,
            GroupEvent::GroupCreated { .. }
            | GroupEvent::GroupRenamed { .. }
            | GroupEvent::GroupUpdated { .. }
            | GroupEvent::GroupMoved { .. }
            | GroupEvent::GroupRuleSet { .. }
            | GroupEvent::GroupRuleCleared { .. }
            | GroupEvent::GroupCapabilitiesChanged { .. } => false,
        };
        if deleted {
            let id = event.aggregate_id.parse().map_err(|_| {
                StoreError::Data(format!("group id {:?} is not a UUID", event.aggregate_id))
            })?;
            out.push((id, purge_metadata(event)));
        }
    }
    Ok(out)
}

/// One pass: reads the next batch after the checkpoint, purges what it deletes, moves the
/// checkpoint. Returns whether the log may hold more right away.
pub async fn purge_step(pool: &PgPool, members: &MembershipCommands) -> Result<bool, StoreError> {
    let reader = CatchUpReader {
        aggregate_types: vec!["Group".into()],
        batch_size: BATCH,
        with_metadata: true,
    };
    let mut conn = pool.acquire().await?;
    ensure_checkpoint(&mut conn, MEMBERSHIP_PURGE).await?;
    // Read without holding the row: the purges below commit on their own (each an event
    // writer of its own), and a transaction kept open across them would only hold a
    // connection. The leader lock keeps other processes off this checkpoint.
    let after: Cursor = claim_checkpoint(&mut conn, MEMBERSHIP_PURGE, true)
        .await?
        .map(|c| c.cursor)
        .unwrap_or_default();
    let batch = reader.read(&mut conn, after).await?;
    for (group, metadata) in deletions(&batch.events)? {
        members
            .purge(group, &metadata)
            .await
            .map_err(|e| StoreError::Data(format!("purging the memberships of {group}: {e}")))?;
    }
    if batch.next != after {
        save_checkpoint(&mut conn, MEMBERSHIP_PURGE, batch.next, batch.events.len()).await?;
    }
    Ok(!batch.caught_up)
}

/// Runs the membership purge while this process leads it, until `stop`: a pass when `wake`
/// fires (a commit in this process or a notification from another), at least every `poll`.
pub async fn run_membership_purge(
    pool: PgPool,
    members: Arc<MembershipCommands>,
    wake: Arc<Notify>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let leadership = Leadership::Worker(Lock::MembershipPurge);
    let mut leading = Leading::new(pool.clone(), leadership, Duration::from_secs(2));
    while leading.next(&mut stop).await.is_some() {
        match purge_step(&pool, &members).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "membership purge failed; retrying"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(event_type: &str, payload: serde_json::Value) -> EventRecord {
        EventRecord {
            global_position: 1,
            transaction_id: 1,
            event_id: Uuid::from_u128(9),
            aggregate_type: "Group".into(),
            aggregate_id: Uuid::from_u128(5).to_string(),
            sequence: 3,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload: json!({ event_type: payload }),
            metadata: json!({ "actor_subject": "alice", "actor_role": "admin", "source": "api",
                              "correlation_id": "req-1", "causation_id": "req-1", "reason": "gone" }),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_deletion_is_purged_with_the_deletions_actor_caused_by_its_event() {
        let events = [
            record("GroupRenamed", json!({ "name": "b", "previous_name": "a" })),
            record("GroupDeleted", json!({})),
        ];
        let found = deletions(&events).expect("decoded");
        assert_eq!(found.len(), 1);
        let (group, meta) = &found[0];
        assert_eq!(*group, Uuid::from_u128(5));
        assert_eq!(meta.actor_subject, "alice");
        assert_eq!(meta.source, Source::Api);
        assert_eq!(meta.correlation_id, "req-1");
        assert_eq!(meta.causation_id, Uuid::from_u128(9).to_string());
        assert_eq!(meta.reason.as_deref(), Some("gone"));
    }
}
