//! `corral watch add | remove | list`: durable membership watches, whose changes the NATS
//! membership feed publishes (`docs/integrators.md`). The same MembershipWatch commands as
//! `registerMembershipWatch` / `removeMembershipWatch`, recorded with the CLI's actor.

use clap::Subcommand;
use corral_api::auth;
use corral_api::runtime::BoxError;
use corral_domain::watch::MembershipWatchCommand;
use corral_projections::commands::watches::watch_commands;
use corral_projections::wake::CommitSignal;
use corral_projections::watch::registry::{watches_at, MAX_WATCHES};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum WatchCommand {
    /// Register a watch of a group's membership: the feed publishes each member entering or
    /// leaving it from the next event on. Prints the watch's id.
    Add {
        /// The group: its id or its path (`Inventory/Site-A`).
        #[arg(long, value_name = "GROUP_ID|PATH")]
        group: String,
        /// Watch its effective membership (its subtree's members).
        #[arg(long)]
        descendants: bool,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove a watch: the feed publishes nothing more for it.
    Remove {
        /// The watch's id.
        #[arg(long)]
        id: Uuid,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// List the watches registered and not removed (as far as the log is sequenced).
    List,
}

pub async fn run(pool: &PgPool, command: WatchCommand) -> Result<(), BoxError> {
    let commands = watch_commands(pool.clone(), CommitSignal::new(vec![]));
    match command {
        WatchCommand::Add {
            group,
            descendants,
            description,
            reason,
        } => {
            let group_id = auth::resolve_scope(pool, &group)
                .await
                .map_err(|e| BoxError::from(e.to_string().replace("scope", "group")))?;
            let mut conn = pool.acquire().await?;
            let active = watches_at(&mut conn, None)
                .await?
                .into_iter()
                .filter(|w| w.removed_at_position.is_none())
                .count();
            if active >= MAX_WATCHES {
                return Err(format!(
                    "at most {MAX_WATCHES} membership watches at once; remove one first"
                )
                .into());
            }
            let id = Uuid::new_v4();
            commands
                .execute(
                    id,
                    MembershipWatchCommand::Register {
                        group_id,
                        include_descendants: descendants,
                        description,
                    },
                    &auth::cli_metadata(reason),
                )
                .await
                .map_err(|e| BoxError::from(e.to_string()))?;
            println!("registered membership watch of group {group_id}");
            println!("{id}");
        }
        WatchCommand::Remove { id, reason } => {
            commands
                .execute(
                    id,
                    MembershipWatchCommand::Remove,
                    &auth::cli_metadata(reason),
                )
                .await
                .map_err(|e| BoxError::from(e.to_string()))?;
            println!("removed membership watch {id}");
        }
        WatchCommand::List => {
            let mut conn = pool.acquire().await?;
            println!(
                "{:<36} {:<36} {:<11} {:>10} {:<16} DESCRIPTION",
                "WATCH", "GROUP", "DESCENDANTS", "FROM", "BY"
            );
            for w in watches_at(&mut conn, None).await? {
                if w.removed_at_position.is_some() {
                    continue;
                }
                println!(
                    "{:<36} {:<36} {:<11} {:>10} {:<16} {}",
                    w.id,
                    w.group_id,
                    w.include_descendants,
                    w.registered_at_position,
                    w.registered_by,
                    w.description.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
