//! "One membership fold" although one copy is SQL: the `membership_registry` trigger (it runs
//! in the transaction that commits the events, so it cannot call Rust) and the domain's
//! `GroupEntries` must hold the same entries after any sequence of Membership events. Varied
//! sequences (seeded, so a failure replays) go through the real trigger and through the fold.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use corral_domain::group::GroupType;
use corral_domain::membership::{EntryKind, GroupEntries, MemberSource, MembershipEvent};
use corral_tests::TestDb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const KINDS: [EntryKind; 3] = [EntryKind::Static, EntryKind::Rule, EntryKind::Excluded];

/// A random event over a small pool of ids (so adds, removes and exclusions collide often),
/// with the occasional duplicate id and an id that has no entry.
fn random_event(rng: &mut StdRng) -> MembershipEvent {
    let n = rng.gen_range(1..=4);
    let member_ids: Vec<String> = (0..n)
        .map(|_| format!("m{}", rng.gen_range(0..8)))
        .collect();
    let source = if rng.gen_bool(0.5) {
        MemberSource::Static
    } else {
        MemberSource::Rule
    };
    let member_type = GroupType::Device;
    match rng.gen_range(0..4) {
        0 => MembershipEvent::MembersAdded {
            member_type,
            member_ids,
            source,
            rule_version: None,
            cause: None,
        },
        1 => MembershipEvent::MembersRemoved {
            member_type,
            member_ids,
            source,
            rule_version: None,
            cause: None,
        },
        2 => MembershipEvent::MembersExcluded {
            member_type,
            member_ids,
        },
        _ => MembershipEvent::MembersUnexcluded {
            member_type,
            member_ids,
        },
    }
}

/// The trigger's entries of `group`, and its per-kind counts.
async fn registry(
    pool: &sqlx::PgPool,
    group: Uuid,
) -> (BTreeMap<char, BTreeSet<String>>, BTreeMap<char, i64>) {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT kind::text, member_id FROM membership_registry WHERE group_id = $1")
            .bind(group)
            .fetch_all(pool)
            .await
            .expect("registry");
    let mut entries: BTreeMap<char, BTreeSet<String>> = BTreeMap::new();
    for (kind, id) in rows {
        entries
            .entry(kind.chars().next().expect("kind"))
            .or_default()
            .insert(id);
    }
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind::text, n FROM membership_registry_counts WHERE group_id = $1 AND n <> 0",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .expect("counts");
    let counts = counts
        .into_iter()
        .map(|(k, n)| (k.chars().next().expect("kind"), n))
        .collect();
    (entries, counts)
}

fn folded(fold: &GroupEntries) -> (BTreeMap<char, BTreeSet<String>>, BTreeMap<char, i64>) {
    let mut entries = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for kind in KINDS {
        let ids: BTreeSet<String> = fold.ids(kind).into_iter().map(str::to_string).collect();
        if !ids.is_empty() {
            counts.insert(kind.code(), ids.len() as i64);
            entries.insert(kind.code(), ids);
        }
    }
    (entries, counts)
}

#[tokio::test]
async fn the_registry_trigger_and_the_rust_fold_agree_on_varied_sequences() {
    let db = TestDb::new().await;
    let pool = db.pool(2).await;
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let group = Uuid::new_v4();
        let mut fold = GroupEntries::default();
        let mut history = Vec::new();
        for sequence in 1..=40i64 {
            let event = random_event(&mut rng);
            history.push(event.clone());
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                     event_version, payload, metadata)
                 VALUES ('Membership', $1, $2, $3, $4, $5, '{}')",
            )
            .bind(group.to_string())
            .bind(sequence)
            .bind(event.name())
            .bind(MembershipEvent::current_version(event.name()).expect("a known type"))
            .bind(serde_json::to_value(&event).expect("json"))
            .execute(&pool)
            .await
            .expect("insert");
            fold.apply(&event, Utc::now());
            assert_eq!(
                registry(&pool, group).await,
                folded(&fold),
                "seed {seed}, after event {sequence}: {history:#?}"
            );
        }
    }
    pool.close().await;
    db.drop_db().await;
}
