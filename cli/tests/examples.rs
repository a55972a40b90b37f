//! The integrator clients of `examples/` (Python: nats-py and a graphql-transport-ws client;
//! TypeScript: nats.js and graphql-ws) against a live `corral serve` with NATS: each follows the
//! event stream and a group's effective membership, is killed (SIGKILL) while changes go on,
//! and is started again; afterwards each has seen every event and every change exactly once,
//! in order.
//!
//! The clients' dependencies are installed here when missing: Python's with
//! `pip install --target` into a directory of the build, TypeScript's with `npm ci` in a copy
//! of `examples/typescript` (both need their registries; Python 3 and Node.js 18+ must be on
//! the machine).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_tests::nats;
use corral_tests::served::Served;
use serde_json::{json, Value};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `PYTHONPATH` under which `nats` and `websockets` import (installed here when missing).
fn python_path() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-python");
    let probe = |path: &Path| {
        Command::new("python3")
            .args(["-c", "import nats, websockets"])
            .env("PYTHONPATH", path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !probe(&target) {
        run(
            Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                &target.to_string_lossy(),
                "-r",
                &examples().join("python/requirements.txt").to_string_lossy(),
            ]),
            "pip install of examples/python/requirements.txt (Python 3 with pip is needed)",
        );
    }
    target
}

/// A built copy of `examples/typescript`: its `dist/client.js`.
fn typescript_client() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-typescript");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    let src = examples().join("typescript");
    for file in [
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "src/client.ts",
    ] {
        std::fs::copy(src.join(file), dir.join(file)).expect("copy the TypeScript example");
    }
    if !dir.join("node_modules/.package-lock.json").exists() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
            "npm ci in examples/typescript (Node.js with npm is needed)",
        );
    }
    run(
        Command::new("npx")
            .args(["tsc", "-p", "."])
            .current_dir(&dir),
        "tsc of examples/typescript",
    );
    dir.join("dist/client.js")
}

/// One of the two clients, restartable.
struct Client {
    name: &'static str,
    command: Box<dyn Fn() -> Command>,
    out: PathBuf,
    child: Option<Child>,
}

impl Client {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out.join("client.log"))
            .expect("log");
        let child = (self.command)()
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start: {e}", self.name));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.out.join(file))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.out.join("client.log")).unwrap_or_default()
    }

    /// Waits until the client has stored the event at `position` and `changes` membership
    /// changes.
    async fn caught_up(&mut self, position: i64, changes: usize) {
        let started = Instant::now();
        loop {
            let events = self.lines("events.ndjson");
            let last = events.last().map_or(0, |e| num(&e["position"]));
            let members = self.lines("membership.ndjson").len();
            if last >= position && members >= changes {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{} exited ({status}):\n{}", self.name, self.log());
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{}: events up to {last} of {position}, {members} of {changes} changes\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn mutate(served: &Served, query: &str, variables: Value) -> Value {
    let data = served.data(&served.admin, query, variables).await;
    let payload = data
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(errors) = payload.get("userErrors") {
        assert_eq!(errors, &json!([]), "{query}");
    }
    payload
}

async fn create_group(served: &Served, name: &str, parent: Option<&str>) -> String {
    let p = mutate(
        served,
        "mutation($n: String!, $p: ID) { createGroup(input: {name: $n, type: DEVICE, parentId: $p}) { group { id } userErrors { code } } }",
        json!({"n": name, "p": parent}),
    )
    .await;
    p["group"]["id"].as_str().expect("group id").to_string()
}

async fn members(served: &Served, verb: &str, group: &str, ids: &[&str]) {
    mutate(
        served,
        &format!("mutation($g: ID!, $m: [ID!]!) {{ {verb}(input: {{groupId: $g, memberIds: $m}}) {{ userErrors {{ code message }} }} }}"),
        json!({"g": group, "m": ids}),
    )
    .await;
}

/// A `Position` (a string in GraphQL) or a number, as an integer.
fn num(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a position: {v}"))
}

async fn head(served: &Served) -> i64 {
    let data = served
        .data(&served.admin, "{ auditChainHead { position } }", json!({}))
        .await;
    num(&data["auditChainHead"]["position"])
}

#[tokio::test]
async fn the_example_clients_see_every_change_exactly_once_through_a_restart() {
    let python = python_path();
    let typescript = typescript_client();
    let served = Served::start(CORRAL, &[]).await;
    let ns = served.namespace.clone();

    let devices: Vec<Value> = (1..=6)
        .map(|i| json!({"id": format!("d{i}"), "hostname": format!("host-{i}")}))
        .collect();
    mutate(
        &served,
        "mutation($i: UpsertDevicesInput!) { upsertDevices(input: $i) { upserted userErrors { code } } }",
        json!({"i": {"devices": devices}}),
    )
    .await;
    let site = create_group(&served, "Site", None).await;
    let rack = create_group(&served, "Rack", Some(&site)).await;
    let elsewhere = create_group(&served, "Elsewhere", None).await;
    members(&served, "addGroupMembers", &rack, &["d1", "d2"]).await;

    let ws = format!("ws://127.0.0.1:{}/graphql/ws", served.port);
    let stream = format!("CORRAL_EVENTS_{ns}");
    let subject = format!("corral.{ns}.events.>");
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("examples-run-{ns}"));
    let args = |out: &Path| -> Vec<String> {
        [
            "--graphql-ws",
            &ws,
            "--token",
            &served.admin,
            "--nats-url",
            &nats::url(),
            "--events-stream",
            &stream,
            "--events-subject",
            &subject,
            "--group",
            &site,
            "--out",
            &out.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let py_out = base.join("python");
    let ts_out = base.join("typescript");
    std::fs::create_dir_all(&py_out).expect("mkdir");
    std::fs::create_dir_all(&ts_out).expect("mkdir");
    let (py_args, ts_args) = (args(&py_out), args(&ts_out));
    let script = examples().join("python/corral_client.py");
    let mut clients = [
        Client {
            name: "python",
            command: Box::new(move || {
                let mut c = Command::new("python3");
                c.arg(&script).args(&py_args).env("PYTHONPATH", &python);
                c
            }),
            out: py_out,
            child: None,
        },
        Client {
            name: "typescript",
            command: Box::new(move || {
                let mut c = Command::new("node");
                c.arg(&typescript).args(&ts_args);
                c
            }),
            out: ts_out,
            child: None,
        },
    ];

    // First run: everything from position 1.
    for c in clients.iter_mut() {
        c.start();
    }
    let first = head(&served).await;
    for c in clients.iter_mut() {
        c.caught_up(first, 2).await;
    }

    // Killed, while the membership goes on changing.
    for c in clients.iter_mut() {
        c.kill();
    }
    members(&served, "removeGroupMembers", &rack, &["d1"]).await;
    members(&served, "addGroupMembers", &site, &["d3", "d2"]).await;
    members(&served, "addGroupMembers", &elsewhere, &["d4", "d5"]).await;
    mutate(
        &served,
        "mutation($g: ID!, $p: ID!) { moveGroup(input: {id: $g, newParentId: $p}) { userErrors { code } } }",
        json!({"g": elsewhere, "p": rack}),
    )
    .await;

    // Started again: they resume, then follow live changes.
    for c in clients.iter_mut() {
        c.start();
    }
    members(&served, "addGroupMembers", &rack, &["d6"]).await;
    members(&served, "removeGroupMembers", &rack, &["d2"]).await;
    let last = head(&served).await;
    // d1 d2 in; d1 out, d3 in (d2 stays: held by Site too); d4 d5 in by the move; d6 in.
    let expected = [
        ("ENTERED", "d1"),
        ("ENTERED", "d2"),
        ("LEFT", "d1"),
        ("ENTERED", "d3"),
        ("ENTERED", "d4"),
        ("ENTERED", "d5"),
        ("ENTERED", "d6"),
    ];
    for c in clients.iter_mut() {
        c.caught_up(last, expected.len()).await;
        // Nothing more arrives late.
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.kill();

        let positions: Vec<i64> = c
            .lines("events.ndjson")
            .iter()
            .map(|e| num(&e["position"]))
            .collect();
        assert_eq!(
            positions,
            (1..=last).collect::<Vec<_>>(),
            "{}: every event once, in order",
            c.name
        );
        let events = c.lines("events.ndjson");
        assert!(
            events.iter().all(|e| e["ceType"]
                == json!(format!(
                    "io.corral.{}.{}",
                    e["aggregateType"].as_str().unwrap_or(""),
                    e["eventType"].as_str().unwrap_or("")
                ))),
            "{}: CloudEvents type header",
            c.name
        );
        let changes = c.lines("membership.ndjson");
        let seen: Vec<(String, String)> = changes
            .iter()
            .map(|m| {
                (
                    m["change"].as_str().unwrap_or("").to_string(),
                    m["memberId"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            seen.iter()
                .map(|(k, m)| (k.as_str(), m.as_str()))
                .collect::<Vec<_>>(),
            expected.to_vec(),
            "{}: every membership change once, in order:\n{changes:#?}",
            c.name
        );
        let cursors: Vec<(i64, i64)> = changes
            .iter()
            .map(|m| (num(&m["position"]), num(&m["index"])))
            .collect();
        assert!(
            cursors.windows(2).all(|w| w[0] < w[1]),
            "{}: cursors strictly increase: {cursors:?}",
            c.name
        );
        assert!(
            c.log().matches("resuming").count() == 2,
            "{}: started twice:\n{}",
            c.name,
            c.log()
        );
    }
    served.stop().await;
}
