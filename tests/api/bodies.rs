//! Streamed bodies over real HTTP: Content-Encoding (gzip, zstd, bombs, unknown
//! codings), `.npy` batches and queries, and bodies that trickle in.

use std::io::Write;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, spiked_rows, TestApp};

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(b, 3).unwrap()
}

fn npy_f32(rows: &[Vec<f64>], fortran: bool) -> Vec<u8> {
    let (r, c) = (rows.len(), rows[0].len());
    let data: Vec<u8> = if fortran {
        (0..c)
            .flat_map(|j| rows.iter().map(move |row| row[j]))
            .flat_map(|v| (v as f32).to_le_bytes())
            .collect()
    } else {
        rows.iter()
            .flatten()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect()
    };
    streampca::format::npy::encode("<f4", fortran, r as u64, c as u64, &data)
}

async fn post(
    app: &TestApp,
    path: &str,
    ct: &str,
    enc: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut r = app.client.post(app.url(path)).header("content-type", ct);
    if let Some(e) = enc {
        r = r.header("content-encoding", e);
    }
    r.body(body).send().await.unwrap()
}

#[tokio::test]
async fn gzip_and_zstd_bodies_are_decoded_and_give_the_same_fit_as_plain_ones() {
    let app = spawn_app().await;
    app.create_autoencoder("plain", 8, 2).await;
    app.create_autoencoder("packed", 8, 2).await;
    let rows = spiked_rows(8, 600, 5);
    let path = "/v1/models/packed/samples";
    let mut seq = 0;
    for (i, chunk) in rows.chunks(200).enumerate() {
        app.ingest_json("plain", chunk).await;
        let json = serde_json::to_vec(&json!({ "x": chunk })).unwrap();
        let raw: Vec<u8> = chunk
            .iter()
            .flatten()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect();
        let r = match i {
            0 => post(&app, path, "application/json", Some("gzip"), gzip(&json)).await,
            1 => post(&app, path, "application/json", Some("zstd"), zstd(&json)).await,
            _ => {
                post(
                    &app,
                    path,
                    "application/octet-stream",
                    Some("x-gzip"),
                    gzip(&raw),
                )
                .await
            }
        };
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["accepted"], json!(200));
        seq = v["sequence"].as_u64().unwrap();
    }
    let a = app.wait_converged("plain", seq).await;
    let b = app.wait_converged("packed", seq).await;
    // The same values in the same order give the same accumulators bit for bit.
    assert_eq!(a["mean"], b["mean"]);
    assert_eq!(a["eigenvalues"], b["eigenvalues"]);
}

#[tokio::test]
async fn a_decompression_bomb_is_413_and_bad_codings_are_refused() {
    let app = spawn_app_with(|s| streampca::config::Settings {
        body_limit: 64 * 1024,
        ..s
    })
    .await;
    app.create_autoencoder("m", 4, 2).await;
    let path = "/v1/models/m/samples";
    // 8 MiB of blanks decode from ~8 KiB of gzip: far past the 64 KiB limit.
    let blanks = vec![b' '; 8 << 20];
    for (enc, body) in [("gzip", gzip(&blanks)), ("zstd", zstd(&blanks))] {
        assert!(body.len() < 64 * 1024, "{enc}: {}", body.len());
        let r = post(&app, path, "application/json", Some(enc), body).await;
        let msg = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
        assert!(msg.contains("65536"), "{msg}");
    }
    for enc in ["br", "deflate", "compress", "snappy", "gzip, zstd"] {
        let r = post(&app, path, "text/csv", Some(enc), b"1,2,3,4\n".to_vec()).await;
        let msg = assert_error(
            r,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
        assert!(msg.contains(enc.split(',').next().unwrap()), "{msg}");
    }
    // Bytes that are not what the coding says, and a truncated stream.
    let r = post(&app, path, "text/csv", Some("gzip"), b"1,2,3,4\n".to_vec()).await;
    assert_error(r, StatusCode::BAD_REQUEST, "malformed_body").await;
    let whole = gzip(b"1,2,3,4\n5,6,7,8\n");
    let r = post(
        &app,
        path,
        "text/csv",
        Some("gzip"),
        whole[..whole.len() - 6].to_vec(),
    )
    .await;
    assert_error(r, StatusCode::BAD_REQUEST, "malformed_body").await;
    let whole = zstd(b"1,2,3,4\n5,6,7,8\n");
    let r = post(
        &app,
        path,
        "text/csv",
        Some("zstd"),
        whole[..whole.len() - 3].to_vec(),
    )
    .await;
    assert_error(r, StatusCode::BAD_REQUEST, "malformed_body").await;
    let r = post(
        &app,
        path,
        "text/csv",
        Some("identity"),
        b"1,2,3,4\n".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.status("m").await["batches"], json!(1));
}

#[tokio::test]
async fn npy_batches_in_c_and_fortran_order_and_npy_queries() {
    let app = spawn_app().await;
    app.create_autoencoder("n", 6, 2).await;
    let rows = spiked_rows(6, 300, 9);
    let path = "/v1/models/n/samples";
    let r = post(
        &app,
        path,
        "application/x-npy",
        None,
        npy_f32(&rows[..150], false),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let r = post(
        &app,
        path,
        "application/x-npy",
        None,
        npy_f32(&rows[150..], true),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let seq = r.json::<Value>().await.unwrap()["sequence"]
        .as_u64()
        .unwrap();
    let c = app.wait_converged("n", seq).await;
    crate::helpers::assert_matches_reference(&c, &rows, 2);

    // A query as .npy with options in the query string answers what the JSON one does.
    let q = spiked_rows(6, 3, 4);
    let js = app
        .project("n", json!({"x": q, "k": 1, "whiten": true}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let r = post(
        &app,
        "/v1/models/n/project?k=1&whiten=true",
        "application/x-npy",
        None,
        npy_f32(&q, false),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let np: Value = r.json().await.unwrap();
    assert_eq!(np["scores"], js["scores"]);
    let r = post(
        &app,
        "/v1/models/n/project?q=1",
        "application/x-npy",
        None,
        npy_f32(&q, false),
    )
    .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;

    // Lying headers.
    let before = app.status("n").await["batches"].clone();
    let mut short = npy_f32(&rows[..4], false);
    short.truncate(short.len() - 4);
    let cases: Vec<(Vec<u8>, StatusCode, &str, &str)> = vec![
        (
            short,
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "truncated",
        ),
        (
            streampca::format::npy::encode("<f4", false, 1 << 40, 6, &[0; 24]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_rows",
            "max_batch_rows",
        ),
        (
            streampca::format::npy::encode("<f4", false, 1, 5, &[0; 20]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "dimension_mismatch",
            "5 columns",
        ),
        (
            streampca::format::npy::encode("<i4", false, 1, 6, &[0; 24]),
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "<i4",
        ),
        (
            b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "header of 2147483647 bytes",
        ),
    ];
    for (body, status, code, words) in cases {
        let r = post(&app, path, "application/x-npy", None, body).await;
        let msg = assert_error(r, status, code).await;
        assert!(msg.contains(words), "{msg}");
    }
    assert_eq!(app.status("n").await["batches"], before);
}

/// Opens a connection and sends the head of an ingest request and one byte of its body.
async fn trickle(addr: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/models/m/samples HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: text/csv\r\ncontent-length: 100\r\n\r\n1"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn slow_bodies_are_cut_with_408_and_free_their_slots_for_others() {
    // Arrange: eight slots, all taken by bodies sending one byte.
    let app = spawn_app_with(|mut s| {
        s.limits.max_in_flight = 8;
        s.limits.body_grace_secs = 1;
        s.limits.body_min_rate = 1024;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(trickle(&addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app.post_samples("m", "text/csv", b"1,2\n".to_vec()).await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;

    // Act: past the grace period the slow ones are cut...
    for s in &mut slow {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a slow body is answered within the grace period and a bit")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert!(head.contains("\"body_timeout\""), "{head}");
    }
    // ...and a legitimate request gets through.
    let r = app
        .post_samples("m", "text/csv", b"1,2\n3,4\n".to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.status("m").await["samples"], json!(2.0));
}

#[tokio::test]
async fn a_body_at_a_steady_rate_above_the_minimum_is_not_cut() {
    let app = spawn_app_with(|mut s| {
        s.limits.body_grace_secs = 1;
        s.limits.body_min_rate = 64;
        s
    })
    .await;
    app.create_autoencoder("m", 2, 1).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let body = "1,2\n".repeat(50);
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/models/m/samples HTTP/1.1\r\nhost: {addr}\r\ncontent-type: text/csv\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // 200 bytes over 2 s: 100 bytes/s, above the 64 bytes/s minimum, past the grace.
    for piece in body.as_bytes().chunks(20) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"accepted\":50"), "{out}");
}
