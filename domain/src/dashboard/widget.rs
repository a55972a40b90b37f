//! Widgets: their kinds, configs and grid positions, and the checks every one passes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    DashboardError, DEFAULT_RANGE_HOURS, GRID_COLUMNS, GROUP_VARIABLE, MAX_CONFIG_BYTES,
    MAX_RANGE_HOURS, MAX_ROW, MAX_TITLE_CHARS, MAX_WIDGET_CELLS,
};

/// What a widget shows. Every kind shows one group, named by the config's `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WidgetKind {
    /// CPU, memory and disk of the group's devices over time.
    GroupUtilization,
    /// Availability of the group's services over time.
    GroupAvailability,
    /// How many members the group has (direct or effective).
    GroupMemberCount,
    /// Every health figure of the group over time.
    GroupHealthSummary,
}

impl WidgetKind {
    /// Every kind.
    pub const ALL: [WidgetKind; 4] = [
        WidgetKind::GroupUtilization,
        WidgetKind::GroupAvailability,
        WidgetKind::GroupMemberCount,
        WidgetKind::GroupHealthSummary,
    ];

    /// The stored name (`GROUP_UTILIZATION`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WidgetKind::GroupUtilization => "GROUP_UTILIZATION",
            WidgetKind::GroupAvailability => "GROUP_AVAILABILITY",
            WidgetKind::GroupMemberCount => "GROUP_MEMBER_COUNT",
            WidgetKind::GroupHealthSummary => "GROUP_HEALTH_SUMMARY",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the widget shows a health series (and takes `bucket` and `rangeHours`).
    pub fn is_health(self) -> bool {
        !matches!(self, WidgetKind::GroupMemberCount)
    }
}

/// Where a widget sits on the 12-column grid, in cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct WidgetPosition {
    /// First column, 0-11.
    pub x: u32,
    /// First row, 0-1000.
    pub y: u32,
    /// Width in columns, 1-12, with `x + w` at most 12.
    pub w: u32,
    /// Height in rows, 1-12.
    pub h: u32,
}

impl WidgetPosition {
    /// Whether two widgets would cover a common cell.
    pub fn overlaps(&self, other: &WidgetPosition) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }
}

/// One widget as events store it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Widget {
    /// The widget's id, unique across dashboards.
    pub id: Uuid,
    /// What it shows.
    pub kind: WidgetKind,
    /// Its title.
    pub title: String,
    /// Its settings: `group` (a group id or `$group`), and `bucket` (`FIVE_MINUTES` or
    /// `ONE_HOUR`) and `rangeHours` (1-168) for health kinds, or `mode` (`DIRECT` or
    /// `EFFECTIVE`) for `GROUP_MEMBER_COUNT`.
    pub config: Map<String, Value>,
    /// Where it sits.
    pub position: WidgetPosition,
}

/// The group a widget shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBinding {
    /// A fixed group.
    Group(Uuid),
    /// The dashboard variable `$group`, given when the dashboard is read.
    Variable,
}

/// Bucket sizes of a health widget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WidgetBucket {
    /// 5 minutes.
    FiveMinutes,
    /// 1 hour.
    OneHour,
}

/// Which members a `GROUP_MEMBER_COUNT` widget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemberCountMode {
    /// The group's own members.
    Direct,
    /// Its own and every descendant's, each once (the default).
    #[default]
    Effective,
}

/// A validated config, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WidgetConfig {
    /// The group shown.
    pub group: GroupBinding,
    /// Bucket size of a health series (default 5 minutes).
    pub bucket: WidgetBucket,
    /// Hours of health shown, ending now (default 24).
    pub range_hours: u32,
    /// Members counted by `GROUP_MEMBER_COUNT`.
    pub mode: MemberCountMode,
}

impl WidgetConfig {
    /// Reads a config of a widget of `kind`, or says what is wrong with it.
    pub fn parse(kind: WidgetKind, config: &Map<String, Value>) -> Result<WidgetConfig, String> {
        let allowed: &[&str] = if kind.is_health() {
            &["group", "bucket", "rangeHours"]
        } else {
            &["group", "mode"]
        };
        if let Some(key) = config.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "unknown key {key:?}; a {} widget takes {}",
                kind.as_str(),
                allowed.join(", ")
            ));
        }
        let group = match config.get("group") {
            None => return Err("group is required: a group id or \"$group\"".into()),
            Some(Value::String(s)) if s == GROUP_VARIABLE => GroupBinding::Variable,
            Some(Value::String(s)) => match s.parse::<Uuid>() {
                Ok(id) => GroupBinding::Group(id),
                Err(_) => return Err(format!("group must be a group id or \"$group\", not {s:?}")),
            },
            Some(other) => {
                return Err(format!(
                    "group must be a string (a group id or \"$group\"), not {other}"
                ))
            }
        };
        let bucket = match config.get("bucket") {
            None => WidgetBucket::FiveMinutes,
            Some(Value::String(s)) if s == "FIVE_MINUTES" => WidgetBucket::FiveMinutes,
            Some(Value::String(s)) if s == "ONE_HOUR" => WidgetBucket::OneHour,
            Some(other) => {
                return Err(format!(
                    "bucket must be \"FIVE_MINUTES\" or \"ONE_HOUR\", not {other}"
                ))
            }
        };
        let range_hours = match config.get("rangeHours") {
            None => DEFAULT_RANGE_HOURS,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=u64::from(MAX_RANGE_HOURS)).contains(&n) => n as u32,
                _ => {
                    return Err(format!(
                        "rangeHours must be a whole number from 1 to {MAX_RANGE_HOURS}, not {v}"
                    ))
                }
            },
        };
        let mode = match config.get("mode") {
            None => MemberCountMode::Effective,
            Some(Value::String(s)) if s == "DIRECT" => MemberCountMode::Direct,
            Some(Value::String(s)) if s == "EFFECTIVE" => MemberCountMode::Effective,
            Some(other) => {
                return Err(format!(
                    "mode must be \"DIRECT\" or \"EFFECTIVE\", not {other}"
                ))
            }
        };
        Ok(WidgetConfig {
            group,
            bucket,
            range_hours,
            mode,
        })
    }
}

fn invalid(field: &str, message: impl Into<String>) -> DashboardError {
    DashboardError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Trims and checks a widget title and returns its NFC form
/// ([`crate::text::normalize_name`]); `field` names it in the error.
pub fn validate_title(raw: &str, field: &str) -> Result<String, DashboardError> {
    crate::text::normalize_name(raw, MAX_TITLE_CHARS).map_err(|e| invalid(field, e.to_string()))
}

/// Checks a config for a widget of `kind` and returns it as stored: a group id is written in
/// its canonical (lower-case, hyphenated) form.
pub fn validate_config(
    kind: WidgetKind,
    config: Value,
    field: &str,
) -> Result<Map<String, Value>, DashboardError> {
    let Value::Object(mut config) = config else {
        return Err(invalid(field, "must be a JSON object"));
    };
    let size = serde_json::to_vec(&config)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_CONFIG_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_CONFIG_BYTES} bytes of JSON, got {size}"),
        ));
    }
    let parsed = WidgetConfig::parse(kind, &config).map_err(|m| invalid(field, m))?;
    if let GroupBinding::Group(id) = parsed.group {
        config.insert("group".into(), Value::String(id.to_string()));
    }
    Ok(config)
}

/// Checks a position on the grid.
pub fn validate_position(
    x: i64,
    y: i64,
    w: i64,
    h: i64,
    field: &str,
) -> Result<WidgetPosition, DashboardError> {
    let cells = i64::from(MAX_WIDGET_CELLS);
    let columns = i64::from(GRID_COLUMNS);
    if !(0..columns).contains(&x) {
        return Err(invalid(
            field,
            format!("x must be from 0 to {}, got {x}", columns - 1),
        ));
    }
    if !(0..=i64::from(MAX_ROW)).contains(&y) {
        return Err(invalid(
            field,
            format!("y must be from 0 to {MAX_ROW}, got {y}"),
        ));
    }
    if !(1..=cells).contains(&w) {
        return Err(invalid(
            field,
            format!("w must be from 1 to {cells}, got {w}"),
        ));
    }
    if !(1..=cells).contains(&h) {
        return Err(invalid(
            field,
            format!("h must be from 1 to {cells}, got {h}"),
        ));
    }
    if x + w > columns {
        return Err(invalid(
            field,
            format!(
                "x + w must be at most {columns} (the grid's columns), got {}",
                x + w
            ),
        ));
    }
    Ok(WidgetPosition {
        x: x as u32,
        y: y as u32,
        w: w as u32,
        h: h as u32,
    })
}
