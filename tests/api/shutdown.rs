//! Stopping the real binary: SIGTERM in the middle of a long cold fit ends the process
//! within a few seconds (the fit is cancelled at its next step; the log already holds
//! the data), and the data survive into the next start.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// n and p of the model: one step of a cold fit at this size is tens of seconds (one
/// eigensolve of the 3084×3084 Rayleigh–Ritz matrix alone), so the exit relies on both
/// the cancellation and the bounded wait for a trainer inside a kernel.
const DIM: usize = 4096;
const COMPONENTS: usize = 1024;
const ROWS: usize = 1100;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(data_dir: &Path) -> Server {
    let port = free_port();
    let server = Server {
        child: Command::new(env!("CARGO_BIN_EXE_streampca"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--log", "warn"])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = server
            .client
            .get(format!("{}/readyz", server.base))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
            return server;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_during_a_cold_fit_at_n_4096_p_1024_exits_within_a_few_seconds() {
    // Arrange: a model with enough samples for a cold fit, which starts at once.
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let r = server
        .client
        .post(format!("{}/v1/models", server.base))
        .json(&json!({"name": "big", "dim": DIM, "components": COMPONENTS}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let mut rng = StdRng::seed_from_u64(7);
    let body: Vec<u8> = (0..ROWS * DIM)
        .flat_map(|_| {
            rng.sample::<f32, _>(rand_distr::StandardNormal)
                .to_le_bytes()
        })
        .collect();
    let r = server
        .client
        .post(format!("{}/v1/models/big/samples", server.base))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // The fit is under way (and far from done: no components published yet).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = server
        .client
        .get(format!("{}/v1/models/big/components", server.base))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["components"], json!([]), "a fit was already published");
    // Act
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(60),
            "still running 60 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    // Assert
    assert!(exited.success(), "{exited}");
    assert!(
        took < Duration::from_secs(6),
        "exit took {took:?} after SIGTERM"
    );
    eprintln!("exit {took:?} after SIGTERM during the fit");
    // The batch survived the stop.
    drop(server);
    let server = start(dir.path()).await;
    let v: Value = server
        .client
        .get(format!("{}/v1/models/big", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["samples"], json!(ROWS as f64), "{v}");
}
