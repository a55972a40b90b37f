//! NATS for tests: `NATS_URL` when set, otherwise one throwaway `nats-server -js` per test
//! process (on a free port, storage in a temporary directory), stopped and deleted when the
//! process exits, however it exits. Each test gets its own stream, subjects and consumers.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use corral_workers::inventory_feed::FeedConfig;
use uuid::Uuid;

/// `sh -c WRAPPER sh BIN DIR PORT`: runs nats-server in the background, prints its pid, and
/// once stdin reaches EOF (the test process is gone) stops it and deletes DIR.
const WRAPPER: &str = r#"bin=$1 dir=$2 port=$3
"$bin" -js -a 127.0.0.1 -p "$port" -sd "$dir" </dev/null >"$dir.log" 2>&1 &
ns=$!
echo "$ns"
while read -r _; do :; done
kill "$ns" 2>/dev/null
wait "$ns"
rm -rf "$dir" "$dir.log""#;

struct Server {
    url: String,
    /// Its stdin is the lifeline: closed when this process exits.
    _wrapper: Option<Mutex<Child>>,
}

fn binary() -> String {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    let on_path = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        on_path,
        "NATS_URL is not set and nats-server was not found: `apt-get install nats-server`, or set NATS_URL to a server with JetStream"
    );
    "nats-server".to_string()
}

fn start() -> Server {
    if let Ok(url) = std::env::var("NATS_URL") {
        if !url.trim().is_empty() {
            return Server {
                url,
                _wrapper: None,
            };
        }
    }
    let bin = binary();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("corral-nats-{}", Uuid::new_v4().simple()));
    let mut child = Command::new("sh")
        .args(["-c", WRAPPER, "corral-nats", &bin])
        .arg(&dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn nats-server");
    let mut pid = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut pid);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server (pid {}) did not listen on port {port} within 15 s; see {}.log",
            pid.trim(),
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        url: format!("nats://127.0.0.1:{port}"),
        _wrapper: Some(Mutex::new(child)),
    }
}

/// The URL of the test NATS server (started on first use).
pub fn url() -> String {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start).url.clone()
}

/// A feed configuration no other test shares: its own stream, subjects and consumers, and
/// quick retries.
pub fn feed_config() -> FeedConfig {
    let id = Uuid::new_v4().simple().to_string();
    FeedConfig {
        stream: format!("CORRAL_TEST_{id}"),
        devices_subject: format!("corral_test.{id}.inventory.devices"),
        services_subject: format!("corral_test.{id}.inventory.services"),
        devices_consumer: format!("devices-{id}"),
        services_consumer: format!("services-{id}"),
        retry_delay: Duration::from_millis(200),
        max_age: Duration::from_secs(3600),
    }
}

/// A JetStream context on the test server.
pub async fn jetstream() -> async_nats::jetstream::Context {
    let client = async_nats::connect(url()).await.expect("connect to NATS");
    async_nats::jetstream::new(client)
}

/// Waits (up to 20 s) until a feed's stream and both its durable consumers exist.
pub async fn wait_for_consumers(config: &FeedConfig) {
    let js = jetstream().await;
    for _ in 0..400 {
        if let Ok(stream) = js.get_stream(&config.stream).await {
            if stream.consumer_info(&config.devices_consumer).await.is_ok()
                && stream
                    .consumer_info(&config.services_consumer)
                    .await
                    .is_ok()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the feed's consumers on {} did not appear", config.stream);
}

/// Deletes a test's stream (and with it its consumers).
pub async fn delete_stream(config: &FeedConfig) {
    let _ = jetstream().await.delete_stream(&config.stream).await;
}

/// A publisher configuration no other test shares: its own stream and subject prefix (two
/// streams on one server cannot share subjects), small batches and quick polls.
pub fn publisher_config() -> corral_workers::publisher::PublisherConfig {
    let id = Uuid::new_v4().simple().to_string();
    corral_workers::publisher::PublisherConfig {
        stream: format!("CORRAL_TEST_EVENTS_{id}"),
        subject_prefix: format!("corral_test.{id}.events"),
        batch: 16,
        poll: Duration::from_millis(200),
        ..Default::default()
    }
}

/// `sh -c WRAPPER sh BIN DIR PORT`: like [`WRAPPER`], but keeps DIR, so that the server can be
/// started again on the same storage. Closing stdin stops the server gracefully (SIGTERM).
const OWNED_WRAPPER: &str = r#"bin=$1 dir=$2 port=$3
"$bin" -js -a 127.0.0.1 -p "$port" -sd "$dir" </dev/null >>"$dir.log" 2>&1 &
ns=$!
echo "$ns"
while read -r _; do :; done
kill "$ns" 2>/dev/null
wait "$ns""#;

/// A nats-server with JetStream that one test owns and may stop and start again on the same
/// port and storage directory (never stop the shared server at `NATS_URL`). Dropping it stops
/// the server and deletes its storage; if the test process dies, the server stops with it.
pub struct OwnedServer {
    port: u16,
    dir: std::path::PathBuf,
    wrapper: Option<Child>,
}

impl OwnedServer {
    /// Starts a server on a free port with a fresh storage directory.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("corral-nats-{}", Uuid::new_v4().simple()));
        let mut server = Self {
            port,
            dir,
            wrapper: None,
        };
        server.restart();
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server gracefully and waits until it has exited (no-op when stopped).
    pub fn stop(&mut self) {
        if let Some(mut wrapper) = self.wrapper.take() {
            drop(wrapper.stdin.take());
            let _ = wrapper.wait();
        }
    }

    /// Starts the server (again) on the same port and storage; waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let mut child = Command::new("sh")
            .args(["-c", OWNED_WRAPPER, "corral-nats", &binary()])
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn nats-server");
        let mut pid = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut pid);
        }
        self.wrapper = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server (pid {}) did not listen on port {} within 15 s; see {}.log",
                pid.trim(),
                self.port,
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnedServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut log = self.dir.clone().into_os_string();
        log.push(".log");
        let _ = std::fs::remove_file(log);
    }
}
