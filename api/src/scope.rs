//! Scopes: which groups a caller's bindings reach for one permission.
//!
//! A global binding of a role reaches every group for each permission the role has; a binding
//! on group G reaches G's subtree, through the closure table as the tree stands at the request
//! (moving a subtree changes who may see it at once, with no policy edit). Permissions that
//! only global bindings grant ([`Scoping::Global`]) ignore scoped bindings.

use std::collections::BTreeSet;
use std::sync::Arc;

use corral_projections::log::Cursor;

use uuid::Uuid;

use crate::auth::Actor;
use crate::permissions::{Permission, Scoping};
use crate::policy::PolicyTable;

/// A binding of a role to one group's subtree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopedRole {
    /// The role.
    pub role: String,
    /// The group whose subtree it applies to.
    pub scope: Uuid,
}

/// Where a caller may use one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Everywhere (a global binding grants it).
    All,
    /// In the subtrees of these groups (sorted, without repeats; never empty).
    Within(Arc<[Uuid]>),
    /// Nowhere.
    Nothing,
}

impl Reach {
    /// The roots to filter by in SQL: `None` for everywhere, `Some(&[])` for nowhere.
    pub fn roots(&self) -> Option<&[Uuid]> {
        match self {
            Reach::All => None,
            Reach::Within(roots) => Some(roots),
            Reach::Nothing => Some(&[]),
        }
    }

    /// Whether it reaches nothing.
    pub fn is_nothing(&self) -> bool {
        matches!(self, Reach::Nothing)
    }
}

/// Where `actor` may use permission `p` under `table`.
pub fn reach(table: &PolicyTable, actor: &Actor, p: Permission) -> Reach {
    if actor.roles.iter().any(|role| table.grants(role, p)) {
        return Reach::All;
    }
    if p.scoping() == Scoping::Global || actor.scoped.is_empty() {
        return Reach::Nothing;
    }
    // Bindings come sorted by role: ask the table once per role.
    let mut roots = BTreeSet::new();
    let mut last: Option<(&str, bool)> = None;
    for binding in actor.scoped.iter() {
        let granted = match last {
            Some((role, granted)) if role == binding.role => granted,
            _ => table.grants(&binding.role, p),
        };
        last = Some((&binding.role, granted));
        if granted {
            roots.insert(binding.scope);
        }
    }
    if roots.is_empty() {
        Reach::Nothing
    } else {
        Reach::Within(roots.into_iter().collect::<Vec<_>>().into())
    }
}

/// Scopes expanded to their groups, per set of roots and version of the group tree, shared by
/// a process's requests. A scoped request's checks are then lookups in a sorted list, and its
/// SQL filters probe a list of group ids instead of the closure table once per root.
///
/// The version is the group-tree projector's checkpoint as this process last heard it: it is
/// read before the tree is, so an entry is never older than its key, and a move (which moves
/// the checkpoint) is followed as soon as its checkpoint is heard of, within milliseconds.
pub struct SubtreeCache {
    pool: sqlx::PgPool,
    waiter: Option<corral_projections::waiter::ConsistencyWaiter>,
    entries: std::sync::Mutex<std::collections::HashMap<Arc<[Uuid]>, Expanded>>,
}

/// A scope's groups, and the tree version they were read at.
type Expanded = (Cursor, Arc<Expansion>);

/// A scope expanded: its groups, and how many of each group type.
#[derive(Debug)]
pub struct Expansion {
    /// Every group of the scope, sorted.
    pub groups: Arc<[Uuid]>,
    /// How many of them are of each group type (`DEVICE`, `SERVICE`).
    pub per_type: Vec<(String, i64)>,
}

impl Expansion {
    /// How many groups of type `group_type` the scope holds.
    pub fn count_of(&self, group_type: &str) -> i64 {
        self.per_type
            .iter()
            .find(|(t, _)| t == group_type)
            .map_or(0, |(_, n)| *n)
    }
}

/// Most sets of roots a process keeps expanded (the cache is emptied when it is full).
const MAX_CACHED_SCOPES: usize = 1_024;

impl SubtreeCache {
    /// A cache over `pool`'s tree; without a waiter nothing is kept (every call reads the tree).
    pub fn new(
        pool: sqlx::PgPool,
        waiter: Option<corral_projections::waiter::ConsistencyWaiter>,
    ) -> Self {
        SubtreeCache {
            pool,
            waiter,
            entries: Default::default(),
        }
    }

    /// Every group in the subtrees of `roots` (sorted, roots included), by the live tree.
    pub async fn expand(
        &self,
        roots: &[Uuid],
    ) -> Result<Arc<Expansion>, corral_projections::StoreError> {
        let version = self
            .waiter
            .as_ref()
            .and_then(|w| w.checkpoint(corral_projections::group_tree::GROUP_TREE));
        if let Some(version) = version {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, groups)) = entries.get(roots) {
                if *at == version {
                    return Ok(groups.clone());
                }
            }
        }
        let rows = corral_projections::group_tree::read::subtree_ids(&self.pool, roots).await?;
        let mut per_type: Vec<(String, i64)> = vec![];
        for (_, t) in &rows {
            match per_type.iter_mut().find(|(known, _)| known == t) {
                Some((_, n)) => *n += 1,
                None => per_type.push((t.clone(), 1)),
            }
        }
        let groups = Arc::new(Expansion {
            groups: rows
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
                .into(),
            per_type,
        });
        if let Some(version) = version {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= MAX_CACHED_SCOPES {
                entries.clear();
            }
            entries.insert(Arc::from(roots), (version, groups.clone()));
        }
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Permission::*;

    fn scoped(role: &str, scope: Uuid) -> ScopedRole {
        ScopedRole {
            role: role.into(),
            scope,
        }
    }

    #[tokio::test]
    async fn global_bindings_reach_everything_and_scoped_ones_their_subtrees() {
        let t = PolicyTable::built_in().await.expect("policy");
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let mut actor = Actor::with_role("s", "viewer", "r");
        assert_eq!(reach(&t, &actor, GroupRead), Reach::All);
        assert_eq!(reach(&t, &actor, MembershipEdit), Reach::Nothing);
        actor.scoped = vec![scoped("operator", a), scoped("viewer", b)];
        assert_eq!(reach(&t, &actor, GroupRead), Reach::All, "global wins");
        assert_eq!(
            reach(&t, &actor, MembershipEdit),
            Reach::Within(vec![a].into())
        );
        actor.roles.clear();
        assert_eq!(
            reach(&t, &actor, GroupRead),
            Reach::Within(vec![b, a].into())
        );
        assert_eq!(
            reach(&t, &actor, InventoryWrite),
            Reach::Nothing,
            "inventory.write is granted by global bindings only"
        );
        assert_eq!(reach(&t, &actor, GroupCreate), Reach::Nothing);
        assert_eq!(Reach::Nothing.roots(), Some(&[][..]));
        assert_eq!(Reach::All.roots(), None);
    }
}
