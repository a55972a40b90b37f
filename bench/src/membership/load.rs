//! Setup of the membership suite (not measured): the inventory by COPY, the group tree and
//! the direct memberships through the real commands, then waiting for the projectors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_api::runtime::{self, BoxError};
use corral_domain::group::{GroupCommand, GroupType};
use corral_domain::membership::{MemberSource, MembershipCommand, MAX_IDS_PER_COMMAND};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::groups::GroupCommands;
use corral_projections::membership::MembershipCommands;
use futures::{stream, StreamExt, TryStreamExt};
use sqlx::PgPool;
use uuid::Uuid;

use super::data::{self, Tree};
use super::Scale;

/// Rows per COPY statement (one transaction each).
const COPY_CHUNK: usize = 50_000;
/// Commands in flight while loading.
const CONCURRENCY: usize = 4;

/// Copies devices `0..devices` into `devices`.
pub(super) async fn devices(pool: &PgPool, seed: u64, devices: usize) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut next_report = 0;
    for start in (0..devices).step_by(COPY_CHUNK) {
        let end = (start + COPY_CHUNK).min(devices);
        let mut text = String::with_capacity((end - start) * 320);
        for i in start..end {
            data::copy_line(&data::device(seed, i), &mut text);
        }
        let mut copy = conn
            .copy_in_raw(&format!("COPY devices ({}) FROM STDIN", data::COPY_COLUMNS))
            .await?;
        copy.send(text.into_bytes()).await?;
        copy.finish().await?;
        if end >= next_report || end == devices {
            eprintln!(
                "bench: membership: {end}/{devices} devices copied ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            next_report = end + devices / 5;
        }
    }
    Ok(())
}

/// Creates the tree's groups through `GroupCommands`, level by level.
pub(super) async fn groups(groups: &Arc<GroupCommands>, tree: &Tree) -> Result<(), BoxError> {
    let started = Instant::now();
    let meta = EventMetadata::system(Source::Cli, "bench-membership");
    let root = GroupType::Device.root_id();
    for depth in 1..=data::DEPTH {
        let level: Vec<usize> = (0..tree.ids.len())
            .filter(|&i| tree.depth[i] == depth)
            .collect();
        stream::iter(level)
            .map(|i| {
                let (groups, meta) = (groups.clone(), meta.clone());
                let command = GroupCommand::Create {
                    id: tree.ids[i],
                    name: tree.name(i),
                    group_type: GroupType::Device,
                    parent_id: tree.parent[i].map_or(root, |p| tree.ids[p]),
                    description: None,
                    metadata: None,
                };
                async move {
                    groups
                        .execute(command, None, &meta)
                        .await
                        .map_err(|e| BoxError::from(format!("creating a group: {e}")))
                }
            })
            .buffer_unordered(CONCURRENCY * 2)
            .try_for_each(|_| async { Ok(()) })
            .await?;
    }
    eprintln!(
        "bench: membership: {} groups created in {:.1} s",
        tree.ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Adds static members of `group` in one `MembershipCommands` command.
pub(super) async fn add(
    members: &MembershipCommands,
    group: Uuid,
    ids: Vec<String>,
) -> Result<usize, BoxError> {
    let meta = EventMetadata::system(Source::Cli, "bench-membership");
    let command = MembershipCommand::Add {
        member_ids: ids,
        source: MemberSource::Static,
        rule_version: None,
        cause: None,
    };
    let committed = members
        .execute(group, command, &meta)
        .await
        .map_err(|e| format!("adding members: {e}"))?;
    Ok(committed.events)
}

/// Gives every group its direct members, in commands of at most 10,000 ids.
pub(super) async fn memberships(
    members: &Arc<MembershipCommands>,
    tree: &Tree,
    scale: &Scale,
) -> Result<Vec<usize>, BoxError> {
    let started = Instant::now();
    let sizes =
        data::membership_sizes(scale.seed, tree.ids.len(), scale.memberships, scale.devices);
    let mut commands: Vec<(Uuid, Vec<String>)> = Vec::new();
    for (g, &size) in sizes.iter().enumerate() {
        let ids: Vec<String> = data::members(scale.seed, g as u64, size, scale.devices)
            .map(data::device_id)
            .collect();
        for chunk in ids.chunks(MAX_IDS_PER_COMMAND) {
            commands.push((tree.ids[g], chunk.to_vec()));
        }
    }
    let total = commands.len();
    let mut done = 0usize;
    let mut last_report = Instant::now();
    let mut results = stream::iter(commands)
        .map(|(group, ids)| {
            let members = members.clone();
            async move { add(&members, group, ids).await }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(r) = results.next().await {
        r?;
        done += 1;
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "bench: membership: {done}/{total} AddMembers commands ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    eprintln!(
        "bench: membership: {} direct memberships in {total} commands, {:.1} s",
        scale.memberships,
        started.elapsed().as_secs_f64()
    );
    Ok(sizes)
}

/// Waits until every projector has applied every committed event.
pub(super) async fn caught_up(pool: &PgPool, what: &str) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let status = corral_projections::runner::status(pool).await?;
        let lag: i64 = status.iter().map(|s| s.lag_events).sum();
        if lag == 0 && !status.is_empty() {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            let each: Vec<String> = status
                .iter()
                .map(|s| format!("{} {}", s.name, s.lag_events))
                .collect();
            eprintln!(
                "bench: membership: waiting for the projectors ({what}): {} events behind",
                each.join(", ")
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "bench: membership: projectors caught up ({what}) after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Statistics as autovacuum would leave them after a bulk load.
pub(super) async fn analyze(pool: &PgPool) -> Result<(), BoxError> {
    for table in [
        "devices",
        "group_registry",
        "membership_registry",
        "rm_group_tree.groups",
        "rm_group_tree.group_closure",
        "rm_membership.entries",
        "rm_membership.direct",
        "rm_membership.group_counts",
        "rm_membership.ancestry",
        "rm_membership.effective",
        "rm_membership.effective_counts",
    ] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The main and lock pools for the suite.
pub(super) async fn pools(url: &str) -> Result<(PgPool, PgPool), BoxError> {
    runtime::pools(url, 16).await
}
