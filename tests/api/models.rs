//! Model life cycle: create, idempotent re-create, conflict, list, status, delete.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spiked_rows};

#[tokio::test]
async fn a_new_model_reports_its_configuration_and_empty_state() {
    let app = spawn_app().await;
    let r = app
        .create_model(json!({"name": "m1", "dim": 8, "components": 3, "half_life": 1000.0}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["name"], json!("m1"));
    assert_eq!(s["dim"], json!(8));
    assert_eq!(s["components"], json!(3));
    assert_eq!(s["target_dim"], Value::Null);
    assert_eq!(s["samples"], json!(0.0));
    assert_eq!(s["batches"], json!(0));
    assert_eq!(s["sequence"], json!(0));
    assert_eq!(s["steps"], json!(0));
    assert_eq!(s["loss"], Value::Null);
    assert_eq!(s["converged"], json!(false));
    assert_eq!(s["max_error_bound"], Value::Null);
    assert_eq!(s["optimizer"], json!("subspace"));
}

#[tokio::test]
async fn creating_the_same_model_twice_is_harmless_but_another_configuration_conflicts() {
    let app = spawn_app().await;
    let body = json!({"name": "m", "dim": 8, "components": 3});
    assert_eq!(
        app.create_model(body.clone()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(app.create_model(body).await.status(), StatusCode::OK);
    let r = app
        .create_model(json!({"name": "m", "dim": 9, "components": 3}))
        .await;
    assert_error(r, StatusCode::CONFLICT, "model_exists").await;
}

#[tokio::test]
async fn models_are_listed_by_name_and_can_be_deleted() {
    let app = spawn_app().await;
    app.create_autoencoder("b", 4, 1).await;
    app.create_autoencoder("a", 4, 1).await;
    let (_, list) = app.get_json("/v1/models").await;
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);

    let r = app
        .client
        .delete(app.url("/v1/models/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, _) = app.get_json("/v1/models/a").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The name can be reused, with any configuration.
    app.create_autoencoder("a", 6, 2).await;
    assert_eq!(app.status("a").await["dim"], json!(6));
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let (s, _) = app.get_json("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app.get_json("/readyz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], json!("ready"));
}

#[tokio::test]
async fn the_service_stops_cleanly_when_asked() {
    // Arrange: a model with a trainer thread that has work.
    let app = spawn_app().await;
    app.create_autoencoder("busy", 16, 4).await;
    app.ingest_json("busy", &spiked_rows(16, 500, 8)).await;
    let url = app.url("/healthz");

    // Act
    let stopped = app.stop().await;

    // Assert: run returned Ok (trainers joined) and the port no longer answers.
    assert!(stopped);
    assert!(reqwest::get(url).await.is_err());
}
