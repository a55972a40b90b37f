//! `corral serve` as a process, the way users run it: a test database, NATS with a namespace
//! of the test's own, every worker on, a real TCP port. With a minimal HTTP/1.1 client
//! (requests as sent on the wire, so that tests can also send what no client library would).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::TestDb;

/// A running `corral serve` on a database of its own.
pub struct Served {
    /// The database.
    pub db: Option<TestDb>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The NATS namespace it uses (`CORRAL_NATS_NAMESPACE`).
    pub namespace: String,
    /// Admin, operator, viewer and auditor tokens.
    pub admin: String,
    /// Operator token.
    pub operator: String,
    /// Viewer token.
    pub viewer: String,
    /// Auditor token.
    pub auditor: String,
    child: Child,
    /// The `corral` binary.
    pub bin: String,
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding undone).
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        body = &body[eol + 2..];
        if size == 0 || body.len() < size {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or(&[]);
    }
}

/// Parses a whole HTTP/1.1 response (the connection was closed after it).
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    Some(Response {
        status,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_vec()
        },
        headers,
    })
}

/// Sends `raw` (a whole request) to 127.0.0.1:`port` and reads the response until the server
/// closes the connection (at most `timeout`).
pub async fn send_raw(port: u16, raw: &[u8], timeout: Duration) -> Option<Response> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream.write_all(raw).await.ok()?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.ok()?;
        parse_response(&out)
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// A request with `Connection: close`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

impl Served {
    /// Starts `corral serve` (binary `bin`) on a fresh database with NATS on under a
    /// namespace of its own, with `env` added; waits until `/healthz` answers. Tokens are made
    /// with the library (as `corral token create` does).
    pub async fn start(bin: &str, env: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let pool = db.pool(2).await;
        let mut tokens = Vec::new();
        for (subject, role) in [
            ("alice", "admin"),
            ("oscar", "operator"),
            ("vera", "viewer"),
            ("audrey", "auditor"),
        ] {
            tokens.push(
                corral_api::auth::create_token(&pool, subject, role)
                    .await
                    .expect("token"),
            );
        }
        pool.close().await;
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let url = db.url.clone();
        Self::spawn(bin, &url, namespace, tokens, env, Some(db)).await
    }

    /// A second `corral serve` on this one's database and NATS namespace (several processes
    /// of one deployment); stopping it leaves the database alone.
    pub async fn another(&self, env: &[(&str, &str)]) -> Self {
        let url = self.db.as_ref().expect("database").url.clone();
        let tokens = vec![
            self.admin.clone(),
            self.operator.clone(),
            self.viewer.clone(),
            self.auditor.clone(),
        ];
        Self::spawn(&self.bin, &url, self.namespace.clone(), tokens, env, None).await
    }

    async fn spawn(
        bin: &str,
        url: &str,
        namespace: String,
        tokens: Vec<String>,
        env: &[(&str, &str)],
        db: Option<TestDb>,
    ) -> Self {
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("NATS_URL", crate::nats::url())
            .env("CORRAL_NATS_NAMESPACE", &namespace)
            // Port 0: the server picks a free port and says which on stdout (no race with
            // another test for a port chosen in advance).
            .env("CORRAL_LISTEN", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("CORRAL_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn corral serve");
        let stdout = child.stdout.take().expect("stdout");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if !sent {
                    if let Some(addr) = line.strip_prefix("corral: serving on http://") {
                        let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                        sent = port.is_some_and(|p| port_tx.send(p).is_ok());
                    }
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(90))
            .expect("corral serve said which port it serves on");
        let mut served = Self {
            db,
            port,
            namespace,
            admin: tokens[0].clone(),
            operator: tokens[1].clone(),
            viewer: tokens[2].clone(),
            auditor: tokens[3].clone(),
            child,
            bin: bin.to_string(),
        };
        let started = Instant::now();
        loop {
            if let Some(r) = served.get("/healthz").await {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "corral serve did not come up"
            );
            assert!(
                served.child.try_wait().expect("wait").is_none(),
                "corral serve exited early"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Option<Response> {
        send_raw(
            self.port,
            &request("GET", path, &[], b""),
            Duration::from_secs(30),
        )
        .await
    }

    /// POSTs a GraphQL request; returns the response.
    pub async fn post_graphql(&self, token: &str, query: &str, variables: Value) -> Response {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let auth = format!("Bearer {token}");
        send_raw(
            self.port,
            &request(
                "POST",
                "/graphql",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            ),
            Duration::from_secs(60),
        )
        .await
        .expect("a response from corral serve")
    }

    /// POSTs a GraphQL request and returns `data`, panicking on errors.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self.post_graphql(token, query, variables).await;
        let body = response.json();
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Runs `corral ARGS` against this server's database.
    pub fn corral(&self, args: &[&str]) -> (bool, String, String) {
        let url = &self.db.as_ref().expect("database").url;
        crate::run_corral_with(
            &self.bin,
            url,
            args,
            &[("CORRAL_NATS_NAMESPACE", &self.namespace)],
        )
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// SIGTERM, wait (at most 30 s), drop the database.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let stopped = Instant::now();
        while self.child.try_wait().expect("wait").is_none() {
            if stopped.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("corral serve ignored SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(db) = self.db.take() {
            db.drop_db().await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
