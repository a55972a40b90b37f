//! End-to-end tests against real PostgreSQL (one database per test).

mod e2e {
    mod auth;
    mod catch_up;
    mod concurrency;
    mod groups;
    mod rebuild;
    mod sequencer;
    mod snapshots;
    mod websocket;
}
