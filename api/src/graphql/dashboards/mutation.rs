//! Dashboard mutations. Each returns after the dashboards read model reflects it.

use async_graphql::{Context, InputObject, Json, Object, Result, SimpleObject, ID};
use corral_domain::codes::Code;
use corral_domain::dashboard::{
    Dashboard as DashboardState, DashboardCommand, DashboardError, NewWidget, PositionDraft,
    WidgetDraft,
};
use corral_projections::commands::executor::ExecError;
use corral_projections::dashboards::{read, DashboardCommands};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Dashboard, Widget};
use crate::auth::Actor;
use crate::graphql::errors::{internal, UserError};
use crate::graphql::mutation::{event_metadata, execute};
use crate::graphql::scalars::Position;
use corral_projections::commands::{Command, CommandError};

/// A grid position, in cells.
#[derive(InputObject, Clone, Copy)]
pub struct WidgetPositionInput {
    /// First column, 0-11.
    pub x: i32,
    /// First row, 0-1000.
    pub y: i32,
    /// Width in columns, 1-12, with `x + w` at most 12.
    pub w: i32,
    /// Height in rows, 1-12.
    pub h: i32,
}

impl From<WidgetPositionInput> for PositionDraft {
    fn from(p: WidgetPositionInput) -> Self {
        PositionDraft {
            x: i64::from(p.x),
            y: i64::from(p.y),
            w: i64::from(p.w),
            h: i64::from(p.h),
        }
    }
}

/// A widget of `publishDashboardTemplate`.
#[derive(InputObject)]
pub struct WidgetInput {
    /// `GROUP_UTILIZATION`, `GROUP_AVAILABILITY`, `GROUP_MEMBER_COUNT` or
    /// `GROUP_HEALTH_SUMMARY`; anything else is a userError.
    pub kind: String,
    /// 1-128 characters after trimming, stored in Unicode NFC; the characters refused in
    /// group names (see `CreateGroupInput.name`) are refused here too.
    pub title: String,
    /// A JSON object of at most 4 KiB (see `Widget.config`).
    pub config: Json<Value>,
    /// Where it goes; widgets may not overlap.
    pub position: WidgetPositionInput,
}

/// Input of `createDashboard`.
#[derive(InputObject)]
pub struct CreateDashboardInput {
    /// 1-128 characters after trimming, stored in Unicode NFC; the characters refused in
    /// group names (see `CreateGroupInput.name`) are refused here too.
    pub name: String,
}

/// Input of `renameDashboard`.
#[derive(InputObject)]
pub struct RenameDashboardInput {
    /// One of the caller's dashboards.
    pub id: ID,
    /// The new name, as `CreateDashboardInput.name`.
    pub name: String,
}

/// Input of `deleteDashboard`, `setDefaultDashboard` and `deleteDashboardTemplate`.
#[derive(InputObject)]
pub struct DashboardIdInput {
    /// The dashboard (or template).
    pub id: ID,
}

/// Input of `addWidget`.
#[derive(InputObject)]
pub struct AddWidgetInput {
    /// One of the caller's dashboards.
    pub dashboard_id: ID,
    /// `GROUP_UTILIZATION`, `GROUP_AVAILABILITY`, `GROUP_MEMBER_COUNT` or
    /// `GROUP_HEALTH_SUMMARY`; anything else is a userError.
    pub kind: String,
    /// 1-128 characters after trimming, stored in Unicode NFC; the characters refused in
    /// group names (see `CreateGroupInput.name`) are refused here too.
    pub title: String,
    /// A JSON object of at most 4 KiB (see `Widget.config`).
    pub config: Json<Value>,
    /// Where it goes; widgets may not overlap.
    pub position: WidgetPositionInput,
    /// Refuse unless the dashboard is at this layout version.
    pub expected_layout_version: Option<i64>,
}

/// Input of `updateWidget`; omitted fields keep their values.
#[derive(InputObject)]
pub struct UpdateWidgetInput {
    /// The dashboard.
    pub dashboard_id: ID,
    /// The widget.
    pub widget_id: ID,
    /// A new kind (the config, new or kept, must suit it).
    pub kind: Option<String>,
    /// A new title, as `AddWidgetInput.title`.
    pub title: Option<String>,
    /// A new config (replaces the old one).
    pub config: Option<Json<Value>>,
    /// Refuse unless the dashboard is at this layout version.
    pub expected_layout_version: Option<i64>,
}

/// Input of `moveWidget`.
#[derive(InputObject)]
pub struct MoveWidgetInput {
    /// The dashboard.
    pub dashboard_id: ID,
    /// The widget.
    pub widget_id: ID,
    /// Its new place and size; it may not overlap another widget.
    pub position: WidgetPositionInput,
    /// Refuse unless the dashboard is at this layout version.
    pub expected_layout_version: Option<i64>,
}

/// Input of `removeWidget`.
#[derive(InputObject)]
pub struct RemoveWidgetInput {
    /// The dashboard.
    pub dashboard_id: ID,
    /// The widget.
    pub widget_id: ID,
    /// Refuse unless the dashboard is at this layout version.
    pub expected_layout_version: Option<i64>,
}

/// Input of `publishDashboardTemplate`: either `dashboardId` (copy one of the caller's
/// dashboards; `name` defaults to its name) or `name` and `widgets`.
#[derive(InputObject)]
pub struct PublishDashboardTemplateInput {
    /// One of the caller's dashboards to copy.
    pub dashboard_id: Option<ID>,
    /// The template's name (required without `dashboardId`), as `CreateDashboardInput.name`.
    pub name: Option<String>,
    /// The template's widgets (without `dashboardId`).
    pub widgets: Option<Vec<WidgetInput>>,
}

/// Input of `cloneDashboardTemplate`.
#[derive(InputObject)]
pub struct CloneDashboardTemplateInput {
    /// The template.
    pub template_id: ID,
    /// The new dashboard's name, as `CreateDashboardInput.name`; defaults to the template's.
    pub name: Option<String>,
}

/// The result of a dashboard mutation.
#[derive(SimpleObject, Default)]
pub struct DashboardPayload {
    /// The dashboard after the change (`null` on error).
    pub dashboard: Option<Dashboard>,
    /// Log position of the change (consistency token); `null` on error.
    pub position: Option<Position>,
    /// True when the read model did not catch up within the wait; the change is committed.
    pub wait_timed_out: bool,
    /// Expected failures; nothing was changed when this is not empty.
    pub user_errors: Vec<UserError>,
}

/// The result of `addWidget`, `updateWidget` and `moveWidget`.
#[derive(SimpleObject, Default)]
pub struct WidgetPayload {
    /// The widget after the change (`null` on error).
    pub widget: Option<Widget>,
    /// Its dashboard after the change, with the new `layoutVersion`.
    pub dashboard: Option<Dashboard>,
    /// Log position of the change.
    pub position: Option<Position>,
    /// True when the read model did not catch up within the wait.
    pub wait_timed_out: bool,
    /// Expected failures.
    pub user_errors: Vec<UserError>,
}

/// The result of `deleteDashboard` and `deleteDashboardTemplate`.
#[derive(SimpleObject, Default)]
pub struct DeleteDashboardPayload {
    /// The id of the deleted dashboard.
    pub deleted_id: Option<ID>,
    /// Log position of the deletion.
    pub position: Option<Position>,
    /// True when the read model did not catch up within the wait.
    pub wait_timed_out: bool,
    /// Expected failures.
    pub user_errors: Vec<UserError>,
}

/// A committed change, settled.
struct Outcome {
    id: Uuid,
    position: Option<Position>,
    wait_timed_out: bool,
}

type Checked<T> = std::result::Result<T, UserError>;

fn parse(id: &ID, field: &str) -> Checked<Uuid> {
    id.parse()
        .map_err(|_| UserError::new(Some(field), Code::Invalid, format!("{field} is not an id")))
}

fn layout_version(v: Option<i64>) -> Checked<Option<u64>> {
    match v {
        Some(n) if n < 0 => Err(UserError::new(
            Some("expectedLayoutVersion"),
            Code::Invalid,
            "expectedLayoutVersion must not be negative",
        )),
        other => Ok(other.map(|n| n as u64)),
    }
}

fn not_found(field: &str) -> UserError {
    UserError::new(
        Some(field),
        Code::NotFound,
        DashboardError::NotFound.to_string(),
    )
}

/// A refusal as a userError (`NOT_FOUND` names `id_field`), or an internal error.
fn refusal(err: ExecError<DashboardError>, id_field: &str) -> Result<UserError> {
    match err {
        ExecError::Domain(DashboardError::NotFound) => Ok(not_found(id_field)),
        ExecError::Domain(e) => Ok(UserError::new(e.field(), e.code(), e.to_string())),
        // Only after every retry lost a race: the dashboard is being changed right now.
        ExecError::VersionConflict { .. } => Ok(UserError::new(
            None,
            Code::VersionConflict,
            "the dashboard is being changed concurrently; try again",
        )),
        ExecError::Store(e) => Err(internal(e)),
    }
}

/// Runs a command on dashboard `id` for the caller and waits for the read model.
async fn run(
    ctx: &Context<'_>,
    id: Uuid,
    command: DashboardCommand,
    id_field: &str,
) -> Result<Checked<Outcome>> {
    let metadata = match event_metadata(ctx, None)? {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let outcome = match execute(ctx, Command::Dashboard(id, command), &metadata).await {
        Ok(o) => o,
        Err(CommandError::Dashboard(e)) => return Ok(Err(refusal(e, id_field)?)),
        Err(other) => return Err(internal(other)),
    };
    Ok(Ok(Outcome {
        id,
        position: outcome.position.map(Position),
        wait_timed_out: outcome.wait_timed_out,
    }))
}

/// The dashboard after a change, read afresh.
async fn after(ctx: &Context<'_>, id: Uuid) -> Option<Dashboard> {
    read::by_id(ctx.data_unchecked::<PgPool>(), id)
        .await
        .unwrap_or_else(|err| {
            // The change is committed; answer without the dashboard rather than with an error.
            tracing::warn!(error = %err, "could not read a dashboard after changing it");
            None
        })
        .map(|d| Dashboard::new(d, None))
}

async fn dashboard_payload(
    ctx: &Context<'_>,
    outcome: Checked<Outcome>,
) -> Result<DashboardPayload> {
    Ok(match outcome {
        Ok(o) => DashboardPayload {
            dashboard: after(ctx, o.id).await,
            position: o.position,
            wait_timed_out: o.wait_timed_out,
            user_errors: vec![],
        },
        Err(e) => DashboardPayload {
            user_errors: vec![e],
            ..Default::default()
        },
    })
}

async fn widget_payload(
    ctx: &Context<'_>,
    outcome: Checked<Outcome>,
    widget_id: Uuid,
) -> Result<WidgetPayload> {
    Ok(match outcome {
        Ok(o) => {
            let dashboard = after(ctx, o.id).await;
            let widget = dashboard.as_ref().and_then(|d| {
                d.widgets
                    .iter()
                    .find(|w| w.id == widget_id)
                    .map(|w| Widget::new(w.clone(), None))
            });
            WidgetPayload {
                widget,
                dashboard,
                position: o.position,
                wait_timed_out: o.wait_timed_out,
                user_errors: vec![],
            }
        }
        Err(e) => WidgetPayload {
            user_errors: vec![e],
            ..Default::default()
        },
    })
}

fn delete_payload(outcome: Checked<Outcome>) -> DeleteDashboardPayload {
    match outcome {
        Ok(o) => DeleteDashboardPayload {
            deleted_id: Some(ID(o.id.to_string())),
            position: o.position,
            wait_timed_out: o.wait_timed_out,
            user_errors: vec![],
        },
        Err(e) => DeleteDashboardPayload {
            user_errors: vec![e],
            ..Default::default()
        },
    }
}

/// The widgets of `source` as drafts with new ids, for a copy.
fn copies(source: &DashboardState) -> Vec<NewWidget> {
    source
        .widgets()
        .iter()
        .map(|w| NewWidget {
            id: Uuid::new_v4(),
            draft: WidgetDraft {
                kind: w.kind.as_str().to_string(),
                title: w.title.clone(),
                config: Value::Object(w.config.clone()),
                position: PositionDraft {
                    x: i64::from(w.position.x),
                    y: i64::from(w.position.y),
                    w: i64::from(w.position.w),
                    h: i64::from(w.position.h),
                },
            },
        })
        .collect()
}

fn subject(ctx: &Context<'_>) -> Result<String> {
    Ok(ctx.data::<Actor>()?.subject.clone())
}

macro_rules! checked {
    ($e:expr, $payload:ty) => {
        match $e {
            Ok(v) => v,
            Err(err) => {
                return Ok(<$payload>::default_with(err));
            }
        }
    };
}

trait WithError: Default {
    fn default_with(e: UserError) -> Self;
}

macro_rules! with_error {
    ($($t:ty),*) => {$(
        impl WithError for $t {
            fn default_with(e: UserError) -> Self {
                Self { user_errors: vec![e], ..Default::default() }
            }
        }
    )*};
}
with_error!(DashboardPayload, WidgetPayload, DeleteDashboardPayload);

/// Dashboard mutations (part of the `Mutation` root). Every role may call them on its own
/// dashboards; publishing and deleting templates is for admins.
#[derive(Default)]
pub struct DashboardMutation;

#[Object]
impl DashboardMutation {
    /// Creates an empty dashboard owned by the caller.
    async fn create_dashboard(
        &self,
        ctx: &Context<'_>,
        input: CreateDashboardInput,
    ) -> Result<DashboardPayload> {
        let command = DashboardCommand::Create {
            owner: subject(ctx)?,
            name: input.name,
            copied_from: None,
            widgets: vec![],
        };
        let outcome = run(ctx, Uuid::new_v4(), command, "id").await?;
        dashboard_payload(ctx, outcome).await
    }

    /// Renames one of the caller's dashboards.
    async fn rename_dashboard(
        &self,
        ctx: &Context<'_>,
        input: RenameDashboardInput,
    ) -> Result<DashboardPayload> {
        let id = checked!(parse(&input.id, "id"), DashboardPayload);
        let command = DashboardCommand::Rename {
            actor: subject(ctx)?,
            name: input.name,
        };
        let outcome = run(ctx, id, command, "id").await?;
        dashboard_payload(ctx, outcome).await
    }

    /// Deletes one of the caller's dashboards (if it was the default, the caller has none).
    async fn delete_dashboard(
        &self,
        ctx: &Context<'_>,
        input: DashboardIdInput,
    ) -> Result<DeleteDashboardPayload> {
        let id = checked!(parse(&input.id, "id"), DeleteDashboardPayload);
        let command = DashboardCommand::Delete {
            actor: subject(ctx)?,
        };
        Ok(delete_payload(run(ctx, id, command, "id").await?))
    }

    /// Makes one of the caller's dashboards their default; the previous default stops being
    /// one.
    async fn set_default_dashboard(
        &self,
        ctx: &Context<'_>,
        input: DashboardIdInput,
    ) -> Result<DashboardPayload> {
        let id = checked!(parse(&input.id, "id"), DashboardPayload);
        let command = DashboardCommand::MakeDefault {
            actor: subject(ctx)?,
        };
        let outcome = run(ctx, id, command, "id").await?;
        dashboard_payload(ctx, outcome).await
    }

    /// Adds a widget to one of the caller's dashboards (at most 50 per dashboard).
    async fn add_widget(&self, ctx: &Context<'_>, input: AddWidgetInput) -> Result<WidgetPayload> {
        let id = checked!(parse(&input.dashboard_id, "dashboardId"), WidgetPayload);
        let expected = checked!(layout_version(input.expected_layout_version), WidgetPayload);
        let widget_id = Uuid::new_v4();
        let command = DashboardCommand::AddWidget {
            actor: subject(ctx)?,
            widget: NewWidget {
                id: widget_id,
                draft: WidgetDraft {
                    kind: input.kind,
                    title: input.title,
                    config: input.config.0,
                    position: input.position.into(),
                },
            },
            expected_layout_version: expected,
        };
        let outcome = run(ctx, id, command, "dashboardId").await?;
        widget_payload(ctx, outcome, widget_id).await
    }

    /// Changes a widget's kind, title and/or config.
    async fn update_widget(
        &self,
        ctx: &Context<'_>,
        input: UpdateWidgetInput,
    ) -> Result<WidgetPayload> {
        let id = checked!(parse(&input.dashboard_id, "dashboardId"), WidgetPayload);
        let widget_id = checked!(parse(&input.widget_id, "widgetId"), WidgetPayload);
        let expected = checked!(layout_version(input.expected_layout_version), WidgetPayload);
        let command = DashboardCommand::UpdateWidget {
            actor: subject(ctx)?,
            widget_id,
            kind: input.kind,
            title: input.title,
            config: input.config.map(|c| c.0),
            expected_layout_version: expected,
        };
        let outcome = run(ctx, id, command, "dashboardId").await?;
        widget_payload(ctx, outcome, widget_id).await
    }

    /// Moves or resizes a widget.
    async fn move_widget(
        &self,
        ctx: &Context<'_>,
        input: MoveWidgetInput,
    ) -> Result<WidgetPayload> {
        let id = checked!(parse(&input.dashboard_id, "dashboardId"), WidgetPayload);
        let widget_id = checked!(parse(&input.widget_id, "widgetId"), WidgetPayload);
        let expected = checked!(layout_version(input.expected_layout_version), WidgetPayload);
        let command = DashboardCommand::MoveWidget {
            actor: subject(ctx)?,
            widget_id,
            position: input.position.into(),
            expected_layout_version: expected,
        };
        let outcome = run(ctx, id, command, "dashboardId").await?;
        widget_payload(ctx, outcome, widget_id).await
    }

    /// Removes a widget.
    async fn remove_widget(
        &self,
        ctx: &Context<'_>,
        input: RemoveWidgetInput,
    ) -> Result<DashboardPayload> {
        let id = checked!(parse(&input.dashboard_id, "dashboardId"), DashboardPayload);
        let widget_id = checked!(parse(&input.widget_id, "widgetId"), DashboardPayload);
        let expected = checked!(
            layout_version(input.expected_layout_version),
            DashboardPayload
        );
        let command = DashboardCommand::RemoveWidget {
            actor: subject(ctx)?,
            widget_id,
            expected_layout_version: expected,
        };
        let outcome = run(ctx, id, command, "dashboardId").await?;
        dashboard_payload(ctx, outcome).await
    }

    /// Publishes a template everyone can clone (admin): a copy of one of the caller's
    /// dashboards, or `name` and `widgets`.
    async fn publish_dashboard_template(
        &self,
        ctx: &Context<'_>,
        input: PublishDashboardTemplateInput,
    ) -> Result<DashboardPayload> {
        let command = match input.dashboard_id {
            Some(source_id) => {
                if input.widgets.is_some() {
                    return Ok(DashboardPayload::default_with(UserError::new(
                        Some("widgets"),
                        Code::Invalid,
                        "give either dashboardId or widgets, not both",
                    )));
                }
                let source_id = checked!(parse(&source_id, "dashboardId"), DashboardPayload);
                let actor = subject(ctx)?;
                let source = ctx
                    .data_unchecked::<std::sync::Arc<DashboardCommands>>()
                    .load(source_id)
                    .await
                    .map_err(internal)?;
                if !source.is_live() || source.is_template() || source.owner() != Some(&actor) {
                    return Ok(DashboardPayload::default_with(not_found("dashboardId")));
                }
                DashboardCommand::PublishTemplate {
                    name: input.name.unwrap_or_else(|| source.name().to_string()),
                    copied_from: Some(source_id),
                    widgets: copies(&source),
                }
            }
            None => {
                let Some(name) = input.name else {
                    return Ok(DashboardPayload::default_with(UserError::new(
                        Some("name"),
                        Code::Invalid,
                        "name is required without dashboardId",
                    )));
                };
                let widgets = input
                    .widgets
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| NewWidget {
                        id: Uuid::new_v4(),
                        draft: WidgetDraft {
                            kind: w.kind,
                            title: w.title,
                            config: w.config.0,
                            position: w.position.into(),
                        },
                    })
                    .collect();
                DashboardCommand::PublishTemplate {
                    name,
                    copied_from: None,
                    widgets,
                }
            }
        };
        let outcome = run(ctx, Uuid::new_v4(), command, "dashboardId").await?;
        dashboard_payload(ctx, outcome).await
    }

    /// Creates a dashboard owned by the caller with a template's widgets.
    async fn clone_dashboard_template(
        &self,
        ctx: &Context<'_>,
        input: CloneDashboardTemplateInput,
    ) -> Result<DashboardPayload> {
        let template_id = checked!(parse(&input.template_id, "templateId"), DashboardPayload);
        let template = ctx
            .data_unchecked::<std::sync::Arc<DashboardCommands>>()
            .load(template_id)
            .await
            .map_err(internal)?;
        if !template.is_live() || !template.is_template() {
            return Ok(DashboardPayload::default_with(not_found("templateId")));
        }
        let command = DashboardCommand::Create {
            owner: subject(ctx)?,
            name: input.name.unwrap_or_else(|| template.name().to_string()),
            copied_from: Some(template_id),
            widgets: copies(&template),
        };
        let outcome = run(ctx, Uuid::new_v4(), command, "templateId").await?;
        dashboard_payload(ctx, outcome).await
    }

    /// Deletes a template (admin). Dashboards cloned from it keep their widgets.
    async fn delete_dashboard_template(
        &self,
        ctx: &Context<'_>,
        input: DashboardIdInput,
    ) -> Result<DeleteDashboardPayload> {
        let id = checked!(parse(&input.id, "id"), DeleteDashboardPayload);
        Ok(delete_payload(
            run(ctx, id, DashboardCommand::DeleteTemplate, "id").await?,
        ))
    }
}
