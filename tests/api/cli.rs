//! The `streampca` client subcommands, run as the real binary against a real server.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::helpers::{matrix, spawn_app, spawn_app_with, spiked_rows, vector, TestApp};

/// Runs `streampca ARGS --url APP` and returns its output.
pub async fn run(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_streampca"))
        .args(args)
        .args(["--url", &app.address])
        .env_remove("STREAMPCA_API_KEY")
        .output()
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit status 0, showing stderr otherwise.
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(o));
    stdout(o)
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

pub fn csv(rows: &[Vec<f64>]) -> Vec<u8> {
    let header: Vec<String> = (0..rows[0].len()).map(|i| format!("x{i}")).collect();
    let mut s = header.join(",") + "\n";
    for r in rows {
        let line: Vec<String> = r.iter().map(f64::to_string).collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    s.into_bytes()
}

fn ndjson(rows: &[Vec<f64>]) -> Vec<u8> {
    rows.iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect::<String>()
        .into_bytes()
}

fn f32s(rows: &[Vec<f64>]) -> Vec<u8> {
    rows.iter()
        .flatten()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect()
}

/// A version-1 `.npy` file of a 2-D C-order array, as `numpy.save` writes it.
fn npy(rows: &[Vec<f64>], f64s: bool) -> Vec<u8> {
    let descr = if f64s { "<f8" } else { "<f4" };
    let mut h = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}",
        rows.len(),
        rows[0].len()
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    if f64s {
        out.extend(rows.iter().flatten().flat_map(|v| v.to_le_bytes()));
    } else {
        out.extend(f32s(rows));
    }
    out
}

#[tokio::test]
async fn models_create_list_show_and_delete_round_trip() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let created = run(
        &app,
        &[
            "models",
            "create",
            "cli-m",
            "--dim",
            "5",
            "--components",
            "2",
        ],
    )
    .await;
    let listed = run(&app, &["models", "list", "--json"]).await;
    let table = run(&app, &["models", "list"]).await;
    let shown = run(&app, &["models", "show", "cli-m", "--json"]).await;

    // Assert
    assert!(ok(&created).contains("dim 5, 2 components"));
    let list: Value = serde_json::from_str(&ok(&listed)).unwrap();
    assert_eq!(list["models"][0]["name"], json!("cli-m"));
    assert!(ok(&table).contains("cli-m"));
    let status: Value = serde_json::from_str(&ok(&shown)).unwrap();
    assert_eq!(status, app.status("cli-m").await);

    let deleted = run(&app, &["models", "delete", "cli-m"]).await;
    assert!(ok(&deleted).contains("deleted"));
    let (code, _) = app.get_json("/v1/models/cli-m").await;
    assert_eq!(code, reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ingest_streams_csv_ndjson_npy_and_raw_f32_files_in_batches() {
    // Arrange: five files of 300 rows each, sent 128 rows per request (3 batches each).
    let app = spawn_app().await;
    app.create_autoencoder("cli-ingest", 6, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let rows = spiked_rows(6, 1500, 3);
    let files = [
        write(dir.path(), "a.csv", &csv(&rows[0..300])),
        write(dir.path(), "b.ndjson", &ndjson(&rows[300..600])),
        write(dir.path(), "c.npy", &npy(&rows[600..900], false)),
        write(dir.path(), "d.npy", &npy(&rows[900..1200], true)),
        write(dir.path(), "e.f32", &f32s(&rows[1200..1500])),
    ];
    let mut args = vec!["ingest", "cli-ingest", "--batch-size", "128"];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));

    // Act
    let out = run(&app, &args).await;

    // Assert: every row arrived, in 15 batches, and the fit is the exact one.
    let text = ok(&out);
    for f in &files {
        assert!(
            text.contains(&format!("{}: 300 rows", f.display())),
            "{text}"
        );
    }
    let status = app.status("cli-ingest").await;
    assert_eq!(status["samples"], json!(1500.0));
    assert_eq!(status["batches"], json!(15));
    let c = app.wait_converged("cli-ingest", 15).await;
    crate::helpers::assert_matches_reference(&c, &rows, 2);
}

#[tokio::test]
async fn components_json_matches_the_api_and_the_table_lists_each_component() {
    // Arrange
    let app = spawn_app().await;
    app.create_autoencoder("cli-comp", 5, 3).await;
    let r = app.ingest_json("cli-comp", &spiked_rows(5, 500, 4)).await;
    let api = app
        .wait_converged("cli-comp", r["sequence"].as_u64().unwrap())
        .await;

    // Act
    let json_out = run(&app, &["components", "cli-comp", "--json"]).await;
    let k2 = run(&app, &["components", "cli-comp", "-k", "2", "--json"]).await;
    let table = run(&app, &["components", "cli-comp"]).await;

    // Assert
    let got: Value = serde_json::from_str(&ok(&json_out)).unwrap();
    assert_eq!(got, api);
    let got2: Value = serde_json::from_str(&ok(&k2)).unwrap();
    assert_eq!(got2["eigenvalues"].as_array().unwrap().len(), 2);
    let table = ok(&table);
    assert!(table.contains("converged: yes"), "{table}");
    assert!(table.contains("cumulative"), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 3, "{table}");
    let ratios = vector(&api["explained_variance_ratio"]);
    let cumulative = format!("{:.2}%", 100.0 * ratios.iter().sum::<f64>());
    assert!(lines[4].contains(&cumulative), "{table}");
}

#[tokio::test]
async fn project_writes_csv_and_ndjson_rows_equal_to_the_api_response() {
    // Arrange
    let app = spawn_app().await;
    app.create_autoencoder("cli-proj", 4, 2).await;
    let rows = spiked_rows(4, 400, 5);
    let r = app.ingest_json("cli-proj", &rows).await;
    app.wait_converged("cli-proj", r["sequence"].as_u64().unwrap())
        .await;
    let queries = &rows[..25];
    let want: Value = app
        .project(
            "cli-proj",
            json!({"x": queries, "k": 1, "reconstruct": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "q.csv", &csv(queries));
    let out_csv = dir.path().join("out.csv");
    let out_nd = dir.path().join("out.ndjson");

    // Act: batches of 10 rows, so three requests each.
    let a = run(
        &app,
        &[
            "project",
            "cli-proj",
            input.to_str().unwrap(),
            "-k",
            "1",
            "--reconstruct",
            "--batch-size",
            "10",
            "-o",
            out_csv.to_str().unwrap(),
        ],
    )
    .await;
    let b = run(
        &app,
        &[
            "project",
            "cli-proj",
            input.to_str().unwrap(),
            "-k",
            "1",
            "--reconstruct",
            "--batch-size",
            "10",
            "-o",
            out_nd.to_str().unwrap(),
        ],
    )
    .await;
    ok(&a);
    ok(&b);

    // Assert
    let scores = matrix(&want["scores"]);
    let recon = matrix(&want["reconstructions"]);
    let norms = vector(&want["residual_norms"]);
    let text = std::fs::read_to_string(&out_csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("score_0,recon_0,recon_1,recon_2,recon_3,residual_norm")
    );
    let body: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(body.len(), 25);
    for (i, row) in body.iter().enumerate() {
        let mut expected = scores[i].clone();
        expected.extend(&recon[i]);
        expected.push(norms[i]);
        assert_eq!(row, &expected, "csv row {i}");
    }
    let nd = std::fs::read_to_string(&out_nd).unwrap();
    let objs: Vec<Value> = nd
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 25);
    for (i, o) in objs.iter().enumerate() {
        assert_eq!(vector(&o["scores"]), scores[i], "ndjson row {i}");
        assert_eq!(vector(&o["reconstruction"]), recon[i], "ndjson row {i}");
        assert_eq!(
            o["residual_norm"].as_f64(),
            Some(norms[i]),
            "ndjson row {i}"
        );
    }
}

#[tokio::test]
async fn errors_exit_non_zero_with_the_servers_message_or_the_file_and_line() {
    // Arrange: a 1 KiB body limit, so a 100-row batch is refused by the server itself.
    let app = spawn_app_with(|s| streampca::config::Settings {
        body_limit: 1024,
        ..s
    })
    .await;
    app.create_autoencoder("cli-err", 3, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let rows = spiked_rows(3, 100, 6);
    let good = write(dir.path(), "good.f32", &f32s(&rows));
    let narrow = write(dir.path(), "narrow.csv", b"1,2,3\n4,5,6\n7,8\n");

    // Act
    let missing = run(&app, &["models", "show", "nope"]).await;
    let invalid = run(
        &app,
        &["models", "create", "bad", "--dim", "2", "--components", "5"],
    )
    .await;
    let too_big = run(
        &app,
        &[
            "ingest",
            "cli-err",
            good.to_str().unwrap(),
            "--batch-size",
            "100",
        ],
    )
    .await;
    let wrong_dim = run(&app, &["ingest", "cli-err", narrow.to_str().unwrap()]).await;
    let unreachable = tokio::process::Command::new(env!("CARGO_BIN_EXE_streampca"))
        .args(["models", "list", "--url", "http://127.0.0.1:9"])
        .output()
        .await
        .unwrap();

    // Assert
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("error: model_not_found: model `nope` does not exist"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(invalid.status.code(), Some(1));
    assert!(
        stderr(&invalid).contains("error: invalid_parameter:"),
        "{}",
        stderr(&invalid)
    );
    assert_eq!(too_big.status.code(), Some(1));
    assert!(
        stderr(&too_big)
            .contains("error: body_too_large: request body exceeds the limit of 1024 bytes"),
        "{}",
        stderr(&too_big)
    );
    assert_eq!(wrong_dim.status.code(), Some(1));
    assert!(
        stderr(&wrong_dim).contains("narrow.csv:3: expected 3 values per row"),
        "{}",
        stderr(&wrong_dim)
    );
    // The bad line is in the first batch, which is checked before it is sent.
    assert_eq!(app.status("cli-err").await["samples"], json!(0.0));
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(
        stderr(&unreachable).contains("is the server running at http://127.0.0.1:9?"),
        "{}",
        stderr(&unreachable)
    );
}

#[tokio::test]
async fn demo_streams_a_known_spectrum_and_reports_how_close_the_fit_is() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let out = run(
        &app,
        &[
            "demo",
            "--rows",
            "4000",
            "--dim",
            "8",
            "--components",
            "3",
            "--batch-size",
            "500",
        ],
    )
    .await;

    // Assert: the printed closeness is small, and the model holds every row.
    let text = ok(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("closeness:"))
        .unwrap_or_else(|| panic!("{text}"));
    let degrees: f64 = line
        .split("is ")
        .nth(1)
        .and_then(|s| s.split('°').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(degrees < 10.0, "{text}");
    assert_eq!(app.status("demo").await["samples"], json!(4000.0));

    // A second run refuses to pile onto the first one's data.
    let again = run(
        &app,
        &["demo", "--rows", "100", "--dim", "8", "--components", "3"],
    )
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists with 4000 samples"));
}

#[tokio::test]
async fn a_503_is_retried_after_retry_after_and_the_api_key_is_sent() {
    // Arrange: a stand-in server that is overloaded twice on `GET /v1/models`, always on
    // `GET /v1/models/busy`, and wants the API key.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    let hits = Arc::new(AtomicUsize::new(0));
    let overloaded = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
            axum::Json(json!({"error": {"code": "overloaded", "message": "try later"}})),
        )
    };
    let counter = hits.clone();
    let router = axum::Router::new()
        .route(
            "/v1/models",
            get(move |headers: HeaderMap| async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    return overloaded();
                }
                let key = headers.get("authorization").and_then(|v| v.to_str().ok());
                if key == Some("Bearer k1") {
                    (
                        StatusCode::OK,
                        [("retry-after", "0")],
                        axum::Json(json!({"models": []})),
                    )
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        [("retry-after", "0")],
                        axum::Json(json!({"error": {"code": "unauthorized", "message": "no key"}})),
                    )
                }
            }),
        )
        .route("/v1/models/busy", get(move || async move { overloaded() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let cli = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_streampca"))
            .args(args)
            .args(["--url", &url])
            .env("STREAMPCA_API_KEY", "k1")
            .output()
    };

    // Act
    let listed = cli(&["models", "list"]).await.unwrap();
    let busy = cli(&["models", "show", "busy"]).await.unwrap();

    // Assert
    assert!(ok(&listed).contains("no models"));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(busy.status.code(), Some(3));
    assert!(
        stderr(&busy).contains("after 5 tries: overloaded: try later"),
        "{}",
        stderr(&busy)
    );
}

#[tokio::test]
async fn ingest_sends_x_then_y_rows_of_a_regression_model_as_json_on_request() {
    // Arrange: dim 3 + target_dim 1, so each CSV line has four values.
    let app = spawn_app().await;
    let r = app
        .create_model(json!({"name": "cli-reg", "dim": 3, "components": 1, "target_dim": 1}))
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Vec<f64>> = spiked_rows(4, 50, 8);
    let file = write(dir.path(), "reg.csv", &csv(&rows));

    // Act
    let out = run(
        &app,
        &[
            "ingest",
            "cli-reg",
            file.to_str().unwrap(),
            "--wire",
            "json",
            "--batch-size",
            "20",
        ],
    )
    .await;

    // Assert
    assert!(ok(&out).contains("50 rows"));
    let status = app.status("cli-reg").await;
    assert_eq!(status["samples"], json!(50.0));
    assert_eq!(status["batches"], json!(3));
}
