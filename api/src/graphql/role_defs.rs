//! Custom roles (admins, `access.manage` everywhere): named sets of permissions of the
//! catalog (`docs/access.md`), defined and deleted as events of their own aggregate, and in
//! force on every process within a second of the commit. `roles` lists the built-in roles and
//! the custom ones with what each permits.

use std::sync::Arc;

use async_graphql::{Context, InputObject, Object, Result, SimpleObject};
use corral_domain::access::{RoleCommand, BUILT_IN_ROLES};
use corral_projections::commands::Command;

use super::errors::{from_command, internal, UserError};
use super::mutation::{event_metadata, execute};
use crate::permissions::Permission;
use crate::policy::Policy;

/// A role: a named set of permissions.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct RoleInfo {
    /// Its name (what bindings name).
    pub name: String,
    /// Built in (from the embedded policy, fixed) or custom (defined with `defineRole`).
    pub built_in: bool,
    /// What it permits, names of the catalog, in catalog order.
    pub permissions: Vec<String>,
}

/// Input of `defineRole`.
#[derive(InputObject)]
pub struct DefineRoleInput {
    /// 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, `.`, starting with a letter; not a
    /// built-in role.
    pub name: String,
    /// Permissions of the catalog (`group.read`, `membership.edit`, ...), at least one; a
    /// role defined already has its permissions replaced.
    pub permissions: Vec<String>,
    /// Why (recorded in the event and the audit trail).
    pub reason: Option<String>,
}

/// Input of `deleteRole`.
#[derive(InputObject)]
pub struct DeleteRoleInput {
    /// The custom role.
    pub name: String,
    /// Why (recorded in the event and the audit trail).
    pub reason: Option<String>,
}

/// The result of `defineRole` and `deleteRole`.
#[derive(SimpleObject, Default)]
pub struct RoleDefinitionPayload {
    /// The role after the change (`null` on error, and after `deleteRole`).
    pub role: Option<RoleInfo>,
    /// Expected failures; nothing was written when this is not empty.
    pub user_errors: Vec<UserError>,
}

fn failed(e: UserError) -> RoleDefinitionPayload {
    RoleDefinitionPayload {
        role: None,
        user_errors: vec![e],
    }
}

/// Puts the definitions just committed in force on this process at once (the others follow
/// the access epoch within a second), so that the caller's next request sees them.
async fn reload(ctx: &Context<'_>) -> Result<()> {
    let pool = ctx.data_unchecked::<sqlx::PgPool>();
    let table = crate::policy::load_table(pool).await.map_err(internal)?;
    ctx.data::<Arc<Policy>>()?.replace(table);
    Ok(())
}

/// Every role the policy in force knows, built-in ones first.
fn roles_in_force(ctx: &Context<'_>) -> Result<Vec<RoleInfo>> {
    let table = ctx.data::<Arc<Policy>>()?.table();
    let mut names: Vec<String> = table.role_names().map(str::to_string).collect();
    names.sort_by_key(|n| (!BUILT_IN_ROLES.contains(&n.as_str()), n.clone()));
    Ok(names
        .into_iter()
        .map(|name| RoleInfo {
            built_in: BUILT_IN_ROLES.contains(&name.as_str()),
            permissions: Permission::all()
                .filter(|p| table.grants(&name, *p))
                .map(|p| p.as_str().to_string())
                .collect(),
            name,
        })
        .collect())
}

/// Role queries (part of the `Query` root).
#[derive(Default)]
pub struct RoleQuery;

#[Object]
impl RoleQuery {
    /// Every role in force on this process (admins): the built-in ones and the custom ones,
    /// with their permissions.
    async fn roles(&self, ctx: &Context<'_>) -> Result<Vec<RoleInfo>> {
        super::scope::require_global(ctx, Permission::AccessManage).await?;
        roles_in_force(ctx)
    }
}

/// Role mutations (part of the `Mutation` root).
#[derive(Default)]
pub struct RoleMutation;

#[Object]
impl RoleMutation {
    /// Defines a custom role, or replaces its permissions (admins): bindings to it grant the
    /// new set on every process within a second, open websockets included. As `corral role
    /// define` does.
    async fn define_role(
        &self,
        ctx: &Context<'_>,
        input: DefineRoleInput,
    ) -> Result<RoleDefinitionPayload> {
        super::scope::require_global(ctx, Permission::AccessManage).await?;
        let metadata = match event_metadata(ctx, input.reason)? {
            Ok(m) => m,
            Err(e) => return Ok(failed(e)),
        };
        let name = input.name.trim().to_string();
        let command = RoleCommand::Define {
            name: name.clone(),
            permissions: input.permissions,
        };
        if let Err(e) = execute(ctx, Command::Role(command), &metadata).await {
            return Ok(failed(from_command(e)?));
        }
        reload(ctx).await?;
        // Answer from the registry as it stands after the commit.
        let pool = ctx.data_unchecked::<sqlx::PgPool>();
        let defined = crate::auth::defined_roles(pool).await.map_err(internal)?;
        let role = defined.into_iter().find(|(n, _)| *n == name).map(|(n, p)| {
            let mut permissions: Vec<String> = Permission::all()
                .filter(|c| p.iter().any(|x| x == c.as_str()))
                .map(|c| c.as_str().to_string())
                .collect();
            permissions.dedup();
            RoleInfo {
                name: n,
                built_in: false,
                permissions,
            }
        });
        Ok(RoleDefinitionPayload {
            role,
            user_errors: vec![],
        })
    }

    /// Deletes a custom role (admins): bindings to it grant nothing from now on, on every
    /// process within a second (they stay recorded, and work again if the role is defined
    /// again). Deleting a role that is not defined writes nothing.
    async fn delete_role(
        &self,
        ctx: &Context<'_>,
        input: DeleteRoleInput,
    ) -> Result<RoleDefinitionPayload> {
        super::scope::require_global(ctx, Permission::AccessManage).await?;
        let metadata = match event_metadata(ctx, input.reason)? {
            Ok(m) => m,
            Err(e) => return Ok(failed(e)),
        };
        let name = input.name.trim().to_string();
        if let Err(e) = corral_domain::access::valid_role_name(&name) {
            return Ok(failed(UserError::new(e.field(), e.code(), e.to_string())));
        }
        if let Err(e) = execute(ctx, Command::Role(RoleCommand::Delete { name }), &metadata).await {
            return Ok(failed(from_command(e)?));
        }
        reload(ctx).await?;
        Ok(RoleDefinitionPayload::default())
    }
}
