//! Waking projectors and waiting for read models.
//!
//! One LISTEN connection per process: `corral_events` wakes the projectors, and
//! `corral_checkpoints` (payload `name:txid:position`) feeds a watch channel that mutations
//! wait on, so a client that mutates and then queries sees its own write. A poll of the
//! checkpoint table every second covers notifications lost while reconnecting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{watch, Notify};

use crate::log::Cursor;
use crate::runner;

/// Latest known checkpoint of every reader.
pub type Checkpoints = HashMap<String, Cursor>;

fn parse_notification(payload: &str) -> Option<(String, Cursor)> {
    let mut parts = payload.rsplitn(3, ':');
    let global_position = parts.next()?.parse().ok()?;
    let transaction_id = parts.next()?.parse().ok()?;
    let name = parts.next()?.to_string();
    Some((
        name,
        Cursor {
            transaction_id,
            global_position,
        },
    ))
}

async fn refresh(pool: &PgPool, tx: &watch::Sender<Checkpoints>) {
    match runner::status_cursors(pool).await {
        Ok(all) => {
            tx.send_modify(|map| {
                for (name, cursor) in all {
                    let entry = map.entry(name).or_default();
                    *entry = (*entry).max(cursor);
                }
            });
        }
        Err(err) => tracing::warn!(error = %err, "could not read checkpoints"),
    }
}

/// Listens until `shutdown`; wakes every `wakers` entry on new events.
pub async fn run_listener(
    pool: PgPool,
    wakers: Vec<Arc<Notify>>,
    checkpoints: watch::Sender<Checkpoints>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener
            .listen_all([crate::channels::EVENTS, crate::channels::CHECKPOINTS])
            .await
        {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything that happened before LISTEN took effect.
        refresh(&pool, &checkpoints).await;
        wakers.iter().for_each(|w| w.notify_one());
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                received = tokio::time::timeout(Duration::from_secs(1), listener.try_recv()) => match received {
                    Err(_) => refresh(&pool, &checkpoints).await,
                    Ok(Ok(Some(n))) if n.channel() == crate::channels::EVENTS => {
                        wakers.iter().for_each(|w| w.notify_one());
                    }
                    Ok(Ok(Some(n))) => {
                        if let Some((name, cursor)) = parse_notification(n.payload()) {
                            checkpoints.send_modify(|map| {
                                let entry = map.entry(name).or_default();
                                *entry = (*entry).max(cursor);
                            });
                        }
                    }
                    // The connection dropped: reconnect, and meanwhile let everyone re-check.
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        wakers.iter().for_each(|w| w.notify_one());
                        break;
                    }
                },
            }
        }
    }
}

/// Waits until named readers have passed a cursor.
#[derive(Clone)]
pub struct ConsistencyWaiter {
    rx: watch::Receiver<Checkpoints>,
}

impl ConsistencyWaiter {
    /// A waiter fed by [`run_listener`]'s channel.
    pub fn new(rx: watch::Receiver<Checkpoints>) -> Self {
        Self { rx }
    }

    /// Where reader `name` stands, as last heard (`None`: not heard of yet).
    pub fn checkpoint(&self, name: &str) -> Option<Cursor> {
        self.rx.borrow().get(name).copied()
    }

    /// Whether every reader in `names` is at or past `target`, waiting at most `timeout`.
    pub async fn wait(&self, target: Cursor, names: &[&str], timeout: Duration) -> bool {
        let mut rx = self.rx.clone();
        let reached = |map: &Checkpoints| {
            names
                .iter()
                .all(|n| map.get(*n).is_some_and(|c| *c >= target))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if reached(&rx.borrow_and_update()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return reached(&rx.borrow()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_checkpoint_notifications() {
        assert_eq!(
            parse_notification("group_tree:812:99"),
            Some((
                "group_tree".into(),
                Cursor {
                    transaction_id: 812,
                    global_position: 99
                }
            ))
        );
        assert_eq!(parse_notification("garbage"), None);
    }

    #[tokio::test]
    async fn wait_returns_when_all_named_readers_pass_the_target() {
        let (tx, rx) = watch::channel(Checkpoints::new());
        let waiter = ConsistencyWaiter::new(rx);
        let target = Cursor {
            transaction_id: 10,
            global_position: 5,
        };
        assert!(!waiter.wait(target, &["a"], Duration::from_millis(20)).await);
        let handle = tokio::spawn({
            let waiter = waiter.clone();
            async move {
                waiter
                    .wait(target, &["a", "b"], Duration::from_secs(5))
                    .await
            }
        });
        tx.send_modify(|m| {
            m.insert(
                "a".into(),
                Cursor {
                    transaction_id: 11,
                    global_position: 0,
                },
            );
        });
        tx.send_modify(|m| {
            m.insert("b".into(), target);
        });
        assert!(handle.await.expect("join"));
    }
}
