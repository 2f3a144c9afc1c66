//! Body parsers on a 256 × 784 batch of full-precision float32 values, printed as
//! Python's `json.dumps` prints `float(np.float32(v))` (the shortest repr of the widened
//! f64, `", "` between values): the streaming parsers of `streampca::format` against the
//! old paths (JSON: serde_json into `Vec<Vec<f64>>`, then flattening and the value check;
//! NDJSON and CSV: lines split and each field parsed by std), and the number-parsing
//! candidates side by side on the same tokens.
//!
//! Run: `cargo bench --bench parse`.

#![allow(clippy::unwrap_used, reason = "benchmark set-up")]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use streampca::format::{self, npy, BatchParser, Format, ProjectParser, RowLimit};
use streampca::pca::{Batch, BatchData, Shape};

const ROWS: usize = 256;
const DIM: usize = 784;

fn values() -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..ROWS * DIM)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect()
}

/// What `json.dumps(float(np.float32(v)))` prints for these values (|v| < 1e16 and
/// above 1e-4 in practice, where Rust's `{:?}` and Python's `repr` agree).
fn text(v: f32) -> String {
    format!("{:?}", f64::from(v))
}

fn json_body(v: &[f32]) -> Vec<u8> {
    let rows: Vec<String> = v
        .chunks(DIM)
        .map(|r| {
            format!(
                "[{}]",
                r.iter().map(|x| text(*x)).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    format!("{{\"x\": [{}]}}", rows.join(", ")).into_bytes()
}

fn lines_body(v: &[f32], ndjson: bool) -> Vec<u8> {
    let mut out = String::new();
    for r in v.chunks(DIM) {
        let line = r.iter().map(|x| text(*x)).collect::<Vec<_>>().join(",");
        if ndjson {
            out.push('[');
            out.push_str(&line);
            out.push_str("]\n");
        } else {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// The old JSON path, as `src/http/body.rs` had it: serde_json into nested vectors
/// (`deny_unknown_fields`), then the row checks, flattening and the value check.
mod old {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct JsonBatch {
        pub x: Vec<Vec<f64>>,
        #[serde(default)]
        pub y: Option<Vec<Vec<f64>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ProjectRequest {
        pub x: Vec<Vec<f64>>,
        #[serde(default)]
        pub k: Option<usize>,
        #[serde(default)]
        pub whiten: bool,
        #[serde(default)]
        pub reconstruct: bool,
    }

    pub fn flatten(rows: &[Vec<f64>], width: usize) -> Option<Vec<f64>> {
        if rows.is_empty() || rows.iter().any(|r| r.len() != width) {
            return None;
        }
        let mut out = Vec::with_capacity(rows.len() * width);
        for r in rows {
            out.extend_from_slice(r);
        }
        streampca::pca::batch::all_within_bound(&out).then_some(out)
    }

    /// The old NDJSON (array lines) and CSV path of `src/http/body.rs` (b524bc7): the
    /// body as UTF-8, `str::lines`, fields split at `,`, trimmed, unquoted and parsed
    /// by std (correctly rounded), then the row-length and value checks.
    pub fn lines(body: &[u8], ndjson: bool) -> Vec<f64> {
        fn number(s: &str) -> Option<f64> {
            let s = s.trim();
            let s = s
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(s);
            s.parse::<f64>().ok()
        }
        let text = std::str::from_utf8(body).unwrap();
        let mut values = Vec::new();
        let mut row = Vec::with_capacity(DIM);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            row.clear();
            if ndjson {
                let inner = line
                    .strip_prefix('[')
                    .and_then(|l| l.strip_suffix(']'))
                    .unwrap();
                for f in inner.split(',') {
                    row.push(number(f).unwrap());
                }
            } else {
                let parsed: Vec<Option<f64>> = line.split(',').map(number).collect();
                row.extend(parsed.into_iter().map(Option::unwrap));
            }
            assert_eq!(row.len(), DIM);
            values.extend_from_slice(&row);
        }
        assert!(streampca::pca::batch::all_within_bound(&values));
        values
    }

    pub fn json(body: &[u8]) -> Vec<f64> {
        let b: JsonBatch = serde_json::from_slice(body).unwrap();
        assert!(b.y.is_none());
        flatten(&b.x, DIM).unwrap()
    }
}

fn new_json(body: &[u8], chunk: usize) -> Batch {
    let mut p = BatchParser::new(Format::Json, Shape::inputs(DIM), RowLimit::NONE);
    for c in body.chunks(chunk) {
        p.feed(c).unwrap();
    }
    p.finish().unwrap()
}

fn parse(f: Format, body: &[u8]) -> Batch {
    format::parse_batch(f, Shape::inputs(DIM), RowLimit::NONE, body).unwrap()
}

fn bench_json(c: &mut Criterion) {
    let v = values();
    let body = json_body(&v);
    // Same numbers both ways, bit for bit against std's correctly rounded parser.
    let want: Vec<f64> = v.iter().map(|x| text(*x).parse().unwrap()).collect();
    match new_json(&body, 1 << 20).data() {
        BatchData::F64 { x, .. } => {
            assert!(x.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()))
        }
        BatchData::F32 { .. } => unreachable!(),
    }
    let mut g = c.benchmark_group("json_256x784");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("old_serde_json", |b| b.iter(|| old::json(black_box(&body))));
    g.bench_function("streaming_one_chunk", |b| {
        b.iter(|| new_json(black_box(&body), body.len()))
    });
    g.bench_function("streaming_16KiB_chunks", |b| {
        b.iter(|| new_json(black_box(&body), 16 * 1024))
    });
    g.finish();
}

/// Pixel rows as the load tool sends Fashion-MNIST (`serde_json` printing f32 values
/// `0.0` … `255.0`; about half the pixels are 0): the short-token shape of issue 19's
/// end-to-end target, same size 256 × 784.
fn pixel_values() -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    (0..ROWS * DIM)
        .map(|_| {
            if rng.gen_bool(0.5) {
                0.0
            } else {
                f32::from(rng.gen_range(1u8..=255))
            }
        })
        .collect()
}

fn bench_json_pixels(c: &mut Criterion) {
    let v = pixel_values();
    let rows: Vec<Vec<f32>> = v.chunks(DIM).map(<[f32]>::to_vec).collect();
    let body = serde_json::to_vec(&serde_json::json!({ "x": rows })).unwrap();
    assert!(body.starts_with(b"{\"x\":[[") && body.windows(5).any(|w| w == b"255.0"));
    match new_json(&body, body.len()).data() {
        BatchData::F64 { x, .. } => assert!(x
            .iter()
            .zip(&v)
            .all(|(a, b)| a.to_bits() == f64::from(*b).to_bits())),
        BatchData::F32 { .. } => unreachable!(),
    }
    let mut g = c.benchmark_group("json_pixels_256x784");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("old_serde_json", |b| b.iter(|| old::json(black_box(&body))));
    g.bench_function("streaming_one_chunk", |b| {
        b.iter(|| new_json(black_box(&body), body.len()))
    });
    g.finish();
}

fn bench_formats(c: &mut Criterion) {
    let v = values();
    let ndjson = lines_body(&v, true);
    let csv = lines_body(&v, false);
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let npy_c = npy::encode("<f4", false, ROWS as u64, DIM as u64, &raw);
    let fortran: Vec<u8> = (0..DIM)
        .flat_map(|j| (0..ROWS).map(move |i| (i, j)))
        .flat_map(|(i, j)| v[i * DIM + j].to_le_bytes())
        .collect();
    let npy_f = npy::encode("<f4", true, ROWS as u64, DIM as u64, &fortran);
    for (name, f, body) in [
        ("ndjson", Format::Ndjson, &ndjson),
        ("csv", Format::Csv, &csv),
    ] {
        let want = old::lines(body, f == Format::Ndjson);
        match parse(f, body).data() {
            BatchData::F64 { x, .. } => {
                assert!(x.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()))
            }
            BatchData::F32 { .. } => unreachable!(),
        }
        let mut g = c.benchmark_group(format!("{name}_256x784"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("old_str_parse", |b| {
            b.iter(|| old::lines(black_box(body), f == Format::Ndjson))
        });
        g.bench_function("streaming", |b| b.iter(|| parse(f, black_box(body))));
        g.finish();
    }
    for (name, f, body) in [
        ("raw_f32", Format::F32, &raw),
        ("npy_c_order", Format::Npy, &npy_c),
        ("npy_fortran_order", Format::Npy, &npy_f),
    ] {
        let mut g = c.benchmark_group(format!("{name}_256x784"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("streaming", |b| b.iter(|| parse(f, black_box(body))));
        g.finish();
    }
}

fn bench_project(c: &mut Criterion) {
    let v = values();
    let one: Vec<u8> = format!(
        "{{\"x\": [[{}]], \"k\": 16}}",
        v[..DIM]
            .iter()
            .map(|x| text(*x))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .into_bytes();
    let mut g = c.benchmark_group("project_1x784");
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("old_serde_json", |b| {
        b.iter(|| {
            let r: old::ProjectRequest = serde_json::from_slice(black_box(&one)).unwrap();
            assert!(!r.whiten && !r.reconstruct && r.k == Some(16));
            old::flatten(&r.x, DIM).unwrap()
        })
    });
    g.bench_function("streaming", |b| {
        b.iter(|| {
            let mut p = ProjectParser::json(DIM, RowLimit::NONE);
            p.feed(black_box(&one)).unwrap();
            p.finish().unwrap()
        })
    });
    g.finish();
}

/// The conversion step alone, on every token of the batch: the candidates side by side.
fn bench_numbers(c: &mut Criterion) {
    let tokens: Vec<String> = values().iter().map(|x| text(*x)).collect();
    let bytes: usize = tokens.iter().map(String::len).sum();
    for t in &tokens {
        let want: f64 = t.parse().unwrap();
        assert_eq!(
            lexical_core::parse::<f64>(t.as_bytes()).unwrap().to_bits(),
            want.to_bits()
        );
        assert_eq!(
            fast_float2::parse::<f64, _>(t).unwrap().to_bits(),
            want.to_bits()
        );
        assert_eq!(
            format::decimal::json_exact(t.as_bytes()).unwrap().to_bits(),
            want.to_bits()
        );
    }
    let mut g = c.benchmark_group("numbers_200704_tokens");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("lexical_core", |b| {
        b.iter(|| {
            tokens
                .iter()
                .map(|t| lexical_core::parse::<f64>(t.as_bytes()).unwrap())
                .sum::<f64>()
        })
    });
    g.bench_function("fast_float2", |b| {
        b.iter(|| {
            tokens
                .iter()
                .map(|t| fast_float2::parse::<f64, _>(t.as_bytes()).unwrap())
                .sum::<f64>()
        })
    });
    g.bench_function("std_str_parse", |b| {
        b.iter(|| {
            tokens
                .iter()
                .map(|t| t.parse::<f64>().unwrap())
                .sum::<f64>()
        })
    });
    g.bench_function("grammar_check_plus_lexical", |b| {
        b.iter(|| {
            tokens
                .iter()
                .map(|t| {
                    assert!(format::number::is_json_number(t.as_bytes()));
                    lexical_core::parse::<f64>(t.as_bytes()).unwrap()
                })
                .sum::<f64>()
        })
    });
    g.bench_function("one_pass_scan", |b| {
        b.iter(|| {
            tokens
                .iter()
                .map(|t| format::decimal::json_exact(t.as_bytes()).unwrap())
                .sum::<f64>()
        })
    });
    g.finish();
}

#[allow(
    missing_docs,
    reason = "criterion's macro generates an undocumented function"
)]
mod group {
    use super::*;
    criterion_group!(
        benches,
        bench_numbers,
        bench_json,
        bench_json_pixels,
        bench_formats,
        bench_project
    );
}
use group::benches;
criterion_main!(benches);
