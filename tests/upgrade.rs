//! Upgrades: a data directory and an export written by release 0.1 (one accumulator per
//! model, `wal.log`, snapshot format v1; see `tests/fixtures/v1/README.md`) recover and
//! import under this release as one-partition models holding exactly the batches the
//! old release acknowledged.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;

use serde_json::{json, Value};
use streampca::pca::Accumulator;
use streampca::persistence::snapshot;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// One serial accumulation of the rows release 0.1 acknowledged for `model`.
fn expected(
    model: &str,
    dim: usize,
    target_dim: Option<usize>,
    half_life: Option<f64>,
) -> Accumulator {
    let rows: Value =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURE}/rows.json")).unwrap()).unwrap();
    let mut acc = Accumulator::new(dim, target_dim, half_life).unwrap();
    for b in rows[model].as_array().unwrap() {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for r in b["rows"].as_array().unwrap() {
            let r: Vec<f64> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            x.extend_from_slice(&r[..dim]);
            y.extend_from_slice(&r[dim..]);
        }
        acc.update(&x, target_dim.map(|_| y.as_slice())).unwrap();
    }
    acc
}

fn assert_close(got: &Accumulator, want: &Accumulator, what: &str) {
    assert_eq!(
        got.count().to_bits(),
        want.count().to_bits(),
        "{what}: count"
    );
    let rel = (got.scatter() - want.scatter()).norm() / want.scatter().norm();
    assert!(rel < 1e-12, "{what}: scatter off by {rel:e}");
    let dm = (got.mean_x() - want.mean_x()).norm() / want.mean_x().norm();
    assert!(dm < 1e-14, "{what}: mean off by {dm:e}");
    if let (Some(a), Some(b)) = (got.cross_scatter(), want.cross_scatter()) {
        let rel = (a - b).norm() / b.norm();
        assert!(rel < 1e-12, "{what}: cross scatter off by {rel:e}");
    }
}

async fn start(
    dir: &Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let settings = streampca::config::Settings {
        data_dir: dir.to_owned(),
        ..Default::default()
    };
    let server = tokio::spawn(async move {
        streampca::run(listener, settings, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (address, tx, server)
}

#[tokio::test]
async fn a_release_0_1_data_directory_recovers_as_one_partition_models_with_every_batch() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&Path::new(FIXTURE).join("data"), tmp.path());
    let client = reqwest::Client::new();

    let (address, stop, server) = start(tmp.path()).await;

    for (name, dim, target_dim, half_life) in [
        ("plain", 4, None, None),
        ("forget", 3, None, Some(10.0)),
        ("regress", 3, Some(2), None),
    ] {
        let status: Value = client
            .get(format!("{address}/v1/models/{name}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["partitions"], 1, "{name}: {status}");
        assert_eq!(status["sequence"], 10, "{name}");
        assert_eq!(status["batches"], 10, "{name}");
        let bytes = client
            .get(format!("{address}/v1/models/{name}/snapshot"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (_, accs) = snapshot::decode_checked(&bytes, |_| Ok(())).unwrap();
        assert_eq!(accs.len(), 1);
        assert_close(&accs[0], &expected(name, dim, target_dim, half_life), name);
        let dir = tmp.path().join("models").join(name);
        assert!(
            !dir.join("wal.log").exists(),
            "{name}: the old log is migrated away"
        );
        assert!(dir.join("partition-0.log").exists());
    }
    // The upgraded model takes new batches after its old ones, and survives a restart.
    let r: Value = client
        .post(format!("{address}/v1/models/plain/samples"))
        .json(&json!({"x": [[1.0, 2.0, 3.0, 4.0]]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["sequence"], 11);
    let _ = stop.send(());
    server.await.unwrap();
    let (address, stop, server) = start(tmp.path()).await;
    let status: Value = client
        .get(format!("{address}/v1/models/plain"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["sequence"], 11);
    assert_eq!(status["samples"], 31.0);
    let _ = stop.send(());
    server.await.unwrap();
}

#[tokio::test]
async fn a_release_0_1_export_imports_as_a_one_partition_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (address, stop, server) = start(tmp.path()).await;
    let client = reqwest::Client::new();
    let bytes = std::fs::read(format!("{FIXTURE}/plain-export.bin")).unwrap();

    let r = client
        .put(format!("{address}/v1/models/old/snapshot"))
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["partitions"], 1);
    assert_eq!(status["sequence"], 10);
    assert_eq!(status["samples"], 30.0);
    let exported = client
        .get(format!("{address}/v1/models/old/snapshot"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (_, accs) = snapshot::decode_checked(&exported, |_| Ok(())).unwrap();
    assert_close(&accs[0], &expected("plain", 4, None, None), "import");
    let _ = stop.send(());
    server.await.unwrap();
}
