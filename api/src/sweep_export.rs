//! Sweep results export (`corral sweeps export`): every result of a run, by address, as
//! NDJSON or CSV, read in pages of 1000.

use std::io::Write;

use corral_projections::sweeps::read;
use sqlx::PgPool;
use uuid::Uuid;

use crate::runtime::BoxError;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes the results of `run` to `out`; `progress` is called with (written, total) after each
/// page. Returns how many were written.
pub async fn export(
    pool: &PgPool,
    run: Uuid,
    format: ExportFormat,
    open_only: bool,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(i64, i64),
) -> Result<i64, BoxError> {
    if read::by_id(pool, run).await?.is_none() {
        return Err(format!("no sweep run {run}").into());
    }
    let total = read::results_count(pool, run, open_only).await?;
    if format == ExportFormat::Csv {
        writeln!(
            out,
            "run_id,host_ip,network_cidr,icmp_available,open_ports,latency_ms,observed_at,metadata"
        )?;
    }
    let mut after: Option<String> = None;
    let mut written: i64 = 0;
    loop {
        let page = read::results(pool, run, open_only, 1000, after.as_deref()).await?;
        if page.is_empty() {
            break;
        }
        for r in &page {
            let mut ports = r.open_ports.clone();
            ports.sort_unstable();
            match format {
                ExportFormat::Ndjson => {
                    let line = serde_json::json!({
                        "run_id": run,
                        "host_ip": r.host_ip,
                        "network_cidr": r.network_cidr,
                        "icmp_available": r.icmp_available,
                        "open_ports": ports,
                        "latency_ms": r.latency_ms,
                        "observed_at": r.observed_at,
                        "metadata": r.metadata,
                    });
                    writeln!(out, "{line}")?;
                }
                ExportFormat::Csv => {
                    let ports: Vec<String> = ports.iter().map(i32::to_string).collect();
                    writeln!(
                        out,
                        "{run},{},{},{},{},{},{},{}",
                        r.host_ip,
                        r.network_cidr,
                        r.icmp_available.map(|b| b.to_string()).unwrap_or_default(),
                        csv_field(&ports.join(" ")),
                        r.latency_ms.map(|l| l.to_string()).unwrap_or_default(),
                        r.observed_at.to_rfc3339(),
                        csv_field(&r.metadata.to_string()),
                    )?;
                }
            }
        }
        written += page.len() as i64;
        progress(written, total);
        after = page.last().map(|r| r.host_ip.clone());
    }
    out.flush()?;
    Ok(written)
}
