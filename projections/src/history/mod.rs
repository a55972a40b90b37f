//! Time travel: groups, the tree and memberships as they were at a log position.
//!
//! Nothing is stored for this: every answer folds events read straight from the public log
//! (`event_log` joined with `events`), keeping those at or before the position. "As of a time
//! `t`" is the position [`crate::public_log::position_at`] gives for `t`. Events are decoded
//! into `GroupEvent` / `MembershipEvent` (upcast first) and matched exhaustively.
//!
//! Costs (see `docs/membership.md`, "Time travel"):
//! - [`groups_at`]: the Group events of the groups asked for and of their ancestors (one
//!   query per level of the deepest chain, probing the events' primary key);
//! - [`tree_at`]: every structural Group event (create, rename, move, delete) up to the
//!   position, in one query;
//! - [`members_at`]: the tree (effective only) plus the Membership events of the subtree's
//!   groups up to the position, in one query, folded in memory.
//!
//! The folds are pure functions over decoded events ([`GroupFold`], [`TreeFold`], and for
//! memberships the domain's one fold, `corral_domain::membership::GroupEntries`) and are
//! tested without a database.
//!
//! - `group_fold`: one group's state as of a position;
//! - `query`: groups with their paths (following parent chains), children;
//! - `tree`: the tree's shape;
//! - `membership`: members, direct and effective;
//! - `member`: one member's groups (and entries), direct and effective, through its own
//!   Membership events only.

mod group_fold;
mod member;
mod membership;
mod query;
mod tree;

pub use group_fold::{GroupEventRow, GroupFold, HistoricalGroup, HistoricalRule};
pub use member::{group_sets_at, groups_of_at, member_entries_at, TreeAt};
pub use membership::{members_at, membership_folds, resolve_members, HistoricalMember};
pub use query::{children_at, group_at, groups_at};
pub use tree::{tree_at, TreeEvent, TreeFold, TreeNode};

/// Longest parent chain followed (a guard against corrupt data; real trees are far shallower).
const MAX_CHAIN: usize = 256;
