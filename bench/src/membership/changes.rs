//! Sustained inventory changes with the rule evaluator running: devices flip in and out of a
//! rule (`hostname:flip-%`) through `upsert_devices`, and a watcher times each change from its
//! commit to the moment `rm_membership.direct` shows it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_api::runtime::BoxError;
use corral_domain::inventory::Device;
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::inventory::{upsert_devices, upsert_devices_without_events, WriteContext};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::data;
use super::{percentile, Row};

/// The rule the flipping devices enter and leave.
pub(super) const FLIP_RULE: &str = "hostname:flip-%";
/// How often a batch of changes is written.
const TICK: Duration = Duration::from_millis(100);
/// How often the watcher looks at the read model.
const WATCH_EVERY: Duration = Duration::from_millis(25);
/// How long changes may take to show after the last write before they count as lost.
const DRAIN: Duration = Duration::from_secs(30);

/// Pending changes: device id -> (commit instant, whether it should now be a member).
type Pending = Arc<Mutex<HashMap<String, (Instant, bool)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bench's writer (actor `bench`, source `cli`).
pub(super) fn bench_writer() -> WriteContext {
    WriteContext::new(EventMetadata::system(Source::Cli, "bench-membership"))
}

/// Back-to-back `upsert_devices` batches of `batch` real changes (a field no rule reads) for
/// `seconds`, before the evaluator runs: the plain write rate. `with_events` false runs the
/// same upsert statement without inventory events (the pre-0011 statement), the same-run
/// baseline of the events' cost.
pub(super) async fn plain_upsert_rate(
    pool: &PgPool,
    seed: u64,
    devices: usize,
    batch: usize,
    seconds: u64,
    with_events: bool,
) -> Result<f64, BoxError> {
    let by = bench_writer();
    let started = Instant::now();
    let mut written = 0usize;
    let mut round = 0usize;
    // Devices that never flip, so the rule's group is not involved.
    let pool_ids: Vec<usize> = (0..devices).filter(|&i| !data::is_flip(i)).collect();
    let mut next = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        let items: Vec<Device> = (0..batch)
            .map(|_| {
                let i = pool_ids[next % pool_ids.len()];
                next += 1;
                let mut d = data::device(seed, i);
                d.os_version = Some(format!("9.{round}.{next}"));
                d
            })
            .collect();
        written += if with_events {
            upsert_devices(pool, &items, &by).await?.upserted as usize
        } else {
            upsert_devices_without_events(pool, &items).await?.upserted as usize
        };
        round += 1;
    }
    Ok(written as f64 / started.elapsed().as_secs_f64())
}

/// What the sustained run measured.
pub(super) struct Sustained {
    /// Changes written per second over the run.
    pub rate: f64,
    /// Commit-to-visible delays (ms), sorted.
    pub delays: Vec<f64>,
    /// `upsert_devices` call latencies of the same batches (ms), sorted.
    pub upserts: Vec<f64>,
    /// Changes not visible `DRAIN` after the last write.
    pub lost: usize,
}

/// Flips devices in and out of `group`'s rule at `rate` changes/s for `seconds`.
pub(super) async fn sustained(
    pool: &PgPool,
    group: Uuid,
    seed: u64,
    devices: usize,
    rate: usize,
    seconds: u64,
) -> Result<Sustained, BoxError> {
    let by = bench_writer();
    let pending: Pending = Arc::default();
    let delays: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(watch_members(
        pool.clone(),
        group,
        pending.clone(),
        delays.clone(),
        stop_rx,
    ));

    let flips: Vec<usize> = (0..devices).filter(|&i| data::is_flip(i)).collect();
    let mut matching: HashMap<usize, bool> = HashMap::new();
    let per_tick = (rate as f64 * TICK.as_secs_f64()).round().max(1.0) as usize;
    let mut next = 0usize;
    let mut written = 0usize;
    let mut upserts = Vec::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        ticker.tick().await;
        let mut batch = Vec::with_capacity(per_tick);
        let mut ids = Vec::with_capacity(per_tick);
        {
            let pending = lock(&pending);
            let mut tried = 0;
            while batch.len() < per_tick && tried < flips.len() {
                let i = flips[next % flips.len()];
                next += 1;
                tried += 1;
                let id = data::device_id(i);
                if pending.contains_key(&id) {
                    continue; // still on its way: flipping it again would blur the timing
                }
                let now_in = !matching.get(&i).copied().unwrap_or(false);
                let mut d = data::device(seed, i);
                d.hostname = Some(data::flip_hostname(i, now_in));
                batch.push(d);
                ids.push((i, id, now_in));
            }
        }
        let t = Instant::now();
        let outcome = upsert_devices(pool, &batch, &by).await?;
        let committed = Instant::now();
        upserts.push((committed - t).as_secs_f64() * 1000.0);
        written += outcome.upserted as usize;
        let mut pending = lock(&pending);
        for (i, id, now_in) in ids {
            matching.insert(i, now_in);
            pending.insert(id, (committed, now_in));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until && !lock(&pending).is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    watcher.await??;
    let lost = lock(&pending).len();
    let mut delays = std::mem::take(&mut *lock(&delays));
    delays.sort_by(f64::total_cmp);
    upserts.sort_by(f64::total_cmp);
    Ok(Sustained {
        rate: written as f64 / elapsed,
        delays,
        upserts,
        lost,
    })
}

/// Polls the group's direct members of the pending ids; a change counts as visible at the
/// start of the first poll whose snapshot shows it (an upper bound, within `WATCH_EVERY`).
async fn watch_members(
    pool: PgPool,
    group: Uuid,
    pending: Pending,
    delays: Arc<Mutex<Vec<f64>>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let ids: Vec<String> = lock(&pending).keys().cloned().collect();
        if !ids.is_empty() {
            let looked = Instant::now();
            let present: Vec<String> = sqlx::query_scalar(
                "SELECT member_id FROM rm_membership.direct WHERE group_id = $1 AND member_id = ANY($2)",
            )
            .bind(group)
            .bind(&ids)
            .fetch_all(&pool)
            .await?;
            let present: std::collections::HashSet<String> = present.into_iter().collect();
            let mut pending = lock(&pending);
            let mut delays = lock(&delays);
            for id in ids {
                if let Some(&(committed, want_in)) = pending.get(&id) {
                    // Committed after the snapshot was taken: not decided by this look.
                    if committed > looked {
                        continue;
                    }
                    if present.contains(&id) == want_in {
                        delays.push((looked - committed).as_secs_f64() * 1000.0);
                        pending.remove(&id);
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The row of the inventory events' cost: back-to-back upserts with events beside the same
/// statement without them, in the same run.
pub(super) fn events_row(with_events: f64, without: f64, rows: &mut Vec<Row>) {
    rows.push(Row {
        name: "upsert_devices back to back, with inventory events (changes/s)".into(),
        corral: format!("{with_events:.0}"),
        baseline_name: "the same upsert statement without events (changes/s)".into(),
        baseline: format!("{without:.0}"),
        ratio: with_events / without,
        target: ">= 0.5 of the baseline".into(),
    });
}

/// The rows of the sustained run.
pub(super) fn rows(s: &Sustained, requested: usize, plain_rate: f64, rows: &mut Vec<Row>) {
    let lost = if s.lost > 0 {
        format!(", {} not visible after {} s", s.lost, DRAIN.as_secs())
    } else {
        String::new()
    };
    rows.push(Row {
        name: format!(
            "inventory changes through upsert_devices, rule evaluator running, {requested}/s requested (changes/s)"
        ),
        corral: format!("{:.0}", s.rate),
        baseline_name: "upsert_devices back to back, no evaluator (changes/s)".into(),
        baseline: format!("{plain_rate:.0}"),
        ratio: s.rate / plain_rate,
        target: format!(">= {requested}/s"),
    });
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (d, u) = (percentile(&s.delays, p), percentile(&s.upserts, p));
        rows.push(Row {
            name: format!(
                "delay from change commit to visible rule membership, {} changes{lost}, {label} (ms)",
                s.delays.len()
            ),
            corral: format!("{d:.0}"),
            baseline_name: format!(
                "upsert_devices batch of {} latency, same batches, {label} (ms)",
                (requested as f64 * TICK.as_secs_f64()).round()
            ),
            baseline: format!("{u:.1}"),
            ratio: d / u,
            target: if p > 0.9 { "< 1000 ms".into() } else { "-".into() },
        });
    }
}
