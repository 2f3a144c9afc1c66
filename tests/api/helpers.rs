//! `spawn_app()` and typed helpers shared by the API tests, plus seeded test data and an
//! independent reference (nalgebra's `SymmetricEigen` of the N−1 sample covariance).

use std::time::{Duration, Instant};

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use streampca::config::Settings;
use tokio::sync::oneshot;

/// A running service and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    _data_dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<bool>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the service with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|s| s).await
}

/// Starts the service with settings adjusted by `f`, on 127.0.0.1:0 with a temporary
/// data directory.
pub async fn spawn_app_with(f: impl FnOnce(Settings) -> Settings) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let settings = f(Settings {
        data_dir: data_dir.path().join("data"),
        ..Settings::default()
    });
    start(settings, Some(data_dir)).await
}

/// Starts the service on an existing data directory (to test restarts).
pub async fn spawn_app_in(data_dir: &std::path::Path) -> TestApp {
    spawn_app_in_with(data_dir, |s| s).await
}

/// Starts the service on an existing data directory with settings adjusted by `f`.
pub async fn spawn_app_in_with(
    data_dir: &std::path::Path,
    f: impl FnOnce(Settings) -> Settings,
) -> TestApp {
    let settings = f(Settings {
        data_dir: data_dir.to_owned(),
        ..Settings::default()
    });
    start(settings, None).await
}

async fn start(settings: Settings, data_dir: Option<tempfile::TempDir>) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        match streampca::run(listener, settings, shutdown).await {
            Ok(()) => true,
            Err(e) => {
                eprintln!("server failed: {e:#}");
                false
            }
        }
    });
    TestApp {
        address,
        client: reqwest::Client::new(),
        _data_dir: data_dir,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// Sends the shutdown signal and waits (at most 10 s) for `run` to return; true when
    /// it returned `Ok`.
    pub async fn stop(mut self) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .map(|r| r.unwrap_or(false))
            .unwrap_or(false)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn create_model(&self, body: Value) -> Response {
        self.client
            .post(self.url("/v1/models"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Creates an autoencoder model and asserts 201.
    pub async fn create_autoencoder(&self, name: &str, dim: usize, components: usize) {
        let r = self
            .create_model(
                json!({"name": name, "dim": dim, "components": components, "tolerance": 1e-8}),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }

    pub async fn post_samples(&self, name: &str, content_type: &str, body: Vec<u8>) -> Response {
        self.client
            .post(self.url(&format!("/v1/models/{name}/samples")))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Posts rows as a JSON batch and returns the receipt, asserting 200.
    pub async fn ingest_json(&self, name: &str, rows: &[Vec<f64>]) -> Value {
        let body = serde_json::to_vec(&json!({ "x": rows })).unwrap();
        let r = self.post_samples(name, "application/json", body).await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }

    pub async fn status(&self, name: &str) -> Value {
        let (s, v) = self.get_json(&format!("/v1/models/{name}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    pub async fn components(&self, name: &str) -> Value {
        let (s, v) = self
            .get_json(&format!("/v1/models/{name}/components"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Polls until the published fit has seen batch `sequence` and converged.
    pub async fn wait_converged(&self, name: &str, sequence: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = self.components(name).await;
            if c["sequence"].as_u64() == Some(sequence) && c["converged"] == json!(true) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "model {name} did not converge on sequence {sequence}: {c}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn project(&self, name: &str, body: Value) -> Response {
        self.client
            .post(self.url(&format!("/v1/models/{name}/project")))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }
}

/// Asserts an error response: status, `error.code`, and returns the message.
pub async fn assert_error(r: Response, status: StatusCode, code: &str) -> String {
    let got = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], json!(code), "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// Rows with a well separated geometric spectrum (λ_j = 10·0.6^j) along a random
/// orthonormal basis, plus a mean offset; every value is exactly representable in f32 so
/// all four body formats carry identical numbers.
pub fn spiked_rows(dim: usize, rows: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let g = DMatrix::from_fn(dim, dim, |_, _| {
        rng.sample::<f64, _>(rand_distr::StandardNormal)
    });
    let basis = g.qr().q();
    let scale: Vec<f64> = (0..dim)
        .map(|j| (10.0 * 0.6f64.powi(j as i32)).sqrt())
        .collect();
    (0..rows)
        .map(|_| {
            let z: Vec<f64> = scale
                .iter()
                .map(|s| s * rng.sample::<f64, _>(rand_distr::StandardNormal))
                .collect();
            (0..dim)
                .map(|i| {
                    let v =
                        3.0 + 0.5 * i as f64 + (0..dim).map(|j| basis[(i, j)] * z[j]).sum::<f64>();
                    f64::from(v as f32)
                })
                .collect()
        })
        .collect()
}

/// Independent reference: eigenpairs of the N−1 sample covariance, largest first.
pub struct Reference {
    pub mean: DVector<f64>,
    pub eigenvalues: Vec<f64>,
    pub vectors: DMatrix<f64>,
}

pub fn reference(rows: &[Vec<f64>]) -> Reference {
    let n = rows[0].len();
    let count = rows.len() as f64;
    let mut mean = DVector::zeros(n);
    for r in rows {
        mean += DVector::from_column_slice(r);
    }
    mean /= count;
    let mut cov = DMatrix::zeros(n, n);
    for r in rows {
        let d = DVector::from_column_slice(r) - &mean;
        cov += &d * d.transpose();
    }
    cov /= count - 1.0;
    let eig = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let eigenvalues = order.iter().map(|&i| eig.eigenvalues[i]).collect();
    let vectors = DMatrix::from_fn(n, n, |r, c| eig.eigenvectors[(r, order[c])]);
    Reference {
        mean,
        eigenvalues,
        vectors,
    }
}

/// Sign-insensitive angle between unit vectors, accurate for small angles.
pub fn angle(a: &[f64], u: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(u).map(|(x, y)| x * y).sum();
    let perp: f64 = a
        .iter()
        .zip(u)
        .map(|(x, y)| (x - dot * y).powi(2))
        .sum::<f64>()
        .sqrt();
    perp.atan2(dot.abs())
}

/// A JSON array of arrays as `Vec<Vec<f64>>`.
pub fn matrix(v: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// A JSON array as `Vec<f64>`.
pub fn vector(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Asserts the published fit matches the reference within 1e-6 rad and 1e-9 relative.
pub fn assert_matches_reference(c: &Value, rows: &[Vec<f64>], p: usize) {
    let r = reference(rows);
    let comps = matrix(&c["components"]);
    let eig = vector(&c["eigenvalues"]);
    assert_eq!(comps.len(), p);
    for i in 0..p {
        let u: Vec<f64> = r.vectors.column(i).iter().copied().collect();
        let a = angle(&comps[i], &u);
        assert!(a < 1e-6, "component {i} is {a:e} rad from the reference");
        let rel = (eig[i] - r.eigenvalues[i]).abs() / r.eigenvalues[i];
        assert!(
            rel < 1e-9,
            "eigenvalue {i}: {} vs {} ({rel:e} relative)",
            eig[i],
            r.eigenvalues[i]
        );
    }
    let mean = vector(&c["mean"]);
    for (i, m) in mean.iter().enumerate() {
        assert!(
            (m - r.mean[i]).abs() < 1e-9 * (1.0 + r.mean[i].abs()),
            "mean {i}"
        );
    }
    assert_eq!(c["samples"].as_f64(), Some(rows.len() as f64));
}
