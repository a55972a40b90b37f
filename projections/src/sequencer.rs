//! The sequencer: gives each committed event its public, gapless, commit-ordered
//! `log_position` and its hash-chain link, in `event_log`. It is a projector whose read model
//! is that table; its checkpoint row lock guarantees a single sequencer at a time, and the
//! unique key on `global_position` that no event is sequenced twice.

use async_trait::async_trait;
use sqlx::{PgConnection, Row};

use crate::canonical::{chain_hash, GENESIS_HASH};
use crate::log::EventRecord;
use crate::projection::Projection;
use crate::StoreError;

/// Checkpoint name of the sequencer.
pub const SEQUENCER: &str = "sequencer";

/// Assigns log positions and hashes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sequencer;

/// The last sequenced event: its position and hash (0 and the genesis hash before any).
pub async fn head(conn: &mut PgConnection) -> Result<(i64, Vec<u8>), StoreError> {
    let row =
        sqlx::query("SELECT log_position, hash FROM event_log ORDER BY log_position DESC LIMIT 1")
            .fetch_optional(conn)
            .await?;
    match row {
        Some(r) => Ok((r.try_get("log_position")?, r.try_get("hash")?)),
        None => Ok((0, GENESIS_HASH.to_vec())),
    }
}

#[async_trait]
impl Projection for Sequencer {
    fn name(&self) -> &'static str {
        SEQUENCER
    }

    fn live_schema(&self) -> Option<&'static str> {
        None
    }

    async fn create_tables(&self, _: &mut PgConnection, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        _schema: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError> {
        let (mut position, mut prev) = head(&mut *conn).await?;
        let mut globals = Vec::with_capacity(events.len());
        let mut positions = Vec::with_capacity(events.len());
        let mut hashes = Vec::with_capacity(events.len());
        for event in events {
            position += 1;
            prev = chain_hash(&prev, event, position);
            globals.push(event.global_position);
            positions.push(position);
            hashes.push(prev.clone());
        }
        sqlx::query(
            "INSERT INTO event_log (global_position, log_position, hash)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])",
        )
        .bind(&globals)
        .bind(&positions)
        .bind(&hashes)
        .execute(&mut *conn)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::channels::LOG)
            .bind(position.to_string())
            .execute(conn)
            .await?;
        Ok(())
    }
}
