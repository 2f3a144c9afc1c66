//! Cluster-mode throughput and checkpoint costs, measured against a baseline in the
//! same run. Spawns its own `nats-server` processes (one node, or three for R3) on free
//! loopback ports with temporary stores, and stops them when done.
//!
//! ```text
//! cargo run --release --example cluster_bench -- [seconds] [r1|r3]
//! ```
//!
//! Reports, at n = 784, b = 256 f32 rows per batch, 4 producers:
//! - baseline: 4 threads folding the same batches into one in-memory accumulator under
//!   a mutex (embedded mode's ingest without HTTP or the write-ahead log: an upper
//!   bound of embedded ingest);
//! - cluster: 4 tasks calling `ClusterNode::ingest` (acknowledged = stored by
//!   JetStream), then the time until the published view covers every batch;
//! - checkpoint write (encode + object store + KV commit) and load (what a failover
//!   replays first) at n = 784 and n = 4096.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use streampca::cluster::{checkpoint, ClusterNode, ClusterSettings, ModelRecord};
use streampca::model::{ModelConfig, ModelName};
use streampca::pca::OptimizerKind;
use streampca::pca::{Accumulator, Batch, BatchData, Shape};
use streampca::persistence::Position;

const DIM: usize = 784;
const ROWS: usize = 256;
const PRODUCERS: usize = 4;

/// Server processes and their stores (removed when this drops).
struct Servers {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_nats(n: usize) -> Result<(Servers, Vec<String>)> {
    let dir = tempfile::tempdir()?;
    let cluster: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for (i, c) in cluster.iter().enumerate() {
        let port = free_port()?;
        let mut cmd = Command::new("nats-server");
        cmd.args([
            "-a",
            "127.0.0.1",
            "-js",
            "-n",
            &format!("b{i}"),
            "-p",
            &port.to_string(),
        ])
        .arg("-sd")
        .arg(dir.path().join(format!("s{i}")));
        if n > 1 {
            let routes: Vec<String> = cluster
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args([
                "--cluster_name",
                "bench",
                "--cluster",
                &format!("nats://127.0.0.1:{c}"),
            ])
            .args(["--routes", &routes.join(",")]);
        }
        children.push(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("nats-server on PATH")?,
        );
        urls.push(format!("nats://127.0.0.1:{port}"));
    }
    Ok((
        Servers {
            children,
            _dir: dir,
        },
        urls,
    ))
}

fn batches(count: usize, dim: usize) -> Vec<Batch> {
    let mut rng = StdRng::seed_from_u64(11);
    (0..count)
        .map(|_| {
            let x: Vec<f32> = (0..ROWS * dim)
                .map(|i| rng.gen::<f32>() * (1.0 + (i % dim) as f32 / 100.0))
                .collect();
            Batch::new(Shape::inputs(dim), BatchData::F32 { x, y: None }).expect("valid")
        })
        .collect()
}

fn fold(acc: &mut Accumulator, b: &Batch, scratch: &mut Vec<f64>) {
    if let BatchData::F32 { x, .. } = b.data() {
        acc.update_with_scratch(x, None, scratch).expect("update");
    }
}

fn baseline(data: &Arc<Vec<Batch>>, seconds: f64) -> f64 {
    let acc = Arc::new(Mutex::new((
        Accumulator::new(DIM, None, None).expect("acc"),
        Vec::new(),
    )));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let (acc, done, data) = (acc.clone(), done.clone(), data.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while Instant::now() < deadline {
                    let b = &data[i % data.len()];
                    let mut g = acc.lock().expect("lock");
                    let (a, s) = &mut *g;
                    fold(a, b, s);
                    drop(g);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += PRODUCERS;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn cluster(
    urls: Vec<String>,
    data: &Arc<Vec<Batch>>,
    seconds: f64,
) -> Result<(f64, f64, Duration)> {
    let mut s = ClusterSettings::new(urls);
    s.node_id = "bench".into();
    let node = ClusterNode::start(s).await?;
    let config = ModelConfig {
        name: ModelName::new("bench")?,
        dim: DIM,
        components: 8,
        target_dim: None,
        half_life: None,
        optimizer: OptimizerKind::Subspace,
        tolerance: 1e-6,
        partitions: 4,
        standardize: false,
        alpha: streampca::model::config::DEFAULT_ALPHA,
    };
    node.create_model(config).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let (node, acked, data) = (node.clone(), acked.clone(), data.clone());
            tokio::spawn(async move {
                let mut i = t;
                while Instant::now() < deadline {
                    if node
                        .ingest("bench", &data[i % data.len()], None)
                        .await
                        .is_ok()
                    {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    i += PRODUCERS;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let ingest_secs = start.elapsed().as_secs_f64();
    let n = acked.load(Ordering::Relaxed);
    let last = Instant::now();
    loop {
        if let Ok(Some(v)) = node.view("bench").await {
            if v.pointer.rows == n * ROWS as u64 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = last.elapsed();
    let folded_rate = n as f64 / start.elapsed().as_secs_f64();
    node.shutdown().await;
    Ok((n as f64 / ingest_secs, folded_rate, drain))
}

async fn checkpoint_costs(urls: Vec<String>, dim: usize) -> Result<(Duration, Duration, usize)> {
    let mut s = ClusterSettings::new(urls);
    s.node_id = "ckpt".into();
    s.worker = false;
    let node = ClusterNode::start(s).await?;
    let conn = node.connection().clone();
    let mut acc = Accumulator::new(dim, None, None)?;
    let mut scratch = Vec::new();
    for b in batches(2, dim) {
        fold(&mut acc, &b, &mut scratch);
    }
    let record = ModelRecord {
        config: ModelConfig {
            name: ModelName::new(format!("ckpt{dim}"))?,
            dim,
            components: 4,
            target_dim: None,
            half_life: None,
            optimizer: OptimizerKind::Subspace,
            tolerance: 1e-6,
            partitions: 1,
            standardize: false,
            alpha: streampca::model::config::DEFAULT_ALPHA,
        },
        generation: 1,
        base_sequence: 0,
        created_ms: 0,
    };
    let mut writes = Vec::new();
    let mut loads = Vec::new();
    let mut size = 0;
    let mut rev = None;
    for _ in 0..3 {
        let t = Instant::now();
        let position = Position {
            sequence: 2,
            local: 2,
            batches: 2,
        };
        let enc = checkpoint::encode(&record, &acc, position)?;
        size = enc.len();
        let p = checkpoint::CheckpointPointer {
            seq: 1,
            covered: 1,
            batches: 2,
            rows: (2 * ROWS) as u64,
            rejected: 0,
            sequence: 2,
            local: 2,
            object: None,
            node: "ckpt".into(),
            written_ms: 0,
        };
        let (cas, p) = checkpoint::commit(&conn, &record, 0, Some(enc), p, rev).await?;
        if let streampca::cluster::store::Cas::Written(r) = cas {
            rev = Some(r);
        }
        writes.push(t.elapsed());
        let t = Instant::now();
        let back = checkpoint::load(&conn, &record, &p).await?;
        loads.push(t.elapsed());
        assert_eq!(back.count().to_bits(), acc.count().to_bits());
    }
    writes.sort();
    loads.sort();
    node.shutdown().await;
    Ok((writes[1], loads[1], size))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args.get(1).map_or(Ok(10.0), |s| s.parse())?;
    let replicas = if args.get(2).map(String::as_str) == Some("r3") {
        3
    } else {
        1
    };
    let data = Arc::new(batches(16, DIM));
    let (_servers, urls) = start_nats(replicas)?;
    tokio::time::sleep(Duration::from_secs(if replicas > 1 { 5 } else { 1 })).await;
    let base = tokio::task::spawn_blocking({
        let data = data.clone();
        move || baseline(&data, seconds)
    })
    .await?;
    let (acked, folded, drain) = cluster(urls.clone(), &data, seconds).await?;
    println!("n = {DIM}, b = {ROWS} f32, {PRODUCERS} producers, {seconds} s, R{replicas}");
    println!("baseline (in-memory fold under one lock): {base:.1} batches/s");
    println!(
        "cluster ingest (JetStream-acknowledged): {acked:.1} batches/s = {:.2}x baseline",
        acked / base
    );
    println!(
        "cluster end to end (acknowledged and folded into a published view): {folded:.1} batches/s = {:.2}x baseline; view caught up {drain:?} after the last ack",
        folded / base
    );
    for dim in [784, 4096] {
        let (w, l, size) = checkpoint_costs(urls.clone(), dim).await?;
        println!("checkpoint n = {dim}: {:.1} MB, write {w:?}, load (failover resume) {l:?} (median of 3)", size as f64 / 1e6);
    }
    Ok(())
}
