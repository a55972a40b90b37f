//! Corral's SQL migrations and the migrator that applies them.
//!
//! Migrations are append-only: an applied file must never change. The migrator records each
//! file's sha256 and refuses to start when an applied file was edited.

pub mod locks;

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgPool, Row};

/// One migration: a version number, a name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing version.
    pub version: i64,
    /// File name, for humans.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_event_log.sql",
        sql: include_str!("../sql/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "0002_inventory_membership.sql",
        sql: include_str!("../sql/0002_inventory_membership.sql"),
    },
    Migration {
        version: 3,
        name: "0003_audit_publisher.sql",
        sql: include_str!("../sql/0003_audit_publisher.sql"),
    },
    Migration {
        version: 4,
        name: "0004_health.sql",
        sql: include_str!("../sql/0004_health.sql"),
    },
    Migration {
        version: 5,
        name: "0005_telemetry_feed.sql",
        sql: include_str!("../sql/0005_telemetry_feed.sql"),
    },
    Migration {
        version: 6,
        name: "0006_sweeps.sql",
        sql: include_str!("../sql/0006_sweeps.sql"),
    },
    Migration {
        version: 7,
        name: "0007_sweep_idempotency.sql",
        sql: include_str!("../sql/0007_sweep_idempotency.sql"),
    },
    Migration {
        version: 8,
        name: "0008_access.sql",
        sql: include_str!("../sql/0008_access.sql"),
    },
    Migration {
        version: 9,
        name: "0009_access_refusals.sql",
        sql: include_str!("../sql/0009_access_refusals.sql"),
    },
    Migration {
        version: 10,
        name: "0010_access_roles.sql",
        sql: include_str!("../sql/0010_access_roles.sql"),
    },
    Migration {
        version: 11,
        name: "0011_inventory_history.sql",
        sql: include_str!("../sql/0011_inventory_history.sql"),
    },
    Migration {
        version: 12,
        name: "0012_event_writers.sql",
        sql: include_str!("../sql/0012_event_writers.sql"),
    },
    Migration {
        version: 14,
        name: "0014_membership_registry_by_member.sql",
        sql: include_str!("../sql/0014_membership_registry_by_member.sql"),
    },
];

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database could not be reached or a statement failed.
    #[error("migration {name} failed: {source}")]
    Statement {
        /// The migration's file name.
        name: String,
        /// The database error.
        source: sqlx::Error,
    },
    /// The database error outside a particular migration.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// An applied migration's SQL no longer matches the file.
    #[error("migration {0} was edited after it was applied (checksum mismatch); migrations are append-only")]
    Edited(String),
    /// The database has migrations this binary does not know.
    #[error(
        "the database is at migration {0}, newer than this binary knows ({1}); upgrade corral"
    )]
    TooNew(i64, i64),
}

fn checksum(sql: &str) -> Vec<u8> {
    Sha256::digest(sql.as_bytes()).to_vec()
}

/// Applies every pending migration; returns how many were applied. Safe to run from several
/// processes at once (an advisory lock serializes them).
#[tracing::instrument(skip_all, err)]
pub async fn migrate(pool: &PgPool) -> Result<usize, MigrateError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(locks::Lock::Migrations.key())
        .execute(&mut *conn)
        .await?;
    let result = apply_pending(&mut conn).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(locks::Lock::Migrations.key())
        .execute(&mut *conn)
        .await?;
    result
}

async fn apply_pending(conn: &mut sqlx::PgConnection) -> Result<usize, MigrateError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version bigint PRIMARY KEY, name text NOT NULL, checksum bytea NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query("SELECT version, checksum FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *conn)
        .await?;
    let latest_known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut applied = std::collections::HashMap::new();
    for row in rows {
        let version: i64 = row.try_get("version")?;
        let sum: Vec<u8> = row.try_get("checksum")?;
        if version > latest_known {
            return Err(MigrateError::TooNew(version, latest_known));
        }
        applied.insert(version, sum);
    }
    let mut count = 0;
    for m in MIGRATIONS {
        if let Some(sum) = applied.get(&m.version) {
            if *sum != checksum(m.sql) {
                return Err(MigrateError::Edited(m.name.to_string()));
            }
            continue;
        }
        let statement_err = |source| MigrateError::Statement {
            name: m.name.to_string(),
            source,
        };
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(statement_err)?;
        sqlx::query("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(checksum(m.sql))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            migration.version = m.version,
            migration.name = m.name,
            "applied migration"
        );
        count += 1;
    }
    Ok(count)
}
