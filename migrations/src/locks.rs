//! Every PostgreSQL advisory lock Corral takes, declared once.
//!
//! Two features that pick the same key silently serialize each other, or starve one another
//! for the life of a process (the health refresh and the sweep dispatcher once shared a key,
//! so whichever started first kept the other from ever running). So a key is never written
//! anywhere else: code names a [`Lock`] or a [`KeyedLock`], and the tests below fail when two
//! locks share a key or when a file takes an advisory lock without this registry.
//!
//! PostgreSQL keeps two advisory key spaces that never overlap: one 64-bit key, or two 32-bit
//! keys.
//! - [`Lock`]s (one per purpose: a global lock or a singleton worker's leadership) use the
//!   64-bit space, every key of the form `0x636f_7272_xxxx_xxxx` ("corr"), all above
//!   `i32::MAX`.
//! - SQL functions in the migrations lock `hashtext(name)` for the names in [`SQL_HASHED`]:
//!   also the 64-bit space, but `hashtext` is a 32-bit value, so these never equal a [`Lock`].
//! - [`KeyedLock`]s (one per entity: a group, a stream, a projection) use the two-key space:
//!   `(class, hash of the entity)`, one class per kind.

/// A lock with one fixed 64-bit key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lock {
    /// Serializes migrators (`corral migrate`, every start).
    Migrations,
    /// The group hierarchy: moves, deletes and rule changes take it exclusively, creates,
    /// renames and membership commands shared.
    Tree,
    /// Leadership of the rule evaluator.
    RuleEvaluator,
    /// Telemetry ingest, rollup refresh, backfill and retention of one database (transaction
    /// lock, so that a refresh never misses an ingest).
    Health,
    /// Leadership of the sweep dispatcher.
    SweepDispatcher,
    /// Leadership of the sweep monitor (deadlines, claims).
    SweepMonitor,
    /// Leadership of the rollup refresh worker (the `health_dirty` queue).
    HealthRefresh,
    /// Leadership of the capabilities worker.
    Capabilities,
    /// Leadership of the purge of deleted groups' memberships.
    MembershipPurge,
    /// Leadership of the worker that records token expiries (`TokenExpired`).
    TokenExpiry,
    /// Leadership of the NATS membership feed (durable membership watches).
    MembershipFeed,
}

impl Lock {
    /// Every lock, in key order.
    pub const ALL: [Lock; 11] = [
        Lock::Migrations,
        Lock::Tree,
        Lock::RuleEvaluator,
        Lock::Health,
        Lock::SweepDispatcher,
        Lock::SweepMonitor,
        Lock::HealthRefresh,
        Lock::Capabilities,
        Lock::MembershipPurge,
        Lock::TokenExpiry,
        Lock::MembershipFeed,
    ];

    /// The key, for `pg_advisory_lock($1)` and friends.
    pub const fn key(self) -> i64 {
        const CORRAL: i64 = 0x636f_7272_616c_0000;
        CORRAL
            | match self {
                Lock::Migrations => 0x0001,
                Lock::Tree => 0x0002,
                Lock::RuleEvaluator => 0x0003,
                Lock::Health => 0x0005,
                Lock::SweepDispatcher => 0x0006,
                Lock::SweepMonitor => 0x0007,
                Lock::HealthRefresh => 0x0008,
                Lock::Capabilities => 0x0010,
                Lock::MembershipPurge => 0x0011,
                Lock::TokenExpiry => 0x0012,
                Lock::MembershipFeed => 0x0013,
            }
    }

    /// A stable name (metrics labels, `corral projections status`).
    pub const fn name(self) -> &'static str {
        match self {
            Lock::Migrations => "migrations",
            Lock::Tree => "group_tree",
            Lock::RuleEvaluator => "rule_evaluator",
            Lock::Health => "health",
            Lock::SweepDispatcher => "sweep_dispatcher",
            Lock::SweepMonitor => "sweep_monitor",
            Lock::HealthRefresh => "health_refresh",
            Lock::Capabilities => "capabilities",
            Lock::MembershipPurge => "membership_purge",
            Lock::TokenExpiry => "token_expiry",
            Lock::MembershipFeed => "membership_feed",
        }
    }

    /// Whether holding it makes a process the cluster's one instance of a worker.
    pub const fn is_leadership(self) -> bool {
        matches!(
            self,
            Lock::RuleEvaluator
                | Lock::SweepDispatcher
                | Lock::SweepMonitor
                | Lock::HealthRefresh
                | Lock::Capabilities
                | Lock::MembershipPurge
                | Lock::TokenExpiry
                | Lock::MembershipFeed
        )
    }

    /// The singleton workers' locks.
    pub fn leaderships() -> impl Iterator<Item = Lock> {
        Self::ALL.into_iter().filter(|l| l.is_leadership())
    }
}

/// Names whose `hashtext` SQL functions of the migrations lock (in transactions).
pub const SQL_HASHED: [&str; 3] = [
    "corral_telemetry_partitions",
    "corral_sweep_partitions",
    EVENT_WRITERS,
];

/// Taken in shared mode by every transaction that writes events, before it has a transaction
/// id, until its end (`corral_announce_event_writer()` and the statement trigger on `events`,
/// migration 0012): readers of the log wait only for the transactions that hold it
/// (`corral_projections::log::horizon`).
/// Key `hashtext('corral_event_writers')`; nothing takes it exclusively.
pub const EVENT_WRITERS: &str = "corral_event_writers";

/// A lock per entity, in the two-key space: `(class, hash)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyedLock {
    /// The children of one parent group (sibling names), by the parent's id.
    GroupParent,
    /// The membership commands of one group, by the group's id.
    GroupMembers,
    /// Leadership of the NATS publisher of one stream, by `hashtext(stream)`.
    PublisherStream,
    /// Creating or rebuilding one projection's tables, by `hashtext(projection name)`.
    ProjectionSchema,
}

impl KeyedLock {
    /// Every kind, in class order.
    pub const ALL: [KeyedLock; 4] = [
        KeyedLock::GroupParent,
        KeyedLock::GroupMembers,
        KeyedLock::PublisherStream,
        KeyedLock::ProjectionSchema,
    ];

    /// The first key.
    pub const fn class(self) -> i32 {
        const CORR: i32 = 0x636f_7200;
        CORR | match self {
            KeyedLock::GroupParent => 0x01,
            KeyedLock::GroupMembers => 0x02,
            // The publisher's class predates this registry ("corp").
            KeyedLock::PublisherStream => 0x70,
            KeyedLock::ProjectionSchema => 0x03,
        }
    }

    /// A stable name.
    pub const fn name(self) -> &'static str {
        match self {
            KeyedLock::GroupParent => "group_parent",
            KeyedLock::GroupMembers => "group_members",
            KeyedLock::PublisherStream => "publisher",
            KeyedLock::ProjectionSchema => "projection_schema",
        }
    }

    /// The keys for an entity identified by a UUID (its 128 bits folded to 32).
    pub const fn for_id(self, id: u128) -> (i32, i32) {
        let folded = (id ^ (id >> 32) ^ (id >> 64) ^ (id >> 96)) as u32;
        (self.class(), folded as i32)
    }
}

/// Whether `key` (a 64-bit key) belongs to Corral's [`Lock`]s.
pub fn lock_of_key(key: i64) -> Option<Lock> {
    Lock::ALL.into_iter().find(|l| l.key() == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};

    #[test]
    fn every_lock_has_its_own_key_and_name() {
        let keys: HashSet<i64> = Lock::ALL.iter().map(|l| l.key()).collect();
        assert_eq!(keys.len(), Lock::ALL.len(), "two locks share a key");
        let names: HashSet<&str> = Lock::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(names.len(), Lock::ALL.len(), "two locks share a name");
        let classes: HashSet<i32> = KeyedLock::ALL.iter().map(|l| l.class()).collect();
        assert_eq!(
            classes.len(),
            KeyedLock::ALL.len(),
            "two keyed locks share a class"
        );
        let mut sorted = Lock::ALL;
        sorted.sort();
        assert_eq!(sorted, Lock::ALL, "ALL lists every lock in order");
        for lock in Lock::ALL {
            assert_eq!(lock_of_key(lock.key()), Some(lock));
        }
    }

    #[test]
    fn single_keys_never_equal_a_hashtext_value() {
        // hashtext() is an int4: every fixed key lies above that range.
        for lock in Lock::ALL {
            assert!(lock.key() > i64::from(i32::MAX), "{lock:?}");
        }
        let distinct: HashSet<&str> = SQL_HASHED.iter().copied().collect();
        assert_eq!(distinct.len(), SQL_HASHED.len());
    }

    #[test]
    fn leadership_locks_are_the_singleton_workers() {
        let leaders: Vec<&str> = Lock::leaderships().map(|l| l.name()).collect();
        assert_eq!(
            leaders,
            [
                "rule_evaluator",
                "sweep_dispatcher",
                "sweep_monitor",
                "health_refresh",
                "capabilities",
                "membership_purge",
                "token_expiry",
                "membership_feed"
            ]
        );
    }

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf()
    }

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    sources(&path, out);
                }
            } else if name.ends_with(".rs") || name.ends_with(".sql") {
                out.push(path);
            }
        }
    }

    /// Whether `text` names `Lock::` or `KeyedLock::` as a path of its own (not `RwLock::`).
    fn names_registry(text: &str) -> bool {
        ["Lock::", "KeyedLock::"].iter().any(|name| {
            text.match_indices(name).any(|(at, _)| {
                at == 0
                    || !text[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
    }

    #[test]
    fn the_scan_tells_the_registry_from_look_alikes() {
        assert!(names_registry("use crate::locks::Lock;\n x(Lock::Tree)"));
        assert!(names_registry("locks::KeyedLock::GroupParent"));
        assert!(!names_registry("std::sync::RwLock::new(1)"));
        assert!(!names_registry("MyLock::new()"));
    }

    /// A lock taken anywhere but through this registry fails the build's tests: no file may
    /// spell a Corral key, and every file that takes an advisory lock names the registry.
    #[test]
    fn advisory_locks_are_only_taken_through_this_registry() {
        let root = workspace();
        let mut files = Vec::new();
        for dir in [
            "domain",
            "projections",
            "workers",
            "api",
            "migrations",
            "tests",
        ] {
            sources(&root.join(dir), &mut files);
        }
        assert!(files.len() > 50, "found only {} source files", files.len());
        let this = root.join("migrations/src/locks.rs");
        let mut offenders = Vec::new();
        for file in files.iter().filter(|f| **f != this) {
            let text = std::fs::read_to_string(file).expect("read source");
            let rel = file
                .strip_prefix(&root)
                .unwrap_or(file)
                .display()
                .to_string();
            if text.contains("0x636f_7272") || text.contains("0x636f7272") {
                offenders.push(format!("{rel}: spells a Corral lock key"));
            }
            if !text.contains("advisory_") {
                continue;
            }
            if rel.ends_with(".sql") {
                for (i, line) in text.lines().enumerate() {
                    if !line.contains("advisory_") {
                        continue;
                    }
                    let named = SQL_HASHED
                        .iter()
                        .any(|n| line.contains(&format!("hashtext('{n}')")));
                    if !named {
                        offenders.push(format!(
                            "{rel}:{}: an advisory lock not in locks::SQL_HASHED",
                            i + 1
                        ));
                    }
                }
            } else {
                if !names_registry(&text) {
                    offenders.push(format!(
                        "{rel}: takes an advisory lock without naming locks::Lock or locks::KeyedLock"
                    ));
                }
                // A key written as a number where the lock is taken, in the SQL or bound.
                let lines: Vec<&str> = text.lines().collect();
                for (i, line) in lines.iter().enumerate() {
                    let Some(at) = line.find("advisory_") else {
                        continue;
                    };
                    let call = &line[at..];
                    let literal_in_sql = call
                        .find('(')
                        .map(|p| call[p + 1..].trim_start())
                        .is_some_and(|arg| {
                            arg.starts_with(|c: char| c.is_ascii_digit() || c == '-')
                        });
                    let literal_bound = lines[i + 1..lines.len().min(i + 6)].iter().any(|l| {
                        l.trim_start().strip_prefix(".bind(").is_some_and(|arg| {
                            arg.starts_with(|c: char| c.is_ascii_digit() || c == '-')
                        })
                    });
                    if literal_in_sql || literal_bound {
                        offenders.push(format!("{rel}:{}: a lock key written as a number", i + 1));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{}", offenders.join("\n"));
    }
}
