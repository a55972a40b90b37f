//! `Widget.data`: what a widget shows, with the caller's right to read the widget's group
//! checked again at read time (a binding's scope is followed through the live tree).

use async_graphql::{Context, Enum, Result, SimpleObject, ID};
use chrono::{DateTime, TimeDelta, Utc};
use corral_domain::dashboard::{
    GroupBinding, MemberCountMode, Widget as DomainWidget, WidgetBucket, WidgetConfig,
};
use corral_projections::health::query::{HealthError, SourcePreference};
use corral_projections::health::{group_health, BucketSize};
use corral_projections::membership::read::{count, Mode};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error_codes::ErrorCode;
use crate::graphql::errors::{coded, internal};
use crate::graphql::health::GroupHealth;
use crate::graphql::loaders::Groups;
use crate::graphql::members::MembershipMode;
use crate::graphql::types::Group;

/// Whether a widget could be rendered.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum WidgetDataState {
    /// Rendered: see `memberCount` or `health`.
    Ok,
    /// The caller may not read the widget's group (no `group.read` on it or an ancestor, or
    /// none at all): nothing is shown, not even whether the group exists.
    #[default]
    Redacted,
    /// The group does not exist (any more), or the widget is bound to `$group` and no group
    /// was given.
    NoGroup,
    /// The group exists but its figures cannot be served (see `message`), e.g. no health
    /// rollups yet for a window longer than raw samples can cover.
    Unavailable,
}

/// What a widget shows. Only `OK` carries figures.
#[derive(SimpleObject, Clone, Default)]
pub struct WidgetData {
    /// Whether it could be rendered.
    pub state: WidgetDataState,
    /// Why not, for humans (null when `OK`).
    pub message: Option<String>,
    /// The group shown (`OK` and `UNAVAILABLE` only).
    pub group: Option<Group>,
    /// `GROUP_MEMBER_COUNT`: the number of members.
    pub member_count: Option<i64>,
    /// `GROUP_MEMBER_COUNT`: which members were counted.
    pub member_count_mode: Option<MembershipMode>,
    /// Health kinds: the series. `GROUP_UTILIZATION` is meant to chart `cpu`, `memory` and
    /// `disk`, `GROUP_AVAILABILITY` `availability`, `GROUP_HEALTH_SUMMARY` all of them.
    pub health: Option<GroupHealth>,
}

fn state(state: WidgetDataState, message: impl Into<String>) -> WidgetData {
    WidgetData {
        state,
        message: Some(message.into()),
        ..Default::default()
    }
}

/// Whether the calling actor may read group `g`: a `group.read` binding on it or on one of
/// its ancestors (as the tree stands now), or a global one. A group that does not exist is
/// readable only to a global reader, so a scoped caller cannot tell it from a hidden one.
async fn may_read_group(ctx: &Context<'_>, g: Uuid) -> Result<bool> {
    crate::graphql::scope::may_read(ctx, g).await
}

/// The window of a health widget: `range_hours` ending at the end of the bucket that holds
/// `to` (aligned, so that 168 hours of 5-minute buckets are exactly the 2016 allowed).
fn window(
    to: DateTime<Utc>,
    bucket: BucketSize,
    range_hours: u32,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let mut end = bucket.start_of(to);
    if end < to {
        end += bucket.delta();
    }
    (end - TimeDelta::hours(i64::from(range_hours)), end)
}

pub(super) async fn resolve(
    ctx: &Context<'_>,
    widget: &DomainWidget,
    group_variable: Option<ID>,
    to: Option<DateTime<Utc>>,
) -> Result<WidgetData> {
    let config = WidgetConfig::parse(widget.kind, &widget.config).map_err(|m| {
        internal(format!(
            "widget {} has a config it should not: {m}",
            widget.id
        ))
    })?;
    let group_id = match config.group {
        GroupBinding::Group(id) => id,
        GroupBinding::Variable => match group_variable {
            None => return Ok(state(
                WidgetDataState::NoGroup,
                "the widget shows the dashboard's $group: pass `group` to `dashboard` or `data`",
            )),
            Some(id) => id.parse::<Uuid>().map_err(|_| {
                coded(
                    ErrorCode::BadUserInput,
                    format!("group {:?} is not a group id", id.0),
                )
            })?,
        },
    };
    // Checked before the group is looked up, so that a caller who may not read this group
    // learns nothing about it, not even whether it exists.
    if !may_read_group(ctx, group_id).await? {
        return Ok(state(
            WidgetDataState::Redacted,
            "you may not read this widget's group, so it shows nothing",
        ));
    }
    let Some(node) = ctx.data_unchecked::<Groups>().load_one(group_id).await? else {
        return Ok(state(
            WidgetDataState::NoGroup,
            format!("group {group_id} does not exist"),
        ));
    };
    let group = Some(Group::from(node));
    let pool = ctx.data_unchecked::<PgPool>();
    if !widget.kind.is_health() {
        let (mode, shown) = match config.mode {
            MemberCountMode::Direct => (Mode::Direct, MembershipMode::Direct),
            MemberCountMode::Effective => (Mode::Effective, MembershipMode::Effective),
        };
        let n = count(pool, group_id, mode, None).await.map_err(internal)?;
        return Ok(WidgetData {
            state: WidgetDataState::Ok,
            group,
            member_count: Some(n),
            member_count_mode: Some(shown),
            ..Default::default()
        });
    }
    let bucket = match config.bucket {
        WidgetBucket::FiveMinutes => BucketSize::FiveMinutes,
        WidgetBucket::OneHour => BucketSize::OneHour,
    };
    let (from, to) = window(to.unwrap_or_else(Utc::now), bucket, config.range_hours);
    match group_health(pool, group_id, from, to, bucket, SourcePreference::Auto).await {
        Ok(series) => Ok(WidgetData {
            state: WidgetDataState::Ok,
            group,
            health: Some(series.into()),
            ..Default::default()
        }),
        // Deleted between the two reads.
        Err(HealthError::NotFound(_)) => Ok(state(
            WidgetDataState::NoGroup,
            format!("group {group_id} does not exist"),
        )),
        Err(HealthError::BadWindow(m)) | Err(HealthError::NoRollups(m)) => Ok(WidgetData {
            group,
            ..state(WidgetDataState::Unavailable, m)
        }),
        Err(HealthError::Store(e)) => Err(internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_window_fits_the_bucket_limit() {
        let to = DateTime::parse_from_rfc3339("2026-12-04T10:07:31Z")
            .expect("time")
            .to_utc();
        let (from, end) = window(to, BucketSize::FiveMinutes, 168);
        assert_eq!(end.to_rfc3339(), "2026-12-04T10:10:00+00:00");
        assert_eq!((end - from).num_minutes() / 5, 2016);
        let (from, end) = window(end, BucketSize::OneHour, 24);
        assert_eq!(end.to_rfc3339(), "2026-12-04T11:00:00+00:00");
        assert_eq!((end - from).num_hours(), 24);
    }
}
