//! casbin policies, and the GraphQL extension that checks them on every root field.
//!
//! The check sits in the executor, not in resolvers: a new Query or Mutation field is denied
//! to everyone until `policy/policy.csv` grants it.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest, NextResolve,
    NextSubscribe, ResolveInfo,
};
use async_graphql::{ErrorExtensions, ServerResult, Value};
use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};
use futures::stream::BoxStream;

use crate::auth::Actor;
use crate::error_codes::ErrorCode;

/// The roles tokens may carry.
pub use corral_domain::access::BUILT_IN_ROLES as ROLES;

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use crate::permissions::{decision, Decision, Permission};
use crate::scope::Reach;

const MODEL: &str = include_str!("../policy/model.conf");
const POLICY: &str = include_str!("../policy/policy.csv");

/// The embedded policy's text (`policy/policy.csv`).
pub fn default_policy() -> &'static str {
    POLICY
}

/// Builds an enforcer from the embedded model and the policy lines `policy` (CSV as in
/// `policy/policy.csv`).
pub async fn enforcer_with(policy: &str) -> Result<Enforcer, casbin::Error> {
    let model = DefaultModel::from_str(MODEL).await?;
    Enforcer::new(model, StringAdapter::new(policy.to_string())).await
}

/// What each role may do: casbin's decisions for every role and every permission of the
/// catalog, taken once when the policy is loaded or changes, so that a request's checks are
/// lookups.
#[derive(Debug, Clone, Default)]
pub struct PolicyTable {
    roles: HashMap<String, BTreeSet<Permission>>,
}

impl PolicyTable {
    /// Compiles `policy` (CSV lines) plus the custom roles `custom` (name, permissions) with
    /// the embedded model: casbin decides each (role, permission) pair.
    pub async fn compile(
        policy: &str,
        custom: &[(String, Vec<Permission>)],
    ) -> Result<PolicyTable, casbin::Error> {
        let mut text = policy.to_string();
        for (role, permissions) in custom {
            for p in permissions {
                text.push_str(&format!("\np, {role}, {}, call", p.as_str()));
            }
        }
        let enforcer = enforcer_with(&text).await?;
        let mut names: BTreeSet<String> = ROLES.iter().map(|r| r.to_string()).collect();
        names.extend(custom.iter().map(|c| c.0.clone()));
        let mut roles = HashMap::new();
        for role in names {
            let granted = Permission::all()
                .filter(|p| {
                    enforcer
                        .enforce((role.as_str(), p.as_str(), "call"))
                        .unwrap_or(false)
                })
                .collect();
            roles.insert(role, granted);
        }
        Ok(PolicyTable { roles })
    }

    /// The built-in roles of the embedded policy.
    pub async fn built_in() -> Result<PolicyTable, casbin::Error> {
        Self::compile(POLICY, &[]).await
    }

    /// Whether `role` has permission `p`.
    pub fn grants(&self, role: &str, p: Permission) -> bool {
        self.roles.get(role).is_some_and(|set| set.contains(&p))
    }

    /// The permissions of `role` (`None`: no such role).
    pub fn permissions(&self, role: &str) -> Option<&BTreeSet<Permission>> {
        self.roles.get(role)
    }

    /// Every role it knows (built in and custom), in no particular order.
    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// Whether some role of `roles` permits something else in `other` than here.
    pub fn differs_for<'a>(
        &self,
        other: &PolicyTable,
        mut roles: impl Iterator<Item = &'a str>,
    ) -> bool {
        roles.any(|r| self.roles.get(r) != other.roles.get(r))
    }

    /// Whether `role` is defined (built in or custom).
    pub fn knows(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }
}

/// The policy in force, replaced as a whole when role definitions change.
#[derive(Debug)]
pub struct Policy {
    table: RwLock<Arc<PolicyTable>>,
    /// Moves each time the table is replaced (open websockets re-check their roles).
    changes: tokio::sync::watch::Sender<u64>,
}

impl Policy {
    /// A policy holding `table`.
    pub fn new(table: PolicyTable) -> Arc<Policy> {
        Arc::new(Policy {
            table: RwLock::new(Arc::new(table)),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// The built-in roles of the embedded policy.
    pub async fn built_in() -> Result<Arc<Policy>, casbin::Error> {
        Ok(Self::new(PolicyTable::built_in().await?))
    }

    /// The table in force now.
    pub fn table(&self) -> Arc<PolicyTable> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `table` in force.
    pub fn replace(&self, table: PolicyTable) {
        match self.table.write() {
            Ok(mut t) => *t = Arc::new(table),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(table),
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that wakes each time the table is replaced.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl Policy {
    /// The embedded policy plus the custom roles defined in `pool` now.
    pub async fn load(pool: &sqlx::PgPool) -> Result<Arc<Policy>, crate::runtime::BoxError> {
        Ok(Self::new(load_table(pool).await?))
    }

    /// Reloads the table from `pool` each time the access epoch moves (a role defined or
    /// deleted on any process moves it), until `epoch`'s sender is gone.
    pub fn follow(
        self: &Arc<Self>,
        pool: sqlx::PgPool,
        mut epoch: tokio::sync::watch::Receiver<i64>,
    ) {
        let policy = Arc::downgrade(self);
        tokio::spawn(async move {
            while epoch.changed().await.is_ok() {
                let Some(policy) = policy.upgrade() else {
                    return;
                };
                match load_table(&pool).await {
                    Ok(table) => policy.replace(table),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reload the role definitions; the previous ones stay in force")
                    }
                }
            }
        });
    }
}

/// The embedded policy plus the custom roles defined in `pool` now (a permission this build
/// does not know is left out, logged).
pub async fn load_table(pool: &sqlx::PgPool) -> Result<PolicyTable, crate::runtime::BoxError> {
    let mut custom = vec![];
    for (name, names) in crate::auth::defined_roles(pool).await? {
        let mut permissions = vec![];
        for n in names {
            match Permission::parse(&n) {
                Some(p) => permissions.push(p),
                None => {
                    tracing::warn!(role = %name, permission = %n, "unknown permission in a role definition")
                }
            }
        }
        custom.push((name, permissions));
    }
    Ok(PolicyTable::compile(POLICY, &custom).await?)
}

/// Whether `role` has permission `p` under the built-in policy table `table`.
pub fn allowed(table: &PolicyTable, role: &str, p: Permission) -> bool {
    table.grants(role, p)
}

/// Whether `actor` may call field `name` of `parent` at all: anyone for [`Decision::Anyone`],
/// otherwise when one of its bindings grants the field's permission somewhere.
pub fn permits_field(table: &PolicyTable, actor: &Actor, parent: &str, name: &str) -> bool {
    match decision(parent, name) {
        Some(Decision::Anyone) => true,
        Some(Decision::Needs(p)) => !matches!(crate::scope::reach(table, actor, p), Reach::Nothing),
        None => false,
    }
}

/// Whether `actor` has permission `p` everywhere (a global binding grants it).
pub fn permits_globally(table: &PolicyTable, actor: &Actor, p: Permission) -> bool {
    matches!(crate::scope::reach(table, actor, p), Reach::All)
}

/// The extension factory installed on the schema.
pub struct Authorization;

impl ExtensionFactory for Authorization {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuthorizationExtension::default())
    }
}

/// Checks every root field (and the audit fields), and records every `FORBIDDEN` answer of
/// the request in the refused-attempts store ([`crate::refusals`]), whoever refused it: this
/// extension, `scope::require` in a resolver, or a subscription. It looks at the response's
/// errors once the operation is done, so the recording costs the request nothing but a
/// `try_send` per refusal.
#[derive(Default)]
struct AuthorizationExtension {
    /// Top-level response keys (aliases) and the field each names, `Mutation.createGroup`.
    fields: std::sync::Mutex<HashMap<String, String>>,
    /// The caller of a subscription, known once its request is prepared (a subscription's
    /// stream is wrapped before that).
    caller: Arc<std::sync::Mutex<Option<Caller>>>,
}

/// Who made a request.
#[derive(Clone, Default)]
struct Caller {
    subject: Option<String>,
    client_addr: Option<String>,
}

impl Caller {
    fn of(actor: Option<&Actor>) -> Caller {
        Caller {
            subject: actor.map(|a| a.subject.clone()),
            client_addr: actor.and_then(|a| a.client_addr.clone()),
        }
    }
}

/// Where a response's refusals are recorded, and for whom.
struct Recorder {
    refusals: Arc<crate::refusals::Refusals>,
    caller: Arc<std::sync::Mutex<Option<Caller>>>,
}

impl Recorder {
    fn new(
        ctx: &ExtensionContext<'_>,
        caller: Arc<std::sync::Mutex<Option<Caller>>>,
    ) -> Option<Recorder> {
        let refusals = ctx.data_opt::<Arc<crate::refusals::Refusals>>()?.clone();
        Some(Recorder { refusals, caller })
    }

    /// Records the `FORBIDDEN` errors of `response`; `operation` names the field of a path's
    /// first segment.
    fn record(&self, response: &async_graphql::Response, operation: impl Fn(&str) -> String) {
        for error in &response.errors {
            let Some(extensions) = &error.extensions else {
                continue;
            };
            let code = extensions.get("code");
            if !matches!(code, Some(Value::String(c)) if c == ErrorCode::Forbidden.as_str()) {
                continue;
            }
            let group_id = match extensions.get("groupId") {
                Some(Value::String(g)) => g.parse().ok(),
                _ => None,
            };
            let field = match error.path.first() {
                Some(async_graphql::PathSegment::Field(f)) => operation(f),
                _ => "(operation)".to_string(),
            };
            let caller = match self.caller.lock() {
                Ok(c) => c.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            }
            .unwrap_or_default();
            self.refusals.record(crate::refusals::Refusal {
                at: chrono::Utc::now(),
                subject: caller.subject,
                token_prefix: None,
                operation: field,
                group_id,
                code: ErrorCode::Forbidden.as_str().to_string(),
                reason: error.message.clone(),
                client_addr: caller.client_addr,
            });
        }
    }
}

#[async_trait::async_trait]
impl Extension for AuthorizationExtension {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        let response = next.run(ctx, operation_name).await;
        if response.errors.is_empty() {
            return response;
        }
        let caller = Arc::new(std::sync::Mutex::new(Some(Caller::of(
            ctx.data_opt::<Actor>(),
        ))));
        if let Some(recorder) = Recorder::new(ctx, caller) {
            let fields = match self.fields.lock() {
                Ok(f) => f.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            recorder.record(&response, |key| {
                fields.get(key).cloned().unwrap_or_else(|| key.to_string())
            });
        }
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, async_graphql::Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, async_graphql::Response> {
        let stream = next.run(ctx, stream);
        match Recorder::new(ctx, self.caller.clone()) {
            None => stream,
            Some(recorder) => Box::pin(futures::StreamExt::inspect(stream, move |response| {
                if !response.errors.is_empty() {
                    recorder.record(response, |key| format!("Subscription.{key}"));
                }
            })),
        }
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        // After the extensions that give a websocket operation its actor.
        let request = next.run(ctx, request).await?;
        let actor = request
            .data
            .get(&std::any::TypeId::of::<Actor>())
            .and_then(|a| a.downcast_ref::<Actor>())
            .or_else(|| ctx.data_opt::<Actor>());
        if let Ok(mut caller) = self.caller.lock() {
            *caller = Some(Caller::of(actor));
        }
        Ok(request)
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // Every top-level field is checked, whatever its root type is called, and the audit
        // fields wherever they are.
        let top = info.path_node.parent.is_none();
        if top {
            if let Ok(mut fields) = self.fields.lock() {
                fields.insert(
                    info.path_node.field_name().to_string(),
                    format!("{}.{}", info.parent_type, info.name),
                );
            }
        }
        if (top && !info.name.starts_with("__"))
            || crate::permissions::checked_nested(info.parent_type, info.name)
        {
            let permitted = match (ctx.data::<Arc<Policy>>(), ctx.data::<Actor>()) {
                (Ok(policy), Ok(actor)) => {
                    permits_field(&policy.table(), actor, info.parent_type, info.name)
                }
                _ => false,
            };
            if !permitted {
                let object = format!("{}.{}", info.parent_type, info.name);
                let err = async_graphql::Error::new(format!("not allowed to call {object}"))
                    .extend_with(|_, e| e.set("code", ErrorCode::Forbidden.as_str()));
                let mut err = err.into_server_error(info.field.name.pos);
                // The path, for the refusal's record (and the client).
                // (GraphQL names never start with a digit: a number is a list index.)
                err.path = info
                    .path_node
                    .to_string_vec()
                    .into_iter()
                    .map(|s| match s.parse::<usize>() {
                        Ok(i) => async_graphql::PathSegment::Index(i),
                        Err(_) => async_graphql::PathSegment::Field(s),
                    })
                    .collect();
                return Err(err);
            }
        }
        next.run(ctx, info).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Permission::*;

    #[tokio::test]
    async fn roles_inherit_and_unknown_roles_have_nothing() {
        let t = PolicyTable::built_in().await.expect("policy");
        assert!(allowed(&t, "viewer", GroupRead));
        assert!(allowed(&t, "admin", GroupRead), "admin inherits viewer");
        assert!(allowed(&t, "admin", GroupCreate));
        assert!(!allowed(&t, "operator", GroupCreate));
        assert!(allowed(&t, "operator", MembershipEdit));
        assert!(!allowed(&t, "viewer", MembershipEdit));
        assert!(!allowed(&t, "nobody", GroupRead));
        assert!(allowed(&t, "auditor", AuditRead));
        assert!(
            !allowed(&t, "auditor", MembershipEdit),
            "auditors write nothing"
        );
        assert!(!allowed(&t, "viewer", AuditRead));
        assert!(!allowed(&t, "operator", AuditRead));
        for role in ["operator", "viewer", "auditor"] {
            assert!(!allowed(&t, role, AccessManage), "{role}");
            assert!(!allowed(&t, role, SweepRun), "{role}");
        }
        assert!(allowed(&t, "admin", AccessManage));
    }

    #[tokio::test]
    async fn custom_roles_are_sets_of_permissions() {
        let custom = vec![("netops".to_string(), vec![GroupRead, MembershipEdit])];
        let t = PolicyTable::compile(POLICY, &custom).await.expect("policy");
        assert!(t.knows("netops"));
        assert!(allowed(&t, "netops", MembershipEdit));
        assert!(!allowed(&t, "netops", GroupCreate));
        let policy = Policy::new(PolicyTable::default());
        assert!(!policy.table().grants("viewer", GroupRead));
        policy.replace(t);
        assert!(policy.table().grants("netops", GroupRead));
    }

    #[tokio::test]
    async fn every_field_decision_is_checked_against_the_bindings() {
        let t = PolicyTable::built_in().await.expect("policy");
        let viewer = Actor::with_role("v", "viewer", "r");
        assert!(permits_field(&t, &viewer, "Query", "group"));
        assert!(permits_field(&t, &viewer, "Query", "me"));
        assert!(!permits_field(&t, &viewer, "Query", "auditLog"));
        assert!(!permits_field(&t, &viewer, "Group", "history"));
        assert!(!permits_field(&t, &viewer, "Mutation", "someFutureField"));
        let nobody = Actor::with_role("n", "", "r");
        assert!(!permits_field(&t, &nobody, "Query", "group"));
        assert!(permits_field(&t, &nobody, "Query", "me"));
    }
}
