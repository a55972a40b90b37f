//! Refused attempts: every `FORBIDDEN` answer and every `UNAUTHENTICATED` request whose bearer
//! token carries the prefix of a token we issued, kept in `access_refusals` for auditors
//! (`accessRefusals`).
//!
//! Recording never slows or blocks a request and never touches the event log: a request hands
//! its refusal to a bounded channel (`try_send`, no waiting) and one background task drains
//! it, inserting in batches into a table of its own. When the channel is full the refusal is
//! dropped and counted (`dropped()`, and a warning naming the total). The table is bounded: the
//! task trims it to [`RefusalConfig::max_rows`] after each batch (by id, so the trim is an index
//! range) and prunes rows older than [`RefusalConfig::retention`] once a minute.
//!
//! An unauthenticated request is only recorded when its token has the shape of ours (`crl_` and
//! 8 hex digits) and that prefix belongs to a token in `access_tokens` (checked by the task, in
//! the insert): random garbage cannot fill the table, and the row names the token's subject.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Limits of the refusals store (`CORRAL_REFUSALS_*`).
#[derive(Debug, Clone, Copy)]
pub struct RefusalConfig {
    /// Most rows kept (the oldest go first).
    pub max_rows: i64,
    /// How long a row is kept.
    pub retention: Duration,
    /// Refusals waiting to be written before new ones are dropped.
    pub queue: usize,
}

impl Default for RefusalConfig {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            retention: Duration::from_secs(30 * 24 * 3600),
            queue: 4_096,
        }
    }
}

/// One refused attempt.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// When.
    pub at: DateTime<Utc>,
    /// The caller (for an unauthenticated request: filled in from its token prefix).
    pub subject: Option<String>,
    /// The token prefix an unauthenticated request gave.
    pub token_prefix: Option<String>,
    /// What was refused: `Mutation.createGroup`, `GET /audit/export`, ...
    pub operation: String,
    /// The group the refusal was about, when known.
    pub group_id: Option<Uuid>,
    /// `FORBIDDEN` or `UNAUTHENTICATED`.
    pub code: String,
    /// The message the caller got.
    pub reason: String,
    /// The client's address, when known.
    pub client_addr: Option<String>,
}

/// The recorder requests hand their refusals to.
#[derive(Debug)]
pub struct Refusals {
    tx: mpsc::Sender<Refusal>,
    dropped: AtomicU64,
}

/// Most rows written per insert.
const BATCH: usize = 500;
/// How often rows past the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Refusals {
    /// A recorder writing into `pool`'s `access_refusals` through a background task (which
    /// ends when the last recorder is dropped). Must run inside a tokio runtime.
    pub fn start(pool: PgPool, config: RefusalConfig) -> Arc<Refusals> {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let refusals = Arc::new(Refusals {
            tx,
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(drain(pool, config, rx, Arc::downgrade(&refusals)));
        refusals
    }

    /// Records `refusal` unless the queue is full (then it is dropped and counted).
    pub fn record(&self, refusal: Refusal) {
        if self.tx.try_send(refusal).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals dropped because the queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The public prefix of `token` when it has the shape of our tokens (`crl_` + 8 hex digits).
pub fn token_prefix(token: &str) -> Option<&str> {
    let prefix = token.get(..crate::auth::PREFIX_CHARS)?;
    let hex = prefix.strip_prefix("crl_")?;
    (hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(prefix)
}

async fn drain(
    pool: PgPool,
    config: RefusalConfig,
    mut rx: mpsc::Receiver<Refusal>,
    owner: std::sync::Weak<Refusals>,
) {
    let mut last_prune = tokio::time::Instant::now();
    let mut reported_drops = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let got = tokio::time::timeout(PRUNE_EVERY, rx.recv_many(&mut batch, BATCH)).await;
        if matches!(got, Ok(0)) {
            return; // every recorder is gone
        }
        if !batch.is_empty() {
            if let Err(err) = write(&pool, &batch, config.max_rows).await {
                tracing::warn!(error = %err, refusals = batch.len(),
                    "could not record refused attempts");
            }
            batch.clear();
        }
        if let Some(owner) = owner.upgrade() {
            let dropped = owner.dropped();
            if dropped > reported_drops {
                tracing::warn!(
                    refusals.dropped = dropped,
                    "refused attempts dropped: the recording queue was full"
                );
                reported_drops = dropped;
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            prune(&pool, config.retention).await;
        }
    }
}

/// Inserts `batch` and trims the table to `max_rows` in one transaction (so no reader ever
/// sees more rows than the cap from this process).
async fn write(pool: &PgPool, batch: &[Refusal], max_rows: i64) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(last) = insert(&mut tx, batch).await? {
        // Ids only grow, so the rows above `last - max_rows` are at most `max_rows` (an index
        // range, whatever the table holds).
        sqlx::query("DELETE FROM access_refusals WHERE refusal_id <= $1")
            .bind(last - max_rows)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Inserts `batch` (unauthenticated ones only when their prefix is a token's); the last id.
async fn insert(
    conn: &mut sqlx::PgConnection,
    batch: &[Refusal],
) -> Result<Option<i64>, sqlx::Error> {
    let mut at = Vec::with_capacity(batch.len());
    let mut subject = Vec::with_capacity(batch.len());
    let mut prefix = Vec::with_capacity(batch.len());
    let mut operation = Vec::with_capacity(batch.len());
    let mut group = Vec::with_capacity(batch.len());
    let mut code = Vec::with_capacity(batch.len());
    let mut reason = Vec::with_capacity(batch.len());
    let mut addr = Vec::with_capacity(batch.len());
    for r in batch {
        at.push(r.at);
        subject.push(r.subject.clone());
        prefix.push(r.token_prefix.clone());
        operation.push(r.operation.clone());
        group.push(r.group_id);
        code.push(r.code.clone());
        reason.push(r.reason.clone());
        addr.push(r.client_addr.clone());
    }
    let row = sqlx::query(
        "WITH inserted AS (
           INSERT INTO access_refusals
                  (refused_at, subject, token_prefix, operation, group_id, code, reason, client_addr)
           SELECT r.at,
                  COALESCE(r.subject, (SELECT s.subject FROM access_tokens t
                                         JOIN access_subjects s USING (subject_id)
                                        WHERE t.prefix = r.prefix LIMIT 1)),
                  r.prefix, r.operation, r.grp, r.code, r.reason, r.addr
             FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::uuid[],
                         $6::text[], $7::text[], $8::text[])
                  AS r(at, subject, prefix, operation, grp, code, reason, addr)
            WHERE r.prefix IS NULL
               OR EXISTS (SELECT 1 FROM access_tokens t WHERE t.prefix = r.prefix)
           RETURNING refusal_id)
         SELECT max(refusal_id) FROM inserted",
    )
    .bind(at)
    .bind(subject)
    .bind(prefix)
    .bind(operation)
    .bind(group)
    .bind(code)
    .bind(reason)
    .bind(addr)
    .fetch_one(conn)
    .await?;
    row.try_get(0)
}

async fn prune(pool: &PgPool, retention: Duration) {
    let cutoff = Utc::now() - chrono::TimeDelta::from_std(retention).unwrap_or_default();
    if let Err(err) = sqlx::query("DELETE FROM access_refusals WHERE refused_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
    {
        tracing::warn!(error = %err, "could not prune the refused attempts");
    }
}

/// A stored refusal.
#[derive(Debug, Clone)]
pub struct StoredRefusal {
    /// Its id (newest is highest).
    pub id: i64,
    /// The refusal.
    pub refusal: Refusal,
}

/// Up to `limit` refusals older than `before` (id), newest first, optionally of one subject.
pub async fn page(
    pool: &PgPool,
    subject: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<StoredRefusal>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT refusal_id, refused_at, subject, token_prefix, operation, group_id, code, reason,
                client_addr
           FROM access_refusals
          WHERE refusal_id < $1 AND ($2::text IS NULL OR subject = $2)
          ORDER BY refusal_id DESC LIMIT $3",
    )
    .bind(before.unwrap_or(i64::MAX))
    .bind(subject)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredRefusal {
                id: row.try_get("refusal_id")?,
                refusal: Refusal {
                    at: row.try_get("refused_at")?,
                    subject: row.try_get("subject")?,
                    token_prefix: row.try_get("token_prefix")?,
                    operation: row.try_get("operation")?,
                    group_id: row.try_get("group_id")?,
                    code: row.try_get("code")?,
                    reason: row.try_get("reason")?,
                    client_addr: row.try_get("client_addr")?,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_token_shape_has_a_prefix() {
        assert_eq!(
            token_prefix("crl_0123abcd_secretsecret"),
            Some("crl_0123abcd")
        );
        assert_eq!(token_prefix("crl_0123abcdrest"), Some("crl_0123abcd"));
        assert_eq!(token_prefix("crl_0123abcx_secret"), None);
        assert_eq!(token_prefix("crl_01"), None);
        assert_eq!(token_prefix("eyJhbGciOi.jwt"), None);
        assert_eq!(token_prefix("crl_é123abcd"), None);
    }
}
