//! Projections: scores, reconstructions and residuals agree with the published components.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, matrix, spawn_app, spiked_rows, vector};

#[tokio::test]
async fn projected_scores_and_reconstructions_agree_with_the_components() {
    // Arrange
    let app = spawn_app().await;
    let (dim, p, k) = (16, 4, 3);
    app.create_autoencoder("proj", dim, p).await;
    let rows = spiked_rows(dim, 1000, 21);
    let seq = app.ingest_json("proj", &rows).await["sequence"]
        .as_u64()
        .unwrap();
    let c = app.wait_converged("proj", seq).await;
    let comps = matrix(&c["components"]);
    let eig = vector(&c["eigenvalues"]);
    let mean = vector(&c["mean"]);
    let x = spiked_rows(dim, 10, 99);

    // Act
    let r = app
        .project("proj", json!({"x": x, "k": k, "reconstruct": true}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let out: Value = r.json().await.unwrap();
    let w = app
        .project("proj", json!({"x": x, "k": k, "whiten": true}))
        .await;
    let whitened: Value = w.json().await.unwrap();

    // Assert
    let scores = matrix(&out["scores"]);
    let recon = matrix(&out["reconstructions"]);
    let resid = vector(&out["residual_norms"]);
    let wscores = matrix(&whitened["scores"]);
    assert!(whitened.get("reconstructions").is_none());
    assert_eq!(scores.len(), 10);
    for (r, row) in x.iter().enumerate() {
        let centred: Vec<f64> = row.iter().zip(&mean).map(|(a, m)| a - m).collect();
        let mut rebuilt = mean.clone();
        for i in 0..k {
            let s: f64 = centred.iter().zip(&comps[i]).map(|(a, b)| a * b).sum();
            assert!(
                (scores[r][i] - s).abs() < 1e-9 * (1.0 + s.abs()),
                "score {r},{i}"
            );
            let ws = s / eig[i].sqrt();
            assert!(
                (wscores[r][i] - ws).abs() < 1e-9 * (1.0 + ws.abs()),
                "whitened {r},{i}"
            );
            for (j, v) in rebuilt.iter_mut().enumerate() {
                *v += s * comps[i][j];
            }
        }
        for j in 0..dim {
            assert!(
                (recon[r][j] - rebuilt[j]).abs() < 1e-9 * (1.0 + rebuilt[j].abs()),
                "recon {r},{j}"
            );
        }
        let norm: f64 = row
            .iter()
            .zip(&rebuilt)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            (resid[r] - norm).abs() < 1e-9 * (1.0 + norm),
            "residual {r}"
        );
    }
}

#[tokio::test]
async fn projecting_before_any_fit_is_a_conflict() {
    let app = spawn_app().await;
    app.create_autoencoder("cold", 4, 2).await;
    let r = app.project("cold", json!({"x": [[1, 2, 3, 4]]})).await;
    assert_error(r, StatusCode::CONFLICT, "not_fitted").await;
}

#[tokio::test]
async fn k_out_of_range_is_rejected() {
    let app = spawn_app().await;
    app.create_autoencoder("kk", 8, 2).await;
    let seq = app.ingest_json("kk", &spiked_rows(8, 200, 2)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("kk", seq).await;
    for k in [0, 3] {
        let r = app
            .project("kk", json!({"x": [vec![0.0; 8]], "k": k}))
            .await;
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
        let r = app
            .client
            .get(app.url(&format!("/v1/models/kk/components?k={k}")))
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    }
    let r = app.project("kk", json!({"x": [vec![0.0; 7]]})).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "dimension_mismatch").await;
}
