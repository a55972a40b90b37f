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
use crate::error_codes::ErrorCode;

/// The roles tokens may carry.
pub use corral_domain::access::BUILT_IN_ROLES as ROLES;

/// Fields that read the audit trail. The policy names them `Audit.<field>` wherever they sit
/// (a root field or `Group.history`), so that `Query.*` (viewers) does not reach them.
const AUDIT_FIELDS: [(&str, &str); 4] = [
    ("Query", "auditLog"),
    ("Query", "auditChainHead"),
    ("Group", "history"),
    ("Subscription", "events"),
];

/// Fields of on-demand sweeps: a permission of their own (`Sweep.<field>`), apart from group
/// edits and out of viewers' `Query.*`.
const SWEEP_FIELDS: [(&str, &str); 6] = [
    ("Query", "sweepRuns"),
    ("Query", "sweepRun"),
    ("Query", "previewSweep"),
    ("Mutation", "scheduleSweep"),
    ("Mutation", "cancelSweep"),
    ("Subscription", "sweepProgress"),
];

/// Fields that list, issue and revoke tokens and grant and revoke roles: a permission of their own (`Access.<field>`),
/// out of viewers' `Query.*`. (`Query.me`, the caller's own identity, is not one of them.)
const ACCESS_FIELDS: [(&str, &str); 5] = [
    ("Query", "tokens"),
    ("Mutation", "createToken"),
    ("Mutation", "revokeToken"),
    ("Mutation", "grantRole"),
    ("Mutation", "revokeRole"),
];

/// The policy object of field `name` of type `parent`: `Audit.<name>` for the audit fields,
/// `Sweep.<name>` for the sweep fields, `Access.<name>` for the token fields,
/// `<parent>.<name>` otherwise.
pub fn object_of(parent: &str, name: &str) -> String {
    if AUDIT_FIELDS.contains(&(parent, name)) {
        format!("Audit.{name}")
    } else if ACCESS_FIELDS.contains(&(parent, name)) {
        format!("Access.{name}")
    } else if SWEEP_FIELDS.contains(&(parent, name)) {
        format!("Sweep.{name}")
    } else {
        format!("{parent}.{name}")
    }
}

const MODEL: &str = include_str!("../policy/model.conf");
const POLICY: &str = include_str!("../policy/policy.csv");

/// Builds the enforcer from the embedded model and policy.
pub async fn enforcer() -> Result<Arc<Enforcer>, casbin::Error> {
    enforcer_with(POLICY).await
}

/// The embedded policy's text (`policy/policy.csv`).
pub fn default_policy() -> &'static str {
    POLICY
}

/// Builds an enforcer from the embedded model and the policy lines `policy` (CSV as in
/// `policy/policy.csv`).
pub async fn enforcer_with(policy: &str) -> Result<Arc<Enforcer>, casbin::Error> {
    let model = DefaultModel::from_str(MODEL).await?;
    let enforcer = Enforcer::new(model, StringAdapter::new(policy.to_string())).await?;
    Ok(Arc::new(enforcer))
}

/// Whether `role` may call root field `object` (`Mutation.createGroup`).
pub fn allowed(enforcer: &Enforcer, role: &str, object: &str) -> bool {
    enforcer.enforce((role, object, "call")).unwrap_or(false)
}

/// Whether `actor` may call `object`: whether any role its token may use now allows it.
pub fn permits(enforcer: &Enforcer, actor: &Actor, object: &str) -> bool {
    actor
        .roles
        .iter()
        .any(|role| allowed(enforcer, role, object))
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
        // Every top-level field is checked, whatever its root type is called, and the audit
        // fields wherever they are.
        let top = info.path_node.parent.is_none();
        if (top && !info.name.starts_with("__"))
            || AUDIT_FIELDS.contains(&(info.parent_type, info.name))
        {
            let object = object_of(info.parent_type, info.name);
            let permitted = match (ctx.data::<Arc<Enforcer>>(), ctx.data::<Actor>()) {
                (Ok(enforcer), Ok(actor)) => permits(enforcer, actor, &object),
                _ => false,
            };
            if !permitted {
                let err = async_graphql::Error::new(format!("not allowed to call {object}"))
                    .extend_with(|_, e| e.set("code", ErrorCode::Forbidden.as_str()));
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

    #[tokio::test]
    async fn only_auditors_and_admins_read_the_audit_trail() {
        let e = enforcer().await.expect("enforcer");
        for field in [
            ("Query", "auditLog"),
            ("Group", "history"),
            ("Subscription", "events"),
        ] {
            let object = object_of(field.0, field.1);
            assert!(object.starts_with("Audit."), "{object}");
            assert!(allowed(&e, "auditor", &object), "{object}");
            assert!(allowed(&e, "admin", &object), "{object}");
            assert!(!allowed(&e, "viewer", &object), "{object}");
            assert!(!allowed(&e, "operator", &object), "{object}");
        }
        assert!(
            allowed(&e, "auditor", "Query.group"),
            "auditors read everything"
        );
        assert!(
            !allowed(&e, "auditor", "Mutation.addGroupMembers"),
            "and write nothing"
        );
        assert_eq!(object_of("Query", "group"), "Query.group");
    }

    #[tokio::test]
    async fn only_admins_manage_tokens_and_everyone_asks_who_they_are() {
        let e = enforcer().await.expect("enforcer");
        for field in [
            ("Query", "tokens"),
            ("Mutation", "createToken"),
            ("Mutation", "revokeToken"),
            ("Mutation", "grantRole"),
            ("Mutation", "revokeRole"),
        ] {
            let object = object_of(field.0, field.1);
            assert!(object.starts_with("Access."), "{object}");
            assert!(allowed(&e, "admin", &object), "{object}");
            for role in ["operator", "viewer", "auditor"] {
                assert!(!allowed(&e, role, &object), "{role} {object}");
            }
        }
        let me = object_of("Query", "me");
        for role in ROLES {
            assert!(allowed(&e, role, &me), "{role} {me}");
        }
    }
}
