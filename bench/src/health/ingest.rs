//! (a) `ingest_sysmon` beside the fastest raw path for the same rows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use corral_api::runtime::BoxError;
use corral_projections::health::{ingest_sysmon, HealthConfig, SysmonSample, MAX_INGEST_BATCH};
use sqlx::PgPool;

use super::setup::device_id;
use crate::Row;

/// splitmix64 of `(seed, i)`.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One ingest sample: device `i % devices`, stamped in `[base, base + 290 s)`.
fn ingest_sample(i: usize, devices: usize, base: DateTime<Utc>) -> SysmonSample {
    let h = mix(0x6865_616c, i as u64);
    let pct = |shift: u32| ((h >> shift) % 10_000) as f64 / 100.0;
    SysmonSample {
        device_id: device_id(i % devices),
        ts: base + TimeDelta::seconds((i % 290) as i64),
        cpu_percent: pct(0),
        mem_percent: pct(16),
        disk_percent: pct(32),
    }
}

/// Runs `op(batch)` over `batches` from `concurrency` tasks; returns rows per second.
async fn drain<F, Fut>(
    batches: usize,
    per_batch: usize,
    concurrency: usize,
    op: F,
) -> Result<f64, BoxError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<(), BoxError>(());
                }
                op(b).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((batches * per_batch) as f64 / started.elapsed().as_secs_f64())
}

/// (a) `ingest_sysmon` vs COPY and vs `INSERT ... SELECT FROM unnest` of the same rows into
/// a plain table of the same shape (columns and index of `telemetry_sysmon`).
pub(super) async fn bench_ingest(
    pool: &PgPool,
    config: &HealthConfig,
    devices: usize,
    base: DateTime<Utc>,
    total: usize,
    concurrency: usize,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let per_batch = MAX_INGEST_BATCH;
    let batches = (total / per_batch).max(1);
    let offset = concurrency * 7919;
    let batch = move |b: usize| -> Vec<SysmonSample> {
        (b * per_batch..(b + 1) * per_batch)
            .map(|i| ingest_sample(i + offset, devices, base))
            .collect()
    };
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS bench_sysmon_plain (LIKE telemetry_sysmon INCLUDING DEFAULTS);
         CREATE INDEX IF NOT EXISTS bench_sysmon_plain_idx ON bench_sysmon_plain (device_id, ts);
         TRUNCATE bench_sysmon_plain",
    )
    .execute(pool)
    .await?;

    let rollups_before: i64 = sqlx::query_scalar("SELECT count(*) FROM health_rollups")
        .fetch_one(pool)
        .await?;
    let (p, c) = (pool.clone(), config.clone());
    let updated = Arc::new(AtomicUsize::new(0));
    let counter = updated.clone();
    let ingest = drain(batches, per_batch, concurrency, move |b| {
        let (pool, config, counter) = (p.clone(), c.clone(), counter.clone());
        let samples = batch(b);
        async move {
            let report = ingest_sysmon(&pool, &config, &samples).await?;
            if report.accepted != samples.len() as u64 {
                return Err(BoxError::from(format!(
                    "health: ingest accepted {} of {} ({:?})",
                    report.accepted,
                    samples.len(),
                    report.rejections.first()
                )));
            }
            counter.fetch_add(report.rollups_updated as usize, Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    let rollups_after: i64 = sqlx::query_scalar("SELECT count(*) FROM health_rollups")
        .fetch_one(pool)
        .await?;
    eprintln!(
        "bench: health: ingest_sysmon, concurrency {concurrency}: {ingest:.0} samples/s \
         ({} rollup rows written, {} new)",
        updated.load(Ordering::Relaxed),
        rollups_after - rollups_before
    );

    let p = pool.clone();
    let copy = drain(batches, per_batch, concurrency, move |b| {
        let pool = p.clone();
        let samples = batch(b);
        async move {
            use std::fmt::Write;
            let mut text = String::with_capacity(samples.len() * 64);
            for s in &samples {
                let _ = writeln!(
                    text,
                    "{}\t{}\t{}\t{}\t{}",
                    s.device_id,
                    s.ts.to_rfc3339(),
                    s.cpu_percent as f32,
                    s.mem_percent as f32,
                    s.disk_percent as f32
                );
            }
            let mut conn = pool.acquire().await?;
            let mut copy = conn
                .copy_in_raw(
                    "COPY bench_sysmon_plain (device_id, ts, cpu_percent, mem_percent, \
                     disk_percent) FROM STDIN",
                )
                .await?;
            copy.send(text.into_bytes()).await?;
            copy.finish().await?;
            Ok(())
        }
    })
    .await?;
    sqlx::query("TRUNCATE bench_sysmon_plain")
        .execute(pool)
        .await?;
    let p = pool.clone();
    let unnest = drain(batches, per_batch, concurrency, move |b| {
        let pool = p.clone();
        let samples = batch(b);
        async move {
            sqlx::query(
                "INSERT INTO bench_sysmon_plain (device_id, ts, cpu_percent, mem_percent,
                                                 disk_percent)
                 SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::real[], $4::real[],
                                      $5::real[])",
            )
            .bind(
                samples
                    .iter()
                    .map(|s| s.device_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(samples.iter().map(|s| s.ts).collect::<Vec<_>>())
            .bind(
                samples
                    .iter()
                    .map(|s| s.cpu_percent as f32)
                    .collect::<Vec<_>>(),
            )
            .bind(
                samples
                    .iter()
                    .map(|s| s.mem_percent as f32)
                    .collect::<Vec<_>>(),
            )
            .bind(
                samples
                    .iter()
                    .map(|s| s.disk_percent as f32)
                    .collect::<Vec<_>>(),
            )
            .execute(&pool)
            .await?;
            Ok(())
        }
    })
    .await?;
    sqlx::query("TRUNCATE bench_sysmon_plain")
        .execute(pool)
        .await?;
    eprintln!(
        "bench: health: raw paths, concurrency {concurrency}: COPY {copy:.0} rows/s, \
         INSERT ... SELECT FROM unnest {unnest:.0} rows/s"
    );
    let (baseline_name, baseline) = if copy >= unnest {
        ("COPY", copy)
    } else {
        (
            "INSERT ... SELECT FROM unnest (faster than COPY here)",
            unnest,
        )
    };
    rows.push(Row {
        name: format!(
            "ingest_sysmon, batches of {per_batch}, {} samples, concurrency {concurrency} \
             (samples/s)",
            batches * per_batch
        ),
        corral: format!("{ingest:.0}"),
        baseline_name: format!(
            "{baseline_name} of the same rows into a plain table with the same columns and \
             index, {per_batch} per statement (rows/s)"
        ),
        baseline: format!("{baseline:.0}"),
        ratio: ingest / baseline,
        target: "-".into(),
    });
    Ok(())
}
