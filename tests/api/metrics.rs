//! `/metrics` exposes the documented series, with bounded labels.

use crate::helpers::{spawn_app, spiked_rows};

#[tokio::test]
async fn metrics_expose_requests_ingest_training_and_model_gauges() {
    // Arrange
    let app = spawn_app().await;
    app.create_autoencoder("mx", 8, 2).await;
    let seq = app.ingest_json("mx", &spiked_rows(8, 300, 4)).await["sequence"]
        .as_u64()
        .unwrap();
    app.post_samples("mx", "application/json", b"{\"x\": []}".to_vec())
        .await;
    app.post_samples("nobody", "application/json", b"{\"x\": [[1]]}".to_vec())
        .await;
    app.wait_converged("mx", seq).await;

    // Act
    let text = app.metrics().await;

    // Assert
    for needle in [
        r#"streampca_http_requests_total{method="POST",route="/v1/models/{name}/samples",status="200"} 1"#,
        r#"streampca_http_request_duration_seconds_bucket{method="POST",route="/v1/models/{name}/samples""#,
        r#"streampca_samples_ingested_total{model="mx"} 300"#,
        r#"streampca_batches_ingested_total{model="mx"} 1"#,
        r#"streampca_batches_rejected_total{code="empty_batch",model="mx"} 1"#,
        r#"streampca_training_steps_total{model="mx"}"#,
        r#"streampca_training_step_duration_seconds_count{model="mx"}"#,
        r#"streampca_model_samples{model="mx"} 300"#,
        r#"streampca_model_loss{model="mx"}"#,
        r#"streampca_model_max_error_bound{model="mx"}"#,
        r#"streampca_model_converged{model="mx"} 1"#,
        r#"streampca_model_eigenvalue{component="0",model="mx"}"#,
        r#"streampca_model_eigenvalue{component="1",model="mx"}"#,
        "streampca_models 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(
        !text.contains("nobody"),
        "an unknown model created a series"
    );
}

#[tokio::test]
async fn deleting_a_model_removes_its_series() {
    let app = spawn_app().await;
    app.create_autoencoder("gone", 8, 2).await;
    let seq = app.ingest_json("gone", &spiked_rows(8, 100, 4)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("gone", seq).await;
    assert!(app.metrics().await.contains(r#"model="gone""#));
    let r = app
        .client
        .delete(app.url("/v1/models/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let text = app.metrics().await;
    assert!(!text.contains(r#"model="gone""#), "{text}");
    assert!(text.contains("streampca_models 0"));
}

#[tokio::test]
async fn drift_gauge_reports_how_far_the_subspace_turned_over_the_interval() {
    // Arrange: drift measured over 0.2 s; a model that first sees one basis...
    let app = crate::helpers::spawn_app_with(|s| streampca::config::Settings {
        drift_interval_secs: 0.2,
        ..s
    })
    .await;
    app.create_autoencoder("dr", 8, 2).await;
    let seq = app.ingest_json("dr", &spiked_rows(8, 300, 4)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("dr", seq).await;
    let before = app.components("dr").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Act: ...then many more rows along another basis, so its top plane turns.
    let seq = app.ingest_json("dr", &spiked_rows(8, 6000, 5)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("dr", seq).await;
    let after = app.components("dr").await;
    let text = app.metrics().await;

    // Assert: the gauge equals the largest principal angle between the two planes.
    let plane = |c: &serde_json::Value| {
        let rows = crate::helpers::matrix(&c["components"]);
        nalgebra::DMatrix::from_fn(8, 2, |i, j| rows[j][i])
    };
    let expected = streampca::pca::max_principal_angle(&plane(&before), &plane(&after));
    assert!(
        expected > 0.1,
        "the test data should turn the plane ({expected})"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(r#"streampca_model_subspace_drift_radians{model="dr"}"#))
        .unwrap_or_else(|| panic!("no drift series in\n{text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (value - expected).abs() < 1e-6,
        "gauge {value} vs {expected}"
    );
    assert!(text.contains(r#"streampca_model_explained_variance_ratio{component="1",model="dr"}"#));
}
