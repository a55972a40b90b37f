//! The registered membership watches, folded from their `MembershipWatch` events in the
//! public log (there are few; no read model keeps them).

use chrono::{DateTime, Utc};
use corral_domain::watch::{MembershipWatch, MembershipWatchEvent};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::log::decode_stored;
use crate::StoreError;

/// The watches' aggregate type (`MembershipWatch`).
pub const WATCH_AGGREGATE: &str = MembershipWatch::TYPE;

/// Most watches registered and not removed at once.
pub const MAX_WATCHES: usize = 100;

/// A registered watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredWatch {
    /// Its id (the aggregate's).
    pub id: Uuid,
    /// The group watched.
    pub group_id: Uuid,
    /// Effective membership.
    pub include_descendants: bool,
    /// What it is for.
    pub description: Option<String>,
    /// The position of its registration: the feed publishes the changes of later events.
    pub registered_at_position: i64,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// Who registered it (`metadata.actor_subject`).
    pub registered_by: String,
    /// The position of its removal, if it was removed.
    pub removed_at_position: Option<i64>,
}

/// Folds watch events (with their position, time and actor) in log order.
pub fn fold(
    events: impl IntoIterator<Item = (Uuid, i64, DateTime<Utc>, String, MembershipWatchEvent)>,
) -> Vec<RegisteredWatch> {
    let mut out: Vec<RegisteredWatch> = Vec::new();
    for (id, position, at, actor, event) in events {
        match event {
            MembershipWatchEvent::MembershipWatchRegistered {
                group_id,
                include_descendants,
                description,
            } => out.push(RegisteredWatch {
                id,
                group_id,
                include_descendants,
                description,
                registered_at_position: position,
                registered_at: at,
                registered_by: actor,
                removed_at_position: None,
            }),
            MembershipWatchEvent::MembershipWatchRemoved {} => {
                if let Some(w) = out.iter_mut().find(|w| w.id == id) {
                    w.removed_at_position.get_or_insert(position);
                }
            }
        }
    }
    out
}

/// Every watch registered at or before `position` (`None`: the head), in registration order,
/// with its removal if that happened by then.
pub async fn watches_at(
    conn: &mut PgConnection,
    position: Option<i64>,
) -> Result<Vec<RegisteredWatch>, StoreError> {
    let rows = sqlx::query(
        "SELECT l.log_position, e.aggregate_id, e.event_type, e.event_version, e.payload,
                e.recorded_at, coalesce(e.metadata ->> 'actor_subject', '') AS actor
           FROM events e JOIN event_log l USING (global_position)
          WHERE e.aggregate_type = $1 AND ($2::bigint IS NULL OR l.log_position <= $2)
          ORDER BY l.log_position",
    )
    .bind(MembershipWatch::TYPE)
    .bind(position)
    .fetch_all(conn)
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let aggregate_id: String = r.try_get("aggregate_id")?;
        let id: Uuid = aggregate_id
            .parse()
            .map_err(|_| StoreError::Data(format!("watch id {aggregate_id:?}")))?;
        let event_type: String = r.try_get("event_type")?;
        let event_version: String = r.try_get("event_version")?;
        let payload: Value = r.try_get("payload")?;
        let event: MembershipWatchEvent = decode_stored(
            MembershipWatch::TYPE,
            &aggregate_id,
            &event_type,
            &event_version,
            &payload,
        )?;
        events.push((
            id,
            r.try_get("log_position")?,
            r.try_get("recorded_at")?,
            r.try_get("actor")?,
            event,
        ));
    }
    Ok(fold(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_close_the_watch_they_name() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let registered = |g: u128| MembershipWatchEvent::MembershipWatchRegistered {
            group_id: Uuid::from_u128(g),
            include_descendants: g == 9,
            description: None,
        };
        let t = Utc::now();
        let folded = fold([
            (a, 3, t, "alice".into(), registered(9)),
            (b, 5, t, "bob".into(), registered(8)),
            (
                a,
                8,
                t,
                "alice".into(),
                MembershipWatchEvent::MembershipWatchRemoved {},
            ),
        ]);
        assert_eq!(folded.len(), 2);
        assert_eq!(
            (
                folded[0].id,
                folded[0].registered_at_position,
                folded[0].removed_at_position
            ),
            (a, 3, Some(8))
        );
        assert!(folded[0].include_descendants);
        assert_eq!(
            (
                folded[1].registered_by.as_str(),
                folded[1].removed_at_position
            ),
            ("bob", None)
        );
    }
}
