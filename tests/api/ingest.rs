//! Ingest in all four body formats, then compare the fit with an independent solver.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_matches_reference, spawn_app, spiked_rows};

fn json_body(rows: &[Vec<f64>]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "x": rows })).unwrap()
}

fn ndjson_body(rows: &[Vec<f64>]) -> Vec<u8> {
    let mut s = String::new();
    for (i, r) in rows.iter().enumerate() {
        // Both line shapes: plain arrays and {"x": …} objects.
        if i % 2 == 0 {
            s.push_str(&serde_json::to_string(r).unwrap());
        } else {
            s.push_str(&serde_json::to_string(&json!({ "x": r })).unwrap());
        }
        s.push('\n');
    }
    s.into_bytes()
}

fn csv_body(rows: &[Vec<f64>]) -> Vec<u8> {
    let header: Vec<String> = (0..rows[0].len()).map(|i| format!("x{i}")).collect();
    let mut s = header.join(",") + "\n";
    for r in rows {
        let line: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        s.push_str(&line.join(","));
        s.push_str("\r\n");
    }
    s.into_bytes()
}

fn f32_body(rows: &[Vec<f64>]) -> Vec<u8> {
    rows.iter()
        .flatten()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect()
}

#[tokio::test]
async fn rows_in_all_four_formats_give_the_components_of_a_symmetric_eigensolver() {
    // Arrange: n = 40 > 3(p + 4), so the iterative subspace optimiser does the work.
    let app = spawn_app().await;
    let (dim, p) = (40, 5);
    app.create_autoencoder("four-formats", dim, p).await;
    let rows = spiked_rows(dim, 4000, 7);

    // Act: 1000 rows per format, in batches of 250.
    let mut sequence = 0;
    for (i, chunk) in rows.chunks(250).enumerate() {
        let (ct, body) = match i / 4 {
            0 => ("application/json", json_body(chunk)),
            1 => ("application/x-ndjson", ndjson_body(chunk)),
            2 => ("text/csv; charset=utf-8", csv_body(chunk)),
            _ => ("application/octet-stream", f32_body(chunk)),
        };
        let r = app.post_samples("four-formats", ct, body).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{ct}: {}",
            r.text().await.unwrap()
        );
        let receipt: Value = r.json().await.unwrap();
        assert_eq!(receipt["accepted"], json!(250));
        sequence = receipt["sequence"].as_u64().unwrap();
        assert_eq!(sequence, i as u64 + 1);
        assert_eq!(receipt["samples"].as_f64(), Some(250.0 * (i + 1) as f64));
    }

    // Assert
    let c = app.wait_converged("four-formats", sequence).await;
    assert_matches_reference(&c, &rows, p);
    let status = app.status("four-formats").await;
    assert_eq!(status["samples"], json!(4000.0));
    assert_eq!(status["batches"], json!(16));
    assert_eq!(status["sequence"], json!(16));
    assert_eq!(status["converged"], json!(true));
    assert!(status["loss"].is_number());
    assert!(status["max_error_bound"].as_f64().unwrap() <= 1e-8);
    assert!(status["steps"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_small_model_is_solved_exactly_by_the_direct_path() {
    let app = spawn_app().await;
    let (dim, p) = (16, 4);
    app.create_autoencoder("small", dim, p).await;
    let rows = spiked_rows(dim, 2000, 11);
    let mut sequence = 0;
    for chunk in rows.chunks(500) {
        sequence = app.ingest_json("small", chunk).await["sequence"]
            .as_u64()
            .unwrap();
    }
    let c = app.wait_converged("small", sequence).await;
    assert_matches_reference(&c, &rows, p);
}

#[tokio::test]
async fn components_can_be_truncated_with_k() {
    let app = spawn_app().await;
    app.create_autoencoder("trunc", 16, 4).await;
    let rows = spiked_rows(16, 500, 3);
    let seq = app.ingest_json("trunc", &rows).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("trunc", seq).await;
    let (s, c) = app.get_json("/v1/models/trunc/components?k=2").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["components"].as_array().unwrap().len(), 2);
    assert_eq!(c["eigenvalues"].as_array().unwrap().len(), 2);
    assert_eq!(c["components"][0].as_array().unwrap().len(), 16);
}

#[tokio::test]
async fn components_before_the_first_fit_are_empty_but_counted() {
    let app = spawn_app().await;
    app.create_autoencoder("early", 8, 2).await;
    app.ingest_json("early", &spiked_rows(8, 2, 1)).await;
    let c = app.components("early").await;
    assert_eq!(c["components"], json!([]));
    assert_eq!(c["converged"], json!(false));
    assert_eq!(c["loss"], Value::Null);
    assert_eq!(c["samples"], json!(2.0));
    assert_eq!(c["sequence"], json!(1));
    let status = app.status("early").await;
    assert_eq!(status["loss"], Value::Null);
    assert_eq!(status["max_error_bound"], Value::Null);
}

#[tokio::test]
async fn a_regression_model_takes_x_then_y_in_every_format() {
    let app = spawn_app().await;
    let r = app
        .create_model(json!({"name": "reg", "dim": 3, "components": 1, "target_dim": 1}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let json_batch =
        serde_json::to_vec(&json!({"x": [[1, 2, 3], [2, 1, 0]], "y": [[1], [2]]})).unwrap();
    let ndjson = b"[1,2,3,1]\n{\"x\": [2,1,0], \"y\": [2]}\n".to_vec();
    let csv = b"1,2,3,1\n2,1,0,2\n".to_vec();
    let raw: Vec<u8> = [1.0f32, 2.0, 3.0, 1.0, 2.0, 1.0, 0.0, 2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    for (ct, body) in [
        ("application/json", json_batch),
        ("application/x-ndjson", ndjson),
        ("text/csv", csv),
        ("application/octet-stream", raw),
    ] {
        let r = app.post_samples("reg", ct, body).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{ct}: {}",
            r.text().await.unwrap()
        );
    }
    assert_eq!(app.status("reg").await["samples"], json!(8.0));
}
