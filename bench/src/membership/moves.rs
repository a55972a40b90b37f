//! Issue 17: what a move costs now that effective membership is stored. The subtree whose
//! effective membership is nearest a tenth of the inventory (100k members at 1M devices)
//! moves under another top-level group and back; each move is timed from the command to the
//! moment the membership projector (which rewrites the effective rows) has applied it,
//! beside the group-tree projector applying the same move (all a move cost before effective
//! membership was stored).

use std::time::{Duration, Instant};

use corral_api::runtime::BoxError;
use corral_domain::group::GroupCommand;
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::groups::GroupCommands;
use corral_projections::membership::read::{self, Mode};
use sqlx::PgPool;
use uuid::Uuid;

use super::{data, Row};

/// Whether projector `name` has applied every Group event.
async fn applied(pool: &PgPool, name: &str) -> Result<bool, BoxError> {
    Ok(sqlx::query_scalar(
        "SELECT NOT EXISTS (
            SELECT 1 FROM events e, projection_checkpoints c
             WHERE c.name = $1 AND e.aggregate_type = 'Group'
               AND (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position))",
    )
    .bind(name)
    .fetch_one(pool)
    .await?)
}

/// Moves `group` under `parent`; returns the seconds until the group tree and the membership
/// projectors applied it.
async fn timed_move(
    pool: &PgPool,
    groups: &GroupCommands,
    group: Uuid,
    parent: Uuid,
) -> Result<(f64, f64), BoxError> {
    let meta = EventMetadata::system(Source::Cli, "bench-membership");
    let started = Instant::now();
    groups
        .execute(
            GroupCommand::Move {
                id: group,
                new_parent_id: parent,
            },
            None,
            &meta,
        )
        .await
        .map_err(|e| format!("moving the subtree: {e}"))?;
    let (mut tree, mut membership) = (None, None);
    while tree.is_none() || membership.is_none() {
        if started.elapsed() > Duration::from_secs(600) {
            return Err("a move was not applied within 600 s".into());
        }
        let now = started.elapsed().as_secs_f64();
        if tree.is_none() && applied(pool, "group_tree").await? {
            tree = Some(now);
        }
        if membership.is_none() && applied(pool, "membership").await? {
            membership = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((tree.unwrap_or_default(), membership.unwrap_or_default()))
}

pub(super) async fn bench(
    pool: &PgPool,
    groups: &GroupCommands,
    tree: &data::Tree,
    devices: usize,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let target = (devices / 10) as i64;
    let counts: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT group_id, members FROM rm_membership.effective_counts")
            .fetch_all(pool)
            .await?;
    let index = |id: Uuid| tree.ids.iter().position(|g| *g == id);
    // Below the top level, nearest the target.
    let (group, members) = counts
        .iter()
        .filter(|(g, _)| index(*g).is_some_and(|i| tree.depth[i] >= 2))
        .min_by_key(|(_, n)| (n - target).abs())
        .copied()
        .ok_or("no group to move")?;
    let i = index(group).ok_or("the moved group is not in the tree")?;
    let home = tree.ids[tree.parent[i].ok_or("the moved group has no parent")?];
    let mut top = i;
    while let Some(p) = tree.parent[top] {
        top = p;
    }
    let away = (0..tree.ids.len())
        .find(|&k| tree.depth[k] == 1 && k != top)
        .map(|k| tree.ids[k])
        .ok_or("no other top-level group")?;
    let before = read::count(pool, away, Mode::Effective, None).await?;
    let (tree_there, members_there) = timed_move(pool, groups, group, away).await?;
    let after = read::count(pool, away, Mode::Effective, None).await?;
    let (tree_back, members_back) = timed_move(pool, groups, group, home).await?;
    let restored = read::count(pool, away, Mode::Effective, None).await?;
    if restored != before || after < before {
        return Err(format!(
            "the move's counts: {before} before, {after} moved in, {restored} moved back"
        )
        .into());
    }
    eprintln!(
        "bench: membership: moved a subtree of {members} members (depth {}) and back: \
         {members_there:.2} / {members_back:.2} s (group tree {tree_there:.2} / {tree_back:.2} s)",
        tree.depth[i]
    );
    for (label, ours, base) in [
        ("there", members_there, tree_there),
        ("back", members_back, tree_back),
    ] {
        rows.push(Row {
            name: format!(
                "move a subtree of {members} effective members ({label}), command to effective \
                 membership applied (s)"
            ),
            corral: format!("{ours:.2}"),
            baseline_name: "same move, command to the group tree applied (s)".into(),
            baseline: format!("{base:.2}"),
            ratio: ours / base.max(1e-6),
            target: "< 10 s at 1M".into(),
        });
    }
    Ok(())
}
