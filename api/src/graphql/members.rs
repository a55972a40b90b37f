//! Reading memberships: a group's members (direct or effective) and an entity's groups.
//!
//! Scoped readers (see [`super::scope`]): a group's member list is the group's data, so a
//! caller who may read the group gets all of it (every member id, `totalCount`,
//! `memberCount`), but the device or service record behind a member follows the inventory's
//! visibility rule (a static member of a group in the caller's scope: see
//! [`super::inventory`]). An edge's `node` cannot be null, so a member whose record the caller
//! may not see has no edge: its id is listed in `missingMemberIds`, like a member removed from
//! the inventory, and it still counts. The reverse lookup (`Device.groups`,
//! `Service.groups`) lists only groups the caller may read, so `GroupMembership.group` is
//! always one it may read.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};

use async_graphql::{ComplexObject, Context, Enum, Result, SimpleObject, Union, ID};
use chrono::{DateTime, Utc};
use corral_domain::group::GroupType as DomainGroupType;
use corral_projections::group_tree::read::After;
use corral_projections::membership::read::{self as members, Belonging, Mode};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::errors::internal;
use super::inventory::{Device, Service};
use super::loaders::Groups;
use super::rules::MembershipSource;
use super::types::{decode_walk, encode_walk, page_info, stale, Group, Marks, PageInfo, Paging};
use corral_projections::group_tree::GROUP_TREE;
use corral_projections::membership::MEMBERSHIP;
use corral_projections::walk;

/// The complexity charged for an effective count or page beyond a direct one: the count is
/// one stored row and a page one index range of the stored effective membership, but a later
/// page's staleness check may probe up to 256 groups of the subtree.
pub const EFFECTIVE_COST: usize = 10;

/// Direct or effective membership.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum MembershipMode {
    /// The group's own members.
    #[default]
    Direct,
    /// The group's own members and every descendant's, each once.
    Effective,
}

impl From<MembershipMode> for Mode {
    fn from(m: MembershipMode) -> Self {
        match m {
            MembershipMode::Direct => Mode::Direct,
            MembershipMode::Effective => Mode::Effective,
        }
    }
}

fn source_code(s: Option<MembershipSource>) -> Option<char> {
    s.map(|s| match s {
        MembershipSource::Static => 'S',
        MembershipSource::Rule => 'R',
    })
}

/// A member: a device (device groups) or a service (service groups).
// Built per response edge and dropped with it: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Union, Clone, Debug)]
pub enum Member {
    /// A device.
    Device(Device),
    /// A service.
    Service(Service),
}

/// One member in a page, with why it is one.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct GroupMemberEdge {
    /// Opaque position of this edge, for `after`.
    pub cursor: String,
    /// The device or service.
    pub node: Member,
    /// `STATIC` or `RULE`: how it is a direct member of `viaGroup`.
    pub source: MembershipSource,
    /// Since when it is a direct member of `viaGroup`.
    pub since: DateTime<Utc>,
    #[graphql(skip)]
    pub via: Uuid,
    /// The position of a historical edge (`members(asOf)`, or a historical group's).
    #[graphql(skip)]
    pub at_position: Option<i64>,
    /// Its `viaGroup` as of that position, when prefetched.
    #[graphql(skip)]
    pub past_via: Option<Box<Group>>,
}

#[ComplexObject]
impl GroupMemberEdge {
    /// The group whose direct member it is: the group itself, or (EFFECTIVE) the nearest
    /// descendant that holds it.
    async fn via_group(&self, ctx: &Context<'_>) -> Result<Option<Group>> {
        if let Some(position) = self.at_position {
            if let Some(g) = &self.past_via {
                return Ok(Some((**g).clone()));
            }
            return super::history::group(ctx, self.via, position).await;
        }
        Ok(ctx
            .data_unchecked::<Groups>()
            .load_one(self.via)
            .await?
            .map(Group::from))
    }
}

/// A page of a group's members, in member id order.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct GroupMemberConnection {
    /// The members in this page.
    pub edges: Vec<GroupMemberEdge>,
    /// Where this page stands.
    pub page_info: PageInfo,
    /// Members of this page that have no edge because their device or service is no longer
    /// in the inventory (for historical pages: removed since), or because a scoped caller may
    /// not see its record (it is a static member of no group in the caller's scope); they
    /// count in `totalCount`.
    pub missing_member_ids: Vec<ID>,
    #[graphql(skip)]
    pub count: MemberCount,
}

/// A member count computed once, only when asked for.
#[derive(Clone)]
pub struct MemberCount {
    group: Uuid,
    mode: Mode,
    source: Option<char>,
    value: Arc<OnceCell<i64>>,
}

impl MemberCount {
    /// A count already known (historical pages fold their whole membership anyway).
    pub(crate) fn known(group: Uuid, mode: Mode, source: Option<char>, n: i64) -> Self {
        Self {
            group,
            mode,
            source,
            value: Arc::new(OnceCell::new_with(Some(n))),
        }
    }

    async fn get(&self, pool: &PgPool) -> Result<i64> {
        Ok(*self
            .value
            .get_or_try_init(|| members::count(pool, self.group, self.mode, self.source))
            .await
            .map_err(internal)?)
    }
}

#[ComplexObject]
impl GroupMemberConnection {
    /// Members in all pages (for EFFECTIVE this counts distinct members of the subtree,
    /// which costs a scan of it: ask only when needed).
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        self.count.get(ctx.data_unchecked::<PgPool>()).await
    }
}

/// Loads the page's nodes in one batch per kind; members missing from the live inventory
/// (removed moments ago; their removal events are on their way), and members whose record
/// the caller may not see (see the module's doc), are left out.
pub(crate) async fn nodes(
    ctx: &Context<'_>,
    kind: DomainGroupType,
    ids: Vec<String>,
) -> Result<HashMap<String, Member>> {
    Ok(match kind {
        DomainGroupType::Device => super::inventory::devices(ctx, ids)
            .await?
            .into_iter()
            .map(|(k, v)| (k, Member::Device(v)))
            .collect(),
        DomainGroupType::Service => super::inventory::services(ctx, ids)
            .await?
            .into_iter()
            .map(|(k, v)| (k, Member::Service(v)))
            .collect(),
    })
}

/// `group.members`: a keyset page of a consistent walk. The first page records the
/// membership projector's mark (and, for EFFECTIVE, the group tree projector's) in its
/// cursors; a later page is read, then checked against them: when no change to the walked set
/// was committed since, it continues the first page's state exactly; otherwise it fails with
/// `CURSOR_STALE` (see `corral_projections::walk`).
pub(crate) async fn page(
    ctx: &Context<'_>,
    group: &Group,
    mode: MembershipMode,
    source: Option<MembershipSource>,
    paging: Paging,
) -> Result<GroupMemberConnection> {
    let pool = ctx.data_unchecked::<PgPool>();
    let mode = Mode::from(mode);
    let source = source_code(source);
    let arg = if paging.backward { "before" } else { "after" };
    let (cursor, marks) = match paging.cursor.as_deref().map(|c| decode_walk(c, arg)) {
        Some(r) => {
            let (a, m) = r?;
            (Some(a.key), m)
        }
        None => (None, None),
    };
    // A walk's marks: those of its first page, or (first page, or a plain cursor of old) now,
    // before the page is read.
    let (marks, check) = match marks {
        Some(m) if m.m.is_some() && (mode == Mode::Direct || m.t.is_some()) => (m, true),
        _ => (
            Marks {
                m: Some(walk::mark(pool, MEMBERSHIP).await.map_err(internal)?),
                t: match mode {
                    Mode::Direct => None,
                    Mode::Effective => Some(walk::mark(pool, GROUP_TREE).await.map_err(internal)?),
                },
            },
            false,
        ),
    };
    let size = paging.size;
    let mut rows = members::page_dir(
        pool,
        group.uuid,
        mode,
        source,
        size + 1,
        cursor.as_deref(),
        paging.backward,
    )
    .await
    .map_err(internal)?;
    if check {
        stale_check(pool, group.uuid, mode, &marks).await?;
    }
    let more = rows.len() as i64 > size;
    rows.truncate(size as usize);
    if paging.backward {
        rows.reverse();
    }
    let cursor_of = |member: &str| {
        encode_walk(
            &After {
                key: member.to_string(),
                id: Uuid::nil(),
            },
            &marks,
        )
    };
    // The cursors of the first and last rows read, even when their entities are skipped
    // below: a page whose members were all removed moments ago must still move the client on.
    let first_cursor = rows.first().map(|r| cursor_of(&r.member_id));
    let last_cursor = rows.last().map(|r| cursor_of(&r.member_id));
    let kind = DomainGroupType::from(group.group_type);
    let mut loaded = nodes(
        ctx,
        kind,
        rows.iter().map(|r| r.member_id.clone()).collect(),
    )
    .await?;
    let mut missing = Vec::new();
    let edges: Vec<GroupMemberEdge> = rows
        .into_iter()
        .filter_map(|r| {
            let Some(node) = loaded.remove(&r.member_id) else {
                missing.push(ID(r.member_id));
                return None;
            };
            Some(GroupMemberEdge {
                cursor: cursor_of(&r.member_id),
                node,
                source: MembershipSource::from_code(r.source),
                since: r.since,
                via: r.via_group,
                at_position: None,
                past_via: None,
            })
        })
        .collect();
    Ok(GroupMemberConnection {
        page_info: page_info(&paging, more, first_cursor, last_cursor),
        edges,
        missing_member_ids: missing,
        count: MemberCount {
            group: group.uuid,
            mode,
            source,
            value: Arc::new(OnceCell::new()),
        },
    })
}

/// Fails with `CURSOR_STALE` when the members of `group` (for EFFECTIVE: of its subtree, or
/// the subtree itself) changed since `marks`.
async fn stale_check(pool: &PgPool, group: Uuid, mode: Mode, marks: &Marks) -> Result<()> {
    let Some(m) = marks.m else {
        return Ok(());
    };
    let changed = match mode {
        Mode::Direct => walk::membership_changed(pool, &m, &[group])
            .await
            .map_err(internal)?,
        Mode::Effective => {
            let reshaped = match &marks.t {
                Some(t) => walk::tree_reshaped(pool, t).await.map_err(internal)?,
                None => true,
            };
            reshaped || {
                let groups = members::subtree_groups(pool, group)
                    .await
                    .map_err(internal)?;
                walk::membership_changed(pool, &m, &groups)
                    .await
                    .map_err(internal)?
            }
        }
    };
    if changed {
        let position = walk::log_position(pool, &m).await.map_err(internal)?;
        return Err(stale("the group's members", position));
    }
    Ok(())
}

/// `group.memberCount`.
pub(crate) async fn count(
    ctx: &Context<'_>,
    group: &Group,
    mode: MembershipMode,
    source: Option<MembershipSource>,
) -> Result<i64> {
    members::count(
        ctx.data_unchecked::<PgPool>(),
        group.uuid,
        mode.into(),
        source_code(source),
    )
    .await
    .map_err(internal)
}

/// One group an entity belongs to, with every reason.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct GroupMembership {
    /// The reasons: each direct membership (in the group itself or, for EFFECTIVE, in a
    /// descendant) that makes the entity a member.
    pub reasons: Vec<super::rules::MembershipReason>,
    #[graphql(skip)]
    pub group_id: Uuid,
    /// As of a position with the tree as it was then: the group as it was then.
    #[graphql(skip)]
    pub past: Option<Group>,
}

#[ComplexObject]
impl GroupMembership {
    /// The group (always one the caller may read: the reverse lookup lists no other); as of
    /// a position with the tree then, the group as it was then.
    async fn group(&self, ctx: &Context<'_>) -> Result<Option<Group>> {
        if let Some(past) = &self.past {
            return Ok(Some(past.clone()));
        }
        Ok(ctx
            .data_unchecked::<Groups>()
            .load_one(self.group_id)
            .await?
            .map(Group::from))
    }
}

impl From<Belonging> for GroupMembership {
    fn from(b: Belonging) -> Self {
        Self {
            group_id: b.group_id,
            past: None,
            reasons: b
                .reasons
                .into_iter()
                .map(|r| super::rules::MembershipReason {
                    via_group_id: ID(r.via_group.to_string()),
                    source: MembershipSource::from_code(r.source),
                    since: r.since,
                })
                .collect(),
        }
    }
}

/// Groups by (member id, mode), batched per request.
pub type MemberGroups = DataLoader<MemberGroupsLoader, HashMapCache>;

/// Loads the reverse lookup of many members at once.
pub struct MemberGroupsLoader(pub PgPool, pub Arc<crate::metrics::Metrics>);

/// A reverse lookup as a scoped reader asks for it: only groups in the subtrees of the roots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScopedMemberKey(pub String, pub Mode, pub super::scope::ScopeRef);

impl Loader<ScopedMemberKey> for MemberGroupsLoader {
    type Value = Vec<Belonging>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ScopedMemberKey],
    ) -> Result<HashMap<ScopedMemberKey, Vec<Belonging>>, Self::Error> {
        self.1.loader_batch("member_groups");
        // One query per (mode, roots): a request has one set of roots.
        let mut batches: HashMap<(Mode, super::scope::ScopeRef), Vec<String>> = HashMap::new();
        for k in keys {
            batches
                .entry((k.1, k.2.clone()))
                .or_default()
                .push(k.0.clone());
        }
        let mut out = HashMap::new();
        for ((mode, roots), ids) in batches {
            let mut found = members::groups_of_within(&self.0, &ids, mode, Some(&roots))
                .await
                .map_err(internal)?;
            for id in ids {
                let v = found.remove(&id).unwrap_or_default();
                out.insert(ScopedMemberKey(id, mode, roots.clone()), v);
            }
        }
        Ok(out)
    }
}

impl Loader<(String, Mode)> for MemberGroupsLoader {
    type Value = Vec<Belonging>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[(String, Mode)],
    ) -> Result<HashMap<(String, Mode), Vec<Belonging>>, Self::Error> {
        self.1.loader_batch("member_groups");
        let mut out = HashMap::new();
        for mode in [Mode::Direct, Mode::Effective] {
            let ids: Vec<String> = keys
                .iter()
                .filter(|k| k.1 == mode)
                .map(|k| k.0.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let mut found = members::groups_of(&self.0, &ids, mode)
                .await
                .map_err(internal)?;
            for id in ids {
                let v = found.remove(&id).unwrap_or_default();
                out.insert((id, mode), v);
            }
        }
        Ok(out)
    }
}

/// `device.groups` / `service.groups`: the reverse lookup, of the groups the caller may
/// read only (filtered in SQL; a caller who may read every group runs the query of old).
pub(crate) async fn groups_of(
    ctx: &Context<'_>,
    member: &str,
    mode: MembershipMode,
) -> Result<Vec<GroupMembership>> {
    let loader = ctx.data_unchecked::<MemberGroups>();
    let found = match super::scope::read_roots(ctx).await? {
        None => loader.load_one((member.to_string(), mode.into())).await?,
        Some(roots) if roots.is_empty() => None,
        Some(roots) => {
            loader
                .load_one(ScopedMemberKey(
                    member.to_string(),
                    mode.into(),
                    super::scope::ScopeRef(roots),
                ))
                .await?
        }
    };
    Ok(found
        .unwrap_or_default()
        .into_iter()
        .map(GroupMembership::from)
        .collect())
}
