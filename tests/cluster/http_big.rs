//! Batches larger than NATS' `max_payload` over HTTP, against a nats-server with its
//! default 1 MiB `max_payload`: a 256 × 4096 f32 batch (4 MiB) is accepted (published
//! as an atomic batch of chunks), and a batch whose node is SIGKILLed between its
//! chunks (a test-only pause makes this deterministic) is never folded.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::Server;
use crate::nats::NatsCluster;

const DIM: usize = 4096;
const ROWS: usize = 256;

fn body(seed: u64) -> Vec<u8> {
    // A cheap deterministic pattern (the counts are what this test checks).
    (0..ROWS * DIM)
        .flat_map(|i| {
            let v = ((i as u64 * 2_654_435_761 + seed) % 1000) as f32 / 100.0;
            v.to_le_bytes()
        })
        .collect()
}

async fn served(c: &reqwest::Client, base: &str) -> (f64, u64) {
    let v: Value = c
        .get(format!("{base}/v1/models/big"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    (
        v["samples"].as_f64().unwrap_or(-1.0),
        v["batches"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_max_payload_whole_or_not_at_all() {
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    let urls = nats.urls();
    let a = Server::start(&urls, "a", &[]).await;
    let mut b = Server::start(
        &urls,
        "b",
        &[
            "--cluster-no-worker",
            "--cluster-test-chunk-pause-ms",
            "3000",
        ],
    )
    .await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let r = c
        .post(format!("{}/v1/models", a.base))
        .json(&json!({ "name": "big", "dim": DIM, "components": 2 }))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let post = |base: String, seed: u64| {
        c.post(format!("{base}/v1/models/big/samples"))
            .header("content-type", "application/octet-stream")
            .body(body(seed))
            .send()
    };

    // 4 MiB of f32 rows against a 1 MiB max_payload: accepted whole.
    let r = post(a.base.clone(), 1).await.expect("post");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["accepted"], ROWS);

    // Node b pauses 3 s before each chunk after the first: SIGKILL it after 1.5 s, with
    // one chunk of the batch published and the batch never committed.
    let pending = tokio::spawn(post(b.base.clone(), 2));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.kill();
    assert!(
        pending.await.expect("task").is_err(),
        "the killed node must not have answered"
    );

    // A third batch through a: the served state covers the first and third only.
    let r = post(a.base.clone(), 3).await.expect("post");
    assert_eq!(r.status(), 200);
    let start = Instant::now();
    loop {
        let (samples, batches) = served(&c, &a.base).await;
        assert!(
            samples <= (2 * ROWS) as f64,
            "the partial batch was folded: {samples}"
        );
        if samples.to_bits() == ((2 * ROWS) as f64).to_bits() {
            assert_eq!(batches, 2);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never served 2 batches"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And nothing more appears later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(served(&c, &a.base).await, ((2 * ROWS) as f64, 2));
}
