//! Consistent walks over live read models: what a cursor records of the state its first page
//! was read at, and whether a later page still reads that state.
//!
//! A [`Mark`] is a projector's checkpoint (its place in commit order, and how many events it
//! has applied), read *before* the first page. A later page is read first and checked after:
//! when no event that could change the walked set lies after the mark in commit order, the
//! read model held, for that set, the same state at the mark, at the first page and at this
//! page, so the page continues the first page's state exactly. Otherwise the walk is stale.
//!
//! The check is cheap in the common case: when the projector applied no event since the mark
//! (`events_processed` unchanged), nothing changed anywhere and no event is read at all. When
//! it did, the events after the mark are looked at only as far as they can concern the set:
//! for a few groups, each group's last Membership event (one primary-key probe per group);
//! for many groups, and for the tree, a bounded scan of the log after the mark in commit order
//! ([`SCAN_LIMIT`] events; a longer tail counts as a change, conservatively).

use corral_domain::group::GroupEvent;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::StoreError;

/// Events after a mark looked at, at most, before a walk is declared stale unseen.
pub const SCAN_LIMIT: i64 = 10_000;
/// Groups probed one by one, at most; a larger subtree is checked by a scan of the log.
const PROBE_LIMIT: usize = 256;

/// A projector's checkpoint as a cursor records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    /// Transaction id (xid8) of the checkpoint.
    pub x: u64,
    /// Global position of the checkpoint.
    pub g: i64,
    /// Events the projector had applied.
    pub n: i64,
}

/// The checkpoint of projector `name` now (the start of the log if it has none).
pub async fn mark(pool: &PgPool, name: &str) -> Result<Mark, StoreError> {
    let row = sqlx::query(
        "SELECT transaction_id::text AS x, global_position, events_processed
           FROM projection_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Mark { x: 0, g: 0, n: 0 });
    };
    Ok(Mark {
        x: crate::log::parse_xid(&row.try_get::<String, _>("x")?)?,
        g: row.try_get("global_position")?,
        n: row.try_get("events_processed")?,
    })
}

/// Whether a Group event changes the set or the order of groups in a listing, or which
/// groups lie in a subtree (creation, rename, move, deletion). Exhaustive: a new event must
/// be classified here.
pub fn reshapes_tree(event: &GroupEvent) -> bool {
    match event {
        GroupEvent::GroupCreated { .. }
        | GroupEvent::GroupRenamed { .. }
        | GroupEvent::GroupMoved { .. }
        | GroupEvent::GroupDeleted {} => true,
        GroupEvent::GroupUpdated { .. }
        | GroupEvent::GroupRuleSet { .. }
        | GroupEvent::GroupRuleCleared { .. }
        | GroupEvent::GroupCapabilitiesChanged { .. } => false,
    }
}

/// The `event_type`s for which [`reshapes_tree`] holds (a unit test keeps them equal).
pub const RESHAPING: [&str; 4] = ["GroupCreated", "GroupRenamed", "GroupMoved", "GroupDeleted"];

/// Whether any Membership event of one of `groups` was committed after `since` (the
/// membership projector's mark).
pub async fn membership_changed(
    pool: &PgPool,
    since: &Mark,
    groups: &[Uuid],
) -> Result<bool, StoreError> {
    let now = mark(pool, crate::membership::MEMBERSHIP).await?;
    if now.n == since.n {
        return Ok(false);
    }
    let ids: Vec<String> = groups.iter().map(Uuid::to_string).collect();
    if ids.len() <= PROBE_LIMIT {
        // The last event of an aggregate is its last in commit order too (an aggregate's
        // events are written one version after the other).
        let changed: bool = sqlx::query_scalar(
            "SELECT EXISTS (
               SELECT 1 FROM unnest($1::text[]) AS g(id)
               CROSS JOIN LATERAL (
                 SELECT transaction_id, global_position FROM events
                  WHERE aggregate_type = 'Membership' AND aggregate_id = g.id
                  ORDER BY sequence DESC LIMIT 1) e
               WHERE (e.transaction_id, e.global_position) > ($2::text::xid8, $3))",
        )
        .bind(&ids)
        .bind(since.x.to_string())
        .bind(since.g)
        .fetch_one(pool)
        .await?;
        return Ok(changed);
    }
    scan(
        pool,
        since,
        "aggregate_type = 'Membership' AND aggregate_id = ANY($4::text[])",
        Some(&ids),
    )
    .await
}

/// Whether any Group event that reshapes the tree ([`reshapes_tree`]) was committed after
/// `since` (the group tree projector's mark).
pub async fn tree_reshaped(pool: &PgPool, since: &Mark) -> Result<bool, StoreError> {
    let now = mark(pool, crate::group_tree::GROUP_TREE).await?;
    if now.n == since.n {
        return Ok(false);
    }
    let names: Vec<String> = RESHAPING.iter().map(|s| s.to_string()).collect();
    scan(
        pool,
        since,
        "aggregate_type = 'Group' AND event_type = ANY($4::text[])",
        Some(&names),
    )
    .await
}

/// Whether one of the first [`SCAN_LIMIT`] events after `since` in commit order satisfies
/// `condition` (over `$4`); a tail longer than that counts as a change.
async fn scan(
    pool: &PgPool,
    since: &Mark,
    condition: &str,
    param: Option<&[String]>,
) -> Result<bool, StoreError> {
    let (hits, seen): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE {condition}), count(*) FROM (
           SELECT aggregate_type, aggregate_id, event_type FROM events
            WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
            ORDER BY transaction_id, global_position LIMIT $3) s"
    ))
    .bind(since.x.to_string())
    .bind(since.g)
    .bind(SCAN_LIMIT)
    .bind(param)
    .fetch_one(pool)
    .await?;
    Ok(hits > 0 || seen >= SCAN_LIMIT)
}

/// The log position a mark stands at: that of the last event at or before it in commit order,
/// once the sequencer has numbered it (the state a walk's first page reflects, for
/// `atPosition`). Asked only when a walk is stale.
pub async fn log_position(pool: &PgPool, mark: &Mark) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT l.log_position FROM event_log l
          WHERE l.global_position = (
                SELECT global_position FROM events
                 WHERE (transaction_id, global_position) <= ($1::text::xid8, $2)
                 ORDER BY transaction_id DESC, global_position DESC LIMIT 1)",
    )
    .bind(mark.x.to_string())
    .bind(mark.g)
    .fetch_optional(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_domain::group::{GroupCapabilities, GroupType};
    use cqrs_es::DomainEvent;
    use serde_json::{Map, Value};

    #[test]
    fn reshaping_names_are_the_reshaping_events() {
        let id = Uuid::nil();
        let every = [
            GroupEvent::GroupCreated {
                group_type: GroupType::Device,
                name: "a".into(),
                parent_id: None,
                description: None,
                metadata: Map::new(),
                is_system: false,
            },
            GroupEvent::GroupRenamed {
                name: "b".into(),
                previous_name: "a".into(),
            },
            GroupEvent::GroupUpdated {
                description: None,
                metadata: Map::new(),
                previous: None,
            },
            GroupEvent::GroupMoved {
                previous_parent_id: id,
                new_parent_id: id,
            },
            GroupEvent::GroupDeleted {},
            GroupEvent::GroupRuleSet {
                rule: Value::Null,
                text: String::new(),
                enabled: true,
                rule_version: 1,
                refs: vec![],
            },
            GroupEvent::GroupRuleCleared { rule_version: 2 },
            GroupEvent::GroupCapabilitiesChanged {
                has_sysmon: true,
                has_snmp: false,
                has_services: false,
                previous: GroupCapabilities::default(),
            },
        ];
        for e in &every {
            assert_eq!(
                RESHAPING.contains(&e.event_type().as_str()),
                reshapes_tree(e),
                "{}",
                e.event_type()
            );
        }
    }
}
