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
    assert!(msg.contains("row 0, column 1"), "{msg}");
}

#[tokio::test]
async fn models_beyond_the_state_budget_are_refused() {
    // 8·64² = 32 KiB per 64-dimensional model; a budget of 40 KiB holds one.
    let app = spawn_app_with(|mut s| {
        s.limits.max_state_bytes = 40 * 1024;
        s
    })
    .await;
    app.create_autoencoder("a", 64, 1).await;
    let r = app
        .create_model(json!({"name": "b", "dim": 64, "components": 1}))
        .await;
    let msg = assert_error(r, StatusCode::CONFLICT, "too_many_models").await;
    assert!(msg.contains("max_state_bytes"), "{msg}");
    app.create_autoencoder("c", 8, 1).await;
}
