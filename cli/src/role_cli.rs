//! `corral role grant | revoke`: role bindings of a subject, global or on one group's
//! subtree (`--scope GROUP_ID|PATH`); `corral role define | delete | list`: custom roles,
//! named sets of permissions of the catalog (`docs/access.md`).

use clap::Subcommand;
use corral_api::auth;
use corral_api::runtime::BoxError;
use corral_domain::access::Binding;
use corral_domain::access::{role_id, RoleCommand as Definition, BUILT_IN_ROLES};
use corral_projections::commands::access::{access_commands, role_commands};
use corral_projections::wake::CommitSignal;
use sqlx::PgPool;

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Grant a subject a role, everywhere or on one group's subtree (the subject is created
    /// if it does not exist); its tokens that list the binding use it again at once.
    Grant {
        /// The subject.
        #[arg(long)]
        subject: String,
        /// admin, operator, viewer or auditor.
        #[arg(long)]
        role: String,
        /// The group whose subtree the role applies to: its id or its path
        /// (`Inventory/Site-A`); omitted: everywhere.
        #[arg(long, value_name = "GROUP_ID|PATH")]
        scope: Option<String>,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take a binding from a subject: every token of it stops using the binding within a
    /// second, and open websockets whose bindings change are closed (4403).
    Revoke {
        /// The subject (it must exist).
        #[arg(long)]
        subject: String,
        /// admin, operator, viewer or auditor.
        #[arg(long)]
        role: String,
        /// The group of the binding (its id or path); omitted: the global binding.
        #[arg(long, value_name = "GROUP_ID|PATH")]
        scope: Option<String>,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Define a custom role, or replace its permissions: bindings to it grant the new set on
    /// every process within a second.
    Define {
        /// Its name: a-z, 0-9, '-', '_', '.', starting with a letter; not a built-in role.
        #[arg(long)]
        name: String,
        /// Permissions of the catalog, comma-separated (group.read,membership.edit,...).
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete a custom role: bindings to it grant nothing from now on (they stay recorded).
    Delete {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// List the roles: the built-in ones and the custom ones, with their permissions.
    List,
}

/// Defines, deletes or lists custom roles.
async fn definitions(
    pool: &PgPool,
    command: Definition,
    reason: Option<String>,
) -> Result<(), BoxError> {
    let name = match &command {
        Definition::Define { name, .. } | Definition::Delete { name } => name.clone(),
    };
    let commands = role_commands(pool.clone(), CommitSignal::new(vec![]));
    commands
        .execute(role_id(&name), command, &auth::cli_metadata(reason))
        .await
        .map_err(|e| BoxError::from(e.to_string()))?;
    Ok(())
}

/// Prints every role in force, one a line: name, kind, permissions.
async fn list(pool: &PgPool) -> Result<(), BoxError> {
    let table = corral_api::policy::load_table(pool).await?;
    let mut names: Vec<String> = table.role_names().map(str::to_string).collect();
    names.sort_by_key(|n| (!BUILT_IN_ROLES.contains(&n.as_str()), n.clone()));
    println!("{:<24} {:<8} PERMISSIONS", "ROLE", "KIND");
    for name in names {
        let permissions: Vec<&str> = corral_api::permissions::Permission::all()
            .filter(|p| table.grants(&name, *p))
            .map(|p| p.as_str())
            .collect();
        let kind = if BUILT_IN_ROLES.contains(&name.as_str()) {
            "built-in"
        } else {
            "custom"
        };
        println!("{name:<24} {kind:<8} {}", permissions.join(","));
    }
    Ok(())
}

/// The binding of `role` on `scope` (an id or a path), or global.
pub async fn binding(pool: &PgPool, role: &str, scope: Option<&str>) -> Result<Binding, BoxError> {
    Ok(Binding {
        role: role.to_string(),
        scope: match scope {
            Some(text) => Some(auth::resolve_scope(pool, text).await?),
            None => None,
        },
    })
}

pub async fn run(pool: &PgPool, command: RoleCommand) -> Result<(), BoxError> {
    let commands = access_commands(pool.clone(), CommitSignal::new(vec![]));
    let (subject, verb, bindings) = match command {
        RoleCommand::Grant {
            subject,
            role,
            scope,
            reason,
        } => {
            let b = binding(pool, &role, scope.as_deref()).await?;
            let label = auth::binding_label(&b);
            let bindings =
                auth::grant_role(&commands, pool, &subject, b, &auth::cli_metadata(reason)).await?;
            (subject, format!("granted {label} to"), bindings)
        }
        RoleCommand::Revoke {
            subject,
            role,
            scope,
            reason,
        } => {
            // A scope named by id need not exist any more (its group may be deleted).
            let b = match scope.as_deref().map(|s| s.trim().parse::<uuid::Uuid>()) {
                Some(Ok(id)) => Binding {
                    role: role.clone(),
                    scope: Some(id),
                },
                _ => binding(pool, &role, scope.as_deref()).await?,
            };
            let label = auth::binding_label(&b);
            let bindings =
                auth::revoke_role(&commands, pool, &subject, b, &auth::cli_metadata(reason))
                    .await
                    .map_err(|e| match e {
                        auth::TokenError::NotFound(s) => {
                            format!("no subject is named {s:?}").into()
                        }
                        other => BoxError::from(other),
                    })?;
            (subject, format!("revoked {label} from"), bindings)
        }
        RoleCommand::Define {
            name,
            permissions,
            reason,
        } => {
            definitions(
                pool,
                Definition::Define {
                    name: name.trim().to_string(),
                    permissions: permissions.iter().map(|p| p.trim().to_string()).collect(),
                },
                reason,
            )
            .await?;
            println!("defined role {}: {}", name.trim(), permissions.join(","));
            return Ok(());
        }
        RoleCommand::Delete { name, reason } => {
            definitions(
                pool,
                Definition::Delete {
                    name: name.trim().to_string(),
                },
                reason,
            )
            .await?;
            println!("deleted role {}", name.trim());
            return Ok(());
        }
        RoleCommand::List => return list(pool).await,
    };
    let held = if bindings.is_empty() {
        "none".to_string()
    } else {
        bindings
            .iter()
            .map(auth::binding_label)
            .collect::<Vec<_>>()
            .join(",")
    };
    println!("{verb} {}; bindings now: {held}", subject.trim());
    Ok(())
}
