use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Widget, WidgetKind, WidgetPosition};

/// A widget's kind, title and config, as `WidgetUpdated` records the values it replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WidgetContent {
    /// The kind.
    pub kind: WidgetKind,
    /// The title.
    pub title: String,
    /// The config object.
    pub config: Map<String, Value>,
}

/// What happened to a dashboard. `event_type` is the variant name; field names are part of
/// the stored contract (the `dashboards` projector and integrators read them). Every event
/// that changes widgets carries the dashboard's new `layout_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum DashboardEvent {
    /// The dashboard (or template) came into being, with its first widgets.
    DashboardCreated {
        /// The subject that owns it; null for a template, which nobody owns.
        owner: Option<String>,
        /// Its name.
        name: String,
        /// True for a shared template (published by an admin).
        is_template: bool,
        /// The template it was cloned from, or the dashboard a template was published from.
        copied_from: Option<Uuid>,
        /// Its first widgets (empty for a new dashboard).
        widgets: Vec<Widget>,
        /// The layout version it starts at (1).
        layout_version: u64,
    },
    /// The dashboard got a new name.
    DashboardRenamed {
        /// The new name.
        name: String,
        /// The name it replaced.
        previous_name: String,
    },
    /// The dashboard (or template) was deleted.
    DashboardDeleted {},
    /// The owner made this dashboard their default. The read model keeps, per owner, the
    /// dashboard of the latest such event in log order: the previous default stops being
    /// one without an event of its own.
    DashboardMadeDefault {
        /// The owner whose default it is.
        owner: String,
    },
    /// A widget was added.
    WidgetAdded {
        /// The new widget.
        widget: Widget,
        /// The dashboard's layout version after the change.
        layout_version: u64,
    },
    /// A widget's kind, title and/or config changed; all three carry their new values.
    WidgetUpdated {
        /// The widget.
        widget_id: Uuid,
        /// Its kind now.
        kind: WidgetKind,
        /// Its title now.
        title: String,
        /// Its config now.
        config: Map<String, Value>,
        /// Kind, title and config before the change.
        previous: WidgetContent,
        /// The dashboard's layout version after the change.
        layout_version: u64,
    },
    /// A widget moved or changed size on the grid.
    WidgetMoved {
        /// The widget.
        widget_id: Uuid,
        /// Where it is now.
        position: WidgetPosition,
        /// Where it was.
        previous_position: WidgetPosition,
        /// The dashboard's layout version after the change.
        layout_version: u64,
    },
    /// A widget was removed.
    WidgetRemoved {
        /// The widget as it was when removed.
        widget: Widget,
        /// The dashboard's layout version after the change.
        layout_version: u64,
    },
}

impl DashboardEvent {
    /// Applies a widget event (added, updated, moved, removed) to `widgets` and returns the
    /// dashboard's new layout version; any other event changes nothing and returns `None`.
    /// The aggregate and the read model fold widgets with this one function.
    pub fn apply_to_widgets(self, widgets: &mut Vec<Widget>) -> Option<u64> {
        match self {
            DashboardEvent::WidgetAdded {
                widget,
                layout_version,
            } => {
                widgets.push(widget);
                Some(layout_version)
            }
            DashboardEvent::WidgetUpdated {
                widget_id,
                kind,
                title,
                config,
                layout_version,
                ..
            } => {
                if let Some(w) = widgets.iter_mut().find(|w| w.id == widget_id) {
                    w.kind = kind;
                    w.title = title;
                    w.config = config;
                }
                Some(layout_version)
            }
            DashboardEvent::WidgetMoved {
                widget_id,
                position,
                layout_version,
                ..
            } => {
                if let Some(w) = widgets.iter_mut().find(|w| w.id == widget_id) {
                    w.position = position;
                }
                Some(layout_version)
            }
            DashboardEvent::WidgetRemoved {
                widget,
                layout_version,
            } => {
                widgets.retain(|w| w.id != widget.id);
                Some(layout_version)
            }
            DashboardEvent::DashboardCreated { .. }
            | DashboardEvent::DashboardRenamed { .. }
            | DashboardEvent::DashboardDeleted {}
            | DashboardEvent::DashboardMadeDefault { .. } => None,
        }
    }

    /// The current version of an event type (the one [`DomainEvent::event_version`] writes),
    /// or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        match event_type {
            "DashboardCreated"
            | "DashboardRenamed"
            | "DashboardDeleted"
            | "DashboardMadeDefault"
            | "WidgetAdded"
            | "WidgetUpdated"
            | "WidgetMoved"
            | "WidgetRemoved" => Some("1"),
            _ => None,
        }
    }
}

impl DomainEvent for DashboardEvent {
    fn event_type(&self) -> String {
        match self {
            DashboardEvent::DashboardCreated { .. } => "DashboardCreated",
            DashboardEvent::DashboardRenamed { .. } => "DashboardRenamed",
            DashboardEvent::DashboardDeleted { .. } => "DashboardDeleted",
            DashboardEvent::DashboardMadeDefault { .. } => "DashboardMadeDefault",
            DashboardEvent::WidgetAdded { .. } => "WidgetAdded",
            DashboardEvent::WidgetUpdated { .. } => "WidgetUpdated",
            DashboardEvent::WidgetMoved { .. } => "WidgetMoved",
            DashboardEvent::WidgetRemoved { .. } => "WidgetRemoved",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        Self::current_version(&self.event_type())
            .unwrap_or("1")
            .to_string()
    }
}
