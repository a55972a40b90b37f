//! DESIGN.md, decision 6: the cost of an AddMembers command of 1,000 ids must not grow with
//! the group. One group is filled through `MembershipCommands` (10,000 ids per command) and
//! measured at empty, a tenth and nearly all of the inventory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_api::runtime::BoxError;
use corral_domain::group::{GroupCommand, GroupType};
use corral_domain::membership::MAX_IDS_PER_COMMAND;
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::groups::GroupCommands;
use corral_projections::membership::MembershipCommands;
use sqlx::PgPool;
use uuid::Uuid;

use super::{data, load, percentile, Row};

/// Ids per measured command.
const MEASURED_IDS: usize = 1000;
/// Measured commands per size.
const MEASURED: usize = 9;
/// Most time spent filling the group up to one size: past it, the size reached is measured
/// (and the row says so), so that a command cost that grows keeps the suite bounded.
const FILL_BUDGET: Duration = Duration::from_secs(180);
/// Most time spent on the measured commands of one size (at least one runs).
const MEASURE_BUDGET: Duration = Duration::from_secs(60);

pub(super) async fn bench(
    pool: &PgPool,
    groups: &GroupCommands,
    members: &Arc<MembershipCommands>,
    seed: u64,
    devices: usize,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let group = Uuid::new_v4();
    let meta = EventMetadata::system(Source::Cli, "bench-membership");
    groups
        .execute(
            GroupCommand::Create {
                id: group,
                name: "growth".into(),
                group_type: GroupType::Device,
                parent_id: GroupType::Device.root_id(),
                description: None,
                metadata: None,
            },
            None,
            &meta,
        )
        .await
        .map_err(|e| format!("creating the growth group: {e}"))?;
    // Every device once, in a scattered order (as real additions come).
    let order: Vec<String> = data::members(seed, u64::MAX, devices, devices)
        .map(data::device_id)
        .collect();
    let reserve = 2 * MEASURED * MEASURED_IDS;
    let sizes = [0, devices / 10, devices.saturating_sub(reserve)];
    let mut next = 0usize;
    let mut first: Option<f64> = None;
    for target in sizes {
        let started = Instant::now();
        let mut cut = false;
        while next < target {
            if started.elapsed() > FILL_BUDGET {
                cut = true;
                break;
            }
            let end = (next + MAX_IDS_PER_COMMAND).min(target);
            load::add(members, group, order[next..end].to_vec()).await?;
            next = end;
        }
        if target > 0 {
            eprintln!(
                "bench: membership: growth group filled to {next} members in {:.1} s{}",
                started.elapsed().as_secs_f64(),
                if cut {
                    " (fill budget spent: stopped short of the target)"
                } else {
                    ""
                }
            );
            // The projector's catch-up, and autovacuum after the bulk insert, would otherwise
            // share the two cores with the measured commands.
            load::caught_up(pool, "growth").await?;
            for table in [
                "membership_registry",
                "rm_membership.entries",
                "rm_membership.direct",
            ] {
                sqlx::query(&format!("VACUUM ANALYZE {table}"))
                    .execute(pool)
                    .await?;
            }
        }
        let size = next;
        let mut times = Vec::with_capacity(MEASURED);
        let measuring = Instant::now();
        while times.len() < MEASURED && (times.is_empty() || measuring.elapsed() < MEASURE_BUDGET) {
            let ids = order[next..next + MEASURED_IDS].to_vec();
            next += MEASURED_IDS;
            let t = Instant::now();
            load::add(members, group, ids).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let p50 = percentile(&times, 0.5);
        eprintln!(
            "bench: membership: AddMembers of {MEASURED_IDS} at {size} members: p50 {p50:.1} ms"
        );
        match first {
            None => first = Some(p50),
            Some(base) => rows.push(Row {
                name: format!(
                    "AddMembers of {MEASURED_IDS} ids, group at {size} members{}, p50 of {} (ms)",
                    if cut {
                        format!(
                            " (filling stopped after {} s, target {target})",
                            FILL_BUDGET.as_secs()
                        )
                    } else {
                        String::new()
                    },
                    times.len()
                ),
                corral: format!("{p50:.1}"),
                baseline_name: format!("same, group at 0 members, p50 of {MEASURED} (ms)"),
                baseline: format!("{base:.1}"),
                ratio: p50 / base,
                target: "flat (~1.0)".into(),
            }),
        }
    }
    Ok(())
}
