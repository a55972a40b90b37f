//! Corral's domain: pure aggregates, their commands, events and errors, the inventory records
//! and the rule language.
//!
//! Nothing here does I/O. Whatever a command needs to know about other aggregates arrives
//! through a services trait (for groups, [`group::GroupDirectory`]).

pub mod access;
pub mod catalog;
pub mod codes;
pub mod dashboard;
pub mod group;
pub mod inventory;
pub mod membership;
pub mod metadata;
pub mod rule;
pub mod sweep;
pub mod text;
pub mod upcast;
pub mod watch;
