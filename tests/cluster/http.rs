//! The real `streampca` binary in cluster mode (`--nats`) over HTTP: one nats-server and
//! two streampca processes. Create on one node, ingest in every format the embedded
//! server takes, on both nodes; an `Idempotency-Key` retry to the other node is not
//! counted twice; both nodes serve the same components, within 1e-6 rad of a reference
//! eigensolver on exactly the acknowledged rows; project; delete is seen everywhere.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nalgebra::DMatrix;
use serde_json::{json, Value};
use streampca::pca::{max_principal_angle, Batch};

use crate::nats::NatsCluster;
use crate::support::{offline, reference_components, Source};
use crate::ANGLE;

/// A `streampca serve --nats …` process, SIGKILLed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Server {
    /// Starts the binary against `urls` as node `id` and waits for `/readyz`.
    pub async fn start(urls: &[String], id: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_streampca"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--nats", &urls.join(","), "--node-id", id])
            .args(["--cluster-lease-ttl-secs", "3"])
            .args(["--cluster-checkpoint-interval-ms", "300"])
            .args(["--cluster-stream-max-bytes", "268435456"])
            .args(extra)
            .env("STREAMPCA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn streampca");
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[streampca] {line}");
            }
        });
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("streampca {id} exited before ready: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "streampca {id} not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            base,
            _dir: dir,
        }
    }

    /// SIGKILL by pid.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn json_body(v: &[f64], dim: usize) -> Vec<u8> {
    let rows: Vec<&[f64]> = v.chunks(dim).collect();
    serde_json::to_vec(&json!({ "x": rows })).expect("json")
}

fn text_rows(v: &[f64], dim: usize, sep: &str, open: &str, close: &str) -> Vec<u8> {
    let mut s = String::new();
    for r in v.chunks(dim) {
        let cells: Vec<String> = r.iter().map(|x| format!("{x:?}")).collect();
        s.push_str(open);
        s.push_str(&cells.join(sep));
        s.push_str(close);
        s.push('\n');
    }
    s.into_bytes()
}

/// A `.npy` v1.0 file of little-endian f64, C order.
fn npy(v: &[f64], dim: usize) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {}), }}",
        v.len() / dim,
        dim
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&u16::try_from(header.len()).expect("short").to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

async fn post(c: &reqwest::Client, url: String, ct: &str, body: Vec<u8>) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn matrix(v: &Value, dim: usize) -> DMatrix<f64> {
    let cols = v.as_array().expect("array");
    DMatrix::from_fn(dim, cols.len(), |r, c| cols[c][r].as_f64().expect("number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_the_api_in_cluster_mode() {
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    let urls = nats.urls();
    let a = Server::start(&urls, "a", &[]).await;
    let b = Server::start(&urls, "b", &[]).await;
    let c = reqwest::Client::new();
    let dim = 6;
    let name = "h";

    let ready: Value = c
        .get(format!("{}/readyz", a.base))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["mode"], "cluster");
    assert_eq!(ready["nats_connected"], true);

    // Create on a; b sees it within a second.
    let body = json!({ "name": name, "dim": dim, "components": 3 });
    let (s, v) = post(
        &c,
        format!("{}/v1/models", a.base),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["partitions"], 4, "the cluster's default partitions");
    let (s, _) = post(
        &c,
        format!("{}/v1/models", b.base),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(s, 200, "an identical create on another node is 200");
    let hf = json!({ "name": "f", "dim": dim, "components": 3, "half_life": 100.0 });
    let (s, v) = post(
        &c,
        format!("{}/v1/models", b.base),
        "application/json",
        serde_json::to_vec(&hf).unwrap(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_parameter")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("half_life"));

    // Ingest in every format, alternating nodes.
    let src = Source::new(dim, 11);
    let mut acked: Vec<Batch> = Vec::new();
    let mut rows = 0u64;
    let nodes = [&a.base, &b.base];
    for (i, ct) in [
        "application/json",
        "application/x-ndjson",
        "text/csv",
        "application/octet-stream",
        "application/x-npy",
    ]
    .iter()
    .enumerate()
    {
        let id = i as u64;
        let v = src.rows(id, 40);
        let (body, single) = match *ct {
            "application/json" => (json_body(&v, dim), false),
            "application/x-ndjson" => (text_rows(&v, dim, ",", "[", "]"), false),
            "text/csv" => (text_rows(&v, dim, ",", "", ""), false),
            "application/octet-stream" => (
                v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
                true,
            ),
            _ => (npy(&v, dim), false),
        };
        let url = format!("{}/v1/models/{name}/samples", nodes[i % 2]);
        let (s, r) = post(&c, url, ct, body).await;
        assert_eq!(s, 200, "{ct}: {r}");
        assert_eq!(r["accepted"], 40);
        assert_eq!(r["duplicate"], false);
        acked.push(src.batch(id, 40, single));
        rows += 40;
    }

    // An acknowledged batch retried with the same Idempotency-Key on the other node is
    // stored once.
    let v = src.rows(100, 30);
    let send = |base: &String| {
        c.post(format!("{base}/v1/models/{name}/samples"))
            .header("content-type", "application/json")
            .header("idempotency-key", "batch-100")
            .body(json_body(&v, dim))
            .send()
    };
    let first: Value = send(&a.base)
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(first["duplicate"], false, "{first}");
    let retry: Value = send(&b.base)
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["sequence"], first["sequence"]);
    acked.push(src.batch(100, 30, false));
    rows += 30;

    // Bad input: a clear 4xx naming the problem, nothing stored.
    let (s, r) = post(
        &c,
        format!("{}/v1/models/{name}/samples", a.base),
        "application/json",
        json_body(&src.rows(7, 2)[..10], 5),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (422, Some("dimension_mismatch")),
        "{r}"
    );
    let (s, r) = post(
        &c,
        format!("{}/v1/models/nope/samples", a.base),
        "application/json",
        json_body(&v, dim),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (404, Some("model_not_found")),
        "{r}"
    );
    let bad_key = c
        .post(format!("{}/v1/models/{name}/samples", a.base))
        .header("content-type", "application/json")
        .header("idempotency-key", "x".repeat(200))
        .body(json_body(&v, dim))
        .send()
        .await
        .expect("post");
    assert_eq!(bad_key.status(), 400);

    // Both nodes serve a fit of exactly the acknowledged rows.
    let reference = offline(dim, &acked);
    let want = reference_components(&reference, 3);
    let start = Instant::now();
    let mut served = Vec::new();
    for base in nodes {
        loop {
            let r = c
                .get(format!("{base}/v1/models/{name}/components"))
                .send()
                .await
                .expect("get");
            if r.status() == 200 {
                let v: Value = r.json().await.expect("json");
                if v["samples"].as_f64() == Some(rows as f64) && v["converged"] == true {
                    served.push(v);
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{base} never served {rows} rows"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "both nodes served all {rows} rows {:?} after the last ingest",
        start.elapsed()
    );
    let got = matrix(&served[0]["components"], dim);
    let angle = max_principal_angle(&got, &want);
    assert!(
        angle <= ANGLE,
        "components {angle:e} rad from the reference"
    );
    let other = matrix(&served[1]["components"], dim);
    assert!((&got - &other).amax() <= 1e-12, "nodes disagree");
    let status: Value = c
        .get(format!("{}/v1/models/{name}", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["samples"].as_f64(), Some(rows as f64));
    assert_eq!(status["partition_states"].as_array().map(Vec::len), Some(4));

    // Project on b: scores = (x − mean)·V of the served fit.
    let x = src.rows(500, 3);
    let (s, p) = post(
        &c,
        format!("{}/v1/models/{name}/project", b.base),
        "application/json",
        serde_json::to_vec(&json!({ "x": x.chunks(dim).collect::<Vec<_>>(), "k": 2 })).unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    let mean: Vec<f64> = served[1]["mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    for (i, row) in x.chunks(dim).enumerate() {
        for j in 0..2 {
            let want: f64 = (0..dim).map(|r| (row[r] - mean[r]) * other[(r, j)]).sum();
            let got = p["scores"][i][j].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * (1.0 + want.abs()),
                "score {got} vs {want}"
            );
        }
    }

    // As in embedded mode, a JSON body carries its options: a query string is refused.
    let (s, e) = post(
        &c,
        format!("{}/v1/models/{name}/project?k=1", b.base),
        "application/json",
        serde_json::to_vec(&json!({ "x": x.chunks(dim).take(1).collect::<Vec<_>>() })).unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["code"], "invalid_parameter", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("invalid parameter `k`: query-string options"),
        "{e}"
    );

    // Metrics carry the cluster's series.
    let metrics = c
        .get(format!("{}/metrics", a.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("streampca_cluster_"), "no cluster metrics");

    // Delete on b: a answers 404 within a second.
    let r = c
        .delete(format!("{}/v1/models/{name}", b.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let start = Instant::now();
    loop {
        let r = c
            .get(format!("{}/v1/models/{name}", a.base))
            .send()
            .await
            .expect("get");
        if r.status() == 404 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "a still serves the deleted model"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
