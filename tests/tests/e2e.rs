//! End-to-end tests against real PostgreSQL (one database per test).

mod e2e {
    mod access;
    mod audit;
    mod auth;
    mod authz_matrix;
    mod capabilities;
    mod catch_up;
    mod concurrency;
    mod dashboards;
    mod dynamic;
    mod event_writers;
    mod groups;
    mod health;
    mod inventory;
    mod jwt;
    mod leaders;
    mod limits;
    mod membership;
    mod membership_fold;
    mod metrics;
    mod publisher;
    mod rebuild;
    mod request_limits;
    mod rules;
    mod scope_audit;
    mod scope_groups;
    mod scope_inventory;
    mod sequencer;
    mod snapshots;
    mod subscriptions;
    mod sweeps;
    mod telemetry_feed;
    mod time_travel;
    mod upcasting;
    mod websocket;
}
