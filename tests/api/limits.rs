//! Configured limits: each answers a 4xx naming the limit and its value.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app_with};

#[tokio::test]
async fn a_batch_over_max_batch_rows_is_refused_with_413_and_changes_nothing() {
    let app = spawn_app_with(|mut s| {
        s.limits.max_batch_rows = 2;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let body = serde_json::to_vec(&json!({"x": [[1, 2], [3, 4], [5, 6]]})).unwrap();
    let r = app.post_samples("m", "application/json", body).await;
    let msg = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "too_many_rows").await;
    assert!(msg.contains("max_batch_rows") && msg.contains('2'), "{msg}");
    assert_eq!(app.status("m").await["batches"], 0);
}

#[tokio::test]
async fn a_projection_over_max_query_rows_is_refused_with_413() {
    let app = spawn_app_with(|mut s| {
        s.limits.max_query_rows = 1;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let r = app.project("m", json!({"x": [[1, 2], [3, 4]]})).await;
    let msg = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "too_many_rows").await;
    assert!(msg.contains("max_query_rows"), "{msg}");
}

#[tokio::test]
async fn models_beyond_max_models_are_refused_but_recreating_one_is_fine() {
    let app = spawn_app_with(|mut s| {
        s.limits.max_models = 1;
        s
    })
    .await;
    app.create_autoencoder("a", 2, 1).await;
    let again = json!({"name": "a", "dim": 2, "components": 1, "tolerance": 1e-8});
    assert_eq!(app.create_model(again).await.status(), StatusCode::OK);
    let r = app
        .create_model(json!({"name": "b", "dim": 2, "components": 1}))
        .await;
    let msg = assert_error(r, StatusCode::CONFLICT, "too_many_models").await;
    assert!(msg.contains("max_models") && msg.contains('1'), "{msg}");
}

#[tokio::test]
async fn dim_and_components_beyond_their_limits_are_invalid_parameters() {
    let app = spawn_app_with(|mut s| {
        s.limits.max_dim = 8;
        s.limits.max_components = 2;
        s
    })
    .await;
    let r = app
        .create_model(json!({"name": "a", "dim": 9, "components": 1}))
        .await;
    let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    assert!(msg.contains("max_dim") && msg.contains('8'), "{msg}");
    let r = app
        .create_model(json!({"name": "a", "dim": 8, "components": 3}))
        .await;
    let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    assert!(msg.contains("max_components"), "{msg}");
}

#[tokio::test]
async fn huge_magnitude_values_are_refused_precisely() {
    let app = spawn_app_with(|s| s).await;
    app.create_autoencoder("m", 2, 1).await;
    let r = app
        .post_samples("m", "text/csv", b"1,1e200\n".to_vec())
        .await;
    let msg = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "value_out_of_range").await;
    assert!(msg.contains("x row 1, column 2"), "{msg}");
}

#[tokio::test]
async fn models_beyond_the_state_budget_are_refused() {
    // A 64-dimensional scatter is 8·64² = 32 KiB; a model holds one per partition plus
    // the trainer's merge buffer. A budget of 100 KiB holds one model of one partition
    // (64 KiB) but not one of two (96 KiB) beside it.
    let app = spawn_app_with(|mut s| {
        s.limits.max_state_bytes = 100 * 1024;
        s
    })
    .await;
    let r = app
        .create_model(json!({"name": "wide", "dim": 64, "components": 1, "partitions": 3}))
        .await;
    let msg = assert_error(r, StatusCode::CONFLICT, "too_many_models").await;
    assert!(
        msg.contains("131072 bytes") && msg.contains("3 partitions"),
        "{msg}"
    );
    let r = app
        .create_model(json!({"name": "a", "dim": 64, "components": 1, "partitions": 1}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .create_model(json!({"name": "b", "dim": 64, "components": 1, "partitions": 1}))
        .await;
    let msg = assert_error(r, StatusCode::CONFLICT, "too_many_models").await;
    assert!(msg.contains("max_state_bytes"), "{msg}");
    let r = app
        .create_model(json!({"name": "c", "dim": 8, "components": 1, "partitions": 2}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, status) = app.get_json("/v1/models/c").await;
    assert_eq!(status["partitions"], 2);
}

/// Opens a raw connection and sends an ingest request whose body is only half written,
/// so the request stays in flight until the connection is dropped.
async fn half_sent_ingest(app: &crate::helpers::TestApp, model: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = app.address.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/models/{model}/samples HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: text/csv\r\ncontent-length: 100\r\n\r\n1,2\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    s
}

#[tokio::test]
async fn a_full_ingest_queue_answers_503_with_retry_after_and_changes_nothing() {
    // Arrange: one batch in flight fills a queue of one.
    let app = spawn_app_with(|mut s| {
        s.limits.ingest_queue = 1;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let _slow = half_sent_ingest(&app, "m").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Act
    let r = app.post_samples("m", "text/csv", b"1,2\n".to_vec()).await;
    // Assert
    assert_eq!(r.headers()["retry-after"], "1");
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert_eq!(app.status("m").await["batches"], 0);
    // Another model has its own queue.
    app.create_autoencoder("other", 2, 1).await;
    let r = app
        .post_samples("other", "text/csv", b"1,2\n".to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_never_finishes_times_out_with_503_and_frees_its_slot() {
    let app = spawn_app_with(|mut s| {
        s.limits.ingest_queue = 1;
        s.limits.request_timeout = 1;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let mut slow = half_sent_ingest(&app, "m").await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut slow, &mut buf),
    )
    .await
    .expect("the server answers within the timeout")
    .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(head.contains("\"timeout\""), "{head}");
    let r = app.post_samples("m", "text/csv", b"1,2\n".to_vec()).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn beyond_max_in_flight_requests_get_503_but_probes_still_answer() {
    let app = spawn_app_with(|mut s| {
        s.limits.max_in_flight = 1;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let _slow = half_sent_ingest(&app, "m").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = app.client.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}
