//! The `health` projector: queues groups whose effective membership may have changed.

use async_trait::async_trait;
use corral_domain::group::{Group, GroupEvent};
use corral_domain::membership::{Membership, MembershipEvent};
use cqrs_es::Aggregate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::log::EventRecord;
use crate::projection::Projection;
use crate::StoreError;

/// Projector and checkpoint name.
pub const HEALTH: &str = "health";

/// Turns Membership and Group events into `health_dirty` rows. It keeps no read model of its
/// own; the refresh worker does the work once the membership and group tree read models have
/// passed the queued event.
#[derive(Debug, Default, Clone, Copy)]
pub struct HealthProjection;

/// The groups an event may change the effective membership of (the refresh worker adds
/// their ancestors).
pub fn dirtied_groups(event: &EventRecord) -> Result<Vec<Uuid>, StoreError> {
    let own = || event.aggregate_id.parse::<Uuid>().ok();
    Ok(match event.aggregate_type.as_str() {
        Membership::TYPE => match event.decode::<MembershipEvent>()? {
            MembershipEvent::MembersAdded { .. }
            | MembershipEvent::MembersRemoved { .. }
            | MembershipEvent::MembersExcluded { .. }
            | MembershipEvent::MembersUnexcluded { .. } => own().into_iter().collect(),
        },
        Group::TYPE => match event.decode::<GroupEvent>()? {
            GroupEvent::GroupCreated { .. } | GroupEvent::GroupDeleted { .. } => {
                own().into_iter().collect()
            }
            GroupEvent::GroupMoved {
                previous_parent_id,
                new_parent_id,
            } => vec![previous_parent_id, new_parent_id],
            // Rules change membership through Membership events of their own.
            GroupEvent::GroupRenamed { .. }
            | GroupEvent::GroupUpdated { .. }
            | GroupEvent::GroupRuleSet { .. }
            | GroupEvent::GroupRuleCleared { .. }
            | GroupEvent::GroupCapabilitiesChanged { .. } => vec![],
        },
        _ => vec![],
    })
}

#[async_trait]
impl Projection for HealthProjection {
    fn name(&self) -> &'static str {
        HEALTH
    }

    fn aggregate_types(&self) -> Vec<String> {
        vec!["Group".to_string(), "Membership".to_string()]
    }

    fn needs_metadata(&self) -> bool {
        false
    }

    fn live_schema(&self) -> Option<&'static str> {
        None
    }

    async fn create_tables(
        &self,
        _conn: &mut PgConnection,
        _schema: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        _schema: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError> {
        let mut groups = Vec::new();
        let mut txs = Vec::new();
        let mut positions = Vec::new();
        for event in events {
            for group in dirtied_groups(event)? {
                groups.push(group);
                txs.push(event.transaction_id.to_string());
                positions.push(event.global_position);
            }
        }
        if groups.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO health_dirty (group_id, transaction_id, global_position)
             SELECT g, t::xid8, p FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS x(g, t, p)",
        )
        .bind(groups)
        .bind(txs)
        .bind(positions)
        .execute(conn)
        .await?;
        Ok(())
    }
}
