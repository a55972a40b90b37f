//! `corral import devices|services|telemetry FILE.ndjson`: one input object per line (the
//! GraphQL input shape, camelCase keys), validated as every feed validates, written in batches
//! (1000 inventory items, 5000 telemetry samples; each batch its own short transaction).
//! Telemetry lines are sysmon samples (`deviceId`, ...) or service checks (`serviceId`, ...);
//! samples of unknown devices or services are counted and listed, not stored. Invalid or
//! rejected lines are reported with their numbers and skipped; the command fails at the end
//! if there were any, after importing the valid ones.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use corral_domain::inventory::{device_from_json, service_from_json, Device, Service, MAX_BATCH};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::health::{
    ingest_services, ingest_sysmon, HealthConfig, IngestReport, ServiceCheck, SysmonSample,
    MAX_INGEST_BATCH,
};
use corral_projections::inventory::{upsert_devices, upsert_services, UpsertOutcome, WriteContext};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::runtime::BoxError;

/// What to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportKind {
    /// Device inputs.
    Devices,
    /// Service inputs.
    Services,
    /// Sysmon samples and service checks.
    Telemetry,
}

/// A batch being gathered.
enum Batch {
    Devices(Vec<Device>),
    Services(Vec<Service>),
    /// Samples and checks, each with its line number.
    Telemetry {
        samples: Vec<(u64, SysmonSample)>,
        checks: Vec<(u64, ServiceCheck)>,
        config: HealthConfig,
    },
}

/// What one flush wrote.
#[derive(Default)]
struct Flushed {
    inventory: UpsertOutcome,
    telemetry: IngestReport,
    /// Rejected telemetry lines: line number and why.
    rejected: Vec<(u64, String)>,
}

/// Ingests one kind of telemetry; rejections come back with their line numbers.
fn rejected_lines(lines: &[u64], report: &IngestReport) -> Vec<(u64, String)> {
    report
        .rejections
        .iter()
        .map(|r| {
            (
                lines[r.index],
                format!("{}: {} ({})", r.field, r.message, r.code),
            )
        })
        .collect()
}

impl Batch {
    fn new(kind: ImportKind, health: &HealthConfig) -> Self {
        match kind {
            ImportKind::Devices => Batch::Devices(Vec::with_capacity(MAX_BATCH)),
            ImportKind::Services => Batch::Services(Vec::with_capacity(MAX_BATCH)),
            ImportKind::Telemetry => Batch::Telemetry {
                samples: Vec::new(),
                checks: Vec::new(),
                config: health.clone(),
            },
        }
    }

    /// Whether the batch is full.
    fn full(&self) -> bool {
        match self {
            Batch::Devices(v) => v.len() >= MAX_BATCH,
            Batch::Services(v) => v.len() >= MAX_BATCH,
            Batch::Telemetry {
                samples, checks, ..
            } => samples.len() >= MAX_INGEST_BATCH || checks.len() >= MAX_INGEST_BATCH,
        }
    }

    /// Validates line `number` into the batch; `Err` lists what is wrong.
    fn push(&mut self, number: u64, line: &str) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let errors = match self {
            Batch::Devices(v) => device_from_json(value).map(|d| v.push(d)),
            Batch::Services(v) => service_from_json(value).map(|s| v.push(s)),
            Batch::Telemetry {
                samples, checks, ..
            } => {
                if value.get("deviceId").is_some() {
                    let s = serde_json::from_value(value)
                        .map_err(|e| format!("not a sysmon sample: {e}"))?;
                    samples.push((number, s));
                } else if value.get("serviceId").is_some() {
                    let c = serde_json::from_value(value)
                        .map_err(|e| format!("not a service check: {e}"))?;
                    checks.push((number, c));
                } else {
                    return Err(
                        "neither a sysmon sample (deviceId) nor a service check (serviceId)".into(),
                    );
                }
                Ok(())
            }
        };
        errors.map_err(|errors| {
            errors
                .iter()
                .map(|e| match e.field.as_str() {
                    "" => e.message.clone(),
                    f => format!("{f}: {}", e.message),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    async fn flush(&mut self, pool: &PgPool, by: &WriteContext) -> Result<Flushed, BoxError> {
        let mut out = Flushed::default();
        match self {
            Batch::Devices(v) => {
                out.inventory = upsert_devices(pool, &std::mem::take(v), by).await?
            }
            Batch::Services(v) => {
                out.inventory = upsert_services(pool, &std::mem::take(v), by).await?
            }
            Batch::Telemetry {
                samples,
                checks,
                config,
            } => {
                let (lines, items): (Vec<u64>, Vec<SysmonSample>) =
                    std::mem::take(samples).into_iter().unzip();
                if !items.is_empty() {
                    let report = ingest_sysmon(pool, config, &items).await?;
                    out.rejected.extend(rejected_lines(&lines, &report));
                    out.telemetry.merge(report, 0);
                }
                let (lines, items): (Vec<u64>, Vec<ServiceCheck>) =
                    std::mem::take(checks).into_iter().unzip();
                if !items.is_empty() {
                    let report = ingest_services(pool, config, &items).await?;
                    out.rejected.extend(rejected_lines(&lines, &report));
                    out.telemetry.merge(report, 0);
                }
            }
        }
        Ok(out)
    }
}

/// Counts so far.
#[derive(Default)]
struct Progress {
    lines: u64,
    bytes: u64,
    invalid: u64,
    done: UpsertOutcome,
    telemetry: IngestReport,
}

impl Progress {
    fn add(&mut self, flushed: Flushed, bar: &Bar) {
        self.done.upserted += flushed.inventory.upserted;
        self.done.unchanged += flushed.inventory.unchanged;
        for (line, why) in &flushed.rejected {
            bar.note(&format!("line {line}: {why}"));
        }
        self.invalid += flushed.telemetry.rejected;
        self.telemetry.merge(flushed.telemetry, 0);
    }
}

/// The `\r` progress line, drawn on a terminal only.
struct Bar {
    total_bytes: u64,
    started: Instant,
    last: Option<Instant>,
    enabled: bool,
}

impl Bar {
    fn draw(&mut self, p: &Progress, force: bool) {
        if !self.enabled
            || (!force
                && self
                    .last
                    .is_some_and(|t| t.elapsed() < Duration::from_millis(100)))
        {
            return;
        }
        self.last = Some(Instant::now());
        let fraction = if self.total_bytes == 0 {
            1.0
        } else {
            (p.bytes as f64 / self.total_bytes as f64).min(1.0)
        };
        let filled = (fraction * 30.0) as usize;
        let rate = p.lines as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\r[{}{}] {:>3.0}% {} lines, {:.0} lines/s, {} invalid\x1b[K",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            fraction * 100.0,
            p.lines,
            rate,
            p.invalid
        );
        let _ = std::io::stderr().flush();
    }

    /// Prints a line above the bar.
    fn note(&self, text: &str) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
        eprintln!("{text}");
    }
}

/// Imports `file`; prints invalid lines and a progress bar on stderr, a summary on stdout.
/// Who an import writes as: `--actor`, else the operating-system user (`USER`, `LOGNAME`),
/// else `unknown`.
pub fn import_actor(flag: Option<String>) -> String {
    flag.filter(|a| !a.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Imports `file`; inventory events carry `actor` (role `cli`, source `cli`) and one
/// correlation id for the whole run.
pub async fn run(
    pool: &PgPool,
    kind: ImportKind,
    file: &Path,
    health: HealthConfig,
    actor: String,
) -> Result<(), BoxError> {
    let correlation = format!("import-{}", uuid::Uuid::new_v4());
    let by = WriteContext::new(EventMetadata {
        actor_subject: actor,
        actor_role: "cli".into(),
        source: Source::Cli,
        causation_id: correlation.clone(),
        correlation_id: correlation,
        reason: Some(format!("corral import {}", file.display())),
        client_addr: None,
    });
    let opened = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let total_bytes = opened.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut lines = BufReader::new(opened).lines();
    let mut bar = Bar {
        total_bytes,
        started: Instant::now(),
        last: None,
        enabled: std::io::stderr().is_terminal(),
    };
    let mut batch = Batch::new(kind, &health);
    let mut p = Progress::default();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading {} after line {}: {e}", file.display(), p.lines))?
    {
        p.lines += 1;
        p.bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Err(why) = batch.push(p.lines, &line) {
            p.invalid += 1;
            bar.note(&format!("line {}: {why}", p.lines));
        }
        if batch.full() {
            let flushed = batch.flush(pool, &by).await?;
            p.add(flushed, &bar);
        }
        bar.draw(&p, false);
    }
    let flushed = batch.flush(pool, &by).await?;
    p.add(flushed, &bar);
    bar.draw(&p, true);
    if bar.enabled {
        eprintln!();
    }
    let what = match kind {
        ImportKind::Devices => "devices",
        ImportKind::Services => "services",
        ImportKind::Telemetry => {
            let t = &p.telemetry;
            println!(
                "imported telemetry from {}: {} lines, {} accepted, {} of unknown devices or services (not stored{}), {} invalid or rejected, in {:.1} s",
                file.display(),
                p.lines,
                t.accepted,
                t.unknown,
                if t.unknown_ids.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.unknown_ids.join(", "))
                },
                p.invalid,
                bar.started.elapsed().as_secs_f64()
            );
            return if p.invalid > 0 {
                Err(format!(
                    "{} invalid or rejected lines were skipped (listed above)",
                    p.invalid
                )
                .into())
            } else {
                Ok(())
            };
        }
    };
    println!(
        "imported {what} from {}: {} lines, {} upserted, {} unchanged, {} invalid, in {:.1} s",
        file.display(),
        p.lines,
        p.done.upserted,
        p.done.unchanged,
        p.invalid,
        bar.started.elapsed().as_secs_f64()
    );
    if p.invalid > 0 {
        return Err(format!("{} invalid lines were skipped (listed above)", p.invalid).into());
    }
    Ok(())
}
