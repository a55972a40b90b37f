//! Read queries.
//!
//! A scoped caller gets only groups it may read (`group.read` on the group's subtree, by the
//! live tree): a lookup of any other group is null, as for a group that does not exist, and
//! `groups` leaves them out in SQL (page, cursors and `totalCount` alike). A group read as of
//! the past is readable when it lies in the scope NOW: a group no longer in the live tree
//! (deleted) is readable only by a global reader.

use async_graphql::{Context, Object, Result, ID};
use corral_domain::group::GroupType as DomainGroupType;
use corral_projections::group_tree::read;
use sqlx::PgPool;
use uuid::Uuid;

use super::errors::{coded, internal};
use super::loaders::{may_read, Groups};
use super::types::{
    decode_walk, paging, prefetch, stale, Group, GroupConnection, GroupType, Marks,
};
use crate::error_codes::ErrorCode;
use corral_projections::group_tree::GROUP_TREE;
use corral_projections::walk;

/// Group queries (part of the `Query` root).
#[derive(Default)]
pub struct GroupQuery;

#[Object]
impl GroupQuery {
    /// The system root group (`Inventory`) of a type; null for a caller whose scope does
    /// not include it.
    async fn root(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] group_type: GroupType,
    ) -> Result<Option<Group>> {
        let id = DomainGroupType::from(group_type).root_id();
        live(ctx, id).await
    }

    /// A group by id. With `asOf` (a time: the last event recorded at or before it) or
    /// `atPosition` (a log position, at most the head), the group as it was then, deleted
    /// since or not (see `deletedAt`, `asOfPosition`); null if it did not exist yet.
    /// Historical reads fold the log and are charged more in query complexity. Null for a
    /// group beyond the caller's scope, judged by the live tree even as of the past (a group
    /// deleted since is readable only with a global binding).
    #[graphql(
        complexity = "child_complexity + if as_of.is_some() || at_position.is_some() { super::history::HISTORY_COST } else { 1 }"
    )]
    async fn group(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        at_position: Option<super::scalars::Position>,
    ) -> Result<Option<Group>> {
        let position = super::history::requested_position(ctx, as_of, at_position).await?;
        let Ok(id) = id.parse::<Uuid>() else {
            return Ok(None);
        };
        if let Some(position) = position {
            // Readability by the current tree, checked before the log is folded.
            return super::history::group(ctx, id, position).await;
        }
        live(ctx, id).await
    }

    /// A group by path, e.g. `Inventory/Site-A/Core` (ignoring case). The path is put in
    /// Unicode NFC first, as names are, so a decomposed `é` finds a group named with `é`.
    /// Null for a group beyond the caller's scope.
    async fn group_by_path(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] group_type: GroupType,
        path: String,
    ) -> Result<Option<Group>> {
        if path.len() > 4096 {
            return Err(coded(ErrorCode::BadUserInput, "path is too long"));
        }
        let t = DomainGroupType::from(group_type).as_str();
        let node = read::by_path(ctx.data_unchecked::<PgPool>(), t, &path)
            .await
            .map_err(internal)?;
        match node {
            Some(n) if may_read(ctx, n.id).await? => Ok(Some(Group::from(n))),
            _ => Ok(None),
        }
    }

    /// Groups of a type, ordered by path; `search` matches names (ignoring case, after
    /// putting it in Unicode NFC as names are). Only groups within the caller's scope,
    /// in the page and in `totalCount` alike.
    ///
    /// Pages form a consistent walk: the cursors of the first page record the log position
    /// (the group tree's checkpoint) it was read at; a later page (`after` or `before` one of
    /// them) fails with `CURSOR_STALE` when a group was created, renamed, moved or deleted
    /// since (anywhere: restart the walk), and otherwise continues the first page's listing
    /// exactly. Other edits (description, metadata, rules) do not end a walk; nodes show their
    /// current fields. `last`/`before` page backward (limits as for `first`).
    #[graphql(
        complexity = "i64::from(first.or(last).unwrap_or(super::types::DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn groups(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] group_type: GroupType,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<GroupConnection> {
        let paging = paging(first, after, last, before)?;
        if search.as_ref().is_some_and(|s| s.chars().count() > 128) {
            return Err(coded(
                ErrorCode::BadUserInput,
                "search must be at most 128 characters",
            ));
        }
        let arg = if paging.backward { "before" } else { "after" };
        let (cursor, marks) = match paging.cursor.as_deref().map(|c| decode_walk(c, arg)) {
            Some(r) => {
                let (a, m) = r?;
                (Some(a), m)
            }
            None => (None, None),
        };
        let pool = ctx.data_unchecked::<PgPool>();
        // The walk's mark: its first page's, or (first page, plain cursor of old) now, read
        // before the page.
        let (marks, check) = match marks {
            Some(m) if m.t.is_some() => (m, true),
            _ => (
                Marks {
                    m: None,
                    t: Some(walk::mark(pool, GROUP_TREE).await.map_err(internal)?),
                },
                false,
            ),
        };
        let t = DomainGroupType::from(group_type).as_str();
        let search = search.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let roots = super::scope::read_roots(ctx).await?;
        // A scoped caller's unfiltered total is the number of groups of the type in its scope,
        // known from the scope's expansion (no second statement).
        let known_total = match (&roots, search) {
            (Some(_), None) => super::scope::scope_count(ctx, t).await?,
            _ => None,
        };
        let (rows, total) = read::search(
            pool,
            t,
            search,
            paging.size + 1,
            cursor.as_ref(),
            paging.backward,
            roots.as_deref(),
            known_total,
        )
        .await
        .map_err(internal)?;
        if check {
            if let Some(mark) = &marks.t {
                if walk::tree_reshaped(pool, mark).await.map_err(internal)? {
                    // `groups` has no historical form: the only advice is a new walk.
                    return Err(stale("the groups", None));
                }
            }
        }
        // The page's rows are the first `size` read, either way.
        let keep = rows.len().min(paging.size as usize);
        prefetch(ctx, &rows[..keep]).await?;
        Ok(GroupConnection::walk_page(
            rows,
            &paging,
            total,
            Some(&marks),
            |n| n.path_key.clone(),
        ))
    }
}

/// The live group `id`, when the caller may read it.
pub(crate) async fn live(ctx: &Context<'_>, id: Uuid) -> Result<Option<Group>> {
    if !may_read(ctx, id).await? {
        return Ok(None);
    }
    Ok(ctx
        .data_unchecked::<Groups>()
        .load_one(id)
        .await?
        .map(Group::from))
}
