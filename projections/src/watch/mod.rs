//! Membership watches: who enters and leaves a group's direct or effective membership, event
//! by event, for the `membershipChanges` subscription and the NATS membership feed alike (one
//! logic, two readers).
//!
//! - `fold`: the pure decisions ([`EffectiveWatch`]), unit-tested without a database;
//! - `load`: a watch folded as of a position, and one log entry applied to it (loading a
//!   subtree that moves in as of that entry);
//! - [`registry`]: the durable watches of the NATS feed, folded from their `MembershipWatch`
//!   events;
//! - here: how the changes of one position are numbered, and the cursor that resumes inside a
//!   position.
//!
//! **Numbering.** One event can cause many changes (a subtree of 10,000 members moving in).
//! The changes of one position come out of the fold in a deterministic order, so every reader
//! numbers them alike: `index` 0, 1, 2, ... within the position, and `last` on the final one.
//! The cursor `"<position>:<index>"` names one change; resuming after it replays the position
//! and skips what the cursor covers.

mod fold;
mod load;
pub mod registry;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

pub use fold::{EffectiveWatch, MembershipChangeKind, Step, WatchChange};
pub use load::{apply, decode, filter, load, LoadError, WatchEvent};

/// Most membership entries one watch (a subscription, a watch of the NATS feed) may hold: its
/// memory. Measured at about 290 bytes per entry (`a_watch_of_a_million_entries_costs_its_
/// resident_memory`: 288 MB for 1,000,000 entries of 36-character ids), so a full watch holds
/// about 145 MB; with 16 subscriptions per connection the cap is not lifted
/// (`docs/integrators.md`, "What a watch costs").
pub const MAX_WATCHED_ENTRIES: usize = 500_000;

/// A change with its place in the log: the position of the event that caused it and its index
/// among that event's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedChange {
    /// The position of the event.
    pub position: i64,
    /// When the event was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Its index among the changes of that position (from 0).
    pub index: u32,
    /// Whether it is the last change of that position.
    pub last: bool,
    /// The change.
    pub change: WatchChange,
}

impl NumberedChange {
    /// Its cursor.
    pub fn cursor(&self) -> ChangeCursor {
        ChangeCursor {
            position: self.position,
            index: self.index,
        }
    }
}

/// Numbers the changes of one position.
pub fn number(
    position: i64,
    recorded_at: DateTime<Utc>,
    changes: Vec<WatchChange>,
) -> Vec<NumberedChange> {
    let n = changes.len();
    changes
        .into_iter()
        .enumerate()
        .map(|(i, change)| NumberedChange {
            position,
            recorded_at,
            index: i as u32,
            last: i + 1 == n,
            change,
        })
        .collect()
}

/// One change's place: `"<position>:<index>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeCursor {
    /// The position of the event.
    pub position: i64,
    /// The change's index within it.
    pub index: u32,
}

impl ChangeCursor {
    /// Whether `change` comes after this cursor (is still to be delivered).
    pub fn precedes(&self, change: &NumberedChange) -> bool {
        (change.position, change.index) > (self.position, self.index)
    }
}

impl fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.position, self.index)
    }
}

impl FromStr for ChangeCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(40).collect();
        let bad =
            || format!("{shown:?} is not a membership change cursor (\"<position>:<index>\")");
        let (p, i) = s.split_once(':').ok_or_else(bad)?;
        let position: i64 = p.parse().map_err(|_| bad())?;
        let index: u32 = i.parse().map_err(|_| bad())?;
        if position < 1 {
            return Err(bad());
        }
        Ok(Self { position, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn change(id: &str) -> WatchChange {
        WatchChange {
            kind: MembershipChangeKind::Entered,
            member_id: id.into(),
            source: corral_domain::membership::MemberSource::Static,
            group: Uuid::nil(),
            cause: None,
        }
    }

    #[test]
    fn the_changes_of_a_position_are_numbered_and_the_last_is_flagged() {
        let numbered = number(7, Utc::now(), vec![change("a"), change("b"), change("c")]);
        let places: Vec<_> = numbered.iter().map(|c| (c.index, c.last)).collect();
        assert_eq!(places, [(0, false), (1, false), (2, true)]);
        assert_eq!(numbered[1].cursor().to_string(), "7:1");
        assert!(number(8, Utc::now(), vec![]).is_empty());
    }

    #[test]
    fn a_cursor_resumes_inside_its_position() {
        let numbered = number(7, Utc::now(), vec![change("a"), change("b"), change("c")]);
        let cursor: ChangeCursor = "7:1".parse().expect("cursor");
        let kept: Vec<_> = numbered.iter().filter(|c| cursor.precedes(c)).collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].change.member_id, "c");
        let later = number(8, Utc::now(), vec![change("d")]);
        assert!(cursor.precedes(&later[0]));
        for bad in ["", "7", "7:", ":1", "a:1", "7:-1", "0:0", "-3:1", "7:1:2"] {
            assert!(bad.parse::<ChangeCursor>().is_err(), "{bad:?}");
        }
    }
}
