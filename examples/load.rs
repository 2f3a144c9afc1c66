//! End-to-end load tool: streams a data set to a running streampca server over HTTP with
//! N concurrent producers, or fires projection queries at a given concurrency, and
//! reports throughput and latency percentiles.
//!
//! ```text
//! cargo run --release --example load -- ingest --url http://127.0.0.1:8080 \
//!     --data fashion-mnist --producers 4 --format binary --components 16
//! cargo run --release --example load -- project --url http://127.0.0.1:8080 \
//!     --model fashion --concurrency 16 --seconds 10
//! ```
//!
//! Data sources: `fashion-mnist` (Debian's `dataset-fashion-mnist`, 60 000 × 784),
//! `digits` (the 1 797 × 64 handwritten digits in `tests/data/`), `synthetic:N` (a
//! seeded stream with a known geometric spectrum), or a path to a raw little-endian f32
//! file (`--dim` required). The last line printed is a JSON summary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Load generator for a running streampca server")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Stream a data set as mini-batches.
    Ingest(IngestArgs),
    /// Fire projection requests at a fitted model.
    Project(ProjectArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Json,
    Binary,
}

#[derive(clap::Args)]
struct IngestArgs {
    #[arg(long, env = "STREAMPCA_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Model name; created (or reused) with --components.
    #[arg(long, default_value = "load")]
    model: String,
    /// `fashion-mnist`, `digits`, `synthetic:N`, or a raw little-endian f32 file.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Row length for raw files.
    #[arg(long)]
    dim: Option<usize>,
    /// Use at most this many rows.
    #[arg(long)]
    rows: Option<usize>,
    /// Send the rows this many times (longer runs: start-up and the first fit weigh less).
    #[arg(long, default_value_t = 1)]
    passes: usize,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, value_enum, default_value_t = Format::Binary)]
    format: Format,
    #[arg(long, default_value_t = 16)]
    components: usize,
    /// Partitions of the model (default: the server's, one per CPU up to 8).
    #[arg(long)]
    partitions: Option<usize>,
    /// Delete the model first, so every run starts from zero samples.
    #[arg(long)]
    fresh: bool,
    /// Wait at most this long after the last batch for `converged`.
    #[arg(long, default_value_t = 120)]
    converge_timeout: u64,
    /// Write the components every this many acknowledged batches to --trace as NDJSON.
    #[arg(long, default_value_t = 0)]
    trace_every: usize,
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ProjectArgs {
    #[arg(long, env = "STREAMPCA_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "load")]
    model: String,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rows per projection request.
    #[arg(long, default_value_t = 1)]
    rows: usize,
    #[arg(long)]
    k: Option<usize>,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().mode {
        Mode::Ingest(a) => ingest(a).await,
        Mode::Project(a) => project(a).await,
    }
}

/// Row-major f32 rows and their length.
fn load_data(spec: &str, dim: Option<usize>, limit: Option<usize>) -> Result<(Vec<f32>, usize)> {
    let (mut rows, n) = if spec == "fashion-mnist" {
        let images = streampca::datasets::fashion_mnist_train()?.with_context(|| {
            format!(
                "Fashion-MNIST is not in {} (apt-get install {})",
                streampca::datasets::fashion_mnist_dir().display(),
                streampca::datasets::FASHION_MNIST_PACKAGE
            )
        })?;
        (images.to_f32(), images.dim)
    } else if spec == "digits" {
        let images = streampca::datasets::digits()?;
        (images.to_f32(), images.dim)
    } else if let Some(n) = spec.strip_prefix("synthetic:") {
        let n: usize = n.parse().context("synthetic:N needs a dimension")?;
        (synthetic(n, limit.unwrap_or(50_000)), n)
    } else {
        let n = dim.context("--dim is required for raw f32 files")?;
        let bytes = std::fs::read(spec).with_context(|| format!("reading {spec}"))?;
        if bytes.len() % (4 * n) != 0 {
            bail!(
                "{spec}: {} bytes is not a whole number of {n}-float rows",
                bytes.len()
            );
        }
        (
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            n,
        )
    };
    if let Some(limit) = limit {
        rows.truncate(limit * n);
    }
    Ok((rows, n))
}

/// A seeded stream with eigenvalues 0.9^i along a random rotation of the axes (by a
/// product of random Householder reflections, cheap at any n), plus a mean offset.
pub fn synthetic(n: usize, rows: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(42);
    let reflectors: Vec<Vec<f64>> = (0..4)
        .map(|_| {
            let v: Vec<f64> = (0..n)
                .map(|_| rng.sample(rand_distr::StandardNormal))
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect();
    let scale: Vec<f64> = (0..n).map(|i| 0.9f64.powi(i as i32).sqrt()).collect();
    let mut out = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        let mut z: Vec<f64> = scale
            .iter()
            .map(|s| s * rng.sample::<f64, _>(rand_distr::StandardNormal))
            .collect();
        for v in &reflectors {
            let d: f64 = z.iter().zip(v).map(|(a, b)| a * b).sum();
            z.iter_mut().zip(v).for_each(|(a, b)| *a -= 2.0 * d * b);
        }
        out.extend(z.iter().map(|x| (x + 3.0) as f32));
    }
    out
}

fn encode(rows: &[f32], n: usize, format: Format) -> (Vec<u8>, &'static str) {
    match format {
        Format::Binary => (
            rows.iter().flat_map(|v| v.to_le_bytes()).collect(),
            "application/octet-stream",
        ),
        Format::Json => {
            let x: Vec<&[f32]> = rows.chunks_exact(n).collect();
            (
                serde_json::to_vec(&json!({ "x": x })).unwrap_or_default(),
                "application/json",
            )
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

async fn check(resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("server answered {status}: {body}");
    }
    Ok(body)
}

async fn ingest(a: IngestArgs) -> Result<()> {
    let (rows, n) = load_data(&a.data, a.dim, a.rows)?;
    anyhow::ensure!(a.passes >= 1, "--passes must be at least 1");
    let total_rows = rows.len() / n * a.passes;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.producers)
        .build()?;
    let base = a.url.trim_end_matches('/').to_string();
    if a.fresh {
        let _ = client
            .delete(format!("{base}/v1/models/{}", a.model))
            .send()
            .await?;
    }
    let create = client
        .post(format!("{base}/v1/models"))
        .json(&{
            let mut spec = json!({ "name": a.model, "dim": n, "components": a.components });
            if let Some(k) = a.partitions {
                spec["partitions"] = json!(k);
            }
            spec
        })
        .send()
        .await?;
    if !(create.status().is_success() || create.status() == reqwest::StatusCode::CONFLICT) {
        check(create).await?;
    }
    // Encode every batch before the clock starts: the producers measure the server.
    // `Bytes`: a retry or a producer's send shares the buffer instead of copying it.
    let batches: Vec<(bytes::Bytes, usize)> = rows
        .chunks(a.batch * n)
        .map(|c| (bytes::Bytes::from(encode(c, n, a.format).0), c.len() / n))
        .collect();
    let content_type = encode(&[], n, a.format).1;
    let batches = Arc::new(batches);
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total_rows as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut trace = match &a.trace {
        Some(p) => {
            Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => None,
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.producers {
        let (client, batches, next, acked, bar) = (
            client.clone(),
            batches.clone(),
            next.clone(),
            acked.clone(),
            bar.clone(),
        );
        let url = format!("{base}/v1/models/{}/samples", a.model);
        let passes = a.passes;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= batches.len() * passes {
                    break;
                }
                let (body, batch_rows) = &batches[i % batches.len()];
                let t0 = Instant::now();
                loop {
                    let resp = client
                        .post(&url)
                        .header("content-type", content_type)
                        .body(body.clone())
                        .send()
                        .await?;
                    if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    check(resp).await?;
                    break;
                }
                latencies.push(t0.elapsed().as_secs_f64());
                acked.fetch_add(1, Ordering::Relaxed);
                bar.inc(*batch_rows as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    // Optional trace of the components while the stream is ingested.
    let mut traced = 0;
    if trace.is_some() && a.trace_every > 0 {
        while tasks.iter().any(|t| !t.is_finished()) {
            let done = acked.load(Ordering::Relaxed);
            if done >= traced + a.trace_every {
                traced = done;
                let comps = check(
                    client
                        .get(format!("{base}/v1/models/{}/components", a.model))
                        .send()
                        .await?,
                )
                .await?;
                if let Some(f) = trace.as_mut() {
                    use std::io::Write;
                    writeln!(
                        f,
                        "{}",
                        json!({ "elapsed": start.elapsed().as_secs_f64(), "batches": done, "components": comps })
                    )?;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    latencies.sort_by(f64::total_cmp);
    // Time from the last acknowledged batch until the model reports `converged`.
    let wait = Instant::now();
    let converged_after = loop {
        let status = check(
            client
                .get(format!("{base}/v1/models/{}", a.model))
                .send()
                .await?,
        )
        .await?;
        // Converged on the latest batch: the published fit saw every acknowledged batch.
        let caught_up = status["fitted_sequence"].as_u64() == status["sequence"].as_u64();
        if caught_up && status["converged"].as_bool() == Some(true) {
            break Some(wait.elapsed().as_secs_f64());
        }
        if wait.elapsed() > Duration::from_secs(a.converge_timeout) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let summary = json!({
        "mode": "ingest",
        "format": if a.format == Format::Json { "json" } else { "binary" },
        "dim": n,
        "rows": total_rows,
        "batch": a.batch,
        "producers": a.producers,
        "seconds": elapsed,
        "rows_per_second": total_rows as f64 / elapsed,
        "latency_p50_ms": percentile(&latencies, 0.5) * 1e3,
        "latency_p99_ms": percentile(&latencies, 0.99) * 1e3,
        "converged_after_seconds": converged_after,
    });
    eprintln!(
        "{} rows in {:.2} s: {:.0} rows/s; latency p50 {:.2} ms, p99 {:.2} ms; converged {} after the last batch",
        total_rows,
        elapsed,
        total_rows as f64 / elapsed,
        percentile(&latencies, 0.5) * 1e3,
        percentile(&latencies, 0.99) * 1e3,
        converged_after.map_or("never (timeout)".to_string(), |s| format!("{s:.3} s")),
    );
    println!("{summary}");
    Ok(())
}

async fn project(a: ProjectArgs) -> Result<()> {
    let client = reqwest::Client::new();
    let base = a.url.trim_end_matches('/').to_string();
    let comps = check(
        client
            .get(format!("{base}/v1/models/{}/components", a.model))
            .send()
            .await?,
    )
    .await?;
    let mean: Vec<f64> =
        serde_json::from_value(comps["mean"].clone()).context("components response has no mean")?;
    let n = mean.len();
    let mut rng = StdRng::seed_from_u64(7);
    let x: Vec<Vec<f64>> = (0..a.rows)
        .map(|_| mean.iter().map(|m| m + rng.gen_range(-1.0..1.0)).collect())
        .collect();
    let mut body = json!({ "x": x });
    if let Some(k) = a.k {
        body["k"] = json!(k);
    }
    let body = Arc::new(serde_json::to_vec(&body)?);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (client, body) = (client.clone(), body.clone());
        let url = format!("{base}/v1/models/{}/project", a.model);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body((*body).clone())
                    .send()
                    .await?;
                check(resp).await?;
                lat.push(t0.elapsed().as_secs_f64());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let summary = json!({
        "mode": "project",
        "dim": n,
        "concurrency": a.concurrency,
        "requests": lat.len(),
        "qps": lat.len() as f64 / elapsed,
        "latency_p50_ms": percentile(&lat, 0.5) * 1e3,
        "latency_p99_ms": percentile(&lat, 0.99) * 1e3,
    });
    eprintln!(
        "{} projections in {:.1} s: {:.0} QPS; p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        elapsed,
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3
    );
    println!("{summary}");
    Ok(())
}
