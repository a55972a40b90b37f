//! The Dashboard aggregate: a user's grid of widgets, or a shared template.
//!
//! A dashboard belongs to one user (the token subject that created it). Templates are
//! dashboards with no owner, published by admins; anyone may clone one into a dashboard of
//! their own. The aggregate is pure and needs no services: ownership is checked against the
//! acting subject each command carries, and every widget is validated here (kind, title,
//! config, position on the 12-column grid, overlaps, the 50-widget limit).
//!
//! "One default dashboard per user" is not a fact any single aggregate can hold: each
//! `setDefaultDashboard` writes `DashboardMadeDefault` on the chosen dashboard, and the read
//! model keeps, per owner, the dashboard of the latest such event in log order (a deleted
//! dashboard is nobody's default). Concurrent calls therefore always leave exactly one
//! default, the one whose event the log orders last.

mod aggregate;
mod commands;
mod error;
mod events;
mod widget;

pub use aggregate::Dashboard;
pub use commands::{DashboardCommand, NewWidget, PositionDraft, WidgetDraft};
pub use error::DashboardError;
pub use events::{DashboardEvent, WidgetContent};
pub use widget::{
    validate_config, validate_position, validate_title, GroupBinding, MemberCountMode, Widget,
    WidgetBucket, WidgetConfig, WidgetKind, WidgetPosition,
};

/// Longest dashboard name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest widget title, in characters, after trimming.
pub const MAX_TITLE_CHARS: usize = 128;
/// Largest widget config, serialized as JSON.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024;
/// Most widgets on one dashboard.
pub const MAX_WIDGETS: usize = 50;
/// Columns of the layout grid: `x + w` must not exceed it.
pub const GRID_COLUMNS: u32 = 12;
/// Largest `w` and `h` of a widget, in grid cells.
pub const MAX_WIDGET_CELLS: u32 = 12;
/// Largest row (`y`) a widget may start at.
pub const MAX_ROW: u32 = 1000;
/// Longest health window a widget may show (`rangeHours`).
pub const MAX_RANGE_HOURS: u32 = 168;
/// The health window of a widget without `rangeHours`.
pub const DEFAULT_RANGE_HOURS: u32 = 24;
/// The value of a widget config's `group` that binds it to the dashboard variable: the group
/// is given when the dashboard is read (`dashboard(id, group:)`).
pub const GROUP_VARIABLE: &str = "$group";
