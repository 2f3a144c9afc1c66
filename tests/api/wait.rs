//! `GET /v1/models/{name}?fitted_sequence=S&wait=T`: answers once the published fit covers
//! batch S, or after T seconds with the old `fitted_sequence`; refuses bad parameters
//! (400, nothing changes); ends on deletion and on shutdown.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, spiked_rows, TestApp};

async fn wait_status(app: &TestApp, name: &str, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/models/{name}?{query}")))
        .send()
        .await
        .unwrap()
}

/// A model of dimension 5 with 3 components holding one row: too few samples to fit.
async fn unfittable(app: &TestApp, name: &str) -> u64 {
    app.create_autoencoder(name, 5, 3).await;
    let receipt = app.ingest_json(name, &spiked_rows(5, 1, 3)).await;
    receipt["sequence"].as_u64().unwrap()
}

#[tokio::test]
async fn a_wait_returns_once_the_published_fit_covers_the_sequence() {
    let app = spawn_app().await;
    app.create_autoencoder("w", 8, 3).await;
    let rows = spiked_rows(8, 2000, 11);
    let mut last = 0;
    for chunk in rows.chunks(250) {
        last = app.ingest_json("w", chunk).await["sequence"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(last, 8);
    let start = Instant::now();
    let r = wait_status(&app, "w", &format!("fitted_sequence={last}&wait=30")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let status: Value = r.json().await.unwrap();
    assert!(
        status["fitted_sequence"].as_u64().unwrap() >= last,
        "{status}"
    );
    // Answered because the fit covered the batch, not because the 30 s elapsed.
    assert!(start.elapsed() < Duration::from_secs(25), "{status}");
    assert_eq!(status["sequence"], json!(last));
    assert_eq!(status["samples"], json!(2000.0));
    // A sequence already covered answers at once with the same status.
    let again: Value = wait_status(&app, "w", "fitted_sequence=1&wait=30")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["fitted_sequence"], status["fitted_sequence"]);
}

#[tokio::test]
async fn a_wait_times_out_with_the_old_fitted_sequence_when_the_model_cannot_fit() {
    let app = spawn_app().await;
    let seq = unfittable(&app, "few").await;
    assert_eq!(seq, 1);
    let start = Instant::now();
    let r = wait_status(&app, "few", "fitted_sequence=1&wait=0.4").await;
    let waited = start.elapsed();
    assert_eq!(r.status(), StatusCode::OK);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["fitted_sequence"], json!(0), "{status}");
    assert_eq!(status["sequence"], json!(1), "{status}");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
}

#[tokio::test]
async fn bad_wait_parameters_are_refused_naming_them_and_change_nothing() {
    let app = spawn_app().await;
    unfittable(&app, "p").await;
    let before = app.status("p").await;
    for (query, name) in [
        ("fitted_sequence=1&wait=0", "wait"),
        ("fitted_sequence=1&wait=61", "wait"),
        ("fitted_sequence=1&wait=soon", "wait"),
        ("fitted_sequence=1", "wait"),
        ("fitted_sequence=x&wait=1", "fitted_sequence"),
        ("fitted_sequence=-2&wait=1", "fitted_sequence"),
        ("wait=1", "fitted_sequence"),
        ("fitted_sequence=1&wait=1&timeout=3", "query"),
    ] {
        let message = assert_error(
            wait_status(&app, "p", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        )
        .await;
        assert!(message.contains(&format!("`{name}`")), "{query}: {message}");
    }
    let message = assert_error(
        wait_status(&app, "p", "fitted_sequence=2&wait=1").await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    )
    .await;
    assert!(
        message.contains("`fitted_sequence`") && message.contains("sequence 1"),
        "{message}"
    );
    assert_error(
        wait_status(&app, "nope", "fitted_sequence=1&wait=1").await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    assert_eq!(app.status("p").await, before);
}

#[tokio::test]
async fn a_wait_ends_when_the_model_is_deleted() {
    let app = spawn_app().await;
    unfittable(&app, "gone").await;
    let url = app.url("/v1/models/gone?fitted_sequence=1&wait=30");
    let client = app.client.clone();
    let start = Instant::now();
    let waiter = tokio::spawn(async move { client.get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app
        .client
        .delete(app.url("/v1/models/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = waiter.await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_error(r, StatusCode::NOT_FOUND, "model_not_found").await;
}

#[tokio::test]
async fn a_wait_ends_on_shutdown_with_the_current_status() {
    // A shutdown grace longer than the wait: without the wait ending on shutdown, the
    // service would hold the request (and its own exit) for the whole 30 s.
    let app = spawn_app_with(|mut s| {
        s.connections.shutdown_grace_secs = 40;
        s
    })
    .await;
    unfittable(&app, "s").await;
    let url = app.url("/v1/models/s?fitted_sequence=1&wait=30");
    let client = app.client.clone();
    let waiter = tokio::spawn(async move { client.get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.stop().await, "the service did not stop within 10 s");
    let r = waiter.await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["fitted_sequence"], json!(0), "{status}");
}
