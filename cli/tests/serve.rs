//! README's first command: `corral serve` on its embedded default, then the tour's steps.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test]
async fn serve_on_the_embedded_default_then_join_it_with_token_create() {
    let data_dir = std::env::temp_dir().join(format!("corral-serve-test-{}", std::process::id()));
    let port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env("CORRAL_DATA_DIR", &data_dir)
        .env("CORRAL_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn corral serve");
    let started = Instant::now();
    loop {
        if let Some(r) = http(port, "GET", "/healthz", None, "").await {
            if r.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "corral serve did not come up"
        );
        assert!(
            serve.try_wait().expect("wait").is_none(),
            "corral serve exited early"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A second process finds the running embedded server.
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["token", "create", "--subject", "me", "--role", "admin"])
        .env_remove("DATABASE_URL")
        .env("CORRAL_DATA_DIR", &data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = stdout.lines().last().expect("token line").to_string();
    // A second server must not lean on this one's embedded PostgreSQL.
    let second = Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env("CORRAL_DATA_DIR", &data_dir)
        .env("CORRAL_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "warn")
        .output()
        .expect("second serve");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another corral process"));

    let create = r#"{"query":"mutation { createGroup(input: {name: \"Site-A\", type: DEVICE}) { group { path } userErrors { code } } }"}"#;
    let r = http(port, "POST", "/graphql", Some(&token), create)
        .await
        .expect("response");
    assert!(r.contains(r#""path":"Inventory/Site-A""#), "{r}");
    let r = http(port, "POST", "/graphql", None, create)
        .await
        .expect("response");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = http(port, "GET", "/metrics", None, "")
        .await
        .expect("metrics");
    assert!(r.contains("corral_projector_lag_events"), "{r}");

    // SIGTERM: graceful shutdown, and the embedded PostgreSQL goes with it.
    let _ = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status();
    let stopped = Instant::now();
    while serve.try_wait().expect("wait").is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "corral serve ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !data_dir.join("pg/postmaster.pid").exists(),
        "the embedded PostgreSQL stopped"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}
