//! On-demand sweeps end to end: the API, the dispatcher and reports consumer, and the
//! reference poller on loopback (in-process, or as a process the test kills). Every sweep
//! here targets 127.0.0.0/8 only; the allow-list of these tests is loopback.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use async_nats::jetstream;
use corral_api::state::ApiConfig;
use corral_projections::sweeps::SweepConfig;
use corral_tests::TestApp;
use corral_workers::sweep_control::{self, SweepWorkerConfig};
use corral_workers::sweeps::{PollerConfig, ReportKind, SweepNames, SweepReport};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use super::membership::add;

mod idempotency;

const SCHEDULE: &str = "mutation($input: ScheduleSweepInput!) { scheduleSweep(input: $input) { created run { id status hostsTotal targets ports } userErrors { field code message } } }";
const RUN: &str = "query($id: ID!, $open: Boolean) { sweepRun(id: $id) { id status hostsDone hostsTotal hostsUp failureCode endedAt results(first: 1000, openOnly: $open) { totalCount edges { node { hostIp networkCidr openPorts icmpAvailable latencyMs observedAt } } } } }";
const CANCEL: &str = "mutation($input: CancelSweepInput!) { cancelSweep(input: $input) { run { status hostsDone } userErrors { field code message } } }";
const PREVIEW: &str = "query($input: ScheduleSweepInput!) { previewSweep(input: $input) { hostsTotal hosts ports membersWithoutIp userErrors { field code message } } }";

/// A test's sweep plumbing: names of its own, the server-side workers, and a poller.
struct Sweeps {
    names: SweepNames,
    tag: String,
    stop: watch::Sender<bool>,
    workers: tokio::task::JoinHandle<()>,
    poller: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    state_dir: std::path::PathBuf,
}

fn config() -> SweepConfig {
    SweepConfig {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        enabled: true,
        offline_after: Duration::from_secs(3),
        claim_ttl: Duration::from_secs(5),
        poll: Duration::from_millis(100),
        ..SweepConfig::default()
    }
}

async fn app() -> TestApp {
    TestApp::spawn_with(
        ApiConfig {
            sweeps: config(),
            ..ApiConfig::default()
        },
        true,
    )
    .await
}

/// The server-side sweep workers of `app` on `names`, reading reports as `consumer`.
fn workers(
    app: &TestApp,
    names: &SweepNames,
    consumer: String,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stop_rx) = watch::channel(false);
    let workers = tokio::spawn(sweep_control::run(
        app.pool.clone(),
        app.state.sweeps.clone(),
        SweepWorkerConfig {
            names: names.clone(),
            consumer,
            ..SweepWorkerConfig::new(Some(corral_tests::nats::url()), config())
        },
        stop_rx,
    ));
    (stop, workers)
}

impl Sweeps {
    async fn start(app: &TestApp) -> Sweeps {
        let tag = format!("t{}", Uuid::new_v4().simple());
        let names = SweepNames::tagged(&tag);
        let (stop, workers) = workers(app, &names, format!("reports-{tag}"));
        let state_dir = std::env::temp_dir().join(format!("corral-poller-{tag}"));
        Sweeps {
            names,
            tag,
            stop,
            workers,
            poller: None,
            state_dir,
        }
    }

    /// Another deployment (`app`, a database of its own) on the same buckets and stream, so
    /// served by the same pollers, with a reports consumer of its own.
    fn beside(&self, app: &TestApp) -> Sweeps {
        let consumer = format!("reports-{}-{}", self.tag, Uuid::new_v4().simple());
        let (stop, workers) = workers(app, &self.names, consumer);
        Sweeps {
            names: self.names.clone(),
            tag: self.tag.clone(),
            stop,
            workers,
            poller: None,
            state_dir: self.state_dir.clone(),
        }
    }

    /// The journal the poller keeps for `run`.
    fn journal(&self, run: &str) -> std::path::PathBuf {
        self.state_dir.join(format!("{run}.journal"))
    }

    /// Starts the in-process poller `id`.
    fn start_poller(&mut self, id: &str) {
        let (stop, stop_rx) = watch::channel(false);
        let config = PollerConfig {
            heartbeat_interval: Duration::from_millis(300),
            names: self.names.clone(),
            ..PollerConfig::new(id, corral_tests::nats::url(), self.state_dir.clone())
        };
        let task = tokio::spawn(async move {
            corral_workers::sweeps::run(config, stop_rx).await.unwrap();
        });
        self.poller = Some((stop, task));
    }

    async fn js(&self) -> jetstream::Context {
        jetstream::new(
            async_nats::connect(corral_tests::nats::url())
                .await
                .unwrap(),
        )
    }

    /// Every report of `run` in the stream, in order.
    async fn reports(&self, run: &str) -> Vec<SweepReport> {
        use async_nats::jetstream::consumer::{pull, DeliverPolicy};
        use futures::StreamExt;
        let js = self.js().await;
        let stream = js.get_stream(&self.names.reports_stream).await.unwrap();
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.names.report_subject(run.parse().unwrap()),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let pending = consumer.clone().info().await.unwrap().num_pending;
        let mut out = vec![];
        let mut messages = consumer.messages().await.unwrap();
        while (out.len() as u64) < pending {
            let msg = messages.next().await.unwrap().unwrap();
            out.push(serde_json::from_slice(&msg.payload).unwrap());
        }
        out
    }

    /// Heartbeats as `poller` (every 500 ms, until the task is aborted) without running
    /// anything: a poller that never claims a job, or one whose reports the test writes.
    async fn beat_as(&self, poller: &str) -> tokio::task::JoinHandle<()> {
        let js = self.js().await;
        let (_, pollers, ()) = corral_workers::sweeps::ensure_buckets(&js, &self.names)
            .await
            .unwrap();
        let poller = poller.to_string();
        let beat = move || {
            let beat = corral_workers::sweeps::PollerHeartbeat {
                poller_id: poller.clone(),
                at: chrono::Utc::now(),
                icmp: false,
                version: "test".into(),
            };
            (poller.clone(), serde_json::to_vec(&beat).unwrap())
        };
        let (key, first) = beat();
        pollers.put(&key, first.into()).await.unwrap();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (key, value) = beat();
                let _ = pollers.put(&key, value.into()).await;
            }
        })
    }

    async fn job_exists(&self, poller: &str, run: &str) -> bool {
        let js = self.js().await;
        let jobs = js.get_key_value(&self.names.jobs_bucket).await.unwrap();
        let key = corral_workers::sweeps::job_key(poller, run.parse().unwrap());
        jobs.get(&key).await.unwrap().is_some()
    }

    async fn stop(mut self) {
        if let Some((stop, task)) = self.poller.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let _ = self.stop.send(true);
        let js = self.js().await;
        let _ = self.workers.await;
        for stream in [
            self.names.reports_stream.clone(),
            format!("KV_{}", self.names.jobs_bucket),
            format!("KV_{}", self.names.pollers_bucket),
        ] {
            let _ = js.delete_stream(&stream).await;
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn sweep_input(poller: &str, targets: &[&str], ports: &[u16], key: &str) -> Value {
    json!({
        "pollerId": poller, "targets": targets, "ports": ports, "icmp": true,
        "timeoutMs": 500, "concurrency": 32, "idempotencyKey": key, "reason": "e2e",
    })
}

async fn schedule(app: &TestApp, input: Value) -> Value {
    app.data(&app.admin, SCHEDULE, json!({ "input": input }))
        .await["scheduleSweep"]
        .clone()
}

async fn run_state(app: &TestApp, id: &str) -> Value {
    app.data(&app.admin, RUN, json!({ "id": id, "open": false }))
        .await["sweepRun"]
        .clone()
}

/// Waits until `done` holds for the run (at most `secs`), returning its state.
async fn wait_for(app: &TestApp, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let run = run_state(app, id).await;
        if done(&run) {
            return run;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "run {id} did not get there in {secs} s: {}",
            json!({ "status": run["status"], "hostsDone": run["hostsDone"], "failure": run["failureCode"] })
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |run| run["status"] == s
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_sweep_finds_exactly_the_open_ports() {
    let app = app().await;
    let mut sweeps = Sweeps::start(&app).await;
    let poller = format!("p-{}", sweeps.tag);
    sweeps.start_poller(&poller);
    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let closed = closed_port();
    let key = format!("sweep-{}", sweeps.tag);
    // The poller's heartbeat must be there before the dispatcher looks.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let p = schedule(
        &app,
        sweep_input(&poller, &["127.0.0.0/28"], &[pb, closed, pa, pa], &key),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    assert_eq!(p["created"], true);
    assert_eq!(p["run"]["hostsTotal"], 16);
    let mut ports = vec![pa, pb, closed];
    ports.sort_unstable();
    assert_eq!(p["run"]["ports"], json!(ports));
    let id = p["run"]["id"].as_str().unwrap().to_string();
    // The same idempotency key and request return the same run.
    let again = schedule(
        &app,
        sweep_input(&poller, &["127.0.0.0/28"], &[pb, closed, pa, pa], &key),
    )
    .await;
    assert_eq!(again["created"], false);
    assert_eq!(again["run"]["id"], id.as_str());
    assert_eq!(again["run"]["hostsTotal"], 16);

    let run = wait_for(&app, &id, 60, status_is("COMPLETED")).await;
    assert_eq!(run["hostsDone"], 16);
    assert_eq!(run["hostsTotal"], 16);
    // With the privilege to ping, every loopback address answers; without it, ICMP is unknown
    // and only 127.0.0.1 (open ports) is up.
    let pings = corral_workers::sweeps::probe::icmp_capability();
    assert_eq!(run["hostsUp"], if pings { 16 } else { 1 });
    let results = run["results"]["edges"].as_array().unwrap();
    assert_eq!(run["results"]["totalCount"], 16);
    let hosts: Vec<&str> = results
        .iter()
        .map(|e| e["node"]["hostIp"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..16).map(|i| format!("127.0.0.{i}")).collect();
    assert_eq!(hosts, expected, "every host once, by address");
    let mut open = vec![pa, pb];
    open.sort_unstable();
    for e in results {
        let n = &e["node"];
        assert_eq!(n["networkCidr"], "127.0.0.0/28");
        // ICMP is a real answer when the poller may ping, unknown (null) otherwise.
        assert_eq!(n["icmpAvailable"], json!(pings.then_some(true)), "{n}");
        if n["hostIp"] == "127.0.0.1" {
            assert_eq!(n["openPorts"], json!(open), "{n}");
            assert!(n["latencyMs"].as_f64().unwrap() >= 0.0);
        } else {
            assert_eq!(n["openPorts"], json!([]), "{n}");
        }
    }
    let only = app
        .data(&app.admin, RUN, json!({ "id": id, "open": true }))
        .await;
    assert_eq!(
        only["sweepRun"]["results"]["totalCount"], 1,
        "open ports only"
    );

    // Every transition is an event, in order.
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'SweepRun' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        types,
        vec![
            "SweepScheduled",
            "SweepDispatched",
            "SweepAcknowledged",
            "SweepStarted",
            "SweepCompleted"
        ]
    );
    // The job key went when the run ended.
    let start = Instant::now();
    while sweeps.job_exists(&poller, &id).await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "job key left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Export: NDJSON and CSV, the same 16 hosts.
    let run_id: Uuid = id.parse().unwrap();
    let mut ndjson = Vec::new();
    let n = corral_api::sweep_export::export(
        &app.pool,
        run_id,
        corral_api::sweep_export::ExportFormat::Ndjson,
        false,
        &mut ndjson,
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(n, 16);
    let lines: Vec<Value> = String::from_utf8(ndjson)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 16);
    assert_eq!(lines[1]["host_ip"], "127.0.0.1");
    assert_eq!(lines[1]["open_ports"], json!(open));
    let mut csv = Vec::new();
    corral_api::sweep_export::export(
        &app.pool,
        run_id,
        corral_api::sweep_export::ExportFormat::Csv,
        true,
        &mut csv,
        &mut |_, _| {},
    )
    .await
    .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("run_id,host_ip,network_cidr"));
    let icmp = if pings { "true" } else { "" };
    assert!(
        rows[1].starts_with(&format!(
            "{id},127.0.0.1,127.0.0.0/28,{icmp},{} {},",
            open[0], open[1]
        )),
        "{csv}"
    );
    drop((a, b));
    sweeps.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn sweeps_are_admin_only_and_bad_requests_are_user_errors() {
    let app = app().await;
    let input = sweep_input("p1", &["127.0.0.0/30"], &[22], "k-1");
    for token in [&app.viewer, &app.operator, &app.auditor] {
        for (query, vars) in [
            (RUN, json!({ "id": Uuid::new_v4().to_string() })),
            (SCHEDULE, json!({ "input": input })),
            (PREVIEW, json!({ "input": input })),
            ("{ sweepRuns { totalCount } }", json!({})),
            (
                CANCEL,
                json!({ "input": { "id": Uuid::new_v4().to_string() } }),
            ),
        ] {
            let body = app.gql(token, query, vars).await;
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "FORBIDDEN",
                "{query}: {body}"
            );
        }
    }
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'SweepRun'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(events, 0);

    let preview = |input: Value| {
        let app = &app;
        async move {
            app.data(&app.admin, PREVIEW, json!({ "input": input }))
                .await["previewSweep"]
                .clone()
        }
    };
    let p = preview(sweep_input(
        "p1",
        &["127.0.0.0/16", "127.0.0.5"],
        &[443, 22, 22],
        "k",
    ))
    .await;
    assert_eq!(p["userErrors"], json!([]));
    assert_eq!(p["hostsTotal"], 65_536);
    assert_eq!(p["ports"], json!([22, 443]));
    let cases = [
        (
            sweep_input("p1", &["127.0.0.0/15"], &[22], "k"),
            "targets[0]",
            "PREFIX_TOO_SHORT",
        ),
        (
            sweep_input("p1", &["10.0.0.1"], &[22], "k"),
            "targets[0]",
            "NOT_ALLOWED",
        ),
        (
            sweep_input("p1", &["127.0.0.0/16", "127.1.0.0"], &[22], "k"),
            "targets",
            "TOO_MANY_HOSTS",
        ),
        (
            sweep_input("p1", &["127.0.0.9-127.0.0.1"], &[22], "k"),
            "targets[0]",
            "INVALID",
        ),
        (
            sweep_input("p1", &["127.0.0.1"], &[0], "k"),
            "ports[0]",
            "OUT_OF_RANGE",
        ),
        (
            sweep_input("p1", &["127.0.0.1"], &(1..=1025).collect::<Vec<u16>>(), "k"),
            "ports",
            "TOO_MANY_PORTS",
        ),
        (
            sweep_input("bad.id", &["127.0.0.1"], &[22], "k"),
            "pollerId",
            "INVALID",
        ),
    ];
    for (input, field, code) in cases {
        let p = preview(input.clone()).await;
        assert_eq!(p["userErrors"][0]["field"], field, "{input}: {p}");
        assert_eq!(p["userErrors"][0]["code"], code, "{input}: {p}");
    }
    for (retention, ok) in [(0, false), (1, true), (90, true), (91, false)] {
        let mut input = sweep_input("p1", &["127.0.0.1"], &[22], "k");
        input["retentionDays"] = json!(retention);
        let p = preview(input).await;
        assert_eq!(
            p["userErrors"] == json!([]),
            ok,
            "retention {retention}: {p}"
        );
    }
    let p = schedule(&app, {
        let mut i = sweep_input("p1", &["127.0.0.1"], &[22], "k-deadline");
        i["deadlineSecs"] = json!(0);
        i
    })
    .await;
    assert_eq!(p["userErrors"][0]["code"], "OUT_OF_RANGE");

    // A group's device members' addresses are swept; members without one are counted.
    let group = app.create_group("Lab", None).await;
    let p = app
        .data(
            &app.operator,
            "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { userErrors { message } } }",
            json!({ "input": { "devices": [
                { "id": "lab-1", "ip": "127.0.0.5" }, { "id": "lab-2", "ip": "127.0.0.6" },
                { "id": "lab-3" },
            ] } }),
        )
        .await;
    assert_eq!(p["upsertDevices"]["userErrors"], json!([]), "{p}");
    add(
        &app,
        &group,
        &["lab-1".into(), "lab-2".into(), "lab-3".into()],
    )
    .await;
    let mut input = sweep_input("p1", &["127.0.0.6-127.0.0.7"], &[22], "k");
    input["groupId"] = json!(group);
    let p = preview(input).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    assert_eq!(p["hostsTotal"], 3);
    assert_eq!(p["hosts"], json!(["127.0.0.5-127.0.0.7"]));
    assert_eq!(p["membersWithoutIp"], 1);

    // No poller heartbeats under this name: the run fails at once.
    let sweeps = Sweeps::start(&app).await;
    let p = schedule(
        &app,
        sweep_input(
            "nobody-home",
            &["127.0.0.1"],
            &[22],
            &format!("k-{}", sweeps.tag),
        ),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let id = p["run"]["id"].as_str().unwrap().to_string();
    let run = wait_for(&app, &id, 20, status_is("FAILED")).await;
    assert_eq!(run["failureCode"], "POLLER_OFFLINE");
    let p = app
        .data(&app.admin, CANCEL, json!({ "input": { "id": id } }))
        .await;
    assert_eq!(p["cancelSweep"]["userErrors"][0]["code"], "ALREADY_ENDED");
    let listed = app
        .data(
            &app.admin,
            "{ sweepRuns(status: FAILED) { totalCount edges { node { id } } } all: sweepRuns(pollerId: \"p1\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["sweepRuns"]["totalCount"], 1);
    assert_eq!(listed["sweepRuns"]["edges"][0]["node"]["id"], id.as_str());
    assert_eq!(listed["all"]["totalCount"], 0);
    sweeps.stop().await;
    app.shutdown().await;
}

/// A sweep that takes far longer than the test: 16,384 loopback hosts, 40 closed ports each,
/// one probe at a time.
fn long_sweep(poller: &str, key: &str) -> Value {
    let ports: Vec<u16> = (0..40).map(|_| closed_port()).collect();
    let mut input = sweep_input(poller, &["127.0.0.0/18"], &ports, key);
    input["concurrency"] = json!(1);
    input
}

async fn results_stored(app: &TestApp, id: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT host_ip) FROM sweep_results WHERE run_id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_and_keeps_its_partial_results() {
    let app = app().await;
    let mut sweeps = Sweeps::start(&app).await;
    let poller = format!("p-{}", sweeps.tag);
    sweeps.start_poller(&poller);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let p = schedule(&app, long_sweep(&poller, &format!("c-{}", sweeps.tag))).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let id = p["run"]["id"].as_str().unwrap().to_string();
    wait_for(&app, &id, 60, |r| r["hostsDone"].as_i64().unwrap() >= 256).await;

    // Progress streams over the subscription while it runs.
    let schema = app.state.schema.clone().unwrap();
    let actor = corral_api::auth::Actor::with_role("alice", "admin", "test");
    let request = corral_api::graphql::prepare(
        async_graphql::Request::new(format!(
            "subscription {{ sweepProgress(runId: \"{id}\") {{ status hostsDone hostsTotal }} }}"
        )),
        actor.clone(),
    );
    let mut progress = Box::pin(schema.execute_stream(request));
    let first = futures::StreamExt::next(&mut progress).await.unwrap();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let first = first.data.into_json().unwrap();
    assert_eq!(first["sweepProgress"]["hostsTotal"], 16_384);
    assert_eq!(first["sweepProgress"]["status"], "RUNNING");

    let p = app
        .data(
            &app.admin,
            CANCEL,
            json!({ "input": { "id": id, "reason": "enough" } }),
        )
        .await;
    assert_eq!(p["cancelSweep"]["userErrors"], json!([]), "{p}");
    assert_eq!(p["cancelSweep"]["run"]["status"], "CANCELLED");
    // The subscription ends with the cancel.
    let mut last = Value::Null;
    while let Some(item) = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut progress),
    )
    .await
    .expect("progress keeps coming until the run ends")
    {
        last = item.data.into_json().unwrap();
    }
    assert_eq!(last["sweepProgress"]["status"], "CANCELLED");

    // The poller stops: the job key goes and no more results come in.
    let start = Instant::now();
    while sweeps.job_exists(&poller, &id).await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "job key left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reports_then = sweeps.reports(&id).await.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sweeps.reports(&id).await.len(),
        reports_then,
        "the poller stopped"
    );
    let run = run_state(&app, &id).await;
    assert_eq!(run["status"], "CANCELLED");
    let done = run["hostsDone"].as_i64().unwrap();
    assert!((256..16_384).contains(&done), "{done}");
    assert_eq!(
        results_stored(&app, &id).await,
        (done, done),
        "partial results kept, each host once"
    );
    sweeps.stop().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_times_the_run_out_with_its_partial_results() {
    let app = app().await;
    let mut sweeps = Sweeps::start(&app).await;
    let poller = format!("p-{}", sweeps.tag);
    sweeps.start_poller(&poller);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut input = long_sweep(&poller, &format!("d-{}", sweeps.tag));
    // Long enough for a first batch of results even on a busy machine.
    input["deadlineSecs"] = json!(10);
    let p = schedule(&app, input).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let id = p["run"]["id"].as_str().unwrap().to_string();
    let run = wait_for(&app, &id, 30, status_is("TIMED_OUT")).await;
    assert!(run["endedAt"].is_string());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let run = run_state(&app, &id).await;
    let done = run["hostsDone"].as_i64().unwrap();
    assert!((1..16_384).contains(&done), "{done}");
    assert_eq!(results_stored(&app, &id).await, (done, done));
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'SweepRun' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(types.last().unwrap(), "SweepTimedOut");
    sweeps.stop().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_killed_mid_run_resumes_and_reports_no_host_twice() {
    let app = app().await;
    let sweeps = Sweeps::start(&app).await;
    let poller = format!("p-{}", sweeps.tag);
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_corral-poller"))
            .args(["--id", &poller, "--state-dir"])
            .arg(&sweeps.state_dir)
            .env("NATS_URL", corral_tests::nats::url())
            .env("CORRAL_SWEEP_TAG", &sweeps.tag)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // 4,096 hosts with 8 closed ports each, two probes at a time: a few seconds of work.
    let ports: Vec<u16> = (0..8).map(|_| closed_port()).collect();
    let mut input = sweep_input(
        &poller,
        &["127.0.0.0/20"],
        &ports,
        &format!("k-{}", sweeps.tag),
    );
    input["concurrency"] = json!(2);
    let p = schedule(&app, input).await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let id = p["run"]["id"].as_str().unwrap().to_string();
    wait_for(&app, &id, 60, |r| r["hostsDone"].as_i64().unwrap() >= 512).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = run_state(&app, &id).await["hostsDone"].as_i64().unwrap();
    assert!(at_kill < 4096, "killed mid-run ({at_kill})");

    let mut child = spawn();
    let run = wait_for(&app, &id, 120, status_is("COMPLETED")).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(run["hostsDone"], 4096);
    assert_eq!(results_stored(&app, &id).await, (4096, 4096));
    // In the stream itself, each host was reported exactly once, and the run acknowledged,
    // started and finished once.
    let reports = sweeps.reports(&id).await;
    let mut hosts: Vec<String> = reports
        .iter()
        .filter(|r| r.kind == ReportKind::Results)
        .flat_map(|r| r.results.iter().map(|h| h.host_ip.clone()))
        .collect();
    assert_eq!(hosts.len(), 4096, "no host reported twice");
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 4096);
    for kind in [ReportKind::Ack, ReportKind::Start, ReportKind::Done] {
        assert_eq!(
            reports.iter().filter(|r| r.kind == kind).count(),
            1,
            "{kind:?}"
        );
    }
    sweeps.stop().await;
    app.shutdown().await;
}

fn admin_metadata() -> corral_domain::metadata::EventMetadata {
    corral_domain::metadata::EventMetadata {
        actor_subject: "alice".into(),
        actor_role: "admin".into(),
        source: corral_domain::metadata::Source::Api,
        correlation_id: "t".into(),
        causation_id: "t".into(),
        reason: None,
        client_addr: None,
    }
}

/// Schedules `request` (poller `p1`, port 22 unless it says otherwise) through the commands,
/// without the API and without a poller.
async fn schedule_directly(
    app: &TestApp,
    mut request: corral_domain::sweep::SweepRequest,
    deadline: chrono::DateTime<chrono::Utc>,
) -> Uuid {
    use corral_domain::sweep::{plan, SweepCommand};
    if request.poller_id.is_empty() {
        request.poller_id = "p1".into();
    }
    if request.ports.is_empty() {
        request.ports = vec![22];
    }
    let config = config();
    let planned = plan(&request, &config.limits, &config.allow).unwrap();
    let id = Uuid::new_v4();
    app.state
        .sweeps
        .execute(
            id,
            SweepCommand::Schedule {
                plan: planned,
                requested_by: "alice".into(),
                deadline,
            },
            &admin_metadata(),
        )
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn results_go_when_the_runs_retention_ends_and_old_partitions_are_dropped() {
    use corral_domain::sweep::{SweepCommand, SweepRequest};
    use corral_projections::sweeps::results::{record, NewResult};
    use corral_projections::sweeps::retention::cleanup;
    let app = app().await;
    let now = chrono::Utc::now();
    let id = schedule_directly(
        &app,
        SweepRequest {
            targets: vec!["127.0.0.0/30".into()],
            retention_days: Some(2),
            idempotency_key: "retention".into(),
            ..Default::default()
        },
        now + chrono::TimeDelta::hours(1),
    )
    .await;
    wait_for(&app, &id.to_string(), 10, status_is("QUEUED")).await;
    let results: Vec<NewResult> = (0..4)
        .map(|i| NewResult {
            host_ip: format!("127.0.0.{i}").parse().unwrap(),
            network_cidr: "127.0.0.0/30".into(),
            icmp_available: None,
            open_ports: if i == 1 { vec![22] } else { vec![] },
            latency_ms: Some(0.1),
            metadata: json!({}),
            observed_at: now,
        })
        .collect();
    // A poller's report is not taken on trust: a host repeated in one batch counts once, a
    // host outside the run is dropped, the block is the run's own (not what the poller
    // says), and free-form metadata jsonb cannot hold is replaced.
    let mut odd = results[..3].to_vec();
    odd[0].network_cidr = "10.0.0.0/8".into();
    odd[0].metadata = json!({ "note": "nul \u{0}" });
    odd.push(results[2].clone());
    odd.push(NewResult {
        host_ip: "127.0.0.9".parse().unwrap(),
        ..results[0].clone()
    });
    let first = record(&app.pool, id, &odd, now).await.unwrap();
    assert_eq!((first.stored, first.duplicates, first.dropped), (3, 1, 1));
    let stored: (String, Value) = sqlx::query_as(
        "SELECT network_cidr::text, metadata FROM sweep_results WHERE host_ip = '127.0.0.0'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, ("127.0.0.0/30".to_string(), json!({})));
    // A re-sent batch stores only the hosts the run lacks.
    let again = record(&app.pool, id, &results, now).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (1, 3));
    let run = run_state(&app, &id.to_string()).await;
    assert_eq!(
        (run["hostsDone"].as_i64(), run["hostsUp"].as_i64()),
        (Some(4), Some(1))
    );
    app.state
        .sweeps
        .execute(
            id,
            SweepCommand::Cancel {
                by: "alice".into(),
                reason: None,
                hosts_done: 4,
            },
            &admin_metadata(),
        )
        .await
        .unwrap();
    wait_for(&app, &id.to_string(), 10, status_is("CANCELLED")).await;
    // An ended run takes no more results.
    let late = record(&app.pool, id, &results, now).await.unwrap();
    assert_eq!(late.dropped, 4);

    // Kept for its 2 days, then deleted; a partition older than any retention is dropped.
    sqlx::query("SELECT corral_sweep_partitions($1, $1)")
        .bind((now - chrono::TimeDelta::days(120)).date_naive())
        .execute(&app.pool)
        .await
        .unwrap();
    let runtime = Duration::from_secs(86_400);
    let kept = cleanup(&app.pool, now + chrono::TimeDelta::days(1), 90, runtime)
        .await
        .unwrap();
    assert_eq!(kept.runs_purged, 0);
    assert_eq!(kept.partitions_dropped, 1);
    assert_eq!(results_stored(&app, &id.to_string()).await.0, 4);
    let purged = cleanup(&app.pool, now + chrono::TimeDelta::days(3), 90, runtime)
        .await
        .unwrap();
    assert_eq!((purged.runs_purged, purged.results_deleted), (1, 4));
    assert_eq!(results_stored(&app, &id.to_string()).await.0, 0);
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM sweep_result_hosts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(hosts, 0);
    let run = app
        .data(
            &app.admin,
            "query($id: ID!) { sweepRun(id: $id) { resultsPurged resultsExpireAt hostsDone results { totalCount } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(run["sweepRun"]["resultsPurged"], true);
    assert_eq!(run["sweepRun"]["results"]["totalCount"], 0);
    assert_eq!(
        run["sweepRun"]["hostsDone"], 4,
        "the run still says what it found"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_monitor_ends_overdue_runs_without_nats_and_progress_is_admin_only() {
    let app = app().await;
    let (stop, stop_rx) = watch::channel(false);
    // No NATS: only the monitor and the retention run.
    let workers = tokio::spawn(sweep_control::run(
        app.pool.clone(),
        app.state.sweeps.clone(),
        SweepWorkerConfig::new(None, config()),
        stop_rx,
    ));
    let id = schedule_directly(
        &app,
        corral_domain::sweep::SweepRequest {
            targets: vec!["127.0.0.1".into()],
            idempotency_key: "overdue".into(),
            ..Default::default()
        },
        chrono::Utc::now() + chrono::TimeDelta::seconds(1),
    )
    .await;
    wait_for(&app, &id.to_string(), 15, status_is("TIMED_OUT")).await;

    // Only admins may follow a run's progress.
    let schema = app.state.schema.clone().unwrap();
    for role in ["viewer", "operator", "auditor"] {
        let actor = corral_api::auth::Actor::with_role("someone", role, "test");
        let request = corral_api::graphql::prepare(
            async_graphql::Request::new(format!(
                "subscription {{ sweepProgress(runId: \"{id}\") {{ status }} }}"
            )),
            actor,
        );
        let mut stream = Box::pin(schema.execute_stream(request));
        let first = futures::StreamExt::next(&mut stream).await.unwrap();
        let code = first.errors[0]
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("\"FORBIDDEN\""), "{role}");
    }
    let _ = stop.send(true);
    let _ = workers.await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_nobody_claims_expires_and_its_key_goes() {
    let app = app().await;
    let sweeps = Sweeps::start(&app).await;
    // A poller that heartbeats but never claims anything (hung, or watching the wrong key).
    let poller = format!("mute-{}", sweeps.tag);
    let heartbeat = sweeps.beat_as(&poller).await;
    let p = schedule(
        &app,
        sweep_input(&poller, &["127.0.0.1"], &[22], &format!("e-{}", sweeps.tag)),
    )
    .await;
    assert_eq!(p["userErrors"], json!([]), "{p}");
    let id = p["run"]["id"].as_str().unwrap().to_string();
    wait_for(&app, &id, 10, status_is("DISPATCHED")).await;
    assert!(
        sweeps.job_exists(&poller, &id).await,
        "the job waits in its key"
    );
    // The test configuration's claim time is 5 s.
    let run = wait_for(&app, &id, 20, status_is("EXPIRED")).await;
    heartbeat.abort();
    assert_eq!(run["hostsDone"], 0);
    let start = Instant::now();
    while sweeps.job_exists(&poller, &id).await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "job key left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sweeps.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn sweep_runs_page_backward_as_forward_reversed() {
    let app = app().await;
    for i in 0..5 {
        let id = schedule_directly(
            &app,
            corral_domain::sweep::SweepRequest {
                targets: vec![format!("127.0.0.{}", i + 1)],
                idempotency_key: format!("paging-{i}"),
                ..Default::default()
            },
            chrono::Utc::now() + chrono::TimeDelta::hours(1),
        )
        .await;
        wait_for(&app, &id.to_string(), 10, |r| !r.is_null()).await;
    }
    const RUNS: &str = "query($first: Int, $after: String, $last: Int, $before: String) { sweepRuns(first: $first, after: $after, last: $last, before: $before) { pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { node { id } } } }";
    let walk = |size: i64, backward: bool| {
        let app = &app;
        async move {
            let mut out: Vec<String> = vec![];
            let mut cursor = Value::Null;
            loop {
                let vars = if backward {
                    json!({ "last": size, "before": cursor })
                } else {
                    json!({ "first": size, "after": cursor })
                };
                let data = app.data(&app.admin, RUNS, vars).await;
                let conn = &data["sweepRuns"];
                let page: Vec<String> = conn["edges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["node"]["id"].as_str().unwrap().to_string())
                    .collect();
                let info = &conn["pageInfo"];
                let (more, next) = if backward {
                    out.splice(0..0, page);
                    (info["hasPreviousPage"].clone(), info["startCursor"].clone())
                } else {
                    out.extend(page);
                    (info["hasNextPage"].clone(), info["endCursor"].clone())
                };
                if more != true {
                    return out;
                }
                cursor = next;
            }
        }
    };
    let all = walk(10, false).await;
    assert_eq!(all.len(), 5);
    for size in [1, 2, 5] {
        assert_eq!(walk(size, false).await, all, "forward by {size}");
        assert_eq!(walk(size, true).await, all, "backward by {size}");
    }
    app.shutdown().await;
}
