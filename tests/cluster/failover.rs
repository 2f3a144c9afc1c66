//! Three nats-server nodes (R3) and three streampca nodes, one of them a separate
//! process: producers keep posting while that node is SIGKILLed and restarted, and
//! while the stream leader's nats-server is SIGKILLed and restarted. Afterwards every
//! acknowledged batch is folded exactly once on every node.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streampca::cluster::{ClusterError, ClusterNode};
use streampca::pca::max_principal_angle;
use streampca::persistence::snapshot;

use crate::nats::{stream_leader, NatsCluster};
use crate::support::{
    assert_same_moments, config, merged, offline, reference_components, settings, wait_rows, Source,
};
use crate::ANGLE;

/// Entry point of the node processes [`three_nodes_survive_killed_worker_and_leader`]
/// spawns (it re-runs this test binary with `--ignored --exact` and the environment
/// below); does nothing when run without it.
#[test]
#[ignore = "entry point of a node process spawned by the failover test"]
fn cluster_node_process() {
    let (Ok(urls), Ok(id)) = (
        std::env::var("STREAMPCA_CHILD_NATS"),
        std::env::var("STREAMPCA_CHILD_NODE"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let _node = ClusterNode::start(settings(urls.split(',').map(str::to_owned).collect(), &id))
            .await
            .expect("child node start");
        println!("node-ready");
        std::future::pending::<()>().await;
    });
}

/// A streampca node in its own process, SIGKILLed on drop.
struct NodeProcess {
    child: Child,
}

impl NodeProcess {
    fn spawn(urls: &[String], id: &str) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args([
                "failover::cluster_node_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STREAMPCA_CHILD_NATS", urls.join(","))
            .env("STREAMPCA_CHILD_NODE", id)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node process");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let ready = line.contains("node-ready");
                let _ = tx.send((ready, line));
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok((true, _)) => break,
                Ok((false, line)) => seen.push(line),
                Err(e) => panic!("node process not ready ({e}); it printed {seen:?}"),
            }
        }
        Self { child }
    }

    /// SIGKILL by pid.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn owners(node: &ClusterNode, name: &str) -> Vec<Option<String>> {
    let s = node.status(name).await.expect("status");
    s.partitions
        .into_iter()
        .map(|p| p.owner)
        .chain([s.trainer])
        .collect()
}

async fn wait_for<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_survive_killed_worker_and_leader() {
    let Some(mut nats) = NatsCluster::three() else {
        return;
    };
    let urls = nats.urls();
    let (dim, p, rows) = (16usize, 3usize, 32usize);
    let mut c = NodeProcess::spawn(&urls, "c");
    let mut ps = settings(urls.clone(), "p");
    ps.worker = false;
    let pn = ClusterNode::start(ps).await.expect("start p");
    assert_eq!(pn.connection().replicas, 3, "R3 on a 3-node cluster");
    let (rec, _) = pn.create_model(config("fo", dim, p)).await.expect("create");
    let stream = pn.connection().names.stream("fo", rec.generation);
    let on_c = |o: &Vec<Option<String>>| o.iter().all(|x| x.as_deref() == Some("c"));
    wait_for(
        Duration::from_secs(30),
        "node c owns every role",
        || async { on_c(&owners(&pn, "fo").await) },
    )
    .await;
    let a = ClusterNode::start(settings(urls.clone(), "a"))
        .await
        .expect("start a");
    let b = ClusterNode::start(settings(urls.clone(), "b"))
        .await
        .expect("start b");
    let nodes = [pn.clone(), a.clone(), b.clone()];

    let src = Arc::new(Source::new(dim, 7));
    let acked: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let unavailable = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producing = Instant::now();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let (nodes, src, acked, failures, unavailable) = (
                nodes.clone(),
                src.clone(),
                acked.clone(),
                failures.clone(),
                unavailable.clone(),
            );
            tokio::spawn(async move {
                let mut turn = t as usize;
                for i in 0..90u64 {
                    let id = t * 1000 + i;
                    let single = i % 2 == 0;
                    let batch = src.batch(id, rows, single);
                    let key = format!("p{t}-{i}");
                    let deadline = Instant::now() + Duration::from_secs(90);
                    loop {
                        turn += 1;
                        match nodes[turn % 3].ingest("fo", &batch, Some(&key)).await {
                            Ok(_) => {
                                acked.lock().expect("lock").push((id, single));
                                break;
                            }
                            Err(ClusterError::Unavailable { retry_after, .. })
                                if Instant::now() < deadline =>
                            {
                                unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                // What an HTTP client does with 503 + Retry-After: retry the
                                // same key, here on the next node.
                                tokio::time::sleep(retry_after.min(Duration::from_millis(500)))
                                    .await;
                            }
                            Err(e) => {
                                failures.lock().expect("lock").push(format!("{key}: {e}"));
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(180)).await;
                }
            })
        })
        .collect();

    // (a) SIGKILL the node that owns every partition and the trainer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    c.kill();
    let survivors =
        |o: &Vec<Option<String>>| o.iter().all(|x| matches!(x.as_deref(), Some("a" | "b")));
    let failover = wait_for(
        Duration::from_secs(30),
        "a and b take over every role",
        || async { survivors(&owners(&pn, "fo").await) },
    )
    .await;
    eprintln!("worker SIGKILL: every partition and the trainer owned by a survivor after {failover:?} (lease TTL 3 s)");
    drop(c);
    let c2 = NodeProcess::spawn(&urls, "c");
    let _ = killed;

    // (b) SIGKILL the stream leader's nats-server, restart it after 3 s.
    let leader = stream_leader(&pn.connection().js, &stream)
        .await
        .expect("stream leader");
    let idx = nats.index_of(&leader).expect("leader is one of ours");
    // Ask a surviving server (a client of the killed one would first spend its request
    // timeout finding out).
    let survivor = async_nats::connect(urls[(idx + 1) % 3].clone())
        .await
        .expect("connect to a survivor");
    let mut js = async_nats::jetstream::new(survivor);
    js.set_timeout(Duration::from_millis(500));
    let killed = Instant::now();
    nats.kill(idx);
    let new_leader = wait_for(Duration::from_secs(30), "a new stream leader", || {
        let (js, stream, leader) = (js.clone(), stream.clone(), leader.clone());
        async move {
            stream_leader(&js, &stream)
                .await
                .is_some_and(|l| l != leader)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.restart(idx);
    let nats = tokio::task::spawn_blocking(move || {
        nats.wait_healthy(Duration::from_secs(60));
        nats
    })
    .await
    .expect("join");
    let recovered = killed.elapsed();
    eprintln!("stream leader SIGKILL: new leader after {new_leader:?}; killed server back and healthy after {recovered:?}");

    for h in producers {
        h.await.expect("producer");
    }
    let last_ack = Instant::now();
    eprintln!(
        "producers: {} batches acknowledged in {:?}; {} answers were 503 (retried with the same key)",
        acked.lock().expect("lock").len(),
        producing.elapsed(),
        unavailable.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(
        *failures.lock().expect("lock"),
        Vec::<String>::new(),
        "errors other than 503"
    );
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), 4 * 90);
    let total = (acked.len() * rows) as u64;
    let mut views = Vec::new();
    for n in &nodes {
        views.push(wait_rows(n, "fo", total, Duration::from_secs(60)).await);
        eprintln!(
            "node {}: view covering every acknowledged batch {:?} after the last ack",
            n.node_id(),
            last_ack.elapsed()
        );
    }
    let batches: Vec<_> = acked
        .iter()
        .map(|&(id, single)| src.batch(id, rows, single))
        .collect();
    let reference = offline(dim, &batches);
    let first = views[0].components.clone().expect("fitted");
    for v in &views {
        assert_eq!(
            v.pointer.samples.to_bits(),
            reference.count().to_bits(),
            "samples = acknowledged rows"
        );
        let c = v.components.clone().expect("fitted");
        assert!(
            (&c.vectors - &first.vectors).amax() <= 1e-12,
            "nodes disagree"
        );
    }
    let angle = max_principal_angle(&first.vectors, &reference_components(&reference, p));
    assert!(
        angle <= ANGLE,
        "components {angle:e} rad from the reference"
    );
    let snap = snapshot::decode(&b.export("fo").await.expect("export")).expect("snapshot");
    assert_eq!(snap.partitions.len(), 4);
    assert_same_moments(&merged(&snap), &reference, 1e-12);
    drop(c2);
    for n in nodes {
        n.shutdown().await;
    }
    drop(nats);
}
