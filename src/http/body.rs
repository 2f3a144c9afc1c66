//! Request bodies: the JSON extractor that gives axum's own rejections our error shape,
//! and the four mini-batch formats (JSON, NDJSON, CSV, raw little-endian f32) turned into
//! a checked [`Batch`]. Parsing is CPU work: callers run it off the async runtime.
//!
//! Every check names the row (0-based) and, where it applies, the column.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;
use crate::model::ModelConfig;
use crate::pca::{Batch, BatchData};

/// The body as bytes, with the body-limit rejection mapped to [`ApiError::BodyTooLarge`].
#[derive(Debug)]
pub struct RawBody(pub Bytes);

/// The configured body limit, stored as request extension-free state: axum's
/// `DefaultBodyLimit` enforces it; this copy only fills in the error message.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Self(b)),
            Err(rej) if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge(limit))
            }
            Err(rej) => Err(ApiError::MalformedBody(rej.body_text())),
        }
    }
}

/// A JSON body (`Content-Type: application/json`) deserialised into `T`, with every
/// failure in our error shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match media_type(req.headers()).as_deref() {
            Some("application/json") => {}
            other => {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "expected application/json, got {}",
                    other.unwrap_or("no Content-Type")
                )))
            }
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::MalformedBody(e.to_string()))
    }
}

/// The media type of a request (`type/subtype`, lower case, parameters dropped).
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// The formats a batch may arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFormat {
    /// `application/json`: `{"x": [[…], …], "y"?: [[…], …]}`.
    Json,
    /// `application/x-ndjson`: one row per line, `[…]` or `{"x": […], "y"?: […]}`.
    Ndjson,
    /// `text/csv`: one row per line, x then y; an optional header line.
    Csv,
    /// `application/octet-stream`: little-endian f32 rows of `dim + target_dim` values.
    F32,
}

impl BatchFormat {
    /// The format for a media type.
    ///
    /// # Errors
    /// [`ApiError::UnsupportedMediaType`] for anything else.
    pub fn from_media_type(m: Option<&str>) -> Result<Self, ApiError> {
        match m {
            Some("application/json") => Ok(Self::Json),
            Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
                Ok(Self::Ndjson)
            }
            Some("text/csv") => Ok(Self::Csv),
            Some("application/octet-stream") => Ok(Self::F32),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "samples accept application/json, application/x-ndjson, text/csv or \
                 application/octet-stream, got {}",
                other.unwrap_or("no Content-Type")
            ))),
        }
    }
}

/// Parses and checks a batch for the model `cfg`.
///
/// # Errors
/// [`ApiError::MalformedBody`], [`ApiError::EmptyBatch`], [`ApiError::RaggedRows`],
/// [`ApiError::DimensionMismatch`] or [`ApiError::NonFinite`].
pub fn parse_batch(format: BatchFormat, body: &[u8], cfg: &ModelConfig) -> Result<Batch, ApiError> {
    match format {
        BatchFormat::Json => parse_json(body, cfg),
        BatchFormat::Ndjson => parse_lines(body, cfg, true),
        BatchFormat::Csv => parse_lines(body, cfg, false),
        BatchFormat::F32 => parse_f32(body, cfg),
    }
}

/// `y` as rows, or (for one-dimensional targets) as a flat list of values.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Targets {
    Rows(Vec<Vec<f64>>),
    Flat(Vec<f64>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBatch {
    x: Vec<Vec<f64>>,
    #[serde(default)]
    y: Option<Targets>,
}

fn parse_json(body: &[u8], cfg: &ModelConfig) -> Result<Batch, ApiError> {
    let b: JsonBatch =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    let rows = b.x.len();
    let x = flatten("x", &b.x, cfg.dim)?;
    let y = match (cfg.target_dim, b.y) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "y",
                "this model has no targets (target_dim is not set)",
            ))
        }
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "y",
                "this regression model needs targets `y`",
            ))
        }
        (Some(t), Some(y)) => {
            let y = match y {
                Targets::Rows(r) => r,
                Targets::Flat(v) if t == 1 => v.into_iter().map(|v| vec![v]).collect(),
                Targets::Flat(_) => {
                    return Err(ApiError::DimensionMismatch(format!(
                        "y must be a list of rows of {t} values; a flat list is only accepted when target_dim is 1"
                    )))
                }
            };
            if y.len() != rows {
                return Err(ApiError::DimensionMismatch(format!(
                    "expected {rows} rows of y (one per row of x), got {}",
                    y.len()
                )));
            }
            Some(flatten("y", &y, t)?)
        }
    };
    checked(cfg, BatchData::F64 { x, y })
}

/// Checks that rows are non-empty, agree in length (ragged rows) and have `width` values,
/// and flattens them row-major.
pub fn flatten(what: &str, rows: &[Vec<f64>], width: usize) -> Result<Vec<f64>, ApiError> {
    let Some(first) = rows.first() else {
        return Err(ApiError::EmptyBatch);
    };
    check_rows(what, rows.iter().map(Vec::len), first.len(), width)?;
    let mut out = Vec::with_capacity(rows.len() * width);
    for r in rows {
        out.extend_from_slice(r);
    }
    check_finite(what, &out, width)?;
    Ok(out)
}

fn check_rows(
    what: &str,
    lengths: impl Iterator<Item = usize>,
    first: usize,
    width: usize,
) -> Result<(), ApiError> {
    for (i, len) in lengths.enumerate() {
        if len != first {
            return Err(ApiError::RaggedRows(format!(
                "{what} row {i} has {len} values but row 0 has {first}"
            )));
        }
    }
    if first != width {
        return Err(ApiError::DimensionMismatch(format!(
            "expected {width} values per row of {what}, got {first}"
        )));
    }
    Ok(())
}

/// Largest accepted magnitude of a value. The accumulator sums products of values and
/// the optimiser multiplies those sums again, so values near `f64::MAX.sqrt()` (1e154)
/// would overflow to infinity inside a fit; 1e30 leaves room for both (and is above
/// what any f32 body short of 3.4e38 can hold in practice).
pub const MAX_ABS_VALUE: f64 = 1e30;

fn check_finite<T: Copy + Into<f64>>(
    what: &str,
    values: &[T],
    width: usize,
) -> Result<(), ApiError> {
    // One branch-free pass (it vectorises); the position is looked up only on failure.
    let fine = values.chunks(1024).all(|c| {
        c.iter().fold(true, |ok, v| {
            let v: f64 = (*v).into();
            ok & (v.abs() <= MAX_ABS_VALUE)
        })
    });
    if fine {
        return Ok(());
    }
    let values: Vec<f64> = values.iter().map(|v| (*v).into()).collect();
    let at = |i: usize| {
        format!(
            "{what} row {}, column {}",
            i / width.max(1),
            i % width.max(1)
        )
    };
    match values
        .iter()
        .position(|v| !v.is_finite() || v.abs() > MAX_ABS_VALUE)
    {
        Some(i) if !values[i].is_finite() => {
            Err(ApiError::NonFinite(format!("{} is {}", at(i), values[i])))
        }
        Some(i) => Err(ApiError::OutOfRange(format!(
            "{} is {:e}; values must be at most {MAX_ABS_VALUE:e} in magnitude",
            at(i),
            values[i]
        ))),
        None => Ok(()),
    }
}

/// Parses one number leniently: JSON numbers, plus `nan`/`inf` spellings, so that
/// non-finite values are reported as such rather than as unparsable.
fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    s.parse::<f64>().ok()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NdjsonRow {
    x: Vec<f64>,
    #[serde(default)]
    y: Option<Vec<f64>>,
}

/// NDJSON and CSV: one row per non-blank line. A row carries x then y (`dim +
/// target_dim` values); NDJSON also takes `{"x": […], "y": […]}` objects. CSV may start
/// with a header line (one whose fields are all non-numeric).
fn parse_lines(body: &[u8], cfg: &ModelConfig, ndjson: bool) -> Result<Batch, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::MalformedBody(format!("body is not UTF-8: {e}")))?;
    let width = cfg.row_width();
    let mut values: Vec<f64> = Vec::new();
    let mut first_len: Option<usize> = None;
    let mut rows = 0usize;
    let mut row: Vec<f64> = Vec::with_capacity(width);
    for (line_no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        row.clear();
        if ndjson {
            if line.starts_with('{') {
                let r: NdjsonRow = serde_json::from_str(line)
                    .map_err(|e| ApiError::MalformedBody(format!("line {}: {e}", line_no + 1)))?;
                match (cfg.target_dim, r.y) {
                    (None, Some(_)) => {
                        return Err(ApiError::invalid(
                            "y",
                            "this model has no targets (target_dim is not set)",
                        ))
                    }
                    (Some(_), None) => {
                        return Err(ApiError::invalid(
                            "y",
                            "this regression model needs targets `y` on every line",
                        ))
                    }
                    (Some(t), Some(y)) => {
                        if r.x.len() != cfg.dim || y.len() != t {
                            return Err(ApiError::DimensionMismatch(format!(
                                "line {}: expected {} x values and {t} y values, got {} and {}",
                                line_no + 1,
                                cfg.dim,
                                r.x.len(),
                                y.len()
                            )));
                        }
                        row.extend_from_slice(&r.x);
                        row.extend_from_slice(&y);
                    }
                    (None, None) => row.extend_from_slice(&r.x),
                }
            } else {
                let inner = line
                    .strip_prefix('[')
                    .and_then(|l| l.strip_suffix(']'))
                    .ok_or_else(|| {
                        ApiError::MalformedBody(format!(
                            "line {}: expected a JSON array or object",
                            line_no + 1
                        ))
                    })?;
                if !inner.trim().is_empty() {
                    for (j, field) in inner.split(',').enumerate() {
                        row.push(number(field).ok_or_else(|| {
                            ApiError::MalformedBody(format!(
                                "line {}, value {j}: `{}` is not a number",
                                line_no + 1,
                                field.trim()
                            ))
                        })?);
                    }
                }
            }
        } else {
            let mut parsed: Vec<Option<f64>> = line.split(',').map(number).collect();
            if rows == 0 && first_len.is_none() && parsed.iter().all(Option::is_none) {
                // A header line: every field is a name, none is a number.
                continue;
            }
            for (j, v) in parsed.drain(..).enumerate() {
                row.push(v.ok_or_else(|| {
                    ApiError::MalformedBody(format!(
                        "line {}, column {j}: not a number",
                        line_no + 1
                    ))
                })?);
            }
        }
        let first = *first_len.get_or_insert(row.len());
        if row.len() != first {
            return Err(ApiError::RaggedRows(format!(
                "row {rows} (line {}) has {} values but row 0 has {first}",
                line_no + 1,
                row.len()
            )));
        }
        values.extend_from_slice(&row);
        rows += 1;
    }
    let Some(first) = first_len else {
        return Err(ApiError::EmptyBatch);
    };
    if first != width {
        return Err(ApiError::DimensionMismatch(format!(
            "expected {width} values per row, got {first}"
        )));
    }
    check_finite("x", &values, width)?;
    checked(cfg, BatchData::from_joined_f64(values, cfg.shape()))
}

/// The checked batch, or the API's error for it.
fn checked(cfg: &ModelConfig, data: BatchData) -> Result<Batch, ApiError> {
    Batch::new(cfg.shape(), data).map_err(ApiError::from)
}

fn parse_f32(body: &[u8], cfg: &ModelConfig) -> Result<Batch, ApiError> {
    if body.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    let width = cfg.row_width();
    let row_bytes = 4 * width;
    if !body.len().is_multiple_of(row_bytes) {
        return Err(ApiError::DimensionMismatch(format!(
            "a body of {} bytes is not a whole number of rows of {width} little-endian f32 values ({row_bytes} bytes each)",
            body.len()
        )));
    }
    // Kept in single precision: the log stores 4 bytes a value and the accumulator
    // widens to f64 as it centres.
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    check_finite("x", &values, width)?;
    checked(cfg, BatchData::from_joined_f32(values, cfg.shape()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelName;
    use crate::pca::OptimizerKind;

    fn cfg(dim: usize, target_dim: Option<usize>) -> ModelConfig {
        ModelConfig {
            name: ModelName::new("m").unwrap_or_else(|e| panic!("{e}")),
            dim,
            components: 1,
            target_dim,
            half_life: None,
            optimizer: OptimizerKind::Subspace,
            tolerance: 1e-6,
            partitions: 1,
        }
    }

    #[test]
    fn the_four_formats_give_the_same_batch() {
        let c = cfg(2, None);
        let want = (2, (vec![1.0, 2.0, 3.5, -4.0], None));
        let json = parse_batch(BatchFormat::Json, br#"{"x": [[1, 2], [3.5, -4]]}"#, &c);
        let nd = parse_batch(BatchFormat::Ndjson, b"[1, 2]\n\n{\"x\": [3.5, -4]}\n", &c);
        let csv = parse_batch(BatchFormat::Csv, b"a,b\r\n1,2\r\n3.5,-4\r\n", &c);
        let raw: Vec<u8> = [1.0f32, 2.0, 3.5, -4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f32s = parse_batch(BatchFormat::F32, &raw, &c);
        for got in [json, nd, csv, f32s] {
            let got = got.map(|b| (b.rows(), b.to_f64()));
            assert_eq!(got, Ok(want.clone()));
        }
    }

    #[test]
    fn regression_rows_are_x_then_y() {
        let c = cfg(2, Some(1));
        let raw: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let got = parse_batch(BatchFormat::F32, &raw, &c);
        assert_eq!(
            got.map(|b| b.into_data()),
            Ok(BatchData::F32 {
                x: vec![1.0, 2.0],
                y: Some(vec![3.0])
            })
        );
        let json = parse_batch(BatchFormat::Json, br#"{"x": [[1, 2]], "y": [3]}"#, &c);
        assert_eq!(
            json.map(|b| b.into_data()),
            Ok(BatchData::F64 {
                x: vec![1.0, 2.0],
                y: Some(vec![3.0])
            })
        );
    }

    #[test]
    fn bad_bodies_get_precise_codes() {
        let c = cfg(3, None);
        let code = |f, b: &[u8]| parse_batch(f, b, &c).map_err(|e| e.code()).err();
        assert_eq!(
            code(BatchFormat::Json, br#"{"x": [[1,2,3],[1,2]]}"#),
            Some("ragged_rows")
        );
        assert_eq!(
            code(BatchFormat::Json, br#"{"x": [[1,2],[1,2]]}"#),
            Some("dimension_mismatch")
        );
        assert_eq!(
            code(BatchFormat::Json, br#"{"x": []}"#),
            Some("empty_batch")
        );
        assert_eq!(
            code(BatchFormat::Json, br#"{"x": [[1,2,1e400]]}"#),
            Some("malformed_body")
        );
        assert_eq!(
            code(BatchFormat::Json, br#"{"x": [[1,2,3]"#),
            Some("malformed_body")
        );
        assert_eq!(code(BatchFormat::Csv, b"1,2,nan\n"), Some("non_finite"));
        assert_eq!(
            code(BatchFormat::Ndjson, b"[1,2,inf]\n"),
            Some("non_finite")
        );
        assert_eq!(code(BatchFormat::Csv, b"1,2,3\n1,2\n"), Some("ragged_rows"));
        assert_eq!(code(BatchFormat::Csv, b"\n\n"), Some("empty_batch"));
        assert_eq!(
            code(BatchFormat::F32, &[0u8; 13]),
            Some("dimension_mismatch")
        );
        assert_eq!(code(BatchFormat::F32, &[]), Some("empty_batch"));
        assert_eq!(
            code(BatchFormat::Csv, b"1,x,3\n1,2,3\n"),
            Some("malformed_body")
        );
    }

    #[test]
    fn a_dimension_mismatch_names_expected_and_got() {
        let c = cfg(16, None);
        let e = parse_batch(
            BatchFormat::Json,
            br#"{"x": [[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]]}"#,
            &c,
        );
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("expected 16 values per row"), "{msg}");
        assert!(msg.contains("got 15"), "{msg}");
    }

    mod fuzz {
        //! Arbitrary bytes (and byte-level mutations of valid bodies) into every
        //! parser: each must return a batch that passes its own checks or a 4xx error,
        //! and never panic. Bounded case counts keep the whole module to a few seconds.
        use super::*;
        use proptest::prelude::*;

        const FORMATS: [BatchFormat; 4] = [
            BatchFormat::Json,
            BatchFormat::Ndjson,
            BatchFormat::Csv,
            BatchFormat::F32,
        ];

        fn check(format: BatchFormat, body: &[u8], c: &ModelConfig) {
            match parse_batch(format, body, c) {
                Ok(b) => {
                    assert!(b.rows() >= 1);
                    let (x, y) = b.to_f64();
                    assert_eq!(x.len(), b.rows() * c.dim);
                    assert_eq!(y.as_ref().map(Vec::len), c.target_dim.map(|t| t * b.rows()));
                    assert!(x
                        .iter()
                        .chain(y.iter().flatten())
                        .all(|v| v.is_finite() && v.abs() <= MAX_ABS_VALUE));
                }
                Err(e) => {
                    let status = e.status_and_code().0;
                    assert!(status.is_client_error(), "{format:?}: {e} is {status}");
                }
            }
        }

        /// Text close to valid bodies: numbers, separators, brackets, non-finite and
        /// huge spellings, so the fuzzer reaches past the first syntax check.
        fn texty() -> impl Strategy<Value = Vec<u8>> {
            let token = prop_oneof![
                Just("1".to_owned()),
                Just("-2.5".to_owned()),
                Just("1e400".to_owned()),
                Just("1e200".to_owned()),
                Just("nan".to_owned()),
                Just("inf".to_owned()),
                Just(",".to_owned()),
                Just("\n".to_owned()),
                Just("[".to_owned()),
                Just("]".to_owned()),
                Just("{\"x\":".to_owned()),
                Just("\"y\":".to_owned()),
                Just("}".to_owned()),
                Just("\"".to_owned()),
                Just(" ".to_owned()),
                "[a-z0-9.eE+-]{0,6}",
            ];
            prop::collection::vec(token, 0..64).prop_map(|t| t.concat().into_bytes())
        }

        fn model() -> impl Strategy<Value = ModelConfig> {
            (1usize..6, prop::option::of(1usize..3)).prop_map(|(d, t)| cfg(d, t))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic_any_parser(
                body in prop::collection::vec(any::<u8>(), 0..512),
                c in model(),
            ) {
                for f in FORMATS {
                    check(f, &body, &c);
                }
            }

            #[test]
            fn near_valid_text_never_panics_any_parser(body in texty(), c in model()) {
                for f in FORMATS {
                    check(f, &body, &c);
                }
            }

            #[test]
            fn arbitrary_f32_rows_are_accepted_or_refused_precisely(
                values in prop::collection::vec(any::<f32>(), 0..64),
                c in model(),
            ) {
                let body: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                check(BatchFormat::F32, &body, &c);
            }
        }
    }
}
