//! The Membership aggregate: the static, rule and exclusion entries of one group.
//!
//! DESIGN.md, decision 6: a command's cost must not grow with the group's size. The aggregate
//! therefore keeps no member set at all; it is the group's sequence of membership events (so
//! commits stay ordered and optimistic), and every check reads only the rows of the ids the
//! command carries, through [`MembershipDirectory`] (in production, the write-side
//! `membership_registry`, kept in the events' own transaction, read under a per-group lock).

mod aggregate;
pub mod fold;

pub use aggregate::{
    EntryKind, GroupFacts, MemberSource, Membership, MembershipCommand, MembershipDirectory,
    MembershipError, MembershipEvent, MembershipServices,
};
pub use fold::{DirectChange, Entry, EntryOp, GroupEntries};

/// Most ids one command may carry.
pub const MAX_IDS_PER_COMMAND: usize = 10_000;
/// Most ids one event carries; bigger changes are split into several events.
pub const MAX_IDS_PER_EVENT: usize = 1_000;
/// Most unknown ids an `UNKNOWN_MEMBER` error lists.
pub const MAX_LISTED: usize = 100;
/// Longest member id.
pub const MAX_MEMBER_ID_CHARS: usize = 256;
