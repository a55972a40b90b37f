//! casbin policies, and the GraphQL extension that checks them on every root field.
//!
//! The check sits in the executor, not in resolvers: a new Query or Mutation field is denied
//! to everyone until `policy/policy.csv` grants it.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{ErrorExtensions, ServerResult, Value};
use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

use crate::auth::Actor;

/// The roles tokens may carry.
pub const ROLES: [&str; 3] = ["admin", "operator", "viewer"];

const MODEL: &str = include_str!("../policy/model.conf");
const POLICY: &str = include_str!("../policy/policy.csv");

/// Builds the enforcer from the embedded model and policy.
pub async fn enforcer() -> Result<Arc<Enforcer>, casbin::Error> {
    let model = DefaultModel::from_str(MODEL).await?;
    let enforcer = Enforcer::new(model, StringAdapter::new(POLICY)).await?;
    Ok(Arc::new(enforcer))
}

/// Whether `role` may call root field `object` (`Mutation.createGroup`).
pub fn allowed(enforcer: &Enforcer, role: &str, object: &str) -> bool {
    enforcer.enforce((role, object, "call")).unwrap_or(false)
}

/// The extension factory installed on the schema.
pub struct Authorization;

impl ExtensionFactory for Authorization {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuthorizationExtension)
    }
}

struct AuthorizationExtension;

#[async_trait::async_trait]
impl Extension for AuthorizationExtension {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // Every top-level field is checked, whatever its root type is called.
        if info.path_node.parent.is_none() && !info.name.starts_with("__") {
            let object = format!("{}.{}", info.parent_type, info.name);
            let permitted = match (ctx.data::<Arc<Enforcer>>(), ctx.data::<Actor>()) {
                (Ok(enforcer), Ok(actor)) => allowed(enforcer, &actor.role, &object),
                _ => false,
            };
            if !permitted {
                let err = async_graphql::Error::new(format!("not allowed to call {object}"))
                    .extend_with(|_, e| e.set("code", "FORBIDDEN"));
                return Err(err.into_server_error(info.field.name.pos));
            }
        }
        next.run(ctx, info).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roles_inherit_and_unknown_fields_are_denied() {
        let e = enforcer().await.expect("enforcer");
        assert!(allowed(&e, "viewer", "Query.group"));
        assert!(allowed(&e, "admin", "Query.group"), "admin inherits viewer");
        assert!(allowed(&e, "admin", "Mutation.createGroup"));
        assert!(!allowed(&e, "operator", "Mutation.createGroup"));
        assert!(!allowed(&e, "viewer", "Mutation.createGroup"));
        assert!(
            !allowed(&e, "admin", "Mutation.someFutureField"),
            "deny by default"
        );
        assert!(!allowed(&e, "nobody", "Query.group"));
    }
}
