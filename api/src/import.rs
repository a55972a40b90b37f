//! `corral import devices|services FILE.ndjson`: one input object per line (the GraphQL input
//! shape, camelCase keys), validated as every feed validates, upserted in batches of 1000 (each
//! its own short transaction). Invalid lines are reported with their numbers and skipped; the
//! command fails at the end if there were any, after importing the valid ones.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use corral_domain::inventory::{device_from_json, service_from_json, Device, Service, MAX_BATCH};
use corral_projections::inventory::{upsert_devices, upsert_services, UpsertOutcome};
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
}

/// A batch being gathered.
enum Batch {
    Devices(Vec<Device>),
    Services(Vec<Service>),
}

impl Batch {
    fn new(kind: ImportKind) -> Self {
        match kind {
            ImportKind::Devices => Batch::Devices(Vec::with_capacity(MAX_BATCH)),
            ImportKind::Services => Batch::Services(Vec::with_capacity(MAX_BATCH)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Batch::Devices(v) => v.len(),
            Batch::Services(v) => v.len(),
        }
    }

    /// Validates a line into the batch; `Err` lists what is wrong.
    fn push(&mut self, line: &str) -> Result<(), String> {
        let value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let errors = match self {
            Batch::Devices(v) => device_from_json(value).map(|d| v.push(d)),
            Batch::Services(v) => service_from_json(value).map(|s| v.push(s)),
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

    async fn flush(&mut self, pool: &PgPool) -> Result<UpsertOutcome, BoxError> {
        Ok(match self {
            Batch::Devices(v) => upsert_devices(pool, &std::mem::take(v)).await?,
            Batch::Services(v) => upsert_services(pool, &std::mem::take(v)).await?,
        })
    }
}

/// Counts so far.
#[derive(Default)]
struct Progress {
    lines: u64,
    bytes: u64,
    invalid: u64,
    done: UpsertOutcome,
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
pub async fn run(pool: &PgPool, kind: ImportKind, file: &Path) -> Result<(), BoxError> {
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
    let mut batch = Batch::new(kind);
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
        if let Err(why) = batch.push(&line) {
            p.invalid += 1;
            bar.note(&format!("line {}: {why}", p.lines));
        }
        if batch.len() >= MAX_BATCH {
            let o = batch.flush(pool).await?;
            p.done.upserted += o.upserted;
            p.done.unchanged += o.unchanged;
        }
        bar.draw(&p, false);
    }
    let o = batch.flush(pool).await?;
    p.done.upserted += o.upserted;
    p.done.unchanged += o.unchanged;
    bar.draw(&p, true);
    if bar.enabled {
        eprintln!();
    }
    let what = match kind {
        ImportKind::Devices => "devices",
        ImportKind::Services => "services",
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
