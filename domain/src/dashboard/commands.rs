use serde_json::Value;
use uuid::Uuid;

/// A widget as a caller describes it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct WidgetDraft {
    /// `GROUP_UTILIZATION`, `GROUP_AVAILABILITY`, `GROUP_MEMBER_COUNT` or
    /// `GROUP_HEALTH_SUMMARY` (anything else is refused).
    pub kind: String,
    /// 1-128 characters after trimming.
    pub title: String,
    /// A JSON object (see [`super::Widget::config`]).
    pub config: Value,
    /// Where it goes.
    pub position: PositionDraft,
}

/// A grid position as a caller gives it (validated by the aggregate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionDraft {
    /// First column.
    pub x: i64,
    /// First row.
    pub y: i64,
    /// Width.
    pub w: i64,
    /// Height.
    pub h: i64,
}

/// A widget to create, with the id the caller generated for it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWidget {
    /// Its new id.
    pub id: Uuid,
    /// What it is.
    pub draft: WidgetDraft,
}

/// What a caller may ask a dashboard to do. `actor` is the calling subject: commands on a
/// dashboard that is not the actor's are refused as if it did not exist.
#[derive(Debug, Clone, PartialEq)]
pub enum DashboardCommand {
    /// Create a dashboard owned by `owner`, empty or with widgets (a clone of a template).
    Create {
        /// The owner (the calling subject).
        owner: String,
        /// 1-128 characters after trimming.
        name: String,
        /// The template it is cloned from.
        copied_from: Option<Uuid>,
        /// Its first widgets.
        widgets: Vec<NewWidget>,
    },
    /// Create a template (no owner), from a dashboard's widgets or from scratch.
    PublishTemplate {
        /// The template's name.
        name: String,
        /// The dashboard it copies.
        copied_from: Option<Uuid>,
        /// Its widgets.
        widgets: Vec<NewWidget>,
    },
    /// Give the dashboard a new name.
    Rename { actor: String, name: String },
    /// Delete the dashboard.
    Delete { actor: String },
    /// Delete a template (admins; the policy decides who may ask).
    DeleteTemplate,
    /// Make this the actor's default dashboard (replacing the previous one).
    MakeDefault { actor: String },
    /// Add a widget.
    AddWidget {
        actor: String,
        widget: NewWidget,
        expected_layout_version: Option<u64>,
    },
    /// Change a widget's kind, title and/or config; `None` keeps the current value.
    UpdateWidget {
        actor: String,
        widget_id: Uuid,
        kind: Option<String>,
        title: Option<String>,
        config: Option<Value>,
        expected_layout_version: Option<u64>,
    },
    /// Put a widget somewhere else on the grid.
    MoveWidget {
        actor: String,
        widget_id: Uuid,
        position: PositionDraft,
        expected_layout_version: Option<u64>,
    },
    /// Remove a widget.
    RemoveWidget {
        actor: String,
        widget_id: Uuid,
        expected_layout_version: Option<u64>,
    },
}
