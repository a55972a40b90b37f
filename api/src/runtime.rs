//! Process wiring shared by the `corral` subcommands: finding the database, pools, start-up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_domain::group::{GroupCommand, GroupError, GroupType};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::executor::ExecError;
use corral_projections::commands::groups::GroupCommands;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use crate::settings::DatabaseSettings;

/// A boxed error for the binary's top level.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the data of the embedded PostgreSQL lives: `configured` (`CORRAL_DATA_DIR`), else
/// `/var/lib/corral` for root (PostgreSQL runs as the `postgres` user, who cannot enter
/// `/root`), else `$XDG_DATA_HOME/corral` or `~/.local/share/corral`.
pub fn data_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/corral");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("corral");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/corral")
}

/// The database Corral uses, and the embedded server behind it if any.
pub struct Database {
    /// Connection URL.
    pub url: String,
    /// Kept alive for as long as the process uses it.
    pub embedded: Option<EmbeddedPostgres>,
}

/// The URL of an embedded server that another `corral` process already runs on `pg_dir`
/// (read from its `postmaster.pid`: line 4 is the port, line 5 the socket directory).
fn running_server_url(pg_dir: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(pg_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = pid.lines().collect();
    let port = lines.get(3)?.trim();
    let socket = lines.get(4)?.trim();
    (!socket.is_empty())
        .then(|| format!("postgres://postgres@localhost/corral?host={socket}&port={port}"))
}

/// Uses `DATABASE_URL`, or starts the embedded PostgreSQL. Short-lived commands
/// (`join_running`) use an embedded server another `corral` process already runs; a server
/// process never does, since that server stops when the process that started it exits.
pub async fn database(
    settings: &DatabaseSettings,
    join_running: bool,
) -> Result<Database, BoxError> {
    if let Some(url) = settings.database_url.as_deref() {
        if !url.trim().is_empty() {
            return Ok(Database {
                url: url.trim().to_string(),
                embedded: None,
            });
        }
    }
    let pg_dir = data_dir(settings.data_dir.as_deref()).join("pg");
    if let Some(url) = running_server_url(&pg_dir) {
        if PgConnectOptions::from_url(&url.parse()?)?
            .connect()
            .await
            .is_ok()
        {
            if !join_running {
                return Err(format!(
                    "the embedded PostgreSQL in {} is in use by another corral process; stop that process first, or set DATABASE_URL",
                    pg_dir.display()
                )
                .into());
            }
            tracing::info!(data_dir = %pg_dir.display(), "using the embedded PostgreSQL another corral process runs");
            return Ok(Database {
                url,
                embedded: None,
            });
        }
    }
    tracing::info!(data_dir = %pg_dir.display(), "DATABASE_URL is not set: starting the embedded PostgreSQL");
    let mut options = EmbeddedOptions::persistent(&pg_dir);
    options.bindir = settings.pg_bindir.clone();
    let embedded = EmbeddedPostgres::start(options).await?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&embedded.url("postgres"))
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'corral')")
            .fetch_one(&admin)
            .await?;
    if !exists {
        sqlx::query("CREATE DATABASE corral")
            .execute(&admin)
            .await?;
    }
    admin.close().await;
    Ok(Database {
        url: embedded.url("corral"),
        embedded: Some(embedded),
    })
}

/// `url` with its database name replaced by `database` (query parameters kept).
pub fn url_with_database(url: &str, database: &str) -> Result<String, BoxError> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (prefix, _) = base
        .rsplit_once('/')
        .filter(|(p, _)| p.contains("://"))
        .ok_or("the database URL must look like postgres://user@host:port/database")?;
    Ok(match query {
        Some(q) => format!("{prefix}/{database}?{q}"),
        None => format!("{prefix}/{database}"),
    })
}

/// The main pool and the pool for hierarchy lock transactions.
pub async fn pools(url: &str, max_connections: u32) -> Result<(PgPool, PgPool), BoxError> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.application_name("corral");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    // As many lock transactions as commands in flight: a command holds one lock connection
    // and, briefly, one main-pool connection at a time, so neither pool can starve the other.
    let lock_pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.application_name("corral-locks"))
        .await?;
    Ok((pool, lock_pool))
}

/// Creates the system root groups if they do not exist (idempotent, safe to race).
pub async fn ensure_roots(groups: &GroupCommands) -> Result<(), BoxError> {
    for group_type in GroupType::ALL {
        let meta = EventMetadata::system(Source::Worker, "startup");
        groups
            .execute(GroupCommand::EnsureRoot { group_type }, None, &meta)
            .await
            .map_err(|e| format!("creating the {} root: {e}", group_type.as_str()))?;
    }
    Ok(())
}

/// The dynamic device groups every installation starts with: name and rule.
pub const PREDEFINED_GROUPS: [(&str, &str); 2] = [
    ("Offline > 7 days", "last_seen:<now-7d"),
    ("Unavailable", "is_available:false"),
];

/// The fixed id of a predefined group (the same on every installation).
pub fn predefined_id(name: &str) -> uuid::Uuid {
    let namespace = uuid::Uuid::from_u128(0x8d1c_57a4_0b6e_4f7e_9c55_2a1e_6b7d_c0df);
    uuid::Uuid::new_v5(&namespace, name.as_bytes())
}

/// Creates the predefined dynamic groups on first start. A group an admin deleted (or whose
/// rule an admin changed or cleared) is left alone: each is created once, with its rule.
pub async fn ensure_predefined_groups(
    pool: &sqlx::PgPool,
    groups: &GroupCommands,
) -> Result<(), BoxError> {
    let meta = EventMetadata::system(Source::Worker, "startup");
    let parent_id = GroupType::Device.root_id();
    for (name, text) in PREDEFINED_GROUPS {
        let id = predefined_id(name);
        let state: Option<(bool, i64)> =
            sqlx::query_as("SELECT deleted, rule_version FROM group_registry WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        match state {
            // Created before: only a crash between create and rule needs finishing.
            Some((deleted, rule_version)) if deleted || rule_version > 0 => continue,
            Some(_) => {}
            None => {
                let command = GroupCommand::Create {
                    id,
                    name: name.to_string(),
                    group_type: GroupType::Device,
                    parent_id,
                    description: Some(
                        "Predefined dynamic group; admins may change or delete it.".into(),
                    ),
                    metadata: None,
                };
                match groups.execute(command, None, &meta).await {
                    Ok(_) => {}
                    // A sibling of that name exists, or another process created it just now.
                    Err(ExecError::Domain(GroupError::NameTaken { .. }))
                    | Err(ExecError::Domain(GroupError::AlreadyExists(_))) => continue,
                    Err(e) => return Err(format!("creating {name:?}: {e}").into()),
                }
            }
        }
        let rule = corral_domain::rule::parse(text, GroupType::Device)
            .map_err(|e| format!("predefined rule {text:?}: {e}"))?
            .rule;
        let command = GroupCommand::SetRule {
            id,
            rule: rule.to_json(),
            text: rule.to_text(),
            kind: GroupType::Device,
            refs: vec![],
            enabled: true,
        };
        groups
            .execute(command, None, &meta)
            .await
            .map_err(|e| format!("setting the rule of {name:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::url_with_database;

    #[test]
    fn replaces_only_the_database_name() {
        let url = "postgres://postgres@127.0.0.1:5432/corral?sslmode=disable";
        assert_eq!(
            url_with_database(url, "other").ok().as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/other?sslmode=disable")
        );
        assert_eq!(
            url_with_database("postgres://h/db", "x").ok().as_deref(),
            Some("postgres://h/x")
        );
        assert!(url_with_database("not a url", "x").is_err());
    }
}
