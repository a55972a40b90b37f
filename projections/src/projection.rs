//! What a projector is: a fold of events into tables, applied in the reader's transaction.

use async_trait::async_trait;
use sqlx::PgConnection;

use crate::log::EventRecord;
use crate::StoreError;

/// A read model kept by a catch-up projector. `apply` runs in the same transaction as the
/// checkpoint update, so a batch is applied exactly once or not at all.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Unique name; also the checkpoint row's key.
    fn name(&self) -> &'static str;

    /// Aggregate types this projection reads (all when empty).
    fn aggregate_types(&self) -> Vec<String> {
        vec![]
    }

    /// Whether `apply` reads event metadata (readers skip decoding it otherwise).
    fn needs_metadata(&self) -> bool {
        true
    }

    /// Most events per catch-up batch ([`crate::runner::run_projector`]). A projection whose
    /// events are small and whose batches coalesce (many events, one row each) can take more
    /// than the default at a time; one that reads large events (Membership events carry up
    /// to 1,000 ids) should not.
    fn batch_size(&self) -> i64 {
        crate::runner::BATCH_SIZE
    }

    /// The schema that serves the read model, or `None` when the projection keeps no tables
    /// of its own (the sequencer) and cannot be rebuilt.
    fn live_schema(&self) -> Option<&'static str>;

    /// The shape of the tables `create_tables` makes. A live schema of another shape (from an
    /// older release) is rebuilt when the projector starts.
    fn shape(&self) -> u32 {
        1
    }

    /// Creates the projection's tables in `schema` (which exists and is empty).
    async fn create_tables(&self, conn: &mut PgConnection, schema: &str) -> Result<(), StoreError>;

    /// Applies a batch of events, in order, to the tables in `schema`.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError>;
}

/// The comment that records a schema's shape.
pub(crate) fn shape_comment(shape: u32) -> String {
    format!("corral shape {shape}")
}

/// Creates a projection's tables in `schema` and records their shape.
pub(crate) async fn create_shaped<P: Projection + ?Sized>(
    conn: &mut PgConnection,
    projection: &P,
    schema: &str,
) -> Result<(), StoreError> {
    projection.create_tables(&mut *conn, schema).await?;
    sqlx::query(&format!(
        "COMMENT ON SCHEMA {} IS '{}'",
        schema_ident(schema)?,
        shape_comment(projection.shape())
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Quotes a schema name produced by Corral itself (letters, digits, underscores only).
pub(crate) fn schema_ident(schema: &str) -> Result<&str, StoreError> {
    if !schema.is_empty()
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(schema)
    } else {
        Err(StoreError::Data(format!("bad schema name {schema:?}")))
    }
}
