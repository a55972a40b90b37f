//! The GraphQL schema.

pub mod access;
pub mod audit;
pub mod budget;
pub mod dashboards;
pub mod errors;
pub mod guard;
pub mod health;
pub mod history;
pub mod inventory;
pub mod loaders;
pub mod members;
pub mod membership;
pub mod mutation;
pub mod node;
pub mod query;
pub mod role_defs;
pub mod rules;
pub mod scalars;
pub mod scope;
pub mod subscriptions;
pub mod sweeps;
pub mod types;
pub mod watches;

use async_graphql::{MergedObject, Request, Schema};

use crate::auth::Actor;
use crate::state::AppState;
use loaders::RequestLoaders;
use mutation::{GroupMutation, MutationWait};
use query::GroupQuery;

/// The `Query` root: one part per area.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    GroupQuery,
    rules::RuleQuery,
    inventory::InventoryQuery,
    audit::AuditQuery,
    dashboards::DashboardQuery,
    sweeps::SweepQuery,
    access::AccessQuery,
    role_defs::RoleQuery,
    node::NodeQuery,
    watches::WatchQuery,
);

/// The `Mutation` root: one part per area.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    GroupMutation,
    membership::MembershipMutation,
    rules::RuleMutation,
    inventory::InventoryMutation,
    health::HealthMutation,
    dashboards::DashboardMutation,
    sweeps::SweepMutation,
    access::AccessMutation,
    role_defs::RoleMutation,
    watches::WatchMutation,
);

/// Corral's schema type.
pub type CorralSchema = Schema<QueryRoot, MutationRoot, subscriptions::SubscriptionRoot>;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 16;
/// Most expensive query accepted (connections count `first` x child cost).
pub const MAX_COMPLEXITY: usize = 20_000;

/// The schema without runtime data, for SDL export.
pub fn schema_builder(
) -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, subscriptions::SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscriptions::SubscriptionRoot,
    )
    .extension(crate::policy::Authorization)
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
}

/// The SDL, as committed in `docs/schema.graphql`.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}

/// The schema with the process-wide data.
pub fn build_schema(state: &AppState) -> CorralSchema {
    schema_builder()
        .data(state.api_pool.clone())
        .data(state.commands.clone())
        .data(state.groups.clone())
        .data(state.memberships.clone())
        .data(state.dashboards.clone())
        .data(state.sweeps.clone())
        .data(state.config.sweeps.clone())
        .data(state.waiter.clone())
        .data(state.policy.clone())
        .data(state.subtrees.clone())
        .data(state.refusals.clone())
        .data(MutationWait(state.config.mutation_wait))
        .data(state.config.health.clone())
        .data(subscriptions::LogHead::default())
        .extension(guard::QueryGuard(state.config.query_limits))
        .extension(RequestLoaders {
            pool: state.api_pool.clone(),
            metrics: state.metrics.clone(),
        })
        .extension(crate::ws::OperationIdentity)
        .extension(crate::rate_limit::WsRateLimit(state.rate_limiter.clone()))
        .finish()
}

/// Adds the per-request data: the actor. (DataLoaders come from [`loaders::RequestLoaders`],
/// for HTTP and websocket operations alike; a websocket operation's actor from
/// [`crate::ws::OperationIdentity`].)
pub fn prepare(request: Request, actor: Actor) -> Request {
    request.data(actor)
}

#[cfg(test)]
mod tests {
    /// CI fails when the committed schema drifts from the code. Regenerate with
    /// `cargo run -p corral --bin corral -- schema > docs/schema.graphql`.
    #[test]
    fn committed_schema_matches_the_code() {
        let committed = include_str!("../../../docs/schema.graphql");
        assert!(committed == super::sdl(), "docs/schema.graphql is stale: run `cargo run -p corral --bin corral -- schema > docs/schema.graphql`");
    }
}
