//! Corral's API: GraphQL over axum, bearer-token auth, casbin policies, and the `corral`
//! binary's building blocks.

pub mod audit;
pub mod auth;
pub mod embedded_pg;
pub mod error_codes;
pub mod graphql;
pub mod http;
pub mod ide;
pub mod jwt;
pub mod listener;
pub mod metrics;
pub mod permissions;
pub mod policy;
pub mod rate_limit;
pub mod refusals;
pub mod runtime;
pub mod scope;
pub mod settings;
pub mod state;
pub mod sweep_export;
pub mod wiring;
pub mod ws;
