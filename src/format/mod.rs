//! Body formats, parsed as the bytes arrive: JSON, NDJSON, CSV, raw little-endian f32
//! and NumPy `.npy` batches, and JSON projection queries. Used by the HTTP layer (which
//! pulls the body frame by frame and feeds the parser, see `http::body_stream`) and by
//! the command-line client's file readers (`cli::input`), so both speak one grammar.
//!
//! Every parser is a push parser: [`BatchParser::feed`] takes the next chunk of the body
//! (split anywhere: mid-number, mid-key, mid-row), [`BatchParser::finish`] ends the body
//! and returns the checked [`Batch`]. Each row's length is checked against the model's
//! [`Shape`] as the row closes and the row count against a [`RowLimit`] as a row opens,
//! so a bad body is refused at its first problem and nothing is held but the values of
//! the rows read so far.
//!
//! **Memory.** A text parser (JSON, NDJSON, CSV, projection queries) keeps its values
//! in fixed blocks (`format/store.rs`) and under a budget (`format/spill.rs`): while
//! the values stored are at most 2× the bytes read it stores them; past that it only
//! checks the rest of the body (grammar, row lengths and count, finiteness and
//! magnitude) and keeps those raw bytes, converted only once the body is accepted. So a refused
//! text body holds at most 2× its decoded bytes (+ ~3 MiB of block and piece slack),
//! whatever it holds; an accepted one at most its values (≤ 4× its bytes for the
//! shortest numbers `0,`, under 1× for full-precision values) plus the raw rest while it
//! is converted, and one copy of the values when a part of more than 2^18 values is
//! gathered into the batch. Raw f32 and C-order `.npy` hold 1× their data, Fortran-order
//! `.npy` 2× (buffered whole, transposed at the end). On top: a carry of at most one
//! number ([`number::MAX_NUMBER_LEN`]), one JSON key, one `.npy` header (64 KiB) or one
//! text line (1 MiB + 64 bytes per value of the row).
//!
//! No axum or tokio here.

mod binary;
pub mod decimal;
mod json;
mod line_fast;
mod lines;
pub mod npy;
pub mod number;
pub mod project;
mod rows;
mod spill;
mod store;

use crate::pca::{Batch, BatchError, Part, Shape};

pub use binary::{NpyParser, RawF32Parser};
pub use json::JsonBatchParser;
pub use lines::{check_row, csv_line, ndjson_line, LineKind, LinesParser};
pub use project::{ProjectOptions, ProjectParser, ProjectQuery};

/// A request's row limit and the setting that sets it (named in the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLimit {
    /// Largest number of rows accepted.
    pub max: usize,
    /// The setting's name, e.g. `max_batch_rows`.
    pub setting: &'static str,
}

impl RowLimit {
    /// No limit (the client's file readers).
    pub const NONE: Self = Self {
        max: usize::MAX,
        setting: "none",
    };
}

/// Why a body was refused. Each variant is one API error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// Syntax: not the format claimed (`malformed_body`, 400). The message says where:
    /// the byte offset for JSON, the line for NDJSON and CSV.
    #[error("{0}")]
    Malformed(String),
    /// The first row (or every row) has the wrong number of values, or a binary body is
    /// not whole rows (`dimension_mismatch`, 422).
    #[error("{0}")]
    DimensionMismatch(String),
    /// A later row differs in length from the rows before it (`ragged_rows`, 422).
    #[error("{0}")]
    RaggedRows(String),
    /// The values do not make a valid batch: empty, non-finite, out of range, targets
    /// missing or unexpected (`empty_batch`, `non_finite`, `value_out_of_range`,
    /// `dimension_mismatch`, `invalid_parameter`).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A field with a value out of its range, or one this model does not take
    /// (`invalid_parameter`, 400).
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The field as users spell it.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// More rows than the request's limit (`too_many_rows`, 413).
    #[error("more than {max} rows in one request (the limit, {setting})")]
    TooManyRows {
        /// The limit.
        max: usize,
        /// The setting that sets it.
        setting: &'static str,
    },
    /// The (decoded) body exceeds the body limit (`body_too_large`, 413).
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes, of decoded body.
        limit: usize,
    },
    /// A media type or content encoding this route does not take
    /// (`unsupported_media_type`, 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
}

/// The batch formats, by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: `{"x": [[…], …], "y"?: [[…], …] | […]}`.
    Json,
    /// `application/x-ndjson`: one row per line, `[…]` or `{"x": […], "y"?: […]}`.
    Ndjson,
    /// `text/csv`: one row per line, x then y; an optional header line.
    Csv,
    /// `application/octet-stream`: little-endian f32 rows of `dim + target_dim` values.
    F32,
    /// `application/x-npy`: a 2-D `.npy` array of `dim + target_dim` columns.
    Npy,
}

impl Format {
    /// The format for a media type (`type/subtype`, lower case).
    ///
    /// # Errors
    /// [`FormatError::UnsupportedMediaType`] for anything else.
    pub fn from_media_type(m: Option<&str>) -> Result<Self, FormatError> {
        match m {
            Some("application/json") => Ok(Self::Json),
            Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
                Ok(Self::Ndjson)
            }
            Some("text/csv") => Ok(Self::Csv),
            Some("application/octet-stream") => Ok(Self::F32),
            Some("application/x-npy") => Ok(Self::Npy),
            other => Err(FormatError::UnsupportedMediaType(format!(
                "samples accept application/json, application/x-ndjson, text/csv, \
                 application/octet-stream or application/x-npy, got {}",
                other.unwrap_or("no Content-Type")
            ))),
        }
    }
}

/// A push parser for one batch body in any [`Format`].
#[derive(Debug)]
pub enum BatchParser {
    /// JSON.
    Json(JsonBatchParser),
    /// NDJSON or CSV.
    Lines(LinesParser),
    /// Raw f32.
    F32(RawF32Parser),
    /// `.npy`.
    Npy(NpyParser),
}

impl BatchParser {
    /// A parser for a body in `format` holding rows of `shape`, at most `limit.max` rows.
    pub fn new(format: Format, shape: Shape, limit: RowLimit) -> Self {
        match format {
            Format::Json => Self::Json(JsonBatchParser::new(shape, limit)),
            Format::Ndjson => Self::Lines(LinesParser::ndjson(shape, limit)),
            Format::Csv => Self::Lines(LinesParser::csv(shape, limit)),
            Format::F32 => Self::F32(RawF32Parser::new(shape, limit)),
            Format::Npy => Self::Npy(NpyParser::new(shape, limit)),
        }
    }

    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// The first problem found; the parser must then be dropped.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        match self {
            Self::Json(p) => p.feed(chunk),
            Self::Lines(p) => p.feed(chunk),
            Self::F32(p) => p.feed(chunk),
            Self::Npy(p) => p.feed(chunk),
        }
    }

    /// Ends the body and returns the checked batch.
    ///
    /// # Errors
    /// A truncated body, or any check of [`Batch::new`].
    pub fn finish(self) -> Result<Batch, FormatError> {
        match self {
            Self::Json(p) => p.finish(),
            Self::Lines(p) => p.finish(),
            Self::F32(p) => p.finish(),
            Self::Npy(p) => p.finish(),
        }
    }
}

/// Parses a whole body held in memory (tests, benchmarks and small bodies).
///
/// # Errors
/// As [`BatchParser::feed`] and [`BatchParser::finish`].
pub fn parse_batch(
    format: Format,
    shape: Shape,
    limit: RowLimit,
    body: &[u8],
) -> Result<Batch, FormatError> {
    let mut p = BatchParser::new(format, shape, limit);
    p.feed(body)?;
    p.finish()
}

/// The part a column of a joined row (x then y) belongs to, and its 1-based column
/// within that part.
pub(crate) fn locate(shape: Shape, column: usize) -> (Part, usize) {
    if column < shape.dim {
        (Part::X, column + 1)
    } else {
        (Part::Y, column - shape.dim + 1)
    }
}

#[cfg(test)]
mod tests;
