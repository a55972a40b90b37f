//! Scopes in resolvers: where the caller may use a permission, and the checks and SQL
//! filters that follow from it (see [`crate::scope`]).
//!
//! Reads outside the caller's scope answer nothing (a lookup is null, a list leaves the group
//! out, counts and pages are filtered in SQL), so that a scoped subject cannot tell a group
//! it may not see from one that does not exist. Writes outside it are `FORBIDDEN`, whether
//! the group exists or not, and write nothing.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::{Context, Result};
use corral_projections::group_tree::read;
use sqlx::PgPool;
use uuid::Uuid;

use super::errors::{coded, internal};
use crate::auth::Actor;
use crate::error_codes::ErrorCode;
use crate::permissions::Permission;
pub use crate::scope::Reach;

/// Where the caller may use `p`: for a scoped caller, every group of its scope (the subtrees
/// of its bindings expanded, sorted; see [`crate::scope::SubtreeCache`]), so that checks are
/// lookups and SQL filters probe a list (`read::scope_filter`).
pub async fn reach(ctx: &Context<'_>, p: Permission) -> Result<Reach> {
    let memo = ctx.data_opt::<ReachMemo>();
    if let Some(found) = memo.and_then(|m| m.get(p)) {
        return Ok(found);
    }
    let found = expanded_reach(ctx, p).await?;
    if let Some(memo) = memo {
        memo.put(p, found.clone());
    }
    Ok(found)
}

/// A scope's groups as a loader key: hashed and compared by identity, not by its (up to
/// thousands of) ids, since a request's keys all share the one list its reach gave.
#[derive(Clone, Debug)]
pub struct ScopeRef(pub Arc<[Uuid]>);

impl PartialEq for ScopeRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ScopeRef {}

impl std::hash::Hash for ScopeRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0).cast::<u8>(), state);
    }
}

impl std::ops::Deref for ScopeRef {
    type Target = [Uuid];
    fn deref(&self) -> &[Uuid] {
        &self.0
    }
}

/// What one request learned of its reach, per permission (the caller's bindings are fixed for
/// a request); emptied after each mutation, whose change of the tree the next check must see.
#[derive(Default)]
pub struct ReachMemo(std::sync::Mutex<std::collections::HashMap<Permission, Reach>>);

impl ReachMemo {
    fn get(&self, p: Permission) -> Option<Reach> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p)
            .cloned()
    }

    fn put(&self, p: Permission, reach: Reach) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p, reach);
    }

    /// Forgets everything (after a mutation).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

async fn expanded_reach(ctx: &Context<'_>, p: Permission) -> Result<Reach> {
    let actor = ctx.data::<Actor>()?;
    let policy = ctx.data::<Arc<crate::policy::Policy>>()?;
    match crate::scope::reach(&policy.table(), actor, p) {
        Reach::Within(roots) => {
            let groups = match ctx.data_opt::<Arc<crate::scope::SubtreeCache>>() {
                Some(cache) => cache.expand(&roots).await.map_err(internal)?.groups.clone(),
                None => read::subtree_ids(ctx.data_unchecked::<PgPool>(), &roots)
                    .await
                    .map_err(internal)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>()
                    .into(),
            };
            if groups.is_empty() {
                Ok(Reach::Nothing)
            } else {
                Ok(Reach::Within(groups))
            }
        }
        other => Ok(other),
    }
}

/// Where the caller's bindings give it `p`, as the groups they name (not expanded): what a
/// long-lived stream keeps, to decide each item by the tree as it stands when it is delivered.
pub fn binding_reach(ctx: &Context<'_>, p: Permission) -> Result<Reach> {
    let actor = ctx.data::<Actor>()?;
    let policy = ctx.data::<Arc<crate::policy::Policy>>()?;
    Ok(crate::scope::reach(&policy.table(), actor, p))
}

/// How many groups of type `group_type` the caller may read, from its scope's expansion
/// (`None`: a global reader, or no cache to ask).
pub async fn scope_count(ctx: &Context<'_>, group_type: &str) -> Result<Option<i64>> {
    let Reach::Within(roots) = binding_reach(ctx, Permission::GroupRead)? else {
        return Ok(None);
    };
    let Some(cache) = ctx.data_opt::<Arc<crate::scope::SubtreeCache>>() else {
        return Ok(None);
    };
    Ok(Some(
        cache
            .expand(&roots)
            .await
            .map_err(internal)?
            .count_of(group_type),
    ))
}

/// The groups the caller may read: `None` for every group. For SQL filters
/// (`read::scope_filter`, `inventory::visible_sql`).
pub async fn read_roots(ctx: &Context<'_>) -> Result<Option<Arc<[Uuid]>>> {
    Ok(match reach(ctx, Permission::GroupRead).await? {
        Reach::All => None,
        Reach::Within(groups) => Some(groups),
        Reach::Nothing => Some(Arc::from(Vec::new())),
    })
}

/// Whether group `g` is one of `groups` (a reach's expanded, sorted groups).
pub fn within(groups: &[Uuid], g: Uuid) -> bool {
    groups.binary_search(&g).is_ok()
}

/// Whether the caller may use `p` on group `g`.
pub async fn allows(ctx: &Context<'_>, p: Permission, g: Uuid) -> Result<bool> {
    Ok(match reach(ctx, p).await? {
        Reach::All => true,
        Reach::Nothing => false,
        Reach::Within(groups) => within(&groups, g),
    })
}

/// `FORBIDDEN` unless the caller may use `p` on group `g` (a write's check: it runs before
/// anything is written).
pub async fn require(ctx: &Context<'_>, p: Permission, g: Uuid) -> Result<()> {
    if allows(ctx, p, g).await? {
        Ok(())
    } else {
        Err(forbidden(p, Some(g)))
    }
}

/// `FORBIDDEN` unless the caller has `p` everywhere (a global binding).
pub async fn require_global(ctx: &Context<'_>, p: Permission) -> Result<()> {
    match reach(ctx, p).await? {
        Reach::All => Ok(()),
        _ => Err(forbidden(p, None)),
    }
}

/// The error of a refused write: `FORBIDDEN`, with the group in `extensions.groupId` (the
/// refused-attempts store records it; see [`crate::refusals`]).
pub fn forbidden(p: Permission, g: Option<Uuid>) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    let message = match g {
        Some(g) => format!("{} is not granted on group {g}", p.as_str()),
        None => format!("{} is not granted everywhere", p.as_str()),
    };
    let err = coded(ErrorCode::Forbidden, message);
    match g {
        Some(g) => err.extend_with(|_, e| e.set("groupId", g.to_string())),
        None => err,
    }
}

/// Which of `ids` the caller may read.
pub async fn readable(ctx: &Context<'_>, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
    Ok(match reach(ctx, Permission::GroupRead).await? {
        Reach::All => ids.iter().copied().collect(),
        Reach::Nothing => HashSet::new(),
        Reach::Within(groups) => ids
            .iter()
            .copied()
            .filter(|g| within(&groups, *g))
            .collect(),
    })
}

/// Whether the caller may read group `g`.
pub async fn may_read(ctx: &Context<'_>, g: Uuid) -> Result<bool> {
    allows(ctx, Permission::GroupRead, g).await
}
