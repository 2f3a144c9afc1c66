//! Three nats-server nodes (R3) and three real `streampca --nats` binaries on
//! 127.0.0.1: four producers post to the three nodes in turn while (a) one streampca
//! node is SIGKILLed and restarted and (b) the stream leader's nats-server is SIGKILLed
//! and restarted. Afterwards every node serves exactly the acknowledged rows (each
//! acknowledged batch folded once), components within 1e-6 rad of a reference
//! eigensolver on exactly those rows, and producers saw no 5xx but 503 with
//! `Retry-After`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use streampca::cluster::names::Names;
use streampca::pca::{max_principal_angle, Batch};

use crate::http::Server;
use crate::nats::{stream_leader, NatsCluster};
use crate::support::{offline, reference_components, Source};
use crate::ANGLE;

const DIM: usize = 8;
const ROWS: usize = 32;

#[derive(Default)]
struct Seen {
    /// Batch ids acknowledged (200), once each.
    acked: Vec<u64>,
    /// 5xx answers other than 503 with Retry-After: (status, body).
    bad: Vec<(u16, String)>,
    /// 503s with Retry-After.
    retried: usize,
    /// Requests that failed below HTTP (the killed node).
    refused: usize,
    /// Time of each acknowledgement.
    acks_at: Vec<Instant>,
}

async fn produce(
    p: u64,
    bases: Arc<RwLock<Vec<String>>>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    src: Arc<Source>,
) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        let id = p * 100_000 + i;
        let v = src.rows(id, ROWS);
        let rows: Vec<&[f64]> = v.chunks(DIM).collect();
        let body = serde_json::to_vec(&json!({ "x": rows })).expect("json");
        let mut attempt = 0usize;
        loop {
            let base = bases.read().unwrap()[(p as usize + i as usize + attempt) % 3].clone();
            attempt += 1;
            let r = c
                .post(format!("{base}/v1/models/fo/samples"))
                .header("content-type", "application/json")
                .header("idempotency-key", format!("b-{id}"))
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => {
                    let mut s = seen.lock().unwrap();
                    s.acked.push(id);
                    s.acks_at.push(Instant::now());
                    break;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r.headers().contains_key("retry-after");
                    let text = r.text().await.unwrap_or_default();
                    let mut s = seen.lock().unwrap();
                    if status == 503 && retry_after {
                        s.retried += 1;
                    } else {
                        s.bad.push((status, text));
                        break;
                    }
                }
                Err(_) => seen.lock().unwrap().refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(attempt < 400, "batch {id} never acknowledged");
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

async fn status(c: &reqwest::Client, base: &str) -> Option<Value> {
    let r = c.get(format!("{base}/v1/models/fo")).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_binaries_survive_killed_node_and_stream_leader() {
    let Some(mut nats) = NatsCluster::three() else {
        return;
    };
    nats.wait_healthy(Duration::from_secs(30));
    let urls = nats.urls();
    let mut servers = Vec::new();
    for id in ["a", "b", "c"] {
        servers.push(Server::start(&urls, id, &["--cluster-replicas", "3"]).await);
    }
    let bases = Arc::new(RwLock::new(
        servers.iter().map(|s| s.base.clone()).collect::<Vec<_>>(),
    ));
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/v1/models", servers[0].base))
        .json(&json!({ "name": "fo", "dim": DIM, "components": 3 }))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.expect("json");
    let generation = created["generation"].as_u64().expect("generation");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let src = Arc::new(Source::new(DIM, 23));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            tokio::spawn(produce(
                p,
                bases.clone(),
                stop.clone(),
                seen.clone(),
                src.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // (a) SIGKILL the streampca node folding partition 0; its partitions move on.
    let names = ["a", "b", "c"];
    let (victim, held) = loop {
        if let Some(s) = status(&c, &servers[0].base).await {
            let parts = s["partition_states"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(owner) = parts.first().and_then(|p| p["owner"].as_str()) {
                let held: Vec<usize> = parts
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p["owner"] == owner)
                    .map(|(k, _)| k)
                    .collect();
                break (names.iter().position(|n| *n == owner).expect("ours"), held);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let observer = servers[(victim + 1) % 3].base.clone();
    let killed = Instant::now();
    servers[victim].kill();
    let failover = loop {
        if let Some(s) = status(&c, &observer).await {
            let parts = s["partition_states"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let moved = held
                .iter()
                .all(|&k| parts[k]["owner"].is_string() && parts[k]["owner"] != names[victim]);
            if moved {
                break killed.elapsed();
            }
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    servers[victim] = Server::start(&urls, names[victim], &["--cluster-replicas", "3"]).await;
    bases.write().unwrap()[victim] = servers[victim].base.clone();
    let restarted = killed.elapsed();
    eprintln!("streampca SIGKILL of node {} (partitions {held:?}): re-owned after {failover:?} (lease TTL 3 s); node back after {restarted:?}", names[victim]);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // (b) SIGKILL the stream leader's nats-server, restart it after 3 s.
    let stream = Names::new("spca").stream("fo", generation);
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().expect("url")).collect();
    let probe = async_nats::connect(addrs).await.expect("connect");
    let js = async_nats::jetstream::new(probe);
    let leader = stream_leader(&js, &stream).await.expect("stream leader");
    let idx = nats.index_of(&leader).expect("leader is one of ours");
    let before = seen.lock().unwrap().acked.len();
    let killed = Instant::now();
    nats.kill(idx);
    let first_ack = loop {
        let first = seen.lock().unwrap().acks_at.get(before..).and_then(|a| {
            a.iter()
                .find(|t| **t > killed)
                .map(|t| t.duration_since(killed))
        });
        if let Some(d) = first {
            break d;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no ack after the leader died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed())).await;
    nats.restart(idx);
    nats.wait_healthy(Duration::from_secs(30));
    let healthy = killed.elapsed();
    let gap = {
        let s = seen.lock().unwrap();
        let mut at: Vec<Instant> = s.acks_at.iter().copied().filter(|t| *t > killed).collect();
        at.sort_unstable();
        std::iter::once(killed)
            .chain(at)
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default()
    };
    eprintln!("stream leader SIGKILL: first ack {first_ack:?} after, longest pause between acks {gap:?}; server back and healthy after {healthy:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    for p in producers {
        p.await.expect("producer");
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.bad.is_empty(),
        "5xx without Retry-After or other errors: {:?}",
        seen.bad
    );
    let mut ids = seen.acked.clone();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), seen.acked.len(), "a batch acknowledged twice");
    let rows = (ids.len() * ROWS) as f64;
    eprintln!(
        "{} batches acknowledged, {} 503 with Retry-After, {} refused connections",
        ids.len(),
        seen.retried,
        seen.refused
    );
    let batches: Vec<Batch> = ids.iter().map(|&id| src.batch(id, ROWS, false)).collect();
    let want = reference_components(&offline(DIM, &batches), 3);

    let stopped = Instant::now();
    let mut first = None;
    for s in &servers {
        loop {
            let r = c
                .get(format!("{}/v1/models/fo/components", s.base))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status() == 200 {
                    let v: Value = r.json().await.expect("json");
                    assert!(
                        v["samples"].as_f64().unwrap() <= rows,
                        "more rows than acknowledged: {}",
                        v["samples"]
                    );
                    if v["samples"].as_f64() == Some(rows) && v["converged"] == true {
                        let cols = v["components"].as_array().unwrap().clone();
                        let got = nalgebra::DMatrix::from_fn(DIM, cols.len(), |r, c| {
                            cols[c][r].as_f64().unwrap()
                        });
                        let angle = max_principal_angle(&got, &want);
                        assert!(angle <= ANGLE, "{}: {angle:e} rad", s.base);
                        if let Some(f) = &first {
                            let d: nalgebra::DMatrix<f64> = &got - f;
                            assert!(d.amax() <= 1e-12, "nodes disagree by {:e}", d.amax());
                        }
                        first = Some(got);
                        break;
                    }
                }
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(30),
                "{} never served {rows} rows",
                s.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "every node served exactly the acknowledged rows {:?} after ingest stopped",
        stopped.elapsed()
    );
}
