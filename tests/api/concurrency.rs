//! Many producers at once: every acknowledged batch counted exactly once, in one order.

use std::collections::BTreeSet;

use serde_json::json;

use crate::helpers::{assert_matches_reference, spawn_app, spiked_rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_lose_nothing_and_count_nothing_twice() {
    // Arrange: 8 producers × 25 batches × 8 rows, all distinct.
    let app = std::sync::Arc::new(spawn_app().await);
    let (dim, p) = (12, 3);
    app.create_autoencoder("busy", dim, p).await;
    let all = spiked_rows(dim, 8 * 25 * 8, 42);
    let producers: Vec<Vec<Vec<f64>>> = all.chunks(200).map(<[_]>::to_vec).collect();

    // Act
    let mut handles = Vec::new();
    for rows in producers {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for batch in rows.chunks(8) {
                let receipt = app.ingest_json("busy", batch).await;
                assert_eq!(receipt["accepted"], json!(8));
                seqs.push(receipt["sequence"].as_u64().unwrap());
            }
            seqs
        }));
    }
    let mut sequences = BTreeSet::new();
    for h in handles {
        for s in h.await.unwrap() {
            assert!(sequences.insert(s), "sequence {s} acknowledged twice");
        }
    }

    // Assert
    assert_eq!(sequences, (1..=200).collect::<BTreeSet<u64>>());
    let status = app.status("busy").await;
    assert_eq!(status["samples"], json!(1600.0));
    assert_eq!(status["batches"], json!(200));
    assert_eq!(status["sequence"], json!(200));
    // The accumulator equals a serial accumulation of every row (order only moves
    // round-off), so the fit matches the reference on the union.
    let c = app.wait_converged("busy", 200).await;
    assert_matches_reference(&c, &all, p);
}
