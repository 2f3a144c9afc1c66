//! The adapter between a request body and a [`crate::format`] push parser: pulls the
//! body frame by frame, decodes `Content-Encoding` (gzip, zstd) as it goes, counts the
//! decoded bytes against the body limit, cuts a body that arrives too slowly, and feeds
//! each piece to the parser. The body is never held whole: memory is the parser's (see
//! [`crate::format`]) plus one frame and the decoder's window (32 KiB for gzip, at most
//! 8 MiB for zstd, whose window is capped here).
//!
//! Parsing runs inline on the request's task, one frame at a time: a frame is at most
//! the size of hyper's read buffer, so each step is short, and there is no hand-off per
//! frame.

use std::io::Write;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::CONTENT_ENCODING;
use axum::http::HeaderMap;
use http_body_util::BodyExt;

use super::error::ApiError;
use crate::format::{BatchParser, FormatError, ProjectParser};

/// Largest zstd window accepted, as a power of two (8 MiB): a frame asking for more
/// is refused rather than given that much memory.
const ZSTD_MAX_WINDOW_LOG: u32 = 23;

/// Decoded bytes handed to the parser at once.
const DECODE_BUF: usize = 64 * 1024;

/// How a body is read: its limit and the slow-body bound.
#[derive(Debug, Clone, Copy)]
pub struct BodyRead {
    /// Largest body in bytes, counted both on the wire and decoded.
    pub limit: usize,
    /// Smallest average rate, in bytes per second, a body must keep after `grace`.
    pub min_rate: u64,
    /// Time a body may take before `min_rate` applies.
    pub grace: Duration,
}

impl BodyRead {
    /// When `received` bytes must have arrived by, counted from the start of the read:
    /// `grace + received / min_rate`.
    fn allowed(&self, received: usize) -> Duration {
        let rate = self.min_rate.max(1) as f64;
        self.grace + Duration::from_secs_f64(received as f64 / rate)
    }
}

/// What a body is fed to.
pub trait Sink {
    /// Takes the next decoded bytes.
    ///
    /// # Errors
    /// The parser's first problem.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError>;
}

impl Sink for BatchParser {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        BatchParser::feed(self, chunk)
    }
}

impl Sink for ProjectParser {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        ProjectParser::feed(self, chunk)
    }
}

/// A body's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// None (or `identity`).
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `zstd`.
    Zstd,
}

impl Encoding {
    /// The coding named by `Content-Encoding`.
    ///
    /// # Errors
    /// [`FormatError::UnsupportedMediaType`] naming any other coding (`br`, `deflate`,
    /// `compress`, unknown names, or more than one coding).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, FormatError> {
        let mut codings = Vec::new();
        for v in headers.get_all(CONTENT_ENCODING) {
            let v = v.to_str().map_err(|_| {
                FormatError::UnsupportedMediaType("Content-Encoding is not text".into())
            })?;
            codings.extend(
                v.split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty() && c != "identity"),
            );
        }
        match codings.as_slice() {
            [] => Ok(Self::Identity),
            [c] if c == "gzip" || c == "x-gzip" => Ok(Self::Gzip),
            [c] if c == "zstd" => Ok(Self::Zstd),
            _ => Err(FormatError::UnsupportedMediaType(format!(
                "Content-Encoding {} is not supported (gzip, zstd or identity)",
                codings.join(", ")
            ))),
        }
    }
}

/// Counts decoded bytes against the limit on their way to the parser; keeps the first
/// error so that it survives the decoder's `io::Error`.
struct Limited<'a, S> {
    sink: &'a mut S,
    decoded: usize,
    limit: usize,
    error: Option<FormatError>,
}

impl<S: Sink> Limited<'_, S> {
    fn push(&mut self, b: &[u8]) -> Result<(), FormatError> {
        self.decoded += b.len();
        if self.decoded > self.limit {
            return Err(FormatError::BodyTooLarge { limit: self.limit });
        }
        self.sink.feed(b)
    }
}

impl<S: Sink> Write for Limited<'_, S> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self.push(b) {
            Ok(()) => Ok(b.len()),
            Err(e) => {
                self.error = Some(e);
                Err(std::io::Error::other("refused"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Decoder<'a, S: Sink> {
    Identity(Limited<'a, S>),
    Gzip(Box<flate2::write::GzDecoder<Limited<'a, S>>>),
    Zstd {
        out: Limited<'a, S>,
        raw: Box<zstd::stream::raw::Decoder<'static>>,
        buf: Vec<u8>,
        /// Bytes the current frame still needs (0 at a frame boundary).
        remaining: usize,
    },
}

fn malformed(coding: &str, e: impl std::fmt::Display) -> FormatError {
    FormatError::Malformed(format!("the {coding} body does not decode: {e}"))
}

impl<'a, S: Sink> Decoder<'a, S> {
    fn new(encoding: Encoding, out: Limited<'a, S>) -> Result<Self, FormatError> {
        Ok(match encoding {
            Encoding::Identity => Self::Identity(out),
            Encoding::Gzip => Self::Gzip(Box::new(flate2::write::GzDecoder::new(out))),
            Encoding::Zstd => {
                let mut raw =
                    zstd::stream::raw::Decoder::new().map_err(|e| malformed("zstd", e))?;
                raw.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
                    ZSTD_MAX_WINDOW_LOG,
                ))
                .map_err(|e| malformed("zstd", e))?;
                Self::Zstd {
                    out,
                    raw: Box::new(raw),
                    buf: vec![0; DECODE_BUF],
                    remaining: 0,
                }
            }
        })
    }

    fn take_error(out: &mut Limited<'a, S>, coding: &str, e: std::io::Error) -> FormatError {
        out.error.take().unwrap_or_else(|| malformed(coding, e))
    }

    fn feed(&mut self, mut input: &[u8]) -> Result<(), FormatError> {
        match self {
            Self::Identity(out) => out.push(input),
            Self::Gzip(d) => d
                .write_all(input)
                .map_err(|e| Self::take_error(d.get_mut(), "gzip", e)),
            Self::Zstd {
                out,
                raw,
                buf,
                remaining,
            } => {
                use zstd::stream::raw::Operation;
                while !input.is_empty() {
                    let status = raw
                        .run_on_buffers(input, buf)
                        .map_err(|e| malformed("zstd", e))?;
                    input = &input[status.bytes_read..];
                    *remaining = status.remaining;
                    out.push(&buf[..status.bytes_written])?;
                    if status.bytes_read == 0 && status.bytes_written == 0 {
                        break;
                    }
                }
                // Drain what the decoder still holds for this input.
                loop {
                    let status = raw
                        .run_on_buffers(&[], buf)
                        .map_err(|e| malformed("zstd", e))?;
                    out.push(&buf[..status.bytes_written])?;
                    if status.bytes_written < buf.len() {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<(), FormatError> {
        match self {
            Self::Identity(_) => Ok(()),
            Self::Gzip(mut d) => d
                .try_finish()
                .map_err(|e| Self::take_error(d.get_mut(), "gzip", e)),
            Self::Zstd { remaining, .. } if remaining != 0 => {
                Err(malformed("zstd", "the stream ends inside a frame"))
            }
            Self::Zstd { .. } => Ok(()),
        }
    }
}

/// Reads `body` (whose headers are `headers`) into `sink`: decodes it, enforces
/// `read.limit` on the wire and decoded bytes, and cuts it with 408 `body_timeout` when
/// it falls behind `read.min_rate` after `read.grace`.
///
/// # Errors
/// [`ApiError::BodyTimeout`], [`ApiError::BodyTooLarge`], 415 for an unknown coding,
/// [`ApiError::MalformedBody`] for a body that does not decode or a broken connection,
/// or the parser's error.
pub async fn read_into<S: Sink>(
    headers: &HeaderMap,
    body: Body,
    read: BodyRead,
    sink: &mut S,
) -> Result<(), ApiError> {
    let encoding = Encoding::from_headers(headers)?;
    let out = Limited {
        sink,
        decoded: 0,
        limit: read.limit,
        error: None,
    };
    let mut decoder = Decoder::new(encoding, out)?;
    let mut body = body;
    let start = Instant::now();
    let mut received = 0usize;
    loop {
        let deadline = tokio::time::Instant::from_std(start + read.allowed(received));
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::BodyTimeout(format!(
                    "{received} bytes arrived in {:.1} s; after the first {} s a body must \
                     arrive at {} bytes/s or more (body_min_rate)",
                    start.elapsed().as_secs_f64(),
                    read.grace.as_secs_f64(),
                    read.min_rate
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::MalformedBody(format!("reading the body: {e}")))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received += data.len();
        if received > read.limit {
            return Err(ApiError::BodyTooLarge(read.limit));
        }
        decoder.feed(&data)?;
    }
    decoder.finish()?;
    Ok(())
}
