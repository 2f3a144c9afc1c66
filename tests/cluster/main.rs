//! Cluster mode against real `nats-server` processes (skipped when `nats-server` is not
//! on PATH, unless `STREAMPCA_REQUIRE_NATS=1`).

#![allow(clippy::unwrap_used, reason = "tests")]

mod failover;
mod http;
mod http_big;
mod http_failover;
mod nats;
mod support;

use std::time::{Duration, Instant};

use streampca::cluster::{ClusterError, ClusterNode};
use streampca::pca::max_principal_angle;
use streampca::persistence::snapshot;

use nats::NatsCluster;
use streampca::model::ModelName;
use support::{
    assert_same_moments, config, merged, offline, reference_components, settings, wait_rows, Source,
};

/// Largest principal angle accepted between the served components and the reference
/// eigenvectors, radians (the model's tolerance).
pub(crate) const ANGLE: f64 = 1e-6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_end_to_end() {
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    let node = ClusterNode::start(settings(nats.urls(), "a"))
        .await
        .expect("start");
    let (dim, p) = (16, 3);
    let (rec, created) = node
        .create_model(config("e2e", dim, p))
        .await
        .expect("create");
    assert!(created);
    let (again, created) = node
        .create_model(config("e2e", dim, p))
        .await
        .expect("same config");
    assert!(!created);
    assert_eq!(again.generation, rec.generation);
    let e = node
        .create_model(config("e2e", dim, p + 1))
        .await
        .unwrap_err();
    assert_eq!(e, ClusterError::ModelExists("e2e".into()));
    let mut forgetting = config("fg", dim, p);
    forgetting.half_life = Some(1000.0);
    match node.create_model(forgetting).await.unwrap_err() {
        ClusterError::InvalidParameter { name, reason } => {
            assert_eq!(name, "half_life");
            assert!(reason.contains("cluster mode"), "{reason}");
        }
        e => panic!("unexpected {e}"),
    }

    let src = Source::new(dim, 1);
    let mut acked = Vec::new();
    for id in 0..24u64 {
        let b = src.batch(id, 50, id % 2 == 1);
        let r = node.ingest("e2e", &b, None).await.expect("ingest");
        assert_eq!(r.accepted, 50);
        assert!(!r.publish.duplicate);
        acked.push(b);
    }
    let last_ack = Instant::now();
    let wrong = Source::new(dim + 1, 2).batch(0, 5, false);
    assert!(matches!(
        node.ingest("e2e", &wrong, None).await,
        Err(ClusterError::DimensionMismatch(_))
    ));
    assert!(matches!(
        node.ingest("nope", &acked[0], None).await,
        Err(ClusterError::ModelNotFound(_))
    ));

    let view = wait_rows(&node, "e2e", 24 * 50, Duration::from_secs(15)).await;
    eprintln!(
        "single node: view covering every acknowledged batch {:?} after the last ack",
        last_ack.elapsed()
    );
    let reference = offline(dim, &acked);
    assert_eq!(view.pointer.samples.to_bits(), reference.count().to_bits());
    let comps = view.components.clone().expect("fitted");
    let angle = max_principal_angle(&comps.vectors, &reference_components(&reference, p));
    assert!(
        angle <= ANGLE,
        "components {angle:e} rad from the reference"
    );

    // The export holds the K partitions' checkpoints; their merge equals an offline
    // accumulation, and their positions account for every batch.
    let exported = node.export("e2e").await.expect("export");
    let snap = snapshot::decode(&exported).expect("valid snapshot");
    assert_eq!(snap.partitions.len(), 4);
    assert_same_moments(&merged(&snap), &reference, 1e-12);
    let positions = snap.positions();
    assert_eq!(positions.iter().map(|p| p.batches).sum::<u64>(), 24);
    assert_eq!(
        snap.sequence(),
        24,
        "model sequence = the last batch's stream sequence"
    );
    assert!(
        snap.trainer.q.is_some() || snap.trainer.previous.is_some(),
        "warm start exported"
    );

    // Projection works off the served view.
    let row = src.rows(999, 1);
    let proj = comps.project(&row, p, false, true).expect("project");
    assert_eq!(proj.scores.shape(), (1, p));

    // Delete, then import the export: a new generation with the same state.
    node.delete_model("e2e").await.expect("delete");
    assert!(matches!(
        node.view("e2e").await,
        Err(ClusterError::ModelNotFound(_))
    ));
    assert!(matches!(
        node.delete_model("e2e").await,
        Err(ClusterError::ModelNotFound(_))
    ));
    let e2e = ModelName::new("e2e").unwrap();
    let (imported, replaced) = node.import(&e2e, exported.clone()).await.expect("import");
    assert!(!replaced);
    assert!(
        imported.generation > rec.generation,
        "generations are never reused"
    );
    assert_eq!(imported.base_sequence, 24);
    let view = wait_rows(&node, "e2e", 24 * 50, Duration::from_secs(15)).await;
    let angle = max_principal_angle(
        &view.components.clone().expect("fitted").vectors,
        &reference_components(&reference, p),
    );
    assert!(
        angle <= ANGLE,
        "imported model's components {angle:e} rad off"
    );
    // The imported model keeps its partitions and continues its sequences.
    let more = src.batch(100, 50, false);
    let r = node
        .ingest("e2e", &more, None)
        .await
        .expect("ingest after import");
    assert_eq!(r.sequence, Some(25));
    acked.push(more);
    let reference = offline(dim, &acked);
    wait_rows(&node, "e2e", 25 * 50, Duration::from_secs(15)).await;
    // Importing over a live model replaces it atomically with a new generation.
    let again = node.export("e2e").await.expect("export again");
    let snap = snapshot::decode(&again).expect("valid");
    assert_eq!(snap.sequence(), 25);
    assert_same_moments(&merged(&snap), &reference, 1e-12);
    let (replacing, replaced) = node.import(&e2e, exported).await.expect("replace");
    assert!(replaced);
    assert!(replacing.generation > imported.generation);
    let view = wait_rows(&node, "e2e", 24 * 50, Duration::from_secs(15)).await;
    assert_eq!(view.pointer.batches, 24);
    // Embedded-mode snapshots import too, and half_life is refused by name.
    let mut one = snapshot::decode(&again).expect("valid");
    one.config.half_life = Some(100.0);
    for p in &mut one.partitions {
        p.accumulator.half_life = Some(100.0);
    }
    let bytes = snapshot::encode(&one).expect("encode");
    match node.import(&ModelName::new("fg2").unwrap(), bytes).await {
        Err(ClusterError::InvalidParameter {
            name: "half_life", ..
        }) => {}
        other => panic!("half_life import: {other:?}"),
    }
    assert!(matches!(
        node.import(
            &ModelName::new("bad").unwrap(),
            b"SPCASNAP garbage".to_vec()
        )
        .await,
        Err(ClusterError::InvalidSnapshot(_))
    ));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_and_batches_over_max_payload() {
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    let a = ClusterNode::start(settings(nats.urls(), "a"))
        .await
        .expect("start a");
    let b = ClusterNode::start(settings(nats.urls(), "b"))
        .await
        .expect("start b");
    a.create_model(config("idem", 8, 2)).await.expect("create");
    let src = Source::new(8, 3);
    let first = a
        .ingest("idem", &src.batch(0, 20, false), Some("key-1"))
        .await
        .expect("ingest");
    // The retry goes to another node: stored once.
    let retry = b
        .ingest("idem", &src.batch(0, 20, false), Some("key-1"))
        .await
        .expect("retry");
    assert!(!first.publish.duplicate);
    assert!(retry.publish.duplicate);
    assert_eq!(retry.publish.sequence, first.publish.sequence);
    let mut acked = vec![src.batch(0, 20, false)];
    for id in 1..10 {
        let batch = src.batch(id, 20, true);
        b.ingest("idem", &batch, Some(&format!("key-{}", id + 1)))
            .await
            .expect("ingest");
        acked.push(batch);
    }
    assert!(matches!(
        a.ingest("idem", &acked[1], Some("bad key")).await,
        Err(ClusterError::InvalidParameter {
            name: "Idempotency-Key",
            ..
        })
    ));
    let v = wait_rows(&a, "idem", 200, Duration::from_secs(15)).await;
    let reference = offline(8, &acked);
    assert_eq!(v.pointer.samples.to_bits(), reference.count().to_bits());
    assert_same_moments(
        &merged(&snapshot::decode(&a.export("idem").await.expect("export")).expect("snapshot")),
        &reference,
        1e-12,
    );

    // 256 × 4096 f32 = 4 MiB: over the default 1 MiB max_payload, sent as one atomic batch.
    let conn = a.connection();
    assert_eq!(conn.max_payload, 1 << 20);
    let (dim, rows) = (4096, 256);
    a.create_model(config("big", dim, 2))
        .await
        .expect("create big");
    let big_src = Source::new(64, 4);
    let big = |id: u64| {
        let mut x = Vec::with_capacity(rows * dim);
        for r in big_src.rows(id, rows).chunks(64) {
            for j in 0..dim {
                x.push((r[j % 64] + j as f64 * 1e-3) as f32);
            }
        }
        streampca::pca::Batch::new(
            streampca::pca::Shape::inputs(dim),
            streampca::pca::BatchData::F32 { x, y: None },
        )
        .expect("valid")
    };
    let r = a
        .ingest("big", &big(0), Some("big-1"))
        .await
        .expect("big batch accepted");
    assert!(r.publish.messages >= 5, "{} messages", r.publish.messages);
    let dup = b
        .ingest("big", &big(0), Some("big-1"))
        .await
        .expect("retry of the big batch");
    assert!(dup.publish.duplicate);

    // A chunked batch whose publisher dies after two of its chunks: never stored, never folded.
    let record = a
        .models()
        .into_iter()
        .find(|m| m.config.name.as_str() == "big")
        .expect("record");
    let whole = streampca::cluster::wire::encode(&big(1));
    let chunks = streampca::cluster::wire::chunks(&whole, [1; 16], conn.max_payload - 1024);
    assert!(chunks.len() >= 5);
    let dying = async_nats::connect(nats.urls()[0].clone())
        .await
        .expect("connect");
    for k in 0..record.partitions() {
        let subject = conn.names.partition_subject("big", record.generation, k);
        streampca::cluster::publish::publish_partial(
            &dying,
            &subject,
            &chunks,
            &format!("k:partial-{k}"),
            2,
            Duration::from_secs(5),
        )
        .await
        .expect("partial publish");
    }
    drop(dying);
    let v = wait_rows(&a, "big", rows as u64, Duration::from_secs(60)).await;
    assert_eq!(v.pointer.batches, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stream = conn
        .js
        .get_stream(conn.names.stream("big", record.generation))
        .await
        .expect("stream");
    let info = stream.get_info().await.expect("info");
    assert_eq!(
        info.state.last_sequence as usize, r.publish.messages,
        "only the committed batch's chunks are stored"
    );
    let v = a.view("big").await.expect("view").expect("some");
    assert_eq!((v.pointer.rows, v.pointer.batches), (rows as u64, 1));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_stream_is_reported_and_never_folded_past() {
    let Some(nats) = NatsCluster::single() else {
        return;
    };
    let mut ps = settings(nats.urls(), "p");
    ps.worker = false;
    let p = ClusterNode::start(ps).await.expect("start p");
    let mut one = config("gap", 4, 1);
    one.partitions = 1;
    let (rec, _) = p.create_model(one).await.expect("create");
    let src = Source::new(4, 5);
    for id in 0..6 {
        p.ingest("gap", &src.batch(id, 10, false), None)
            .await
            .expect("ingest");
    }
    // Something other than the trainer removes unfolded messages (limits, an operator's
    // purge): sequences 1 and 2 are gone before any node folded them.
    let conn = p.connection();
    let stream = conn
        .js
        .get_stream(conn.names.stream("gap", rec.generation))
        .await
        .expect("stream");
    stream.purge().sequence(3).await.expect("purge");
    let ws = settings(nats.urls(), "w");
    let w = ClusterNode::start(ws).await.expect("start w");
    let start = Instant::now();
    let reported = "streampca_cluster_fold_gaps_total{model=\"gap\",partition=\"0\"}";
    while !w
        .metrics()
        .gather()
        .lines()
        .any(|l| l.starts_with(reported))
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gap never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = w.view("gap").await.expect("model exists");
    let rows = view.map_or(0, |v| v.pointer.rows);
    assert_eq!(rows, 0, "batches after the gap must not be folded past it");
    let status = w.status("gap").await.expect("status");
    assert!(status.partitions[0]
        .checkpoint
        .as_ref()
        .is_none_or(|c| c.seq == 0));
    w.shutdown().await;
    p.shutdown().await;
}
