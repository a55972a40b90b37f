//! End-to-end tests against real PostgreSQL (one database per test).

mod e2e {
    mod access;
    mod as_of;
    mod audit;
    mod auth;
    mod authz_matrix;
    mod capabilities;
    mod catch_up;
    mod concurrency;
    mod cursors;
    mod dashboards;
    mod dynamic;
    mod effective_model;
    mod event_writers;
    mod groups;
    mod health;
    mod inventory;
    mod inventory_history;
    mod jwt;
    mod leaders;
    mod limits;
    mod membership;
    mod membership_feed;
    mod membership_fold;
    mod membership_resume;
    mod metrics;
    mod nodes;
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
