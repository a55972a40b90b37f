//! The stored effective membership (`rm_membership.ancestry`, `effective`,
//! `effective_counts`, `group_counts`) equals a from-scratch computation after random
//! sequences of adds, removes, excludes, rule entries, creates, moves and deletes: the
//! reference folds the same events in Rust (the domain's `GroupEntries`, parent links) and
//! sums every direct row into every ancestor. Seeded, so a failure replays; each seed is
//! projected in batches of a random size (so several changes to one entry, and moves between
//! direct changes, land in one batch), then rebuilt from scratch and compared again.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use corral_domain::group::{GroupEvent, GroupType};
use corral_domain::membership::{GroupEntries, MemberSource, MembershipEvent};
use corral_projections::log::CatchUpReader;
use corral_projections::membership::MembershipProjection;
use corral_projections::rebuild::{rebuild, Options};
use corral_projections::runner::{ensure_schema, step, Step};
use corral_projections::Projection;
use corral_tests::TestDb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Map;
use sqlx::PgPool;
use uuid::Uuid;

/// The reference: the tree and each group's entries, folded from the same events.
#[derive(Default)]
struct Reference {
    parent: HashMap<Uuid, Option<Uuid>>,
    entries: HashMap<Uuid, GroupEntries>,
}

/// (members, static members, rule members).
type Counts = (i64, i64, i64);
/// (ancestor, member) -> (n_static, n_rule).
type Rows = BTreeMap<(Uuid, String), (i32, i32)>;

impl Reference {
    fn live(&self) -> Vec<Uuid> {
        self.parent.keys().copied().collect()
    }

    /// `group`'s ancestors with their distance, itself at 0.
    fn ancestors(&self, group: Uuid) -> Vec<(Uuid, i32)> {
        let mut out = vec![(group, 0)];
        let mut at = group;
        while let Some(Some(p)) = self.parent.get(&at) {
            out.push((*p, out.len() as i32));
            at = *p;
        }
        out
    }

    fn children(&self, group: Uuid) -> usize {
        self.parent.values().filter(|p| **p == Some(group)).count()
    }

    /// Direct rows of live groups: (group, member) -> static?
    fn direct(&self) -> BTreeMap<(Uuid, String), bool> {
        let mut out = BTreeMap::new();
        for (group, entries) in &self.entries {
            if !self.parent.contains_key(group) {
                continue;
            }
            for (member, source, _) in entries.direct(None) {
                out.insert((*group, member.to_string()), source == MemberSource::Static);
            }
        }
        out
    }

    /// (ancestor, member) -> (n_static, n_rule), and per group its counts.
    fn effective(&self) -> (Rows, BTreeMap<Uuid, Counts>) {
        let mut rows: Rows = BTreeMap::new();
        for ((group, member), statik) in self.direct() {
            for (a, _) in self.ancestors(group) {
                let row = rows.entry((a, member.clone())).or_default();
                if statik {
                    row.0 += 1;
                } else {
                    row.1 += 1;
                }
            }
        }
        let mut counts: BTreeMap<Uuid, Counts> = BTreeMap::new();
        for ((a, _), (s, r)) in &rows {
            let c = counts.entry(*a).or_default();
            c.0 += 1;
            c.1 += i64::from(*s > 0);
            c.2 += i64::from(*r > 0);
        }
        (rows, counts)
    }
}

/// Inserts one event; returns when it was recorded.
async fn insert(
    pool: &PgPool,
    aggregate: &str,
    id: Uuid,
    seq: i64,
    name: &str,
    version: &str,
    body: serde_json::Value,
) -> DateTime<Utc> {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, '{}') RETURNING recorded_at",
    )
    .bind(aggregate)
    .bind(id.to_string())
    .bind(seq)
    .bind(name)
    .bind(version)
    .bind(body)
    .fetch_one(pool)
    .await
    .expect("insert event")
}

/// Writes random events; returns the reference folded from them.
async fn random_log(pool: &PgPool, rng: &mut StdRng, steps: usize) -> Reference {
    let mut reference = Reference::default();
    let mut seqs: HashMap<(&'static str, Uuid), i64> = HashMap::new();
    let mut next_seq = |aggregate: &'static str, id: Uuid| {
        let s = seqs.entry((aggregate, id)).or_insert(0);
        *s += 1;
        *s
    };
    let root = Uuid::new_v4();
    let created = |parent: Option<Uuid>, n: usize| GroupEvent::GroupCreated {
        group_type: GroupType::Device,
        name: format!("g{n}"),
        parent_id: parent,
        description: None,
        metadata: Map::new(),
        is_system: parent.is_none(),
    };
    let group_event = |pool: &PgPool, id: Uuid, event: GroupEvent, seq: i64| {
        let pool = pool.clone();
        async move {
            let name = event.name();
            insert(
                &pool,
                "Group",
                id,
                seq,
                name,
                GroupEvent::current_version(name).expect("known"),
                serde_json::to_value(&event).expect("json"),
            )
            .await;
        }
    };
    group_event(pool, root, created(None, 0), next_seq("Group", root)).await;
    reference.parent.insert(root, None);
    // Groups in creation order (HashMap order would make a seed replay differently).
    let mut order = vec![root];
    for step_no in 1..=steps {
        let live: Vec<Uuid> = order
            .iter()
            .filter(|g| reference.parent.contains_key(g))
            .copied()
            .collect();
        let pick = |rng: &mut StdRng| live[rng.gen_range(0..live.len())];
        match rng.gen_range(0..20) {
            // Create under a random live group.
            0..=3 => {
                let parent = pick(rng);
                let id = Uuid::new_v4();
                group_event(
                    pool,
                    id,
                    created(Some(parent), step_no),
                    next_seq("Group", id),
                )
                .await;
                reference.parent.insert(id, Some(parent));
                order.push(id);
            }
            // Move a non-root group under a group outside its subtree.
            4 | 5 => {
                let id = pick(rng);
                let new_parent = pick(rng);
                let Some(Some(previous)) = reference.parent.get(&id).copied() else {
                    continue;
                };
                if reference
                    .ancestors(new_parent)
                    .iter()
                    .any(|(a, _)| *a == id)
                {
                    continue;
                }
                let event = GroupEvent::GroupMoved {
                    previous_parent_id: previous,
                    new_parent_id: new_parent,
                };
                group_event(pool, id, event, next_seq("Group", id)).await;
                reference.parent.insert(id, Some(new_parent));
            }
            // Delete a leaf (its entries stay until removal events, as before a purge).
            6 => {
                let id = pick(rng);
                if id == root || reference.children(id) > 0 {
                    continue;
                }
                group_event(pool, id, GroupEvent::GroupDeleted {}, next_seq("Group", id)).await;
                reference.parent.remove(&id);
            }
            // Membership events, over a small pool of ids so that they collide.
            _ => {
                // Now and then one for a deleted group (a purge after the delete).
                // Mostly one of a few hot groups, so that one entry changes several times
                // within a batch.
                let hot: Vec<Uuid> = order
                    .iter()
                    .filter(|g| reference.parent.contains_key(g))
                    .take(3)
                    .copied()
                    .collect();
                let group = if rng.gen_bool(0.05) && !reference.entries.is_empty() {
                    let mut all: Vec<Uuid> = reference.entries.keys().copied().collect();
                    all.sort();
                    all[rng.gen_range(0..all.len())]
                } else if !hot.is_empty() && rng.gen_bool(0.7) {
                    hot[rng.gen_range(0..hot.len())]
                } else {
                    pick(rng)
                };
                let n = rng.gen_range(1..=5);
                let member_ids: Vec<String> = (0..n)
                    .map(|_| format!("d{}", rng.gen_range(0..8)))
                    .collect();
                let source = if rng.gen_bool(0.5) {
                    MemberSource::Static
                } else {
                    MemberSource::Rule
                };
                let member_type = GroupType::Device;
                let event = match rng.gen_range(0..10) {
                    0..=4 => MembershipEvent::MembersAdded {
                        member_type,
                        member_ids,
                        source,
                        rule_version: None,
                        cause: None,
                    },
                    5..=7 => MembershipEvent::MembersRemoved {
                        member_type,
                        member_ids,
                        source,
                        rule_version: None,
                        cause: None,
                    },
                    8 => MembershipEvent::MembersExcluded {
                        member_type,
                        member_ids,
                    },
                    _ => MembershipEvent::MembersUnexcluded {
                        member_type,
                        member_ids,
                    },
                };
                let name = event.name();
                let at = insert(
                    pool,
                    "Membership",
                    group,
                    next_seq("Membership", group),
                    name,
                    MembershipEvent::current_version(name).expect("known"),
                    serde_json::to_value(&event).expect("json"),
                )
                .await;
                reference
                    .entries
                    .entry(group)
                    .or_default()
                    .apply(&event, at);
            }
        }
    }
    reference
}

/// Projects everything in batches of `batch` events.
async fn project(pool: &PgPool, batch: i64) {
    let projection = MembershipProjection;
    ensure_schema(pool, &projection).await.expect("schema");
    let reader = CatchUpReader::for_projection(&projection, batch);
    let schema = projection.live_schema().expect("schema");
    loop {
        match step(pool, &projection, &reader, projection.name(), schema)
            .await
            .expect("step")
        {
            Step::Applied {
                caught_up: true, ..
            } => break,
            Step::Applied { .. } => {}
            Step::Busy => panic!("the projector is busy"),
        }
    }
}

/// Compares the stored model with the reference.
async fn compare(pool: &PgPool, reference: &Reference, context: &str) {
    let mut ancestry: Vec<(Uuid, Uuid, i32)> =
        sqlx::query_as("SELECT group_id, ancestor_id, depth FROM rm_membership.ancestry")
            .fetch_all(pool)
            .await
            .expect("ancestry");
    ancestry.sort();
    let mut expected_ancestry: Vec<(Uuid, Uuid, i32)> = reference
        .live()
        .into_iter()
        .flat_map(|g| {
            reference
                .ancestors(g)
                .into_iter()
                .map(move |(a, d)| (g, a, d))
        })
        .collect();
    expected_ancestry.sort();
    assert_eq!(ancestry, expected_ancestry, "{context}: ancestry");

    let (rows, counts) = reference.effective();
    let stored: BTreeMap<(Uuid, String), (i32, i32)> =
        sqlx::query_as::<_, (Uuid, String, i32, i32)>(
            "SELECT ancestor_id, member_id, n_static, n_rule FROM rm_membership.effective",
        )
        .fetch_all(pool)
        .await
        .expect("effective")
        .into_iter()
        .map(|(a, m, s, r)| ((a, m), (s, r)))
        .collect();
    assert_eq!(stored, rows, "{context}: effective rows");

    let stored: BTreeMap<Uuid, Counts> = sqlx::query_as::<_, (Uuid, i64, i64, i64)>(
        "SELECT group_id, members, static_members, rule_members FROM rm_membership.effective_counts
          WHERE (members, static_members, rule_members) <> (0, 0, 0)",
    )
    .fetch_all(pool)
    .await
    .expect("effective counts")
    .into_iter()
    .map(|(g, m, s, r)| (g, (m, s, r)))
    .collect();
    assert_eq!(stored, counts, "{context}: effective counts");

    // Direct counts are kept for every group with entries, deleted ones included (their
    // rows stay until purged).
    let mut direct_counts: BTreeMap<Uuid, Counts> = BTreeMap::new();
    for (group, entries) in &reference.entries {
        for (_, source, _) in entries.direct(None) {
            let c = direct_counts.entry(*group).or_default();
            c.0 += 1;
            c.1 += i64::from(source == MemberSource::Static);
            c.2 += i64::from(source == MemberSource::Rule);
        }
    }
    let stored: BTreeMap<Uuid, Counts> = sqlx::query_as::<_, (Uuid, i64, i64, i64)>(
        "SELECT group_id, direct_count, static_count, rule_count FROM rm_membership.group_counts
          WHERE (direct_count, static_count, rule_count) <> (0, 0, 0)",
    )
    .fetch_all(pool)
    .await
    .expect("group counts")
    .into_iter()
    .map(|(g, d, s, r)| (g, (d, s, r)))
    .collect();
    assert_eq!(stored, direct_counts, "{context}: direct counts");

    let mut expected: Vec<(Uuid, String, String, DateTime<Utc>)> = Vec::new();
    for (group, entries) in &reference.entries {
        for (member, source, since) in entries.direct(None) {
            let code = if source == MemberSource::Static {
                "S"
            } else {
                "R"
            };
            expected.push((*group, member.to_string(), code.to_string(), since));
        }
    }
    expected.sort();
    let mut stored: Vec<(Uuid, String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT group_id, member_id, source::text, since FROM rm_membership.direct")
            .fetch_all(pool)
            .await
            .expect("direct");
    stored.sort();
    assert_eq!(stored, expected, "{context}: direct rows and their since");
}

#[tokio::test]
async fn stored_effective_membership_equals_a_from_scratch_computation() {
    for seed in 0..8u64 {
        let db = TestDb::new().await;
        let pool = db.pool(4).await;
        let mut rng = StdRng::seed_from_u64(seed);
        let reference = random_log(&pool, &mut rng, 250).await;
        let batch = [1, 3, 17, 5000][seed as usize % 4];
        project(&pool, batch).await;
        compare(
            &pool,
            &reference,
            &format!("seed {seed}, batches of {batch}"),
        )
        .await;
        rebuild(&pool, &MembershipProjection, Options::default(), |_| {})
            .await
            .expect("rebuild");
        compare(&pool, &reference, &format!("seed {seed}, rebuilt")).await;
        pool.close().await;
        db.drop_db().await;
    }
}

/// A read model of an older shape (from a release before effective membership was stored:
/// no shape recorded, no `effective` table) is rebuilt when the projector starts, and then
/// holds the same model as one built from scratch.
#[tokio::test]
async fn an_older_shape_is_rebuilt_at_start() {
    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    let mut rng = StdRng::seed_from_u64(99);
    let reference = random_log(&pool, &mut rng, 120).await;
    project(&pool, 5000).await;
    // What an older release left: the schema without a recorded shape and without the
    // effective tables.
    for statement in [
        "COMMENT ON SCHEMA rm_membership IS NULL",
        "DROP TABLE rm_membership.effective",
        "DROP TABLE rm_membership.effective_counts",
        "DROP TABLE rm_membership.ancestry",
        "DROP TABLE rm_membership.group_counts",
        "CREATE TABLE rm_membership.group_counts (
            group_id uuid PRIMARY KEY, direct_count bigint NOT NULL)",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    ensure_schema(&pool, &MembershipProjection)
        .await
        .expect("schema");
    let shape: Option<String> = sqlx::query_scalar(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace
          WHERE nspname = 'rm_membership'",
    )
    .fetch_one(&pool)
    .await
    .expect("shape");
    assert_eq!(
        shape.as_deref(),
        Some(format!("corral shape {}", MembershipProjection.shape()).as_str())
    );
    compare(&pool, &reference, "rebuilt at start").await;
    pool.close().await;
    db.drop_db().await;
}
