//! Test support: a PostgreSQL per test run (or `DATABASE_URL`), a fresh database per test,
//! and an in-process Corral app.
//!
//! With `DATABASE_URL` set, tests create their databases on that server. Otherwise a
//! throwaway server is started from the machine's PostgreSQL binaries; it is deleted when the
//! test process exits, however it exits.

pub mod nats;
pub mod served;

/// Runs the `corral` binary `bin` (a `corral` package test's `env!("CARGO_BIN_EXE_corral")`) against the
/// database `url`; returns whether it succeeded, its stdout and its stderr.
pub fn run_corral(bin: &str, url: &str, args: &[&str]) -> (bool, String, String) {
    run_corral_with(bin, url, args, &[])
}

/// Like [`run_corral`], with `env` added.
pub fn run_corral_with(
    bin: &str,
    url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = std::process::Command::new(bin)
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run corral");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use corral_api::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use corral_api::state::{ApiConfig, AppState};
use corral_api::wiring::{App, Roles, WorkerSettings, Workers};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tower::ServiceExt;
use uuid::Uuid;

struct Server {
    /// URL of the maintenance database, with `{db}` where the database name goes.
    url_template: String,
    template_db: String,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The server (and its runtime) live on their own thread for the whole test process,
        // whichever test's runtime comes and goes.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let (template, embedded) = match std::env::var("DATABASE_URL") {
                    Ok(url) if !url.trim().is_empty() => (url, None),
                    _ => {
                        let pg = EmbeddedPostgres::start(EmbeddedOptions::temporary())
                            .await
                            .unwrap_or_else(|e| panic!("DATABASE_URL is not set and no throwaway PostgreSQL could be started: {e}"));
                        (pg.url("__DB__"), Some(pg))
                    }
                };
                let url_template = if embedded.is_some() {
                    template
                } else {
                    corral_api::runtime::url_with_database(&template, "__DB__").expect("DATABASE_URL must be a postgres:// URL")
                };
                let template_db = format!("corral_template_{}", std::process::id());
                let admin = PgPoolOptions::new().max_connections(1).connect(&url_template.replace("__DB__", "postgres")).await.expect("connect to the test server");
                sqlx::query(&format!("CREATE DATABASE {template_db}")).execute(&admin).await.expect("create template db");
                let pool = PgPoolOptions::new().max_connections(1).connect(&url_template.replace("__DB__", &template_db)).await.expect("connect template");
                corral_migrations::migrate(&pool).await.expect("migrate template");
                pool.close().await;
                tx.send(Server { url_template, template_db }).expect("send");
                let _keep = embedded;
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("test server start-up failed (see panic above)")
    })
}

/// A connection to the server's maintenance database.
async fn admin() -> sqlx::PgConnection {
    let url = server().url_template.replace("__DB__", "postgres");
    PgConnectOptions::from_url(&url.parse().expect("url"))
        .expect("options")
        .connect()
        .await
        .expect("connect admin")
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl TestDb {
    /// Creates the database from the migrated template.
    pub async fn new() -> Self {
        let server = server();
        let name = format!("corral_test_{}", Uuid::new_v4().simple());
        let mut admin = admin().await;
        sqlx::query(&format!(
            "CREATE DATABASE {name} TEMPLATE {}",
            server.template_db
        ))
        .execute(&mut admin)
        .await
        .expect("create test db");
        Self {
            url: server.url_template.replace("__DB__", &name),
            name,
        }
    }

    /// A pool on this database.
    pub async fn pool(&self, max: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.url)
            .await
            .expect("connect test db")
    }

    /// Drops the database (call at the end of a test).
    pub async fn drop_db(self) {
        let mut admin = admin().await;
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await;
    }
}

/// An in-process Corral: projectors running, roots created, one token per role.
pub struct TestApp {
    /// The database.
    pub db: TestDb,
    /// Main pool.
    pub pool: PgPool,
    /// Shared state.
    pub state: AppState,
    /// Router under test.
    pub router: axum::Router,
    /// Tokens by role.
    pub admin: String,
    /// Operator token.
    pub operator: String,
    /// Viewer token.
    pub viewer: String,
    /// Auditor token (read-only, with the audit log).
    pub auditor: String,
    background: Option<Workers>,
}

impl TestApp {
    /// Starts an app with the default settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(ApiConfig::default(), true).await
    }

    /// Starts an app; `projectors` false leaves read models unprojected (and rules
    /// unevaluated).
    pub async fn spawn_with(config: ApiConfig, projectors: bool) -> Self {
        let rules = projectors.then(corral_workers::rules::RuleWorkerConfig::default);
        Self::spawn_full(config, projectors, rules).await
    }

    /// Starts an app whose rule evaluator runs with `rules`.
    pub async fn spawn_with_rules(rules: corral_workers::rules::RuleWorkerConfig) -> Self {
        Self::spawn_full(ApiConfig::default(), true, Some(rules)).await
    }

    async fn spawn_full(
        config: ApiConfig,
        projectors: bool,
        rules: Option<corral_workers::rules::RuleWorkerConfig>,
    ) -> Self {
        let db = TestDb::new().await;
        let pool = db.pool(10).await;
        let lock_pool = db.pool(5).await;
        // The wiring `corral serve` uses, with the parts tests start themselves (or need
        // quiet) turned off: no capabilities worker, no sweep workers, no NATS.
        let settings = WorkerSettings {
            nats_url: None,
            nats: corral_workers::nats_names::NatsNames::production(),
            rules: rules.clone().unwrap_or_default(),
            capabilities: Default::default(),
            health: config.health.clone(),
            sweeps: config.sweeps.clone(),
            poll: Duration::from_millis(200),
            // Tests see expiries recorded within a second or two.
            token_expiry: Duration::from_secs(1),
        };
        let roles = Roles {
            projectors,
            rules: rules.is_some(),
            capabilities: false,
            sweeps_and_nats: false,
        };
        let App { state, workers } =
            App::start(pool.clone(), lock_pool, &settings, config, roles, false)
                .await
                .expect("start the app");
        if projectors {
            // Tests start from a tree whose roots are already in the read model.
            for _ in 0..500 {
                let roots: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM rm_group_tree.groups WHERE is_system")
                        .fetch_one(&pool)
                        .await
                        .expect("roots in the read model");
                if roots == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let router = corral_api::http::app(state.clone());
        let admin = corral_api::auth::create_token(&pool, "alice", "admin")
            .await
            .expect("token");
        let operator = corral_api::auth::create_token(&pool, "oscar", "operator")
            .await
            .expect("token");
        let viewer = corral_api::auth::create_token(&pool, "vera", "viewer")
            .await
            .expect("token");
        let auditor = corral_api::auth::create_token(&pool, "audrey", "auditor")
            .await
            .expect("token");
        Self {
            db,
            pool,
            state,
            router,
            admin,
            operator,
            viewer,
            auditor,
            background: Some(workers),
        }
    }

    /// Sends a raw HTTP request to the router.
    pub async fn http(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.expect("router");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// POSTs a GraphQL request with a token; returns the whole response body.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        let request = Request::post("/graphql")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(
                json!({ "query": query, "variables": variables }).to_string(),
            ))
            .expect("request");
        let (status, body) = self.http(request).await;
        assert_eq!(status, StatusCode::OK, "graphql HTTP status; body: {body}");
        body
    }

    /// Like [`TestApp::gql`] but panics on GraphQL errors and returns `data`.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Creates a group as admin and returns its id (panics on userErrors).
    pub async fn create_group(&self, name: &str, parent: Option<&str>) -> String {
        let data = self
            .data(
                &self.admin,
                "mutation($input: CreateGroupInput!) { createGroup(input: $input) { group { id } userErrors { code message } } }",
                json!({ "input": { "name": name, "type": "DEVICE", "parentId": parent } }),
            )
            .await;
        assert_eq!(
            data["createGroup"]["userErrors"],
            json!([]),
            "creating {name}"
        );
        data["createGroup"]["group"]["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// A token of a new subject `subject` holding `role` on the subtree of group `scope`
    /// only (no global binding).
    pub async fn scoped_token(&self, subject: &str, role: &str, scope: &str) -> String {
        let commands = corral_projections::commands::access::access_commands(
            self.pool.clone(),
            corral_projections::wake::CommitSignal::new(vec![]),
        );
        let request = corral_api::auth::NewToken {
            subject: subject.to_string(),
            bindings: vec![corral_domain::access::Binding {
                role: role.to_string(),
                scope: Some(scope.parse().expect("a group id")),
            }],
            expires_at: None,
        };
        corral_api::auth::issue(
            &commands,
            &self.pool,
            request,
            &corral_api::auth::cli_metadata(None),
        )
        .await
        .expect("scoped token")
        .secret
    }

    /// A router over this app's database and workers whose casbin policy is `policy`
    /// instead of the embedded one (tokens and data are shared with [`TestApp::router`]).
    pub async fn router_with_policy(&self, policy: &str) -> axum::Router {
        let policy = corral_api::policy::Policy::new(
            corral_api::policy::PolicyTable::compile(policy, &[])
                .await
                .expect("policy"),
        );
        let background = self.background.as_ref().expect("running");
        let state = AppState::new(
            self.pool.clone(),
            self.db.pool(2).await,
            background.waiter(),
            background.commit_signal(),
            policy,
            (*self.state.config).clone(),
        );
        corral_api::http::app(state)
    }

    /// Stops background tasks and drops the database.
    pub async fn shutdown(mut self) {
        if let Some(bg) = self.background.take() {
            bg.shutdown().await;
        }
        self.pool.close().await;
        self.state.pool.close().await;
        self.db.drop_db().await;
    }
}
