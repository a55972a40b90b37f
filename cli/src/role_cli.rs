//! `corral role grant | revoke`: global role bindings of a subject (scoped bindings are not
//! enforced yet, so there is no scope).

use clap::Subcommand;
use corral_api::auth;
use corral_api::runtime::BoxError;
use corral_projections::commands::access::access_commands;
use corral_projections::wake::CommitSignal;
use sqlx::PgPool;

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Grant a subject a global role (the subject is created if it does not exist); its
    /// tokens that list the role use it again at once.
    Grant {
        /// The subject.
        #[arg(long)]
        subject: String,
        /// admin, operator, viewer or auditor.
        #[arg(long)]
        role: String,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take a global role from a subject: every token of it stops using the role within a
    /// second, and open websockets whose roles change are closed (4403).
    Revoke {
        /// The subject (it must exist).
        #[arg(long)]
        subject: String,
        /// admin, operator, viewer or auditor.
        #[arg(long)]
        role: String,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(pool: &PgPool, command: RoleCommand) -> Result<(), BoxError> {
    let commands = access_commands(pool.clone(), CommitSignal::new(vec![]));
    let (subject, verb, roles) = match command {
        RoleCommand::Grant {
            subject,
            role,
            reason,
        } => {
            let roles = auth::grant_role(
                &commands,
                pool,
                &subject,
                &role,
                &auth::cli_metadata(reason),
            )
            .await?;
            (subject, format!("granted {role} to"), roles)
        }
        RoleCommand::Revoke {
            subject,
            role,
            reason,
        } => {
            let roles = auth::revoke_role(
                &commands,
                pool,
                &subject,
                &role,
                &auth::cli_metadata(reason),
            )
            .await
            .map_err(|e| match e {
                auth::TokenError::NotFound(s) => format!("no subject is named {s:?}").into(),
                other => BoxError::from(other),
            })?;
            (subject, format!("revoked {role} from"), roles)
        }
    };
    let roles = if roles.is_empty() {
        "none".to_string()
    } else {
        roles.join(",")
    };
    println!("{verb} {}; global roles now: {roles}", subject.trim());
    Ok(())
}
