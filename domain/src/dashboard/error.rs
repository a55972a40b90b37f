use crate::codes::Code;
use uuid::Uuid;

/// Why a dashboard command was refused. Each variant has a stable `code` that the API returns
/// as a userError.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DashboardError {
    /// An input field is malformed (`field` names it, e.g. `name`, `config`,
    /// `widgets[2].position`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such dashboard, or it is not the caller's (the two are indistinguishable on
    /// purpose), or it was deleted.
    #[error("dashboard not found")]
    NotFound,
    /// Create was sent to an id that already exists.
    #[error("the dashboard already exists")]
    AlreadyExists,
    /// The dashboard has no widget with this id.
    #[error("the dashboard has no widget {0}")]
    WidgetNotFound(Uuid),
    /// The dashboard already has a widget with this id.
    #[error("the dashboard already has a widget {0}")]
    WidgetExists(Uuid),
    /// A dashboard holds at most this many widgets.
    #[error("a dashboard holds at most {max} widgets")]
    TooManyWidgets { max: usize },
    /// The widget would cover cells of another widget.
    #[error("{field}: the widget would overlap widget {other}")]
    Overlap { field: String, other: Uuid },
    /// `expectedLayoutVersion` does not match the dashboard's layout version.
    #[error("expected layout version {expected}, but the current layout version is {actual}")]
    LayoutConflict { expected: u64, actual: u64 },
}

impl DashboardError {
    /// The stable userError code.
    pub fn code(&self) -> Code {
        match self {
            DashboardError::Invalid { .. } => Code::Invalid,
            DashboardError::NotFound => Code::NotFound,
            DashboardError::AlreadyExists => Code::AlreadyExists,
            DashboardError::WidgetNotFound(_) => Code::WidgetNotFound,
            DashboardError::WidgetExists(_) => Code::WidgetExists,
            DashboardError::TooManyWidgets { .. } => Code::TooManyWidgets,
            DashboardError::Overlap { .. } => Code::Overlap,
            DashboardError::LayoutConflict { .. } => Code::LayoutConflict,
        }
    }

    /// The input field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            DashboardError::Invalid { field, .. } | DashboardError::Overlap { field, .. } => {
                Some(field)
            }
            DashboardError::WidgetNotFound(_) => Some("widgetId"),
            DashboardError::LayoutConflict { .. } => Some("expectedLayoutVersion"),
            _ => None,
        }
    }
}
