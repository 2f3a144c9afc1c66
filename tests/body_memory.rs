//! The per-request memory bound, measured on the real binary: the peak resident size of
//! a child server process (VmHWM in /proc/PID/status, reset through clear_refs before
//! each case) gained while it refuses or answers large bodies, against the bound the
//! README states. Linux only; elsewhere the test returns early.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DIM: usize = 784;

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_streampca"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while post(s.port, "GET", "/healthz", "", b"").is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// One HTTP/1.1 request; the status code.
fn post(port: u16, method: &str, path: &str, ct: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    // The server may answer (and stop reading) before the whole body is sent.
    let _ = s.write_all(body);
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    out.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {out:?}")))
}

fn kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Peak resident bytes gained while `f` runs.
fn peak_gain(s: &Server, f: impl FnOnce()) -> u64 {
    std::fs::write(format!("/proc/{}/clear_refs", s.child.id()), "5").unwrap();
    let before = kib(s.child.id(), "VmRSS");
    f();
    (kib(s.child.id(), "VmHWM").saturating_sub(before)) * 1024
}

/// Rows of `DIM` values as `json.dumps` prints float32 data, up to `size` bytes.
fn float_rows(size: usize) -> Vec<u8> {
    let row: Vec<String> = (0..DIM)
        .map(|i| format!("{:?}", f64::from(((i as f32) * 0.737_1).sin())))
        .collect();
    let row = format!("[{}]", row.join(", "));
    let n = (size - 16) / (row.len() + 2);
    format!("{{\"x\": [{}]}}", vec![row; n].join(", ")).into_bytes()
}

#[test]
fn large_bodies_cost_at_most_twice_their_size_in_resident_memory() {
    if !std::path::Path::new("/proc/self/clear_refs").exists() {
        return;
    }
    let s = start();
    let model = format!(r#"{{"name": "m", "dim": {DIM}, "components": 16}}"#);
    assert_eq!(
        post(
            s.port,
            "POST",
            "/v1/models",
            "application/json",
            model.as_bytes()
        )
        .unwrap(),
        201
    );
    // Warm up the pools the requests below use.
    let one = float_rows(20_000);
    assert_eq!(
        post(
            s.port,
            "POST",
            "/v1/models/m/project",
            "application/json",
            &one
        )
        .unwrap(),
        409
    );

    // The issue's body: 32 MiB of empty rows, refused at the first row.
    let n = (32 << 20) / 4;
    let empty = format!("{{\"x\": [{}]}}", vec!["[]"; n].join(", ")).into_bytes();
    let gained = peak_gain(&s, || {
        let st = post(
            s.port,
            "POST",
            "/v1/models/m/samples",
            "application/json",
            &empty,
        );
        assert_eq!(st.unwrap(), 422);
    });
    eprintln!("refused empty rows: {} bytes, peak +{gained}", empty.len());
    assert!(
        gained <= 2 * empty.len() as u64,
        "a refused body of {} bytes raised the peak by {gained}",
        empty.len()
    );

    // Eight concurrent 8 MiB projection bodies of full-precision rows, parsed whole
    // (then 409: the model has no fit yet).
    let body = std::sync::Arc::new(float_rows(8 << 20));
    let gained = peak_gain(&s, || {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let body = body.clone();
                let port = s.port;
                std::thread::spawn(move || {
                    post(
                        port,
                        "POST",
                        "/v1/models/m/project",
                        "application/json",
                        &body,
                    )
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), 409);
        }
    });
    eprintln!("8 projections: {} bytes each, peak +{gained}", body.len());
    assert!(
        gained <= 8 * 2 * body.len() as u64,
        "eight bodies of {} bytes raised the peak by {gained}",
        body.len()
    );
}
