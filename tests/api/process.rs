//! The real `streampca` binary as a child process on a free port, for the tests that
//! kill it, limit it or measure it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use streampca::persistence::snapshot;

/// A `streampca` process on a free port with its own data directory.
pub struct Server {
    pub child: Child,
    pub address: String,
    pub client: reqwest::Client,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Server {
    /// Starts the binary on `data_dir` and waits until `/readyz` answers 200.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_wrapped(data_dir, extra, &[]).await
    }

    /// [`Server::start`] with the binary run through `wrapper` (a command and its
    /// arguments, e.g. `prlimit --fsize=…`), which must `exec` the binary.
    pub async fn start_wrapped(data_dir: &Path, extra: &[&str], wrapper: &[&str]) -> Self {
        for _attempt in 0..5 {
            let port = free_port();
            let bin = env!("CARGO_BIN_EXE_streampca");
            let mut command = match wrapper.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(bin);
                    c
                }
                None => Command::new(bin),
            };
            let mut child = command
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--log")
                .arg("warn")
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let address = format!("http://127.0.0.1:{port}");
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited (e.g. the port was taken meanwhile): retry
                }
                if let Ok(r) = client.get(format!("{address}/readyz")).send().await {
                    if r.status() == StatusCode::OK {
                        return Self {
                            child,
                            address,
                            client,
                        };
                    }
                }
                assert!(Instant::now() < deadline, "server did not become ready");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("could not start the server");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn status(&self, name: &str) -> Value {
        let r = self
            .client
            .get(self.url(&format!("/v1/models/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    pub async fn export(&self, name: &str) -> snapshot::Snapshot {
        let r = self
            .client
            .get(self.url(&format!("/v1/models/{name}/snapshot")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        snapshot::decode(&r.bytes().await.unwrap()).unwrap()
    }

    /// The status code of a GET.
    pub async fn status_code(&self, path: &str) -> StatusCode {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
