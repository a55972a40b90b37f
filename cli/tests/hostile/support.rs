//! The suite's server, its counters, and the `/healthz` monitor.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_tests::served::{request, send_raw, Response, Served};
use serde_json::{json, Value};
use sqlx::PgPool;

/// The `corral` binary under test.
pub const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// Settings that make the limits reachable within a test's time.
pub const READ_TIMEOUT_MS: u64 = 1_000;
/// The request database budget.
pub const BUDGET_MS: u64 = 3_000;
/// The statement timeout.
pub const STATEMENT_MS: u64 = 2_000;
/// Websocket connections that may wait to authenticate.
pub const WS_PENDING: usize = 16;

/// The server under attack and what the suite counts.
pub struct Suite {
    /// `corral serve`.
    pub served: Served,
    /// Its database.
    pub pool: PgPool,
    tried: AtomicUsize,
}

/// What must not change when an attack is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    events: i64,
    devices: i64,
    services: i64,
    samples: i64,
}

impl Suite {
    /// Starts the server with short timeouts and small caps.
    pub async fn start() -> Self {
        let read = READ_TIMEOUT_MS.to_string();
        let budget = BUDGET_MS.to_string();
        let statement = STATEMENT_MS.to_string();
        let pending = WS_PENDING.to_string();
        let served = Served::start(
            CORRAL,
            &[
                ("CORRAL_REQUEST_READ_TIMEOUT_MS", read.as_str()),
                ("CORRAL_REQUEST_DB_BUDGET_MS", budget.as_str()),
                ("CORRAL_STATEMENT_TIMEOUT_MS", statement.as_str()),
                ("CORRAL_WS_MAX_PENDING", pending.as_str()),
                ("CORRAL_WS_INIT_TIMEOUT_MS", "1000"),
                // The fuzz sends thousands of requests as one subject to reach every field;
                // per-subject rate limits have their own tests (e2e::request_limits).
                ("CORRAL_RATE_LIMIT_PER_SUBJECT", "0"),
            ],
        )
        .await;
        let pool = served.db.as_ref().expect("database").pool(2).await;
        Self {
            served,
            pool,
            tried: AtomicUsize::new(0),
        }
    }

    /// Requests sent so far.
    pub fn tried(&self) -> usize {
        self.tried.load(Ordering::Relaxed)
    }

    /// Counts `n` more requests.
    pub fn count(&self, n: usize) {
        self.tried.fetch_add(n, Ordering::Relaxed);
    }

    /// POSTs a GraphQL request with a token.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Response {
        self.count(1);
        self.served.post_graphql(token, query, variables).await
    }

    /// Sends raw bytes (a whole request) and reads the answer.
    pub async fn raw(&self, bytes: &[u8]) -> Option<Response> {
        self.count(1);
        send_raw(self.served.port, bytes, Duration::from_secs(60)).await
    }

    /// POSTs `body` to `/graphql` with the admin token and `content_type`.
    pub async fn post_body(&self, body: &[u8], content_type: &str) -> Response {
        let auth = format!("Bearer {}", self.served.admin);
        self.raw(&request(
            "POST",
            "/graphql",
            &[("Authorization", &auth), ("Content-Type", content_type)],
            body,
        ))
        .await
        .expect("an answer")
    }

    /// The counts of everything an attack could change.
    pub async fn fingerprint(&self) -> Fingerprint {
        let count = |sql: &'static str| {
            let pool = self.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .expect("count")
            }
        };
        Fingerprint {
            events: count("SELECT count(*) FROM events").await,
            devices: count("SELECT count(*) FROM devices").await,
            services: count("SELECT count(*) FROM services").await,
            samples: count("SELECT count(*) FROM telemetry_sysmon").await,
        }
    }

    /// Stops the server and drops its database.
    pub async fn stop(self) {
        self.pool.close().await;
        self.served.stop().await;
    }
}

/// The codes of a GraphQL answer's errors.
pub fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    e["extensions"]["code"]
                        .as_str()
                        .unwrap_or("<none>")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `response` carries exactly the error `code` (and nothing it did not ask for).
pub fn assert_code(response: &Response, status: u16, code: &str, what: &str) {
    let body = response.json();
    assert_eq!(response.status, status, "{what}: {}", response.text());
    assert_eq!(codes(&body), vec![code.to_string()], "{what}: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        !message.is_empty() && !message.contains("Error(") && !message.contains("{ "),
        "{what}: the message is for a client, not Rust debug text: {message:?}"
    );
}

/// A userError code in a mutation payload, with the answer otherwise error-free.
pub fn user_error(body: &Value, field: &str) -> String {
    assert!(body.get("errors").is_none(), "{body}");
    body["data"][field]["userErrors"][0]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

static PHASE: Mutex<&'static str> = Mutex::new("start");

/// Names what the suite is doing now (for the monitor's reports of slow answers).
pub fn set_phase(name: &'static str) {
    *PHASE.lock().expect("lock") = name;
}

fn phase() -> &'static str {
    *PHASE.lock().expect("lock")
}

/// What the `/healthz` monitor saw.
#[derive(Debug, Clone, Default)]
pub struct HealthReport {
    /// Requests answered.
    pub polls: usize,
    /// Requests that failed or were not answered within 2 s.
    pub failures: usize,
    /// The slowest answer.
    pub worst: Duration,
    /// The 99th percentile.
    pub p99: Duration,
}

/// `/healthz` on an idle server: `n` answers on fresh connections, 20 ms apart (the same-run
/// baseline of the figures under attack).
pub async fn idle_healthz(port: u16, n: usize) -> HealthReport {
    let raw = request("GET", "/healthz", &[], b"");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer = send_raw(port, &raw, Duration::from_secs(2)).await;
        assert!(answer.is_some_and(|r| r.status == 200), "/healthz answers");
        times.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort();
    HealthReport {
        polls: n,
        failures: 0,
        worst: times.last().copied().unwrap_or_default(),
        p99: times[(n * 99 / 100).min(n - 1)],
    }
}

/// Polls `/healthz` every 20 ms on a fresh connection until stopped, on a thread and a
/// runtime of its own (the attacks' own work in this process must not delay the polls).
pub struct Healthz {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    seen: Arc<Mutex<(Vec<Duration>, usize)>>,
}

impl Healthz {
    /// Starts polling the server on `port`.
    pub fn watch(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((Vec::new(), 0)));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let raw = request("GET", "/healthz", &[], b"");
                let suite_start = Instant::now();
                while !stop2.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let answer = send_raw(port, &raw, Duration::from_secs(2)).await;
                    let took = started.elapsed();
                    if took > Duration::from_millis(50) {
                        eprintln!(
                            "hostile suite: /healthz took {took:?} at {:?} into the suite (during: {})",
                            started - suite_start,
                            phase()
                        );
                    }
                    {
                        let mut s = seen2.lock().expect("lock");
                        match answer {
                            Some(r) if r.status == 200 => s.0.push(took),
                            _ => s.1 += 1,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        });
        Self { stop, thread, seen }
    }

    /// Stops polling and reports.
    pub async fn stop(self) -> HealthReport {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let (mut times, failures) = self.seen.lock().expect("lock").clone();
        times.sort();
        let p99 = times
            .get((times.len() * 99 / 100).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default();
        HealthReport {
            polls: times.len(),
            failures,
            worst: times.last().copied().unwrap_or_default(),
            p99,
        }
    }
}

/// A group created by the admin, with its id.
pub async fn create_group(suite: &Suite, name: &str) -> String {
    let body = suite
        .gql(
            &suite.served.admin,
            "mutation($i: CreateGroupInput!) { createGroup(input: $i) { group { id } userErrors { code message } } }",
            json!({ "i": { "name": name, "type": "DEVICE" } }),
        )
        .await
        .json();
    body["data"]["createGroup"]["group"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("creating {name}: {body}"))
        .to_string()
}
