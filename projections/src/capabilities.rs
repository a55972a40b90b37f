//! The capabilities read model: each group's capability flags (`hasSysmon`, `hasSnmp`,
//! `hasServices`; see `docs/capabilities.md`), folded from `GroupCapabilitiesChanged` events.
//!
//! A group without a row has every flag false (it never had a capability). Deleting a group
//! deletes its row. The capabilities worker compares what it computes with these rows and the
//! GraphQL `Group.capabilities` field reads them.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_domain::group::{Group, GroupCapabilities, GroupEvent};
use cqrs_es::Aggregate;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::log::EventRecord;
use crate::projection::{schema_ident, Projection};
use crate::StoreError;

/// Projector and checkpoint name.
pub const GROUP_CAPABILITIES: &str = "group_capabilities";
/// The schema that serves queries.
pub const LIVE_SCHEMA: &str = "rm_group_capabilities";

/// Builds `capabilities` (one row per group whose flags were ever set).
#[derive(Debug, Default, Clone, Copy)]
pub struct CapabilitiesProjection;

/// One group's flags as the read model stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityRow {
    /// The flags.
    pub capabilities: GroupCapabilities,
    /// The aggregate version of the event that set them.
    pub version: i64,
    /// When they were set.
    pub updated_at: DateTime<Utc>,
}

/// What a batch of Group events does to the read model: the pure part, no database.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CapabilitiesFold {
    /// Per group, its new row (`Some`) or its deletion (`None`), in the order of the last
    /// event that touched it.
    pub writes: BTreeMap<Uuid, Option<CapabilityRow>>,
}

impl CapabilitiesFold {
    /// Applies one Group event; events of other aggregates leave the fold alone.
    pub fn apply(&mut self, event: &EventRecord) -> Result<(), StoreError> {
        if event.aggregate_type != Group::TYPE {
            return Ok(());
        }
        let id = || -> Result<Uuid, StoreError> {
            event
                .aggregate_id
                .parse()
                .map_err(|_| StoreError::Data(format!("group id {:?}", event.aggregate_id)))
        };
        match event.decode::<GroupEvent>()? {
            GroupEvent::GroupDeleted {} => {
                self.writes.insert(id()?, None);
            }
            GroupEvent::GroupCapabilitiesChanged {
                has_sysmon,
                has_snmp,
                has_services,
                ..
            } => {
                let row = CapabilityRow {
                    capabilities: GroupCapabilities {
                        has_sysmon,
                        has_snmp,
                        has_services,
                    },
                    version: event.sequence,
                    updated_at: event.recorded_at,
                };
                self.writes.insert(id()?, Some(row));
            }
            // Nothing else touches the flags.
            GroupEvent::GroupCreated { .. }
            | GroupEvent::GroupRenamed { .. }
            | GroupEvent::GroupUpdated { .. }
            | GroupEvent::GroupMoved { .. }
            | GroupEvent::GroupRuleSet { .. }
            | GroupEvent::GroupRuleCleared { .. } => {}
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for CapabilitiesProjection {
    fn name(&self) -> &'static str {
        GROUP_CAPABILITIES
    }

    fn aggregate_types(&self) -> Vec<String> {
        vec!["Group".to_string()]
    }

    fn needs_metadata(&self) -> bool {
        false
    }

    fn live_schema(&self) -> Option<&'static str> {
        Some(LIVE_SCHEMA)
    }

    async fn create_tables(&self, conn: &mut PgConnection, schema: &str) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        sqlx::query(&format!(
            "CREATE TABLE {s}.capabilities (
                group_id uuid PRIMARY KEY, has_sysmon boolean NOT NULL,
                has_snmp boolean NOT NULL, has_services boolean NOT NULL,
                version bigint NOT NULL, updated_at timestamptz NOT NULL)"
        ))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        let mut fold = CapabilitiesFold::default();
        for event in events {
            fold.apply(event)?;
        }
        let (mut deleted, mut ids, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        for (id, write) in &fold.writes {
            match write {
                None => deleted.push(*id),
                Some(row) => {
                    ids.push(*id);
                    rows.push(*row);
                }
            }
        }
        if !deleted.is_empty() {
            sqlx::query(&format!(
                "DELETE FROM {s}.capabilities WHERE group_id = ANY($1)"
            ))
            .bind(&deleted)
            .execute(&mut *conn)
            .await?;
        }
        if !ids.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO {s}.capabilities
                        (group_id, has_sysmon, has_snmp, has_services, version, updated_at)
                 SELECT * FROM unnest($1::uuid[], $2::bool[], $3::bool[], $4::bool[],
                                      $5::bigint[], $6::timestamptz[])
                 ON CONFLICT (group_id) DO UPDATE
                    SET has_sysmon = EXCLUDED.has_sysmon, has_snmp = EXCLUDED.has_snmp,
                        has_services = EXCLUDED.has_services, version = EXCLUDED.version,
                        updated_at = EXCLUDED.updated_at"
            ))
            .bind(&ids)
            .bind(
                rows.iter()
                    .map(|r| r.capabilities.has_sysmon)
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.capabilities.has_snmp)
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.capabilities.has_services)
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// The flags of `ids` (one query); groups without a row have every flag false and are left
/// out.
pub async fn by_ids(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, GroupCapabilities>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT group_id, has_sysmon, has_snmp, has_services FROM {LIVE_SCHEMA}.capabilities
          WHERE group_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("group_id")?,
                GroupCapabilities {
                    has_sysmon: r.try_get("has_sysmon")?,
                    has_snmp: r.try_get("has_snmp")?,
                    has_services: r.try_get("has_services")?,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    fn event(id: u128, seq: i64, event_type: &str, body: Value) -> EventRecord {
        EventRecord {
            global_position: seq,
            transaction_id: 1,
            event_id: Uuid::from_u128(1000 + seq as u128),
            aggregate_type: "Group".into(),
            aggregate_id: Uuid::from_u128(id).to_string(),
            sequence: seq,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload: json!({ event_type: body }),
            metadata: json!({}),
            recorded_at: Utc::now(),
        }
    }

    fn changed(id: u128, seq: i64, sysmon: bool, snmp: bool, services: bool) -> EventRecord {
        event(
            id,
            seq,
            "GroupCapabilitiesChanged",
            json!({"has_sysmon": sysmon, "has_snmp": snmp, "has_services": services,
                   "previous": {"has_sysmon": false, "has_snmp": false, "has_services": false}}),
        )
    }

    fn fold(events: &[EventRecord]) -> CapabilitiesFold {
        let mut f = CapabilitiesFold::default();
        for e in events {
            f.apply(e).expect("apply");
        }
        f
    }

    #[test]
    fn the_last_change_of_each_group_wins_and_deletes_remove_the_row() {
        let f = fold(&[
            event(
                1,
                1,
                "GroupCreated",
                json!({"group_type": "DEVICE", "name": "a", "parent_id": null,
                       "description": null, "metadata": {}, "is_system": false}),
            ),
            changed(1, 2, true, false, false),
            changed(2, 5, false, true, false),
            changed(1, 3, true, true, true),
            event(2, 6, "GroupDeleted", json!({})),
            event(
                1,
                4,
                "GroupRenamed",
                json!({"name": "b", "previous_name": "a"}),
            ),
        ]);
        let one = f.writes[&Uuid::from_u128(1)].expect("row");
        assert_eq!(
            (one.capabilities, one.version),
            (
                GroupCapabilities {
                    has_sysmon: true,
                    has_snmp: true,
                    has_services: true
                },
                3
            )
        );
        assert_eq!(f.writes[&Uuid::from_u128(2)], None);
        assert_eq!(f.writes.len(), 2, "creates and renames write nothing");
    }

    #[test]
    fn a_malformed_change_is_an_error_not_a_false_flag() {
        let mut f = CapabilitiesFold::default();
        let bad = event(
            1,
            2,
            "GroupCapabilitiesChanged",
            json!({"has_sysmon": true}),
        );
        assert!(f.apply(&bad).is_err());
    }
}
