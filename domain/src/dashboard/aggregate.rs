use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    validate_config, validate_position, validate_title, DashboardCommand, DashboardError,
    DashboardEvent, NewWidget, Widget, WidgetContent, WidgetKind, WidgetPosition, MAX_NAME_CHARS,
    MAX_WIDGETS,
};

/// A dashboard's state, folded from its events.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    created: bool,
    deleted: bool,
    owner: Option<String>,
    is_template: bool,
    name: String,
    copied_from: Option<Uuid>,
    widgets: Vec<Widget>,
    layout_version: u64,
}

impl Dashboard {
    /// Whether the dashboard exists and was not deleted.
    pub fn is_live(&self) -> bool {
        self.created && !self.deleted
    }

    /// The owning subject (`None` for a template).
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Whether it is a shared template.
    pub fn is_template(&self) -> bool {
        self.is_template
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template it was cloned from, or the dashboard a template was published from.
    pub fn copied_from(&self) -> Option<Uuid> {
        self.copied_from
    }

    /// Its widgets, in the order they were added.
    pub fn widgets(&self) -> &[Widget] {
        &self.widgets
    }

    /// Its layout version (1 at creation, one more per widget change).
    pub fn layout_version(&self) -> u64 {
        self.layout_version
    }

    /// Whether `actor` may read this dashboard: its owner may, and anyone may read a live
    /// template.
    pub fn readable_by(&self, actor: &str) -> bool {
        self.is_live() && (self.is_template || self.owner.as_deref() == Some(actor))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> DashboardError {
    DashboardError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Trims and checks a dashboard name and returns its NFC form
/// ([`crate::text::normalize_name`]).
fn valid_name(raw: &str) -> Result<String, DashboardError> {
    crate::text::normalize_name(raw, MAX_NAME_CHARS).map_err(|e| invalid("name", e.to_string()))
}

fn valid_kind(raw: &str, field: &str) -> Result<WidgetKind, DashboardError> {
    WidgetKind::parse(raw.trim()).ok_or_else(|| {
        let kinds: Vec<&str> = WidgetKind::ALL.iter().map(|k| k.as_str()).collect();
        invalid(
            field,
            format!(
                "unknown widget kind {raw:?}; expected one of {}",
                kinds.join(", ")
            ),
        )
    })
}

/// `field` of widget `index` of a list (`widgets[2].title`), or the plain field.
fn field_name(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Validates a new widget; `prefix` names it in errors (`widgets[3]`, or empty).
fn valid_widget(new: NewWidget, prefix: &str) -> Result<Widget, DashboardError> {
    let kind = valid_kind(&new.draft.kind, &field_name(prefix, "kind"))?;
    let title = validate_title(&new.draft.title, &field_name(prefix, "title"))?;
    let config = validate_config(kind, new.draft.config, &field_name(prefix, "config"))?;
    let p = new.draft.position;
    let position = validate_position(p.x, p.y, p.w, p.h, &field_name(prefix, "position"))?;
    Ok(Widget {
        id: new.id,
        kind,
        title,
        config,
        position,
    })
}

/// Refuses a position that covers a cell of another widget of `widgets` (`except` aside).
fn check_free(
    widgets: &[Widget],
    position: &WidgetPosition,
    except: Option<Uuid>,
    field: &str,
) -> Result<(), DashboardError> {
    match widgets
        .iter()
        .find(|w| Some(w.id) != except && w.position.overlaps(position))
    {
        Some(other) => Err(DashboardError::Overlap {
            field: field.to_string(),
            other: other.id,
        }),
        None => Ok(()),
    }
}

/// Validates the first widgets of a new dashboard or template.
fn valid_widgets(new: Vec<NewWidget>) -> Result<Vec<Widget>, DashboardError> {
    if new.len() > MAX_WIDGETS {
        return Err(DashboardError::TooManyWidgets { max: MAX_WIDGETS });
    }
    let mut widgets: Vec<Widget> = Vec::with_capacity(new.len());
    for (i, n) in new.into_iter().enumerate() {
        let prefix = format!("widgets[{i}]");
        let widget = valid_widget(n, &prefix)?;
        if widgets.iter().any(|w| w.id == widget.id) {
            return Err(DashboardError::WidgetExists(widget.id));
        }
        check_free(
            &widgets,
            &widget.position,
            None,
            &field_name(&prefix, "position"),
        )?;
        widgets.push(widget);
    }
    Ok(widgets)
}

impl Dashboard {
    /// The dashboard, if `actor` owns it (a template, another's dashboard and a missing one
    /// all look the same: not found).
    fn require_owned(&self, actor: &str) -> Result<(), DashboardError> {
        if self.is_live() && !self.is_template && self.owner.as_deref() == Some(actor) {
            Ok(())
        } else {
            Err(DashboardError::NotFound)
        }
    }

    fn require_layout(&self, expected: Option<u64>) -> Result<(), DashboardError> {
        match expected {
            Some(expected) if expected != self.layout_version => {
                Err(DashboardError::LayoutConflict {
                    expected,
                    actual: self.layout_version,
                })
            }
            _ => Ok(()),
        }
    }

    fn widget(&self, id: Uuid) -> Result<&Widget, DashboardError> {
        self.widgets
            .iter()
            .find(|w| w.id == id)
            .ok_or(DashboardError::WidgetNotFound(id))
    }

    fn decide(&self, command: DashboardCommand) -> Result<Vec<DashboardEvent>, DashboardError> {
        match command {
            DashboardCommand::Create {
                owner,
                name,
                copied_from,
                widgets,
            } => {
                if self.created {
                    return Err(DashboardError::AlreadyExists);
                }
                Ok(vec![DashboardEvent::DashboardCreated {
                    owner: Some(owner),
                    name: valid_name(&name)?,
                    is_template: false,
                    copied_from,
                    widgets: valid_widgets(widgets)?,
                    layout_version: 1,
                }])
            }
            DashboardCommand::PublishTemplate {
                name,
                copied_from,
                widgets,
            } => {
                if self.created {
                    return Err(DashboardError::AlreadyExists);
                }
                Ok(vec![DashboardEvent::DashboardCreated {
                    owner: None,
                    name: valid_name(&name)?,
                    is_template: true,
                    copied_from,
                    widgets: valid_widgets(widgets)?,
                    layout_version: 1,
                }])
            }
            DashboardCommand::Rename { actor, name } => {
                self.require_owned(&actor)?;
                let name = valid_name(&name)?;
                if name == self.name {
                    return Ok(vec![]);
                }
                Ok(vec![DashboardEvent::DashboardRenamed {
                    name,
                    previous_name: self.name.clone(),
                }])
            }
            DashboardCommand::Delete { actor } => {
                self.require_owned(&actor)?;
                Ok(vec![DashboardEvent::DashboardDeleted {}])
            }
            DashboardCommand::DeleteTemplate => {
                if !self.is_live() || !self.is_template {
                    return Err(DashboardError::NotFound);
                }
                Ok(vec![DashboardEvent::DashboardDeleted {}])
            }
            DashboardCommand::MakeDefault { actor } => {
                self.require_owned(&actor)?;
                // Always written, even for the current default: which dashboard is the
                // default depends on other dashboards' events, which this one cannot see.
                Ok(vec![DashboardEvent::DashboardMadeDefault { owner: actor }])
            }
            DashboardCommand::AddWidget {
                actor,
                widget,
                expected_layout_version,
            } => {
                self.require_owned(&actor)?;
                self.require_layout(expected_layout_version)?;
                if self.widgets.len() >= MAX_WIDGETS {
                    return Err(DashboardError::TooManyWidgets { max: MAX_WIDGETS });
                }
                if self.widgets.iter().any(|w| w.id == widget.id) {
                    return Err(DashboardError::WidgetExists(widget.id));
                }
                let widget = valid_widget(widget, "")?;
                check_free(&self.widgets, &widget.position, None, "position")?;
                Ok(vec![DashboardEvent::WidgetAdded {
                    widget,
                    layout_version: self.layout_version + 1,
                }])
            }
            DashboardCommand::UpdateWidget {
                actor,
                widget_id,
                kind,
                title,
                config,
                expected_layout_version,
            } => {
                self.require_owned(&actor)?;
                self.require_layout(expected_layout_version)?;
                let current = self.widget(widget_id)?;
                let kind = match kind {
                    Some(k) => valid_kind(&k, "kind")?,
                    None => current.kind,
                };
                let title = match title {
                    Some(t) => validate_title(&t, "title")?,
                    None => current.title.clone(),
                };
                // A new kind is checked against the config it will have, new or kept.
                let config = validate_config(
                    kind,
                    config.unwrap_or_else(|| serde_json::Value::Object(current.config.clone())),
                    "config",
                )?;
                if kind == current.kind && title == current.title && config == current.config {
                    return Ok(vec![]);
                }
                Ok(vec![DashboardEvent::WidgetUpdated {
                    widget_id,
                    kind,
                    title,
                    config,
                    previous: WidgetContent {
                        kind: current.kind,
                        title: current.title.clone(),
                        config: current.config.clone(),
                    },
                    layout_version: self.layout_version + 1,
                }])
            }
            DashboardCommand::MoveWidget {
                actor,
                widget_id,
                position,
                expected_layout_version,
            } => {
                self.require_owned(&actor)?;
                self.require_layout(expected_layout_version)?;
                let current = self.widget(widget_id)?;
                let p = position;
                let position = validate_position(p.x, p.y, p.w, p.h, "position")?;
                if position == current.position {
                    return Ok(vec![]);
                }
                check_free(&self.widgets, &position, Some(widget_id), "position")?;
                Ok(vec![DashboardEvent::WidgetMoved {
                    widget_id,
                    position,
                    previous_position: current.position,
                    layout_version: self.layout_version + 1,
                }])
            }
            DashboardCommand::RemoveWidget {
                actor,
                widget_id,
                expected_layout_version,
            } => {
                self.require_owned(&actor)?;
                self.require_layout(expected_layout_version)?;
                let widget = self.widget(widget_id)?.clone();
                Ok(vec![DashboardEvent::WidgetRemoved {
                    widget,
                    layout_version: self.layout_version + 1,
                }])
            }
        }
    }
}

impl Aggregate for Dashboard {
    const TYPE: &'static str = "Dashboard";
    type Command = DashboardCommand;
    type Event = DashboardEvent;
    type Error = DashboardError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            DashboardEvent::DashboardCreated {
                owner,
                name,
                is_template,
                copied_from,
                widgets,
                layout_version,
            } => {
                self.created = true;
                self.owner = owner;
                self.name = name;
                self.is_template = is_template;
                self.copied_from = copied_from;
                self.widgets = widgets;
                self.layout_version = layout_version;
            }
            DashboardEvent::DashboardRenamed { name, .. } => self.name = name,
            DashboardEvent::DashboardDeleted {} => self.deleted = true,
            DashboardEvent::DashboardMadeDefault { .. } => {}
            widget_event @ (DashboardEvent::WidgetAdded { .. }
            | DashboardEvent::WidgetUpdated { .. }
            | DashboardEvent::WidgetMoved { .. }
            | DashboardEvent::WidgetRemoved { .. }) => {
                if let Some(v) = widget_event.apply_to_widgets(&mut self.widgets) {
                    self.layout_version = v;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
