//! `.npy` request bodies and `.npz` projection answers over HTTP.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, matrix, spawn_app, spiked_rows, vector};

/// A version-1 `.npy` file of `rows` (C order, `<f8`), as `numpy.save` writes it.
fn npy(rows: &[Vec<f64>]) -> Vec<u8> {
    let cols = rows.first().map_or(0, Vec::len);
    let mut h = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {cols}), }}",
        rows.len()
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&u16::try_from(h.len()).unwrap().to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    for v in rows.iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[tokio::test]
async fn npy_batches_and_projections_agree_with_json_ones() {
    // Arrange
    let app = spawn_app().await;
    let dim = 8;
    app.create_autoencoder("a", dim, 3).await;
    app.create_autoencoder("b", dim, 3).await;
    let rows = spiked_rows(dim, 400, 5);
    let queries = spiked_rows(dim, 7, 6);

    // Act: the same rows as JSON into `a` and as .npy into `b`.
    let seq = app.ingest_json("a", &rows).await["sequence"]
        .as_u64()
        .unwrap();
    let r = app.post_samples("b", "application/x-npy", npy(&rows)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let a = app.wait_converged("a", seq).await;
    let b = app.wait_converged("b", seq).await;
    let json_answer: Value = app
        .project("b", json!({"x": queries, "k": 2, "reconstruct": true}))
        .await
        .json()
        .await
        .unwrap();
    let url = app.url("/v1/models/b/project?k=2&reconstruct=true");
    let npy_answer: Value = app
        .client
        .post(&url)
        .header("content-type", "application/x-npy")
        .body(npy(&queries))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let npz = app
        .client
        .post(&url)
        .header("content-type", "application/x-npy")
        .header("accept", "application/x-npz")
        .body(npy(&queries))
        .send()
        .await
        .unwrap();

    // Assert: the same accumulator and the same projection in every encoding (JSON's
    // decimal numbers may parse an ulp away from the binary values).
    let close = |x: &[f64], y: &[f64]| {
        assert_eq!(x.len(), y.len());
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= 1e-12 * (1.0 + v.abs()), "{u} vs {v}");
        }
    };
    close(&vector(&a["mean"]), &vector(&b["mean"]));
    close(&vector(&a["eigenvalues"]), &vector(&b["eigenvalues"]));
    for key in ["scores", "reconstructions"] {
        let flat = |v: &Value| matrix(&v[key]).concat();
        close(&flat(&npy_answer), &flat(&json_answer));
    }
    close(
        &vector(&npy_answer["residual_norms"]),
        &vector(&json_answer["residual_norms"]),
    );
    assert_eq!(npy_answer["k"], json!(2));
    assert_eq!(npz.status(), StatusCode::OK);
    assert_eq!(npz.headers()["content-type"], "application/x-npz");
    let body = npz.bytes().await.unwrap();
    assert_eq!(&body[..4], b"PK\x03\x04");
    // Each member follows its local header's file name, stored: read its .npy values.
    for (name, array) in [
        ("scores", &npy_answer["scores"]),
        ("reconstructions", &npy_answer["reconstructions"]),
    ] {
        let member = format!("{name}.npy");
        let at = body
            .windows(member.len())
            .position(|w| w == member.as_bytes())
            .unwrap_or_else(|| panic!("{member} is not in the archive"))
            + member.len();
        let file = &body[at..];
        assert_eq!(&file[..6], b"\x93NUMPY");
        let header_len = usize::from(u16::from_le_bytes([file[8], file[9]]));
        let want = matrix(array).concat();
        let got: Vec<f64> = file[10 + header_len..]
            .chunks_exact(8)
            .take(want.len())
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        close(&got, &want);
    }
}

#[tokio::test]
async fn a_lying_npy_header_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_autoencoder("m", 2, 1).await;
    let body = npy(&[vec![1.0, 2.0]]);
    // Claim 50 000 rows (under the row limit; same header length: four padding spaces
    // fewer); the body holds one.
    let end = body.len() - 16;
    let header = std::str::from_utf8(&body[10..end]).unwrap();
    let lying = header.replacen("(1, 2), }      ", "(50000, 2), }  ", 1);
    assert_eq!(lying.len(), header.len());
    let body = [&body[..10], lying.as_bytes(), &body[end..]].concat();
    let msg = assert_error(
        app.post_samples("m", "application/x-npy", body).await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    )
    .await;
    assert!(msg.contains("50000"), "{msg}");
    assert_eq!(app.status("m").await["sequence"], json!(0));
}

#[tokio::test]
async fn query_options_with_a_json_projection_are_refused_not_ignored() {
    let app = spawn_app().await;
    app.create_autoencoder("q", 3, 1).await;
    let seq = app.ingest_json("q", &spiked_rows(3, 50, 7)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("q", seq).await;
    for query in ["k=1", "whiten=true&k=1", "colour=red"] {
        let r = app
            .client
            .post(app.url(&format!("/v1/models/q/project?{query}")))
            .json(&json!({"x": [[1.0, 2.0, 3.0]]}))
            .send()
            .await
            .unwrap();
        let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
        let key = query.split('=').next().unwrap();
        assert!(msg.contains(&format!("`{key}`")), "{msg}");
        assert!(
            msg.contains("query-string options are for application/x-npy bodies"),
            "{msg}"
        );
    }
    // An empty query string is no option.
    let r = app
        .client
        .post(app.url("/v1/models/q/project?"))
        .json(&json!({"x": [[1.0, 2.0, 3.0]], "k": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn npy_headers_with_unknown_keys_are_refused() {
    let app = spawn_app().await;
    app.create_autoencoder("h", 2, 1).await;
    let good = npy(&[vec![1.0, 2.0]]);
    let text = std::str::from_utf8(&good[10..good.len() - 16]).unwrap();
    // Same length: the padding pays for the extra key.
    let extra = text.replacen("), }        ", "), 'x': 1}  ", 1);
    assert_eq!(extra.len(), text.len(), "{extra:?}");
    let body = [&good[..10], extra.as_bytes(), &good[good.len() - 16..]].concat();
    let msg = assert_error(
        app.post_samples("h", "application/x-npy", body).await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    )
    .await;
    assert!(msg.contains("unknown key 'x'"), "{msg}");
    assert_eq!(app.status("h").await["sequence"], json!(0));
}
