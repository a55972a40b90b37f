//! Slow clients and idle sockets: headers trickled, bodies that never arrive, websockets that
//! never authenticate, upgrades from another site's page.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{Suite, READ_TIMEOUT_MS, WS_PENDING};

/// Whether the server closes `stream` within `within` (reads until EOF or error).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// The status line and body of the answer to a websocket upgrade; the stream stays open.
async fn upgrade(port: u16, origin: Option<&str>) -> (u16, Value, TcpStream) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /graphql/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n{origin}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("an answer to the upgrade")
            .expect("read");
        assert!(n > 0, "closed before answering the upgrade");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let length = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if length > 0 {
        stream.read_exact(&mut body).await.expect("body");
    }
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        stream,
    )
}

pub async fn run(suite: &Suite) {
    let before = suite.fingerprint().await;
    let port = suite.served.port;
    let cut = Duration::from_millis(READ_TIMEOUT_MS + 1_500);

    super::support::set_phase("slow loris");
    // 200 connections that send part of their headers, and one that trickles a byte every
    // 200 ms: all are cut off after the read timeout.
    let mut loris = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("write");
        loris.push(s);
    }
    suite.count(201);
    let mut trickle = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let started = Instant::now();
    let trickled = async {
        for b in
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if trickle.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
    .await;
    assert!(trickled, "a trickled header was cut off");
    assert!(started.elapsed() < cut + Duration::from_millis(500));
    for s in &mut loris {
        assert!(
            closed_within(s, cut).await,
            "a slow-loris connection stayed open"
        );
    }
    // A connection that sends nothing at all.
    let mut idle = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    assert!(
        closed_within(&mut idle, cut).await,
        "an idle connection stayed open"
    );

    super::support::set_phase("stalled body");
    // A body that never arrives: 408 with a code after the read timeout.
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    suite.count(1);
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"query\":",
        suite.served.admin
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(cut, s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled body was not answered");
    let response = corral_tests::served::parse_response(&answer).expect("a response");
    super::support::assert_code(&response, 408, "REQUEST_TIMEOUT", "a stalled body");

    super::support::set_phase("websockets");
    // Websockets that never authenticate: the cap refuses the surplus at once, and the init
    // timeout closes the rest so that new ones are taken again.
    // All at once, well within the init timeout, so that no slot frees up meanwhile.
    suite.count(WS_PENDING + 10);
    let attempts =
        futures::future::join_all((0..WS_PENDING + 10).map(|_| upgrade(port, None))).await;
    let mut pending = Vec::new();
    let mut refused = 0;
    for (status, body, stream) in attempts {
        match status {
            101 => pending.push(stream),
            503 => {
                assert_eq!(
                    body["errors"][0]["extensions"]["code"],
                    "TOO_MANY_CONNECTIONS"
                );
                refused += 1;
            }
            other => panic!("upgrade answered {other}: {body}"),
        }
    }
    assert_eq!(pending.len(), WS_PENDING, "the cap admits exactly its size");
    assert_eq!(refused, 10);
    for s in &mut pending {
        assert!(
            closed_within(s, Duration::from_secs(4)).await,
            "a websocket without connection_init stayed open"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    suite.count(1);
    let (status, _, _) = upgrade(port, None).await;
    assert_eq!(
        status, 101,
        "slots come back when pending sockets are closed"
    );
    suite.count(1);
    let (status, body, _) = upgrade(port, Some("https://evil.example")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");

    assert_eq!(suite.fingerprint().await, before);
}
