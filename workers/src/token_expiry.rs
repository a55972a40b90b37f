//! Records token expiries in the log: every [`EXPIRY_EVERY`] (`CORRAL_TOKEN_EXPIRY_SECS`), the
//! leader of [`Lock::TokenExpiry`] finds live tokens past their `expires_at` (the
//! `access_tokens_expiry_idx` index) and writes `ExpireToken` for each, at most
//! [`EXPIRY_BATCH`] a pass, with `source = worker` in the metadata.
//!
//! Expiry is enforced at each request whether or not this runs (the credential check compares
//! `expires_at` with the clock, and an open websocket is closed at its token's expiry); this
//! only makes the log say so (`TokenExpired`), and the access epoch it moves makes every
//! process drop what it cached.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_domain::access::AccessCommand;
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::AccessCommands;
use corral_projections::leader::{Leadership, Leading};
use corral_projections::locks::Lock;
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

use crate::LEADER_RETRY;

/// How often the leader looks for expired tokens, by default.
pub const EXPIRY_EVERY: Duration = Duration::from_secs(30);

/// Most tokens one pass records.
pub const EXPIRY_BATCH: i64 = 500;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryPass {
    /// Live tokens found past their expiry (at most [`EXPIRY_BATCH`]).
    pub due: usize,
    /// `TokenExpired` events written.
    pub expired: usize,
    /// Commands that failed (tried again next pass).
    pub failed: usize,
}

/// One pass: writes `ExpireToken` for up to [`EXPIRY_BATCH`] live tokens whose expiry is at
/// or before `now`, oldest expiry first. A command that fails is logged and tried again on
/// the next pass; a token revoked meanwhile is a no-op.
pub async fn expire_due(
    pool: &PgPool,
    commands: &AccessCommands,
    now: DateTime<Utc>,
) -> Result<ExpiryPass, sqlx::Error> {
    // The predicate is the partial index's, so the scan reads only live expiring tokens.
    let rows = sqlx::query(
        "SELECT token_id, subject_id FROM access_tokens
          WHERE expires_at IS NOT NULL AND revoked_at IS NULL AND expired_at IS NULL
            AND expires_at <= $1
          ORDER BY expires_at, token_id
          LIMIT $2",
    )
    .bind(now)
    .bind(EXPIRY_BATCH)
    .fetch_all(pool)
    .await?;
    let mut pass = ExpiryPass {
        due: rows.len(),
        ..Default::default()
    };
    if rows.is_empty() {
        return Ok(pass);
    }
    let metadata = EventMetadata::system(Source::Worker, Uuid::new_v4().to_string());
    for row in rows {
        let token_id: Uuid = row.try_get("token_id")?;
        let subject: String = row.try_get("subject_id")?;
        let Ok(subject) = subject.parse::<Uuid>() else {
            tracing::warn!(token = %token_id, subject = %subject, "a token's subject id is not a UUID");
            pass.failed += 1;
            continue;
        };
        let command = AccessCommand::ExpireToken { token_id, now };
        match commands.execute(subject, command, &metadata).await {
            Ok(committed) => pass.expired += committed.events,
            Err(e) => {
                tracing::warn!(token = %token_id, error = %e, "could not record a token's expiry; trying again next pass");
                pass.failed += 1;
            }
        }
    }
    Ok(pass)
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Records expiries every `every` until `stop`, while this process leads
/// [`Lock::TokenExpiry`] (it stands by otherwise).
pub async fn run(
    pool: PgPool,
    commands: Arc<AccessCommands>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let leadership = Leadership::Worker(Lock::TokenExpiry);
    let mut leading = Leading::new(pool.clone(), leadership, LEADER_RETRY);
    while leading.next(&mut stop).await.is_some() {
        match expire_due(&pool, &commands, Utc::now()).await {
            Ok(pass) if pass.due > 0 => {
                tracing::info!(
                    tokens.due = pass.due,
                    tokens.expired = pass.expired,
                    tokens.failed = pass.failed,
                    "token expiries recorded"
                );
                // A full batch that moved: more may be due, look again at once. (A token the
                // registry calls due but its subject does not, or a failing command, waits
                // for the next pass, so this never spins.)
                if pass.due as i64 == EXPIRY_BATCH && pass.expired > 0 {
                    continue;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not look for expired tokens; retrying"),
        }
        sleep_or_stop(every, &mut stop).await;
    }
}
