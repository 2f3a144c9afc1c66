//! Every bad input gets its 4xx with a precise code, and changes nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, spiked_rows, TestApp};

async fn app_with_one_batch() -> TestApp {
    let app = spawn_app_with(|s| streampca::config::Settings {
        body_limit: 4096,
        ..s
    })
    .await;
    app.create_autoencoder("m", 4, 2).await;
    app.ingest_json("m", &spiked_rows(4, 10, 5)).await;
    app
}

#[tokio::test]
async fn every_bad_batch_gets_its_error_and_leaves_samples_unchanged() {
    // Arrange
    let app = app_with_one_batch().await;
    let before = app.status("m").await;
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "application/json",
            br#"{"x": [[1,2,3]]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "dimension_mismatch",
        ),
        (
            "text/csv",
            b"1,2,nan,4\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "non_finite",
        ),
        (
            "application/x-ndjson",
            b"[1,2,3,inf]\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "non_finite",
        ),
        (
            "application/octet-stream",
            f32::NAN.to_le_bytes().repeat(4),
            StatusCode::UNPROCESSABLE_ENTITY,
            "non_finite",
        ),
        (
            "application/json",
            br#"{"x": [[1,2,3,4],[1,2,3]]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ragged_rows",
        ),
        (
            "text/csv",
            b"1,2,3,4\n1,2,3\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ragged_rows",
        ),
        (
            "application/json",
            br#"{"x": []}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_batch",
        ),
        (
            "application/octet-stream",
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_batch",
        ),
        (
            "application/octet-stream",
            vec![0; 15],
            StatusCode::UNPROCESSABLE_ENTITY,
            "dimension_mismatch",
        ),
        (
            "application/json",
            br#"{"x": [[1,2,3,4]"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "application/json",
            br#"{"x": [[1,2,3,1e400]]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "text/plain",
            b"1,2,3,4\n".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "application/json",
            vec![b' '; 8192],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];

    for (ct, body, status, code) in cases {
        // Act
        let r = app.post_samples("m", ct, body).await;
        // Assert
        let msg = assert_error(r, status, code).await;
        assert!(!msg.is_empty());
        let after = app.status("m").await;
        assert_eq!(
            after["samples"], before["samples"],
            "{code} changed samples"
        );
        assert_eq!(
            after["sequence"], before["sequence"],
            "{code} changed sequence"
        );
    }
}

#[tokio::test]
async fn a_dimension_mismatch_names_expected_and_got() {
    let app = app_with_one_batch().await;
    let r = app
        .post_samples("m", "application/json", br#"{"x": [[1,2,3]]}"#.to_vec())
        .await;
    let msg = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "dimension_mismatch").await;
    assert!(msg.contains("expected 4") && msg.contains("got 3"), "{msg}");
}

#[tokio::test]
async fn ragged_rows_name_the_row_and_its_length() {
    let app = app_with_one_batch().await;
    let body = br#"{"x": [[1,2,3,4],[1,2,3,4],[1,2]]}"#.to_vec();
    let r = app.post_samples("m", "application/json", body).await;
    let msg = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "ragged_rows").await;
    assert!(msg.contains("x row 3 has 2 values"), "{msg}");
}

#[tokio::test]
async fn an_unknown_model_is_404_everywhere() {
    let app = spawn_app().await;
    let r = app
        .post_samples("ghost", "application/json", br#"{"x": [[1]]}"#.to_vec())
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "model_not_found").await;
    for path in ["/v1/models/ghost", "/v1/models/ghost/components"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_error(r, StatusCode::NOT_FOUND, "model_not_found").await;
    }
    let r = app
        .client
        .delete(app.url("/v1/models/ghost"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "model_not_found").await;
    let r = app.project("ghost", json!({"x": [[1]]})).await;
    assert_error(r, StatusCode::NOT_FOUND, "model_not_found").await;
}

#[tokio::test]
async fn bad_model_configurations_are_rejected() {
    let app = spawn_app().await;
    let cases = [
        json!({"name": "Bad Name", "dim": 4, "components": 2}),
        json!({"name": "_x", "dim": 4, "components": 2}),
        json!({"name": "x", "dim": 0, "components": 1}),
        json!({"name": "x", "dim": 4, "components": 5}),
        json!({"name": "x", "dim": 4, "components": 0}),
        json!({"name": "x", "dim": 4, "components": 2, "target_dim": 1}),
        json!({"name": "x", "dim": 4, "components": 2, "half_life": -1.0}),
        json!({"name": "x", "dim": 4, "components": 2, "optimizer": "adam"}),
        json!({"name": "x", "dim": 4, "components": 2, "tolerance": 0.0}),
        json!({"name": "x", "dim": 20000, "components": 2}),
    ];
    for body in cases {
        let r = app.create_model(body.clone()).await;
        let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
        assert!(!msg.is_empty(), "{body}");
    }
    let r = app.create_model(json!({"name": "x", "dim": 4})).await;
    assert_error(r, StatusCode::BAD_REQUEST, "malformed_body").await;
    let r = app
        .client
        .post(app.url("/v1/models"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(app.get_json("/v1/models").await.1["models"], json!([]));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_error_shape() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "route_not_found").await;
    let r = app.client.put(app.url("/v1/models")).send().await.unwrap();
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}
