//! Durability end to end: graceful restart, export/import, torn and corrupt log tails,
//! and the crash test (the real binary killed with SIGKILL at random moments).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use streampca::pca::Accumulator;
use streampca::persistence::snapshot;

use crate::helpers::{assert_error, spawn_app, spawn_app_in, spiked_rows};
use crate::process::Server;

const DIM: usize = 8;

/// Rows of batch `index` of producer `producer`: deterministic, exactly representable
/// in f32, `rows_of(producer)` rows.
fn batch_rows(producer: usize, index: usize) -> Vec<f32> {
    let rows = rows_of(producer);
    let mut rng = StdRng::seed_from_u64((producer as u64) << 32 | index as u64);
    (0..rows * DIM)
        .map(|i| {
            let base = (i % DIM) as f32 * 0.25;
            base + f32::from(rng.gen_range(-1000i16..1000)) / 64.0
        })
        .collect()
}

/// Producers use row counts 3·2^p, so any subset of in-flight batches (at most one per
/// producer) is identified by its total row count.
fn rows_of(producer: usize) -> usize {
    3 << producer
}

fn f32_body(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

async fn create(client: &reqwest::Client, base: &str, name: &str) {
    let r = client
        .post(format!("{base}/v1/models"))
        .json(&json!({"name": name, "dim": DIM, "components": 2, "partitions": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

async fn post_batch(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    values: &[f32],
) -> Result<Value, String> {
    let r = client
        .post(format!("{base}/v1/models/{name}/samples"))
        .header("content-type", "application/octet-stream")
        .body(f32_body(values))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != StatusCode::OK {
        return Err(format!("status {}", r.status()));
    }
    r.json().await.map_err(|e| e.to_string())
}

/// The log of partition `k` of model `name`.
fn log_path(data_dir: &Path, name: &str, k: usize) -> PathBuf {
    data_dir
        .join("models")
        .join(name)
        .join(format!("partition-{k}.log"))
}

// ---------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn a_graceful_restart_restores_the_state_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    app.create_autoencoder("m", 6, 2).await;
    let rows = spiked_rows(6, 300, 7);
    for chunk in rows.chunks(37) {
        app.ingest_json("m", chunk).await;
    }
    let before = app
        .client
        .get(app.url("/v1/models/m/snapshot"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let status_before = app.status("m").await;
    assert!(app.stop().await);

    let app = spawn_app_in(dir.path()).await;
    let after = app
        .client
        .get(app.url("/v1/models/m/snapshot"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (a, b) = (
        snapshot::decode(&before).unwrap(),
        snapshot::decode(&after).unwrap(),
    );
    assert_eq!(a.config, b.config);
    assert_eq!((a.sequence(), a.positions()), (b.sequence(), b.positions()));
    // Bit for bit: compare the encodings of the accumulators alone.
    let bits = |s: &snapshot::Snapshot| {
        let mut s = s.clone();
        s.trainer = Default::default();
        snapshot::encode(&s).unwrap()
    };
    assert_eq!(bits(&a), bits(&b));
    let status_after = app.status("m").await;
    for k in ["samples", "batches", "sequence"] {
        assert_eq!(status_before[k], status_after[k], "{k}");
    }
    assert!(app.stop().await);
}

#[tokio::test]
async fn an_exported_snapshot_imports_as_a_copy_and_bad_bytes_are_refused() {
    let app = spawn_app().await;
    app.create_autoencoder("src", 5, 2).await;
    app.ingest_json("src", &spiked_rows(5, 120, 3)).await;
    let bytes = app
        .client
        .get(app.url("/v1/models/src/snapshot"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    let put = |name: &str, body: Vec<u8>| {
        app.client
            .put(app.url(&format!("/v1/models/{name}/snapshot")))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let r = put("copy", bytes.to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (s, c) = (app.status("src").await, app.status("copy").await);
    assert_eq!(s["samples"], c["samples"]);
    assert_eq!(s["sequence"], c["sequence"]);
    // Replacing an existing model answers 200.
    let r = put("copy", bytes.to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let mut flipped = bytes.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let msg = assert_error(
        put("copy", flipped).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_snapshot",
    )
    .await;
    assert!(msg.contains("checksum") || msg.contains("crc"), "{msg}");
    assert_error(
        put("copy", b"nonsense".to_vec()).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_snapshot",
    )
    .await;
    // The failed imports changed nothing.
    assert_eq!(app.status("copy").await["samples"], s["samples"]);
}

/// Kills the server after `batches` acknowledged batches, damages the log's last record
/// with `damage`, restarts, and returns (the recovered status, the acknowledged row
/// counts, the server).
async fn crash_and_damage(dir: &Path, damage: impl FnOnce(&Path)) -> (Value, Vec<usize>, Server) {
    let server = Server::start(dir, &[]).await;
    create(&server.client, &server.address, "m").await;
    let mut acked = Vec::new();
    for i in 0..6 {
        let p = i % 3;
        let v = batch_rows(p, i);
        post_batch(&server.client, &server.address, "m", &v)
            .await
            .unwrap();
        acked.push(rows_of(p));
    }
    server.kill();
    // One partition: every batch is in its log.
    damage(&log_path(dir, "m", 0));
    let server = Server::start(dir, &[]).await;
    (server.status("m").await, acked, server)
}

#[tokio::test]
async fn a_log_cut_mid_record_recovers_to_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let (status, acked, server) = crash_and_damage(dir.path(), |wal| {
        let len = std::fs::metadata(wal).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(wal).unwrap();
        f.set_len(len - 10).unwrap();
    })
    .await;
    let whole: usize = acked[..acked.len() - 1].iter().sum();
    assert_eq!(status["samples"].as_f64(), Some(whole as f64));
    assert_eq!(status["sequence"], json!(5));
    assert!(server
        .metrics()
        .await
        .contains("streampca_wal_torn_records_total{model=\"m\"} 1"));
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_recovers_to_the_record_before() {
    let dir = tempfile::tempdir().unwrap();
    let (status, acked, server) = crash_and_damage(dir.path(), |wal| {
        let mut bytes = std::fs::read(wal).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0x01;
        std::fs::write(wal, bytes).unwrap();
    })
    .await;
    let whole: usize = acked[..acked.len() - 1].iter().sum();
    assert_eq!(status["samples"].as_f64(), Some(whole as f64));
    assert_eq!(status["sequence"], json!(5));
    assert!(server
        .metrics()
        .await
        .contains("streampca_wal_torn_records_total{model=\"m\"} 1"));
    // The service goes on: the next batch gets the next sequence.
    let v = batch_rows(0, 99);
    let r = post_batch(&server.client, &server.address, "m", &v)
        .await
        .unwrap();
    assert_eq!(r["sequence"], json!(6));
}

/// What producers saw in one cycle.
#[derive(Default)]
struct Seen {
    /// Acknowledged: sequence → (producer, index).
    acked: BTreeMap<u64, (usize, usize)>,
    /// Sent without an answer (at most one per producer): (producer, index).
    in_flight: Vec<(usize, usize)>,
}

/// Copies a directory's files (one level) into a fresh temporary directory.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
        }
    }
    to
}

fn parts_bits(p: &streampca::pca::AccumulatorParts) -> Vec<u64> {
    let mut v = vec![p.count.to_bits(), p.clock];
    v.extend(p.mean_x.iter().map(|x| x.to_bits()));
    v.extend(p.sxx.iter().map(|x| x.to_bits()));
    v
}

/// Every partition of a model folded offline from a copy of its directory: the newest
/// readable snapshot, then each partition log's records after that snapshot's position.
/// Returns the partitions and every logged record's (sequence, values).
fn offline_replay(copy: &Path, k: usize) -> (Vec<Accumulator>, Vec<(u64, Vec<f32>)>) {
    use streampca::persistence::{PartitionLog as _, SyncMode, Wal};
    let loaded = snapshot::load_latest(copy).unwrap();
    let (mut accs, positions) = match &loaded {
        Some(l) => (l.snapshot.accumulators().unwrap(), l.snapshot.positions()),
        None => (
            (0..k)
                .map(|_| Accumulator::new(DIM, None, None).unwrap())
                .collect(),
            vec![Default::default(); k],
        ),
    };
    let mut logged = Vec::new();
    for (p, acc) in accs.iter_mut().enumerate() {
        let (wal, rec) = Wal::open(
            copy.join(format!("partition-{p}.log")),
            p as u32,
            SyncMode::Never,
        )
        .unwrap();
        let _ = wal.describe();
        for r in rec.records {
            let streampca::pca::BatchData::F32 { x, .. } = r.batch.data() else {
                panic!("raw bodies are logged as f32")
            };
            logged.push((r.stamp.sequence, x.clone()));
            if r.stamp.local > positions[p].local {
                acc.fold(&r.batch, r.stamp.clock, &mut Vec::new()).unwrap();
            }
        }
    }
    (accs, logged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_batches_survive_sigkill_at_random_moments() {
    const CYCLES: usize = 50;
    const PRODUCERS: usize = 8;
    const K: usize = 4;
    let args = ["--snapshot-every-batches", "40"];
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("models").join("m");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    // One serial accumulator of exactly the batches that survived, in sequence order.
    let mut expected = Accumulator::new(DIM, None, None).unwrap();
    let mut next_index = [0usize; PRODUCERS];
    let mut last_sequence = 0u64;
    let (mut total_acked, mut total_survivors) = (0usize, 0usize);
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let server = Server::start(dir.path(), &args).await;
        if cycle == 0 {
            let r = server
                .client
                .post(server.url("/v1/models"))
                .json(&json!({"name": "m", "dim": DIM, "components": 2, "partitions": K}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut tasks = Vec::new();
        for (p, &first) in next_index.iter().enumerate() {
            let (client, base, seen) =
                (server.client.clone(), server.address.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = first;
                loop {
                    let v = batch_rows(p, i);
                    seen.lock().unwrap().in_flight.push((p, i));
                    let r = post_batch(&client, &base, "m", &v).await;
                    let mut s = seen.lock().unwrap();
                    match r {
                        Ok(receipt) => {
                            s.in_flight.retain(|b| *b != (p, i));
                            let seq = receipt["sequence"].as_u64().unwrap();
                            assert!(
                                s.acked.insert(seq, (p, i)).is_none(),
                                "sequence {seq} twice"
                            );
                        }
                        Err(_) => return i + 1,
                    }
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..300))).await;
        server.kill();
        for (p, t) in tasks.into_iter().enumerate() {
            next_index[p] = t.await.unwrap();
        }
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        let copy = copy_dir(&model_dir);

        let server = Server::start(dir.path(), &args).await;
        let status = server.status("m").await;
        let exported = server.export("m").await;

        // 1. The recovered state is the offline replay of every partition's log.
        let (offline, logged) = offline_replay(copy.path(), K);
        for (p, acc) in offline.iter().enumerate() {
            assert_eq!(
                parts_bits(&acc.to_parts()),
                parts_bits(&exported.partitions[p].accumulator),
                "cycle {cycle}: partition {p} differs from its offline replay"
            );
        }
        // 2. Every acknowledged batch survived, once, with the sequence it was answered;
        //    batches in flight at the kill survived (once) or did not.
        let mut this_cycle: BTreeMap<u64, Vec<f32>> = seen
            .acked
            .iter()
            .map(|(&seq, &(p, i))| (seq, batch_rows(p, i)))
            .collect();
        let mut survivors = 0;
        for (seq, values) in logged.iter().filter(|(s, _)| *s > last_sequence) {
            match this_cycle.get(seq) {
                Some(acked) => assert_eq!(
                    acked, values,
                    "cycle {cycle}: sequence {seq} holds another batch"
                ),
                None => {
                    assert!(
                        seen.in_flight
                            .iter()
                            .any(|&(p, i)| batch_rows(p, i) == *values),
                        "cycle {cycle}: logged sequence {seq} is no batch that was sent"
                    );
                    this_cycle.insert(*seq, values.clone());
                    survivors += 1;
                }
            }
        }
        let logged_seqs: std::collections::BTreeSet<u64> = logged.iter().map(|(s, _)| *s).collect();
        let covered = exported.sequence();
        for seq in seen.acked.keys() {
            assert!(
                logged_seqs.contains(seq) || *seq <= covered,
                "cycle {cycle}: acknowledged sequence {seq} is lost"
            );
        }
        for values in this_cycle.values() {
            let x: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
            expected.update(&x, None).unwrap();
        }
        total_acked += seen.acked.len();
        total_survivors += survivors;
        // 3. The merge of the partitions is one accumulation of those batches.
        let mut merged = offline[0].clone();
        for a in &offline[1..] {
            merged.merge(a).unwrap();
        }
        assert_eq!(
            merged.count().to_bits(),
            expected.count().to_bits(),
            "cycle {cycle}: rows counted once each"
        );
        assert_eq!(status["samples"].as_f64(), Some(expected.count()));
        let rel = (merged.scatter() - expected.scatter()).norm() / expected.scatter().norm();
        assert!(rel < 1e-12, "cycle {cycle}: scatter differs by {rel:e}");
        let sequence = status["sequence"].as_u64().unwrap();
        assert_eq!(
            Some(&sequence),
            this_cycle.keys().last().or(Some(&last_sequence))
        );
        last_sequence = sequence;
        server.kill();
    }
    assert!(total_acked > 0);
    let snapshots = std::fs::read_dir(&model_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snapshot-")
        })
        .count();
    assert!(
        snapshots > 0,
        "the schedule wrote no snapshot during the test"
    );
    eprintln!(
        "crash test: {CYCLES} cycles, {PRODUCERS} producers, {K} partitions: {total_acked} \
         acknowledged and {total_survivors} unacknowledged batches survived, {last_sequence} \
         sequences, in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn created_and_deleted_models_stay_so_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    app.create_autoencoder("kept", 3, 1).await;
    app.create_autoencoder("gone", 3, 1).await;
    let metrics = app.metrics().await;
    for m in [
        "streampca_wal_append_failures_total{model=\"kept\"} 0",
        "streampca_snapshot_failures_total{model=\"kept\"} 0",
        "streampca_wal_torn_records_total{model=\"kept\"} 0",
    ] {
        assert!(metrics.contains(m), "{m} missing");
    }
    let r = app
        .client
        .delete(app.url("/v1/models/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!app.metrics().await.contains("model=\"gone\""));
    assert!(app.stop().await);

    let app = spawn_app_in(dir.path()).await;
    let (s, v) = app.get_json("/v1/models").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept"]);
    assert!(app.stop().await);
}

#[tokio::test]
async fn a_model_whose_only_snapshot_is_corrupt_is_held_back_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    app.create_autoencoder("m", 4, 2).await;
    app.create_autoencoder("ok", 4, 2).await;
    app.ingest_json("m", &spiked_rows(4, 50, 1)).await;
    assert!(app.stop().await); // writes the final (and only) snapshot
    let model_dir = dir.path().join("models").join("m");
    let snap = std::fs::read_dir(&model_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snapshot-")
        })
        .expect("a snapshot was written at shutdown");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();

    let app = spawn_app_in(dir.path()).await;

    let file = snap.file_name().unwrap().to_string_lossy().into_owned();
    let (s, ready) = app.get_json("/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["held"][0]["model"], "m");
    assert!(
        ready["held"][0]["problem"]
            .as_str()
            .unwrap()
            .contains(&file),
        "{ready}"
    );
    let msg = assert_error(
        app.client
            .get(app.url("/v1/models/m"))
            .send()
            .await
            .unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "model_unavailable",
    )
    .await;
    assert!(msg.contains("--accept-data-loss"), "{msg}");
    assert!(app
        .metrics()
        .await
        .contains("streampca_model_recovery_held{model=\"m\"} 1"));
    let (s, _) = app.get_json("/v1/models/ok").await;
    assert_eq!(s, StatusCode::OK, "the other model is served");
    // Never silently replaced: the damaged file is still there, unchanged.
    assert_eq!(std::fs::read(&snap).unwrap(), bytes);
    assert!(app.stop().await);

    // The operator accepts: the complete logs are replayed from the start.
    let app = crate::helpers::spawn_app_in_with(dir.path(), |s| streampca::config::Settings {
        accept_data_loss: true,
        ..s
    })
    .await;
    assert_eq!(app.status("m").await["samples"], json!(50.0));
    let (s, _) = app.get_json("/readyz").await;
    assert_eq!(s, StatusCode::OK);
    assert!(app.stop().await);
}

#[tokio::test]
async fn decimal_rows_of_f32_values_are_logged_as_f32_and_others_as_f64() {
    use streampca::pca::BatchData;
    use streampca::persistence::{SyncMode, Wal};
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    create(&app.client, &app.address, "m").await;
    // f32 values printed as decimals (0.1f32 prints as 0.1 but is not 0.1 as an f64),
    // then one row holding an f64 that is not an f32, then small integers as CSV.
    let f32_rows: Vec<Vec<f64>> = (0..3)
        .map(|r| {
            (0..DIM)
                .map(|c| f64::from(0.1f32 * (r * DIM + c) as f32 - 1.5))
                .collect()
        })
        .collect();
    let mut f64_rows = f32_rows.clone();
    f64_rows[1][4] = 0.1;
    app.ingest_json("m", &f32_rows).await;
    app.ingest_json("m", &f64_rows).await;
    let csv = "1,2,3,4,5,6,7,8\n-8,7,-6,5,-4,3,-2,1\n";
    let r = app.post_samples("m", "text/csv", csv.into()).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert!(app.stop().await);

    let (_, rec) = Wal::open(log_path(dir.path(), "m", 0), 0, SyncMode::Never).unwrap();
    let csv_rows: Vec<Vec<f64>> = vec![
        (1..=8).map(f64::from).collect(),
        vec![-8.0, 7.0, -6.0, 5.0, -4.0, 3.0, -2.0, 1.0],
    ];
    let expected = [(4u8, &f32_rows), (8, &f64_rows), (4, &csv_rows)];
    assert_eq!(rec.records.len(), expected.len());
    for (r, (width, rows)) in rec.records.iter().zip(expected) {
        assert_eq!(r.batch.data().width(), width, "record {}", r.stamp.sequence);
        let logged: Vec<u64> = match r.batch.data() {
            BatchData::F32 { x, .. } => x.iter().map(|&v| f64::from(v).to_bits()).collect(),
            BatchData::F64 { x, .. } => x.iter().map(|v| v.to_bits()).collect(),
        };
        let sent: Vec<u64> = rows.iter().flatten().map(|v| v.to_bits()).collect();
        assert_eq!(logged, sent, "record {}", r.stamp.sequence);
    }
}
