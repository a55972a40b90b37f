//! Waking readers after a commit without NOTIFY inside the writing transaction.
//!
//! PostgreSQL serializes the commits of transactions that NOTIFY (a global lock is held from
//! pre-commit to the end of the commit), so a NOTIFY per command would queue every command
//! behind every other's WAL flush. Instead, a writer calls [`CommitSignal::committed`] after
//! its commit: projectors in this process are woken at once, and one background task sends a
//! single `NOTIFY corral_events` (autocommit, coalesced) for readers in other processes.
//! Anything else that writes events is caught by the readers' polling.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{watch, Notify};

/// Tells readers that events were committed.
#[derive(Clone, Default)]
pub struct CommitSignal {
    local: Vec<Arc<Notify>>,
    remote: Arc<Notify>,
}

impl CommitSignal {
    /// A signal that wakes `local` projectors directly and feeds [`run_notifier`].
    pub fn new(local: Vec<Arc<Notify>>) -> Self {
        Self {
            local,
            remote: Arc::new(Notify::new()),
        }
    }

    /// Call after committing events.
    pub fn committed(&self) {
        self.local.iter().for_each(|w| w.notify_one());
        self.remote.notify_one();
    }
}

/// Sends `NOTIFY corral_events` after commits, at most one every `coalesce`, until `stop`.
pub async fn run_notifier(
    pool: PgPool,
    signal: CommitSignal,
    coalesce: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = signal.remote.notified() => {}
            _ = stop.changed() => return,
        }
        if let Err(err) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(crate::channels::EVENTS)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %err, "could not notify other processes of new events; they will poll");
        }
        tokio::time::sleep(coalesce).await;
    }
}
