//! Every feature at once, as `corral serve` runs them: NATS on, every worker in one process,
//! the reference poller beside it. Features that only work alone (two workers on one lock, two
//! streams on one subject) fail here.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use corral_tests::nats;
use corral_tests::served::Served;
use serde_json::{json, Value};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// Polls `check` every 100 ms until it returns `Some` (at most `secs`).
async fn eventually<T, F, Fut>(what: &str, secs: u64, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const LEADERS: [&str; 8] = [
    "rule_evaluator",
    "sweep_dispatcher",
    "sweep_monitor",
    "health_refresh",
    "capabilities",
    "token_expiry",
    "membership_feed",
    "publisher:",
];

#[tokio::test]
async fn every_worker_runs_at_once_with_nats_on_as_corral_serve_runs_them() {
    let served = Served::start(
        CORRAL,
        &[
            ("CORRAL_CAPABILITY_INTERVAL_SECS", "1"),
            ("CORRAL_RULE_SCHEDULE_SECS", "1"),
        ],
    )
    .await;
    let state_dir = std::env::temp_dir().join(format!("corral-poller-{}", served.namespace));
    let poller = Command::new(CORRAL)
        .args(["poller", "--id", "lab-poller", "--state-dir"])
        .arg(&state_dir)
        .env("NATS_URL", nats::url())
        .env("CORRAL_NATS_NAMESPACE", &served.namespace)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn corral poller");
    // Killed however the test ends.
    let poller = KillOnDrop(poller);

    // Every singleton has a leader, and it is this one process (the metric and the status).
    let metrics = eventually("every leader elected", 30, || async {
        let text = served.get("/metrics").await?.text();
        let all = LEADERS.iter().all(|l| {
            text.lines().any(|line| {
                line.starts_with(&format!("corral_leader{{worker=\"{l}")) && line.ends_with(" 1")
            })
        });
        all.then_some(text)
    })
    .await;
    for l in LEADERS {
        assert!(
            metrics.lines().any(|line| line
                .starts_with(&format!("corral_leader_present{{worker=\"{l}"))
                && line.ends_with(" 1")),
            "{l} has no leader in the cluster:\n{metrics}"
        );
    }
    let (ok, status, err) = served.corral(&["projections", "status"]);
    assert!(ok, "{err}");
    for l in LEADERS {
        let line = status
            .lines()
            .find(|line| line.starts_with(l))
            .unwrap_or_else(|| panic!("no {l} line in:\n{status}"));
        assert!(!line.contains("none"), "{line}");
        assert!(line.contains("corral "), "names the process: {line}");
    }

    // Inventory over NATS, a rule, static members, telemetry over NATS.
    let js = nats::jetstream().await;
    let ns = &served.namespace;
    let devices = json!([
        { "id": "web-1", "hostname": "web-1", "ip": "10.0.0.1" },
        { "id": "db-1", "hostname": "db-1", "ip": "10.0.0.2" },
    ]);
    js.publish(
        format!("corral.{ns}.inventory.devices"),
        devices.to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
    eventually("devices from the NATS feed", 30, || async {
        let d = served
            .data(
                &served.viewer,
                "{ devices(first: 10) { totalCount } }",
                json!({}),
            )
            .await;
        (d["devices"]["totalCount"] == 2).then_some(())
    })
    .await;
    let site = served
        .data(
            &served.admin,
            "mutation { createGroup(input: {name: \"Site\", type: DEVICE}) { group { id } userErrors { code } } }",
            json!({}),
        )
        .await["createGroup"]["group"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let web = served
        .data(
            &served.admin,
            "mutation($p: ID) { createGroup(input: {name: \"Web\", type: DEVICE, parentId: $p}) { group { id } } }",
            json!({ "p": site }),
        )
        .await["createGroup"]["group"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // A durable membership watch of the site, registered with the CLI: the feed of this
    // process publishes its members entering.
    let (ok, stdout, stderr) = served.corral(&[
        "watch",
        "add",
        "--group",
        &site,
        "--descendants",
        "--description",
        "all workers",
    ]);
    assert!(ok, "{stderr}");
    let watch = stdout
        .lines()
        .last()
        .expect("the watch id")
        .trim()
        .to_string();
    eventually("the watch listed", 30, || async {
        let (ok, stdout, _) = served.corral(&["watch", "list"]);
        (ok && stdout
            .lines()
            .any(|l| l.starts_with(&watch) && l.contains("all workers")))
        .then_some(())
    })
    .await;
    let set = served
        .data(
            &served.admin,
            "mutation($g: ID!) { setGroupRule(input: {groupId: $g, rule: \"hostname:web%\"}) { userErrors { code message } } }",
            json!({ "g": web }),
        )
        .await;
    assert_eq!(set["setGroupRule"]["userErrors"], json!([]));
    let added = served
        .data(
            &served.operator,
            "mutation($g: ID!) { addGroupMembers(input: {groupId: $g, memberIds: [\"db-1\"]}) { userErrors { code } } }",
            json!({ "g": site }),
        )
        .await;
    assert_eq!(added["addGroupMembers"]["userErrors"], json!([]));
    eventually("the rule evaluator's member", 30, || async {
        let d = served
            .data(
                &served.viewer,
                "query($g: ID!) { group(id: $g) { memberCount(mode: EFFECTIVE) } }",
                json!({ "g": site }),
            )
            .await;
        (d["group"]["memberCount"] == 2).then_some(())
    })
    .await;
    let feed = format!("CORRAL_MEMBERSHIP_{ns}");
    eventually("the watch's changes on NATS", 30, || async {
        let mut stream = js.get_stream(&feed).await.ok()?;
        let messages = stream.info().await.ok()?.state.messages;
        (messages == 2).then_some(())
    })
    .await;
    let (ok, _, stderr) = served.corral(&["watch", "remove", "--id", &watch]);
    assert!(ok, "{stderr}");
    let now = Utc::now();
    let samples = json!([
        { "deviceId": "web-1", "ts": now.to_rfc3339(), "cpuPercent": 40, "memPercent": 50, "diskPercent": 60 },
        { "deviceId": "db-1", "ts": now.to_rfc3339(), "cpuPercent": 20, "memPercent": 30, "diskPercent": 40 },
    ]);
    js.publish(
        format!("corral.{ns}.telemetry.sysmon"),
        samples.to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");

    // The rollups of the freshly populated group refresh (they stayed RAW for minutes when
    // the refresh and the sweep dispatcher shared a lock), and the capabilities worker flags
    // the group.
    let from = (now - chrono::Duration::minutes(15)).to_rfc3339();
    let to = (now + chrono::Duration::minutes(5)).to_rfc3339();
    eventually("rollups of the populated group", 30, || async {
        let d = served
            .data(
                &served.viewer,
                "query($g: ID!, $from: DateTime!, $to: DateTime!) { group(id: $g) { capabilities { hasSysmon } health(from: $from, to: $to) { source members buckets { devicesReporting } } } }",
                json!({ "g": site, "from": from, "to": to }),
            )
            .await;
        let h = &d["group"]["health"];
        let reporting: i64 = h["buckets"]
            .as_array()?
            .iter()
            .filter_map(|b| b["devicesReporting"].as_i64())
            .max()
            .unwrap_or(0);
        (h["source"] == "ROLLUP"
            && h["members"] == 2
            && reporting == 2
            && d["group"]["capabilities"]["hasSysmon"] == true)
            .then_some(())
    })
    .await;

    // A sweep through the poller, dispatched by this process.
    let target = "127.0.0.1/32";
    let scheduled = served
        .data(
            &served.admin,
            "mutation($input: ScheduleSweepInput!) { scheduleSweep(input: $input) { run { id } userErrors { field code message } } }",
            json!({ "input": { "pollerId": "lab-poller", "targets": [target], "ports": [served.port],
                     "icmp": false, "timeoutMs": 500, "idempotencyKey": "all-workers", "reason": "e2e" } }),
        )
        .await;
    assert_eq!(scheduled["scheduleSweep"]["userErrors"], json!([]));
    let run = scheduled["scheduleSweep"]["run"]["id"]
        .as_str()
        .expect("run id")
        .to_string();
    let open: Value = eventually("the sweep run completes", 60, || async {
        let d = served
            .data(
                &served.admin,
                "query($id: ID!) { sweepRun(id: $id) { status results(first: 10) { edges { node { openPorts } } } } }",
                json!({ "id": run }),
            )
            .await;
        (d["sweepRun"]["status"] == "COMPLETED")
            .then(|| d["sweepRun"]["results"]["edges"][0]["node"]["openPorts"].clone())
    })
    .await;
    assert_eq!(open, json!([served.port]), "the server's own port is open");

    // The event log reached NATS, in position order, under the namespace's stream.
    let mut stream = js
        .get_stream(format!("CORRAL_EVENTS_{ns}"))
        .await
        .expect("the events stream");
    let published: u64 = eventually("events published", 30, || {
        let mut stream = stream.clone();
        async move {
            let info = stream.info().await.ok()?;
            (info.state.messages >= 5).then_some(info.state.messages)
        }
    })
    .await;
    let info = stream.info().await.expect("info");
    assert_eq!(info.state.first_sequence, 1);
    assert!(published >= 5);

    drop(poller);
    let _ = std::fs::remove_dir_all(&state_dir);
    for s in [
        format!("CORRAL_EVENTS_{ns}"),
        format!("CORRAL_INVENTORY_{ns}"),
        format!("CORRAL_TELEMETRY_{ns}"),
        format!("CORRAL_SWEEP_REPORTS_{ns}"),
        format!("KV_corral_sweep_jobs_{ns}"),
        format!("KV_corral_pollers_{ns}"),
    ] {
        let _ = js.delete_stream(&s).await;
    }
    served.stop().await;
}
