//! Time travel in GraphQL: `group(id, asOf | atPosition)`, `group.members(asOf)` and every
//! field of a historical `Group`, answered from the event log as of a position
//! ([`corral_projections::history`]); never from the live read models.
//!
//! A historical `Group` carries the position it reflects (`asOfPosition`); its `parent`,
//! `ancestors`, `children`, `rule`, `members` and `memberCount` answer as of that position.
//! Its `rule` is the rule then, without run statistics (`lastRunAt` and the other run fields
//! are null: runs are not events). Member edges still load their device or service from the
//! live inventory: a member that has left the inventory since has no edge, its id is listed in
//! the connection's `missingMemberIds`, and it is counted in `totalCount`.
//!
//! Scope: a historical group is handed out only when the caller may read it by the CURRENT
//! tree (a group no longer in the live tree, such as a deleted one, only to a global reader),
//! so a historical `parent`, `ancestors`, `children` or `viaGroup` beyond the scope is left
//! out (null, or missing from the list and its count), as for a group that does not exist.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, Json, Result, ID};
use chrono::{DateTime, Utc};
use corral_domain::group::GroupType as DomainGroupType;
use corral_domain::membership::{EntryKind, MemberSource};
use corral_projections::group_tree::read::After;
use corral_projections::history::{self, HistoricalGroup};
use corral_projections::membership::read::Mode;
use corral_projections::public_log;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use super::errors::{coded, internal};
use super::members::{GroupMemberConnection, GroupMemberEdge, MemberCount, MembershipMode};
use super::rules::{GroupRule, MembershipSource};
use super::scalars::Position;
use super::types::{
    decode_cursor, encode_cursor, page_size, Group, GroupConnection, GroupEdge, GroupType, PageInfo,
};
use crate::error_codes::ErrorCode;

async fn conn(ctx: &Context<'_>) -> Result<PoolConnection<Postgres>> {
    ctx.data_unchecked::<PgPool>()
        .acquire()
        .await
        .map_err(internal)
}

/// The position `group(asOf, atPosition)` asks for: `None` for the live group. Both at once,
/// or a position beyond the head of the log, is `BAD_USER_INPUT`.
pub(crate) async fn requested_position(
    ctx: &Context<'_>,
    as_of: Option<DateTime<Utc>>,
    at_position: Option<Position>,
) -> Result<Option<i64>> {
    match (as_of, at_position) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(coded(
            ErrorCode::BadUserInput,
            "give asOf or atPosition, not both",
        )),
        (Some(t), None) => Ok(Some(position_at(ctx, t).await?)),
        (None, Some(Position(p))) => {
            let (head, _) = public_log::head(&mut *conn(ctx).await?)
                .await
                .map_err(internal)?;
            if p > head {
                return Err(coded(
                    ErrorCode::BadUserInput,
                    format!("atPosition {p} is beyond the head of the log ({head})"),
                ));
            }
            Ok(Some(p))
        }
    }
}

async fn position_at(ctx: &Context<'_>, t: DateTime<Utc>) -> Result<i64> {
    public_log::position_at(&mut *conn(ctx).await?, t)
        .await
        .map_err(internal)
}

/// A historical group as a GraphQL `Group`. `deletedAt` is its deletion whether it happened
/// at or before the position or since.
pub(crate) fn to_group(h: HistoricalGroup) -> Group {
    Group {
        id: ID(h.id.to_string()),
        name: h.name.clone(),
        group_type: if h.group_type == "SERVICE" {
            GroupType::Service
        } else {
            GroupType::Device
        },
        description: h.description.clone(),
        metadata: Json(h.metadata.clone()),
        path: h.path.clone(),
        depth: h.depth,
        is_system: h.is_system,
        version: h.version,
        created_at: h.created_at,
        updated_at: h.updated_at,
        deleted_at: h.deleted_at.or(h.deleted_since),
        uuid: h.id,
        parent_id: h.parent_id,
        at_position: Some(h.position),
        past: Some(Arc::new(h)),
    }
}

/// Which tree `EFFECTIVE` follows when a member's groups are asked for as of a position.
#[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum MembershipTree {
    /// The tree as it was at that position: the groups it was in then, under the parents
    /// they had then (the default).
    #[default]
    Then,
    /// Today's tree: its direct groups of then, under the parents they have now (a group
    /// deleted since counts for nothing).
    Now,
}

impl From<MembershipTree> for history::TreeAt {
    fn from(t: MembershipTree) -> Self {
        match t {
            MembershipTree::Then => history::TreeAt::Position,
            MembershipTree::Now => history::TreeAt::Now,
        }
    }
}

/// `tree` is only meaningful as of a position.
pub(crate) fn tree_needs_position(
    position: Option<i64>,
    tree: Option<MembershipTree>,
) -> Result<MembershipTree> {
    match (position, tree) {
        (None, Some(_)) => Err(coded(
            ErrorCode::BadUserInput,
            "tree needs asOf or atPosition (the live answer follows today's tree)",
        )),
        (_, t) => Ok(t.unwrap_or_default()),
    }
}

/// `device.groups` / `service.groups` as of `position`: the groups the member was in then,
/// with the reasons of then, of the groups the caller may read (by today's tree, as every
/// historical answer). With [`MembershipTree::Then`] each group is shown as it was then.
pub(crate) async fn member_groups_at(
    ctx: &Context<'_>,
    member: &str,
    mode: MembershipMode,
    position: i64,
    tree: MembershipTree,
) -> Result<Vec<super::members::GroupMembership>> {
    let found = history::groups_of_at(
        &mut *conn(ctx).await?,
        member,
        position,
        mode.into(),
        tree.into(),
    )
    .await
    .map_err(internal)?;
    let ids: Vec<Uuid> = found.iter().map(|b| b.group_id).collect();
    let mut past: HashMap<Uuid, Option<Group>> = match tree {
        MembershipTree::Then => groups_at(ctx, &ids, position)
            .await?
            .into_iter()
            .map(|(id, g)| (id, Some(g)))
            .collect(),
        MembershipTree::Now => super::loaders::readable(ctx, &ids)
            .await?
            .into_iter()
            .map(|id| (id, None))
            .collect(),
    };
    Ok(found
        .into_iter()
        .filter_map(|b| {
            let group = past.remove(&b.group_id)?;
            let mut m = super::members::GroupMembership::from(b);
            m.past = group;
            Some(m)
        })
        .collect())
}

/// The groups of `ids` the caller may read, as of `position`.
async fn groups_at(ctx: &Context<'_>, ids: &[Uuid], position: i64) -> Result<HashMap<Uuid, Group>> {
    let readable = super::loaders::readable(ctx, ids).await?;
    let ids: Vec<Uuid> = ids
        .iter()
        .filter(|id| readable.contains(id))
        .copied()
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let found = history::groups_at(&mut *conn(ctx).await?, &ids, position)
        .await
        .map_err(internal)?;
    // Beyond the scope a group shows nothing, its name in a path included: a group moved into
    // the scope keeps, as of before the move, only the part of its path the caller may read.
    let above: Vec<Uuid> = found.values().flat_map(|g| g.ancestors.clone()).collect();
    let readable_above = super::loaders::readable(ctx, &above).await?;
    Ok(found
        .into_iter()
        .map(|(id, g)| {
            let hidden = g
                .ancestors
                .iter()
                .take_while(|a| !readable_above.contains(a))
                .count();
            let mut group = to_group(g);
            if hidden > 0 {
                group.path = group
                    .path
                    .split('/')
                    .skip(hidden)
                    .collect::<Vec<_>>()
                    .join("/");
            }
            (id, group)
        })
        .collect())
}

/// `group(id)` as of `position` (`null` if not yet created then, or if the caller may not
/// read it now).
pub(crate) async fn group(ctx: &Context<'_>, id: Uuid, position: i64) -> Result<Option<Group>> {
    Ok(groups_at(ctx, &[id], position).await?.remove(&id))
}

/// A historical group's parent, as of the same position.
pub(crate) async fn parent(ctx: &Context<'_>, g: &Group, position: i64) -> Result<Option<Group>> {
    match g.parent_id {
        Some(p) => group(ctx, p, position).await,
        None => Ok(None),
    }
}

/// A historical group's ancestors (root first), as of the same position.
pub(crate) async fn ancestors(ctx: &Context<'_>, g: &Group, position: i64) -> Result<Vec<Group>> {
    let ids = g
        .past
        .as_ref()
        .map(|p| p.ancestors.clone())
        .unwrap_or_default();
    let mut found = groups_at(ctx, &ids, position).await?;
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// A historical group's rule then, without run statistics.
pub(crate) fn rule(g: &Group) -> Option<GroupRule> {
    let r = g.past.as_ref()?.rule.as_ref()?;
    Some(GroupRule {
        text: r.text.clone(),
        json: Json(r.json.clone()),
        enabled: r.enabled,
        version: r.version,
        last_run_at: None,
        last_run_status: None,
        last_match_count: None,
        last_error: None,
        rule_version: None,
        last_cause: None,
    })
}

/// A historical group's children then, ordered by lower-cased name and id.
pub(crate) async fn children(
    ctx: &Context<'_>,
    g: &Group,
    position: i64,
    first: Option<i32>,
    after: Option<String>,
) -> Result<GroupConnection> {
    let first = page_size(first)? as usize;
    let after = after.as_deref().map(decode_cursor).transpose()?;
    let mut c = conn(ctx).await?;
    let tree = tree_at(ctx, &mut c, position).await?;
    let mut all = tree.children(g.uuid).to_vec();
    // Children then that have left the scope since are left out, count included.
    let readable = super::loaders::readable(ctx, &all).await?;
    all.retain(|id| readable.contains(id));
    let key = |id: &Uuid| {
        (
            tree.node(*id)
                .map(|n| n.name.to_lowercase())
                .unwrap_or_default(),
            *id,
        )
    };
    let rest: Vec<Uuid> = all
        .iter()
        .filter(|id| {
            after
                .as_ref()
                .is_none_or(|a| key(id) > (a.key.clone(), a.id))
        })
        .copied()
        .take(first + 1)
        .collect();
    let has_next_page = rest.len() > first;
    let page: Vec<Uuid> = rest.into_iter().take(first).collect();
    let mut found = history::groups_at(&mut c, &page, position)
        .await
        .map_err(internal)?;
    let edges: Vec<GroupEdge> = page
        .iter()
        .filter_map(|id| {
            let (name_key, id) = key(id);
            let node = found.remove(&id)?;
            Some(GroupEdge {
                cursor: encode_cursor(&After { key: name_key, id }),
                node: to_group(node),
            })
        })
        .collect();
    Ok(GroupConnection {
        page_info: PageInfo {
            has_next_page,
            has_previous_page: false,
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor: edges.last().map(|e| e.cursor.clone()),
        },
        edges,
        total_count: all.len() as i64,
    })
}

/// The position `members`/`memberCount` answer at: `asOf` when given, else the historical
/// group's own position; `None` for live answers.
pub(crate) async fn members_position(
    ctx: &Context<'_>,
    g: &Group,
    as_of: Option<DateTime<Utc>>,
) -> Result<Option<i64>> {
    match as_of {
        Some(t) => Ok(Some(position_at(ctx, t).await?)),
        None => Ok(state_position(g)),
    }
}

/// Where a historical group's membership is read: as of its position, or just before its
/// deletion when it was deleted by then. `None` for live groups.
pub(crate) fn state_position(g: &Group) -> Option<i64> {
    g.past.as_ref().map(|h| h.state_position).or(g.at_position)
}

fn source_of(s: Option<MembershipSource>) -> Option<MemberSource> {
    s.map(|s| match s {
        MembershipSource::Static => MemberSource::Static,
        MembershipSource::Rule => MemberSource::Rule,
    })
}

/// The read model's one-letter code of a source (`S`, `R`).
fn code(s: MemberSource) -> char {
    EntryKind::from(s).code()
}

/// The complexity a historical read is charged (it folds events from the log): at most a
/// handful per request under `MAX_COMPLEXITY`.
pub const HISTORY_COST: usize = 2_000;

/// Folds computed once per request: a historical query that asks for the tree or a
/// membership several times (children of children, members and memberCount) folds once.
#[derive(Default)]
pub struct HistoryCache {
    trees: std::sync::Mutex<HashMap<i64, Arc<history::TreeFold>>>,
    members: std::sync::Mutex<HashMap<MembersKey, Arc<Vec<history::HistoricalMember>>>>,
}

type MembersKey = (Uuid, i64, bool, Option<char>);

fn cache<'a>(ctx: &'a Context<'_>) -> Option<&'a HistoryCache> {
    ctx.data_opt::<HistoryCache>()
}

async fn tree_at(
    ctx: &Context<'_>,
    c: &mut PoolConnection<Postgres>,
    position: i64,
) -> Result<Arc<history::TreeFold>> {
    let cached = cache(ctx).and_then(|k| k.trees.lock().ok()?.get(&position).cloned());
    if let Some(tree) = cached {
        return Ok(tree);
    }
    let tree = Arc::new(history::tree_at(c, position).await.map_err(internal)?);
    if let Some(Ok(mut trees)) = cache(ctx).map(|k| k.trees.lock()) {
        trees.insert(position, tree.clone());
    }
    Ok(tree)
}

async fn members_at(
    ctx: &Context<'_>,
    g: &Group,
    position: i64,
    mode: MembershipMode,
    source: Option<MembershipSource>,
) -> Result<Arc<Vec<history::HistoricalMember>>> {
    let effective = mode == MembershipMode::Effective;
    let source = source_of(source);
    let key = (g.uuid, position, effective, source.map(code));
    let cached = cache(ctx).and_then(|k| k.members.lock().ok()?.get(&key).cloned());
    if let Some(members) = cached {
        return Ok(members);
    }
    let members = Arc::new(
        history::members_at(&mut *conn(ctx).await?, g.uuid, position, effective, source)
            .await
            .map_err(internal)?,
    );
    if let Some(Ok(mut all)) = cache(ctx).map(|k| k.members.lock()) {
        all.insert(key, members.clone());
    }
    Ok(members)
}

/// `group.members` as of `position`: the whole historical membership is folded, then paged
/// by member id (bytewise) like the live connection.
pub(crate) async fn members(
    ctx: &Context<'_>,
    g: &Group,
    position: i64,
    mode: MembershipMode,
    source: Option<MembershipSource>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<GroupMemberConnection> {
    let first = page_size(first)? as usize;
    let after = after
        .as_deref()
        .map(decode_cursor)
        .transpose()?
        .map(|a| a.key);
    let all = members_at(ctx, g, position, mode, source).await?;
    let total = all.len() as i64;
    let start = match &after {
        Some(a) => all.partition_point(|m| m.member_id.as_str() <= a.as_str()),
        None => 0,
    };
    let rows = &all[start.min(all.len())..];
    let has_next_page = rows.len() > first;
    let rows = &rows[..rows.len().min(first)];
    let cursor = |member: &str| {
        encode_cursor(&After {
            key: member.to_string(),
            id: Uuid::nil(),
        })
    };
    let kind = DomainGroupType::from(g.group_type);
    let mut loaded = super::members::nodes(
        ctx,
        kind,
        rows.iter().map(|r| r.member_id.clone()).collect(),
    )
    .await?;
    // The groups members came through, as of the same position (only when asked for).
    let mut via: HashMap<Uuid, Group> = HashMap::new();
    if ctx.look_ahead().field("edges").field("viaGroup").exists() {
        let mut ids: Vec<Uuid> = rows.iter().map(|r| r.via_group).collect();
        ids.sort();
        ids.dedup();
        via = groups_at(ctx, &ids, position).await?;
    }
    let mut missing = Vec::new();
    let mut edges = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(node) = loaded.remove(&r.member_id) else {
            missing.push(ID(r.member_id.clone()));
            continue;
        };
        edges.push(GroupMemberEdge {
            cursor: cursor(&r.member_id),
            node,
            source: MembershipSource::from_code(code(r.source)),
            since: r.since,
            via: r.via_group,
            at_position: Some(position),
            past_via: via.get(&r.via_group).cloned().map(Box::new),
        });
    }
    Ok(GroupMemberConnection {
        page_info: PageInfo {
            has_next_page,
            has_previous_page: false,
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            // The last row read, even when its entity is gone: the client must move forward.
            end_cursor: rows.last().map(|r| cursor(&r.member_id)),
        },
        edges,
        missing_member_ids: missing,
        count: MemberCount::known(g.uuid, Mode::from(mode), source_of(source).map(code), total),
    })
}

/// `group.memberCount` as of `position`.
pub(crate) async fn member_count(
    ctx: &Context<'_>,
    g: &Group,
    position: i64,
    mode: MembershipMode,
    source: Option<MembershipSource>,
) -> Result<i64> {
    Ok(members_at(ctx, g, position, mode, source).await?.len() as i64)
}
