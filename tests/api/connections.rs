//! Connection-level limits over raw TCP: header-read and idle timeouts, the connection
//! limit, bounded shutdown, and request framing (`Content-Length` beside
//! `Transfer-Encoding`, a `Content-Length` over the body limit).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{assert_error, spawn_app_with, TestApp};

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (EOF or reset) or `limit` passes;
/// returns what was read and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response whose body has a `content-length` (head and body).
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let app = spawn_app_with(|mut s| {
        s.connections.header_read_timeout_secs = 1;
        s
    })
    .await;
    let mut silent = connect(&app).await;
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(6)).await;
    assert!(closed, "a silent connection is still open after 6 s");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn a_client_trickling_header_lines_is_closed_at_the_header_read_timeout() {
    // Arrange: a timeout of 1 s; one header line every 200 ms would go on for 30 s.
    let app = spawn_app_with(|mut s| {
        s.connections.header_read_timeout_secs = 1;
        s
    })
    .await;
    let mut s = connect(&app).await;
    let start = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Act
    let mut closed_after = None;
    for i in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let line = format!("x-trickle-{i}: {i}\r\n");
        let mut probe = [0u8; 1];
        let gone = matches!(
            tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await,
            Ok(Ok(0) | Err(_))
        );
        if gone || s.write_all(line.as_bytes()).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
    }
    // Assert
    let closed_after = closed_after.expect("a trickling client kept its connection for 30 s");
    assert!(
        closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_serves_requests_and_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|mut s| {
        s.connections.idle_timeout_secs = 1;
        s.connections.header_read_timeout_secs = 30;
        s
    })
    .await;
    let mut s = connect(&app).await;
    let get = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    s.write_all(get).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Within the idle timeout the connection is reused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(get).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let idle_since = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
    assert!(closed, "an idle connection is still open after 6 s");
    // Closed by the idle timeout (1 s), not the header timeout (30 s).
    assert!(idle_since.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn connections_beyond_max_connections_get_503_until_stalled_ones_time_out() {
    // Arrange: three silent connections fill a limit of three.
    let app = spawn_app_with(|mut s| {
        s.connections.max_connections = 3;
        s.connections.header_read_timeout_secs = 2;
        s
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(connect(&app).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Act
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    // Assert
    assert_eq!(r.headers()["retry-after"], "1");
    let msg = assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert!(
        msg.contains("3 connections are open (max_connections)"),
        "{msg}"
    );
    // Once the silent ones are closed by the header timeout, the service answers.
    for s in &mut silent {
        let (_, closed) = read_until_closed(s, Duration::from_secs(6)).await;
        assert!(closed);
    }
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_lets_a_request_in_flight_finish() {
    // Arrange: 50 half-open connections (no timeout would close them for 60 s) and one
    // ingest whose body is half sent.
    let app = spawn_app_with(|mut s| {
        s.connections.header_read_timeout_secs = 60;
        s.connections.idle_timeout_secs = 60;
        s.connections.shutdown_grace_secs = 5;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let mut half_open = Vec::new();
    for i in 0..50 {
        let mut s = connect(&app).await;
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nx-partial: ")
                .await
                .unwrap();
        }
        half_open.push(s);
    }
    let body = "1,2\n".repeat(25);
    let mut ingest = connect(&app).await;
    let head = format!(
        "POST /v1/models/m/samples HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    ingest.write_all(head.as_bytes()).await.unwrap();
    ingest.write_all(&body.as_bytes()[..4]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Act
    let start = Instant::now();
    let stopped = tokio::spawn(app.stop());
    // Assert: the half-open connections are closed at once...
    for s in &mut half_open {
        let (_, closed) = read_until_closed(s, Duration::from_secs(3)).await;
        assert!(closed, "a half-open connection survived shutdown by 3 s");
    }
    // ...the request in flight still completes and is answered...
    ingest.write_all(&body.as_bytes()[4..]).await.unwrap();
    let response = read_response(&mut ingest).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"accepted\":25"), "{response}");
    // ...and the server stops within the grace period.
    assert!(stopped.await.unwrap(), "run did not return Ok within 10 s");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_request_in_flight_past_the_shutdown_grace_is_cut_off() {
    let app = spawn_app_with(|mut s| {
        s.connections.shutdown_grace_secs = 1;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let mut ingest = connect(&app).await;
    ingest
        .write_all(
            b"POST /v1/models/m/samples HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\n\
              content-length: 100\r\n\r\n1,2\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    assert!(app.stop().await, "run did not return Ok");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let (_, closed) = read_until_closed(&mut ingest, Duration::from_secs(2)).await;
    assert!(closed);
}

/// Sends `head` and `body` on a fresh connection and returns the first response.
async fn raw_request(app: &TestApp, raw: &[u8]) -> String {
    let mut s = connect(app).await;
    s.write_all(raw).await.unwrap();
    let (text, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    text
}

#[tokio::test]
async fn a_request_with_both_content_length_and_transfer_encoding_gets_400_naming_both() {
    let app = spawn_app_with(|s| s).await;
    app.create_autoencoder("m", 2, 1).await;
    for (first, second) in [
        ("content-length: 4", "transfer-encoding: chunked"),
        ("transfer-encoding: chunked", "content-length: 4"),
    ] {
        let raw = format!(
            "POST /v1/models/m/samples HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\n\
             {first}\r\n{second}\r\n\r\n4\r\n1,2\n\r\n0\r\n\r\n"
        );
        let text = raw_request(&app, raw.as_bytes()).await;
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "{first}, {second}: {text}"
        );
        assert!(text.contains("\"malformed_body\""), "{text}");
        assert!(
            text.contains("Content-Length") && text.contains("Transfer-Encoding"),
            "{text}"
        );
    }
    assert_eq!(app.status("m").await["batches"], 0);
    // Chunked alone is fine.
    let raw = "POST /v1/models/m/samples HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\n\
               transfer-encoding: chunked\r\nconnection: close\r\n\r\n4\r\n1,2\n\r\n0\r\n\r\n";
    let text = raw_request(&app, raw.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(app.status("m").await["batches"], 1);
}

#[tokio::test]
async fn a_content_length_over_the_body_limit_gets_413_at_once_without_100_continue() {
    let app = spawn_app_with(|mut s| {
        s.body_limit = 1024;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let mut s = connect(&app).await;
    s.write_all(
        b"POST /v1/models/m/samples HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\n\
          content-length: 1000000\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let (text, _) = read_until_closed(&mut s, Duration::from_secs(2)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text:?}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(
        text.contains("\"body_too_large\"") && text.contains("1024"),
        "{text}"
    );
    // At the limit the body is read as usual.
    let body = "1,2\n".repeat(256); // 1024 bytes
    let raw = format!(
        "POST /v1/models/m/samples HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    assert!(raw_request(&app, raw.as_bytes())
        .await
        .starts_with("HTTP/1.1 200"));
}
