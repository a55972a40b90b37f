//! `corral token create | list | revoke`.

use chrono::Utc;
use clap::Subcommand;
use corral_api::auth::{self, NewToken};
use corral_api::runtime::BoxError;
use corral_projections::commands::access::access_commands;
use corral_projections::wake::CommitSignal;
use sqlx::PgPool;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token; the token is the last line of output, shown once.
    Create {
        /// Who the token is for (created on its first token).
        #[arg(long)]
        subject: String,
        /// admin, operator, viewer or auditor (a binding the subject is granted).
        #[arg(long)]
        role: String,
        /// The group whose subtree the role applies to: its id or its path
        /// (`Inventory/Site-A`); omitted: everywhere.
        #[arg(long, value_name = "GROUP_ID|PATH")]
        scope: Option<String>,
        /// How long it works: 30d, 12h, 90m (1 minute to 10 years); default: until revoked.
        #[arg(long, value_name = "LIFETIME")]
        expires_in: Option<String>,
    },
    /// List tokens, newest first: prefix, id, subject, roles, status, expiry, last use.
    List {
        /// Only this subject's tokens.
        #[arg(long)]
        subject: Option<String>,
        /// Revoked and expired tokens too.
        #[arg(long)]
        all: bool,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Revoke a token, named by its id or its prefix; it stops working on every process
    /// within a second, open websockets included.
    Revoke {
        /// The token's id, or its prefix (`crl_` and 8 hex digits) when only one token has it.
        token: String,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(pool: &PgPool, command: TokenCommand) -> Result<(), BoxError> {
    let commands = access_commands(pool.clone(), CommitSignal::new(vec![]));
    match command {
        TokenCommand::Create {
            subject,
            role,
            scope,
            expires_in,
        } => {
            let binding = crate::role_cli::binding(pool, &role, scope.as_deref()).await?;
            let label = auth::binding_label(&binding);
            let expires_at = match expires_in {
                Some(text) => Some(Utc::now() + auth::parse_lifetime(&text)?),
                None => None,
            };
            let request = NewToken {
                subject: subject.clone(),
                bindings: vec![binding],
                expires_at,
            };
            let issued = auth::issue(&commands, pool, request, &auth::cli_metadata(None)).await?;
            let until = expires_at.map_or("until revoked".to_string(), |at| {
                format!("until {}", at.format("%Y-%m-%dT%H:%M:%SZ"))
            });
            println!(
                "created a {label} token for {subject} (id {}, prefix {}), valid {until}; \
                 it is shown only once:",
                issued.token_id, issued.prefix
            );
            println!("{}", issued.secret);
        }
        TokenCommand::List {
            subject,
            all,
            limit,
        } => {
            let tokens = auth::list_tokens(pool, subject.as_deref(), all, limit).await?;
            println!(
                "{:<12} {:<36} {:<20} {:<16} {:<8} {:<20} {:<20}",
                "PREFIX", "ID", "SUBJECT", "ROLES", "STATUS", "EXPIRES", "LAST_USED"
            );
            let now = Utc::now();
            let time = |t: Option<chrono::DateTime<Utc>>| {
                t.map_or("-".to_string(), |t| {
                    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                })
            };
            for t in &tokens {
                println!(
                    "{:<12} {:<36} {:<20} {:<16} {:<8} {:<20} {:<20}",
                    t.prefix,
                    t.token_id,
                    t.subject,
                    t.bindings.join(","),
                    t.status(now),
                    time(t.expires_at),
                    time(t.last_used_at)
                );
            }
            eprintln!("{} token(s)", tokens.len());
        }
        TokenCommand::Revoke { token, reason } => {
            let id = auth::revoke(
                &commands,
                pool,
                &token,
                reason.clone(),
                &auth::cli_metadata(reason),
            )
            .await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}
