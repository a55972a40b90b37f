//! `corral audit export` and `corral audit verify`.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Subcommand;
use corral_api::audit::{self, AuditFilter, ExportFormat};
use corral_api::runtime::BoxError;
use corral_projections::public_log::{self, ChainCheck};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

/// `corral audit ...`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Stream the audit log between two times as NDJSON or CSV (progress on stderr).
    Export {
        /// Recorded at or after (RFC 3339, e.g. 2026-01-01T00:00:00Z).
        #[arg(long)]
        from: DateTime<Utc>,
        /// Recorded before (RFC 3339).
        #[arg(long)]
        to: DateTime<Utc>,
        /// Only this group's events (its own and its membership's).
        #[arg(long)]
        group: Option<Uuid>,
        /// With --group: also its current descendants'.
        #[arg(long, requires = "group")]
        include_descendants: bool,
        /// Only changes made by this subject.
        #[arg(long)]
        actor: Option<String>,
        /// Only the events naming this device or service: Membership events listing it and
        /// its own Device / Service events.
        #[arg(long)]
        member: Option<String>,
        /// ndjson or csv.
        #[arg(long, value_enum, default_value = "ndjson")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Recompute the hash chain; exits non-zero naming the first position whose link fails.
    Verify {
        /// Start here (trusting the stored hash just before it); default: the whole log.
        #[arg(long, default_value_t = 1)]
        from: i64,
        /// Also check a head recorded earlier (from `auditChainHead`), as POSITION:HASH.
        #[arg(long)]
        expect: Option<String>,
    },
}

/// Runs an audit command. `Ok(Err(message))` is a failed verification (exit non-zero).
pub async fn run(pool: &PgPool, command: AuditCommand) -> Result<Result<(), String>, BoxError> {
    match command {
        AuditCommand::Export {
            from,
            to,
            group,
            include_descendants,
            actor,
            member,
            format,
            output,
        } => {
            let filter = AuditFilter {
                actor,
                member_id: member,
                group_id: group,
                include_descendants,
                from: Some(from),
                to: Some(to),
                ..Default::default()
            };
            export(pool, filter, format, output).await?;
            Ok(Ok(()))
        }
        AuditCommand::Verify { from, expect } => verify(pool, from, expect.as_deref()).await,
    }
}

async fn export(
    pool: &PgPool,
    filter: AuditFilter,
    format: ExportFormat,
    output: Option<std::path::PathBuf>,
) -> Result<(), BoxError> {
    let filter = match filter.resolve(pool).await? {
        Ok(f) => f,
        Err(e) => return Err(format!("{}: {}", e.field, e.message).into()),
    };
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut stream = std::pin::pin!(audit::export(pool.clone(), filter, format));
    let mut last = Instant::now();
    let (mut entries, mut head) = (0, 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(chunk.text.as_bytes())?;
        (entries, head) = (chunk.entries, chunk.head);
        if last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            eprintln!(
                "exported {entries} entries (position {} of {head})",
                chunk.position
            );
        }
    }
    out.flush()?;
    eprintln!(
        "exported {entries} entries up to position {head}{}",
        output
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

async fn verify(
    pool: &PgPool,
    from: i64,
    expect: Option<&str>,
) -> Result<Result<(), String>, BoxError> {
    if from < 1 {
        return Err("--from must be 1 or more".into());
    }
    let expected = match expect {
        None => None,
        Some(s) => {
            let (p, h) = s
                .split_once(':')
                .ok_or("--expect takes POSITION:HASH (from auditChainHead)")?;
            let p: i64 = p.trim().parse().map_err(|_| "--expect: bad position")?;
            let h = hex::decode(h.trim()).map_err(|_| "--expect: the hash is not hex")?;
            Some((p, h))
        }
    };
    let started = Instant::now();
    let mut last = Instant::now();
    let check = public_log::verify(pool, from, 5_000, |done, total| {
        if last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            eprintln!("verified {done} of {total} events");
        }
    })
    .await?;
    Ok(match check {
        ChainCheck::Broken { position, reason } => {
            Err(format!("chain broken at position {position}: {reason}"))
        }
        ChainCheck::Verified {
            events,
            head_position,
            head_hash,
        } => {
            if let Some((p, h)) = expected {
                let mut conn = pool.acquire().await?;
                let stored = public_log::hash_at(&mut conn, p).await?;
                if p > head_position || p < from - 1 {
                    return Ok(Err(format!(
                        "the expected head at position {p} is outside the verified range {}..={head_position}",
                        from - 1
                    )));
                }
                if stored.as_deref() != Some(h.as_slice()) {
                    return Ok(Err(format!(
                        "chain broken at position {p}: the recorded head {} does not match the log ({})",
                        hex::encode(&h),
                        stored.map(hex::encode).unwrap_or_else(|| "missing".into())
                    )));
                }
            }
            println!(
                "verified {events} events, head {} (position {head_position}, {:.1} s)",
                hex::encode(head_hash),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    })
}
