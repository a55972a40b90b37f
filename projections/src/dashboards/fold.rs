//! The pure part of the dashboards projection: events folded over the dashboards a batch
//! touches, with no database. The store loads those rows, folds, and writes the changes.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use corral_domain::dashboard::{DashboardEvent, Widget};
use uuid::Uuid;

use crate::log::EventRecord;
use crate::StoreError;

/// One dashboard as the read model stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardRow {
    /// Dashboard id.
    pub id: Uuid,
    /// Owning subject (`None` for a template).
    pub owner: Option<String>,
    /// Shared template?
    pub is_template: bool,
    /// Name.
    pub name: String,
    /// Template it was cloned from, or dashboard a template was published from.
    pub copied_from: Option<Uuid>,
    /// Layout version.
    pub layout_version: i64,
    /// Aggregate version.
    pub version: i64,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    /// Widgets, in the order they were added.
    pub widgets: Vec<Widget>,
}

/// Dashboards touched by a batch and what must be written back.
#[derive(Debug, Default)]
pub struct DashboardFold {
    /// Every loaded or created dashboard.
    pub rows: HashMap<Uuid, DashboardRow>,
    /// Dashboards whose row or widgets changed.
    pub dirty: HashSet<Uuid>,
    /// Dashboards deleted.
    pub deleted: HashSet<Uuid>,
    /// Per owner, the new default dashboard, or `None` when the batch deleted it.
    pub defaults: HashMap<String, Option<Uuid>>,
}

/// Whether an event of this type can be applied without the dashboard's current row.
pub fn applies_without_row(event_type: &str) -> bool {
    matches!(event_type, "DashboardCreated" | "DashboardDeleted")
}

/// Decodes a stored Dashboard event, upcast to the version this code reads.
pub fn decode(event: &EventRecord) -> Result<DashboardEvent, StoreError> {
    event.decode()
}

impl DashboardFold {
    /// Applies one Dashboard event.
    pub fn apply(&mut self, event: &EventRecord) -> Result<(), StoreError> {
        let id: Uuid = event
            .aggregate_id
            .parse()
            .map_err(|_| StoreError::Data(format!("dashboard id {:?}", event.aggregate_id)))?;
        let decoded = decode(event)?;
        let row = match decoded {
            DashboardEvent::DashboardCreated {
                owner,
                name,
                is_template,
                copied_from,
                widgets,
                layout_version,
            } => {
                self.rows.insert(
                    id,
                    DashboardRow {
                        id,
                        owner,
                        is_template,
                        name,
                        copied_from,
                        layout_version: layout_version as i64,
                        version: event.sequence,
                        created_at: event.recorded_at,
                        updated_at: event.recorded_at,
                        widgets,
                    },
                );
                self.deleted.remove(&id);
                self.dirty.insert(id);
                return Ok(());
            }
            DashboardEvent::DashboardDeleted {} => {
                self.rows.remove(&id);
                self.dirty.remove(&id);
                self.deleted.insert(id);
                for default in self.defaults.values_mut() {
                    if *default == Some(id) {
                        *default = None;
                    }
                }
                return Ok(());
            }
            DashboardEvent::DashboardMadeDefault { owner } => {
                // Log order decides: the latest choice wins. The row's version moves so that it
                // stays the aggregate's; nothing of the dashboard itself changed.
                self.defaults.insert(owner, Some(id));
                let row = self.rows.get_mut(&id).ok_or_else(|| {
                    StoreError::Data(format!("{} for unknown dashboard {id}", event.event_type))
                })?;
                row.version = event.sequence;
                self.dirty.insert(id);
                return Ok(());
            }
            other => other,
        };
        let current = self.rows.get_mut(&id).ok_or_else(|| {
            StoreError::Data(format!("{} for unknown dashboard {id}", event.event_type))
        })?;
        current.version = event.sequence;
        current.updated_at = event.recorded_at;
        self.dirty.insert(id);
        match row {
            DashboardEvent::DashboardRenamed { name, .. } => current.name = name,
            widget_event => {
                if let Some(v) = widget_event.apply_to_widgets(&mut current.widgets) {
                    current.layout_version = v as i64;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use corral_domain::dashboard::{WidgetKind, WidgetPosition};
    use cqrs_es::DomainEvent;
    use serde_json::{json, Map};

    use super::*;

    fn record(id: u128, seq: i64, event: &DashboardEvent) -> EventRecord {
        EventRecord {
            global_position: seq,
            transaction_id: 1,
            event_id: Uuid::from_u128(1000 + seq as u128),
            aggregate_type: "Dashboard".into(),
            aggregate_id: Uuid::from_u128(id).to_string(),
            sequence: seq,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_value(event).expect("json"),
            metadata: json!({}),
            recorded_at: DateTime::from_timestamp(1_700_000_000 + seq, 0).expect("time"),
        }
    }

    fn created(owner: &str) -> DashboardEvent {
        DashboardEvent::DashboardCreated {
            owner: Some(owner.into()),
            name: "Ops".into(),
            is_template: false,
            copied_from: None,
            widgets: vec![],
            layout_version: 1,
        }
    }

    fn widget(n: u128, x: u32) -> Widget {
        Widget {
            id: Uuid::from_u128(n),
            kind: WidgetKind::GroupMemberCount,
            title: "Members".into(),
            config: Map::new(),
            position: WidgetPosition {
                x,
                y: 0,
                w: 2,
                h: 2,
            },
        }
    }

    #[test]
    fn folds_widgets_and_layout_versions() {
        let mut fold = DashboardFold::default();
        let events = [
            created("vera"),
            DashboardEvent::WidgetAdded {
                widget: widget(7, 0),
                layout_version: 2,
            },
            DashboardEvent::WidgetAdded {
                widget: widget(8, 2),
                layout_version: 3,
            },
            DashboardEvent::WidgetMoved {
                widget_id: Uuid::from_u128(8),
                position: WidgetPosition {
                    x: 6,
                    y: 1,
                    w: 6,
                    h: 1,
                },
                previous_position: WidgetPosition {
                    x: 2,
                    y: 0,
                    w: 2,
                    h: 2,
                },
                layout_version: 4,
            },
            DashboardEvent::WidgetRemoved {
                widget: widget(7, 0),
                layout_version: 5,
            },
            DashboardEvent::DashboardRenamed {
                name: "Mine".into(),
                previous_name: "Ops".into(),
            },
        ];
        for (i, e) in events.iter().enumerate() {
            fold.apply(&record(1, i as i64 + 1, e)).expect("apply");
        }
        let row = &fold.rows[&Uuid::from_u128(1)];
        assert_eq!(
            (row.name.as_str(), row.layout_version, row.version),
            ("Mine", 5, 6)
        );
        assert_eq!(row.widgets.len(), 1);
        assert_eq!(row.widgets[0].position.x, 6);
        assert!(fold.dirty.contains(&Uuid::from_u128(1)));
    }

    #[test]
    fn the_latest_default_wins_and_deleting_it_leaves_none() {
        let mut fold = DashboardFold::default();
        let made = DashboardEvent::DashboardMadeDefault {
            owner: "vera".into(),
        };
        for id in [1, 2] {
            fold.apply(&record(id, 1, &created("vera"))).expect("apply");
        }
        fold.apply(&record(1, 2, &made)).expect("apply");
        fold.apply(&record(2, 2, &made)).expect("apply");
        assert_eq!(fold.defaults["vera"], Some(Uuid::from_u128(2)));
        assert_eq!(fold.rows[&Uuid::from_u128(2)].version, 2);
        fold.apply(&record(1, 3, &DashboardEvent::DashboardDeleted {}))
            .expect("apply");
        assert_eq!(
            fold.defaults["vera"],
            Some(Uuid::from_u128(2)),
            "another one went"
        );
        fold.apply(&record(2, 3, &DashboardEvent::DashboardDeleted {}))
            .expect("apply");
        assert_eq!(fold.defaults["vera"], None);
        assert_eq!(fold.deleted.len(), 2);
    }

    #[test]
    fn events_on_a_dashboard_that_was_never_created_are_corrupt() {
        let mut fold = DashboardFold::default();
        let renamed = DashboardEvent::DashboardRenamed {
            name: "x".into(),
            previous_name: "y".into(),
        };
        assert!(fold.apply(&record(1, 2, &renamed)).is_err());
        let made = DashboardEvent::DashboardMadeDefault {
            owner: "vera".into(),
        };
        assert!(fold.apply(&record(1, 2, &made)).is_err());
        assert!(applies_without_row("DashboardCreated"));
        assert!(!applies_without_row("WidgetAdded"));
    }
}
