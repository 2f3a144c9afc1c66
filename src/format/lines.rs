//! Line formats: CSV and NDJSON, one row per line (x then y), blank lines skipped. The
//! row grammar ([`csv_line`], [`ndjson_line`]) is shared with the client's file readers;
//! [`LinesParser`] is the push parser the server feeds.
//!
//! - CSV: fields separated by `,`, each a text number (see [`super::number::text_field`]);
//!   the first non-blank line may be a header (no field is a number).
//! - NDJSON: a line is a JSON array of text numbers (`[1, 2.5, nan]`), or an object
//!   `{"x": […], "y"?: […]}` of JSON numbers (keys in any order, unknown keys refused).

use super::line_fast;
use super::number;
use super::rows::Joined;
use super::spill::{check_part, Spill, Spillable};
use super::{locate, FormatError, RowLimit};
use crate::pca::{check_counts, first_out_of_bound};
use crate::pca::{Batch, BatchData, BatchError, Part, Shape};

/// What a line held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Blank (only spaces, tabs or a `\r`).
    Blank,
    /// A CSV header: no field is a number.
    Header,
    /// A row, appended to the output.
    Row,
}

/// Parses one CSV line (without its `\n`) and appends its values to `out`.
/// `header_allowed` when no row has been read yet.
///
/// # Errors
/// [`FormatError::Malformed`] naming the 1-based column that is not a number.
pub fn csv_line(
    line: &[u8],
    header_allowed: bool,
    out: &mut Vec<f64>,
) -> Result<LineKind, FormatError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(LineKind::Blank);
    }
    let start = out.len();
    let mut bad = None;
    for (j, field) in line.split(|&b| b == b',').enumerate() {
        match number::text_field(field) {
            Some(v) => out.push(v),
            None => {
                if bad.is_none() {
                    bad = Some((j, field));
                }
                if !header_allowed {
                    break;
                }
            }
        }
    }
    let Some((j, field)) = bad else {
        return Ok(LineKind::Row);
    };
    if header_allowed && out.len() == start {
        return Ok(LineKind::Header);
    }
    out.truncate(start);
    Err(FormatError::Malformed(format!(
        "column {}: `{}` is not a number",
        j + 1,
        shown(field)
    )))
}

fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b.trim_ascii()[..b.trim_ascii().len().min(40)]).into_owned()
}

/// Parses one NDJSON line (without its `\n`) for a model of `shape` and appends its
/// values to `out`, x then y.
///
/// # Errors
/// [`FormatError::Malformed`] for syntax, [`FormatError::InvalidParameter`] for `y`
/// sent to a model without targets (or missing for one with them),
/// [`FormatError::DimensionMismatch`] when an object's `x` or `y` has the wrong length.
pub fn ndjson_line(line: &[u8], shape: Shape, out: &mut Vec<f64>) -> Result<LineKind, FormatError> {
    let line = line.trim_ascii();
    match line.first() {
        None => Ok(LineKind::Blank),
        Some(b'[') => {
            let Some(inner) = line.strip_prefix(b"[").and_then(|l| l.strip_suffix(b"]")) else {
                return Err(FormatError::Malformed(
                    "expected `]` at the end of the line".into(),
                ));
            };
            if inner.trim_ascii().is_empty() {
                return Ok(LineKind::Row);
            }
            for (j, field) in inner.split(|&b| b == b',').enumerate() {
                let v = number::text_field(field).ok_or_else(|| {
                    FormatError::Malformed(format!(
                        "value {}: `{}` is not a number",
                        j + 1,
                        shown(field)
                    ))
                })?;
                out.push(v);
            }
            Ok(LineKind::Row)
        }
        Some(b'{') => {
            ObjectLine { s: line, i: 0 }.parse(shape, out)?;
            Ok(LineKind::Row)
        }
        Some(_) => Err(FormatError::Malformed(
            "expected a JSON array `[…]` or object `{\"x\": […]}`".into(),
        )),
    }
}

/// `{"x": […], "y"?: […]}` held whole in one line.
struct ObjectLine<'a> {
    s: &'a [u8],
    i: usize,
}

impl ObjectLine<'_> {
    fn err(&self, what: &str) -> FormatError {
        FormatError::Malformed(format!("{what} at column {}", self.i + 1))
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), FormatError> {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", b as char)))
        }
    }

    fn key(&mut self) -> Result<String, FormatError> {
        self.expect(b'"')?;
        let start = self.i - 1;
        let mut escape = false;
        while self.i < self.s.len() {
            let b = self.s[self.i];
            self.i += 1;
            if escape {
                escape = false;
            } else if b == b'\\' {
                escape = true;
            } else if b == b'"' {
                return serde_json::from_slice(&self.s[start..self.i])
                    .map_err(|_| self.err("an invalid key"));
            }
        }
        Err(self.err("an unterminated key"))
    }

    /// A JSON array of JSON numbers, or `null` (then `None`).
    fn numbers(&mut self, out: &mut Vec<f64>) -> Result<bool, FormatError> {
        self.ws();
        if self.s[self.i..].starts_with(b"null") {
            self.i += 4;
            return Ok(false);
        }
        self.expect(b'[')?;
        self.ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(true);
        }
        loop {
            self.ws();
            let run = number::number_run(&self.s[self.i..]);
            let v = number::json_number(&self.s[self.i..self.i + run])
                .ok_or_else(|| self.err("expected a JSON number"))?;
            out.push(v);
            self.i += run;
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(true);
                }
                _ => return Err(self.err("expected `,` or `]`")),
            }
        }
    }

    fn parse(mut self, shape: Shape, out: &mut Vec<f64>) -> Result<(), FormatError> {
        let start = out.len();
        let mut y = Vec::new();
        let (mut x_seen, mut y_seen, mut y_given) = (false, false, false);
        self.expect(b'{')?;
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            return Err(FormatError::Malformed("missing field `x`".into()));
        }
        loop {
            let k = self.key()?;
            self.expect(b':')?;
            match k.as_str() {
                "x" if !x_seen => {
                    x_seen = true;
                    if !self.numbers(out)? {
                        return Err(self.err("expected an array for `x`"));
                    }
                }
                "y" if !y_seen => {
                    y_seen = true;
                    y_given = self.numbers(&mut y)?;
                }
                "x" | "y" => return Err(self.err(&format!("duplicate field `{k}`"))),
                other => {
                    return Err(self.err(&format!(
                        "unknown field `{}`, expected `x` or `y`",
                        other.chars().take(40).collect::<String>()
                    )))
                }
            }
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
        self.ws();
        if self.i != self.s.len() {
            return Err(self.err("trailing characters after the object"));
        }
        if !x_seen {
            return Err(FormatError::Malformed("missing field `x`".into()));
        }
        let nx = out.len() - start;
        match (shape.target_dim, y_given) {
            (None, false) => {}
            (None, true) => {
                return Err(FormatError::InvalidParameter {
                    name: "y",
                    reason: "this model has no targets (target_dim is not set)".into(),
                })
            }
            (Some(_), false) => {
                return Err(FormatError::InvalidParameter {
                    name: "y",
                    reason: "this regression model needs targets `y` on every line".into(),
                })
            }
            (Some(t), true) => {
                if nx != shape.dim || y.len() != t {
                    return Err(FormatError::DimensionMismatch(format!(
                        "expected {} x values and {t} y values, got {nx} and {}",
                        shape.dim,
                        y.len()
                    )));
                }
                out.extend_from_slice(&y);
            }
        }
        Ok(())
    }
}

/// Checks one joined row (x then y) of a model of `shape`: every value finite and at
/// most [`crate::pca::MAX_ABS_VALUE`] in magnitude. `row` is 1-based, for the message.
///
/// # Errors
/// [`BatchError::NonFinite`] or [`BatchError::OutOfRange`] naming the part, row and
/// 1-based column.
pub fn check_row(values: &[f64], row: usize, shape: Shape) -> Result<(), BatchError> {
    let Some(j) = first_out_of_bound(values) else {
        return Ok(());
    };
    let (part, column) = locate(shape, j);
    Err(BatchError::out_of_bound(part, row, column, values[j]))
}

/// Puts the line number into a line's error message.
pub(crate) fn at_line(e: FormatError, line: usize) -> FormatError {
    match e {
        FormatError::Malformed(m) => FormatError::Malformed(format!("line {line}, {m}")),
        FormatError::DimensionMismatch(m) => {
            FormatError::DimensionMismatch(format!("line {line}: {m}"))
        }
        other => other,
    }
}

/// The push parser for `text/csv` and `application/x-ndjson` bodies, under the memory
/// budget of `format/spill.rs` (2× the bytes read, see the module's docs).
#[derive(Debug)]
pub struct LinesParser {
    p: Spill<LineRows>,
}

impl LinesParser {
    /// An NDJSON parser for rows of `shape`, at most `limit.max` rows.
    pub fn ndjson(shape: Shape, limit: RowLimit) -> Self {
        Self {
            p: Spill::new(LineRows::new(true, shape, limit)),
        }
    }

    /// A CSV parser for rows of `shape`, at most `limit.max` rows.
    pub fn csv(shape: Shape, limit: RowLimit) -> Self {
        Self {
            p: Spill::new(LineRows::new(false, shape, limit)),
        }
    }

    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// The first bad line (named by its 1-based number), a row of the wrong length, too
    /// many rows, or a line longer than 1 MiB + 64 bytes per value.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        self.p.feed(chunk)
    }

    /// Tests: the memory budget's state, and forcing its path (see [`Spill::force`]).
    #[cfg(test)]
    pub(crate) fn spill(&mut self) -> &mut Spill<impl Spillable> {
        &mut self.p
    }

    /// Ends the body (a last line without `\n` counts) and checks the batch.
    ///
    /// # Errors
    /// As [`LinesParser::feed`], then any check of [`Batch::new`].
    pub fn finish(self) -> Result<Batch, FormatError> {
        let shape = self.p.live().rows.shape;
        let p = self.p.finish(|mut live, saved| {
            live.last_line()?;
            let (x, y) = (&mut live.rows.x, &mut live.rows.y);
            check_counts(shape, x.len(), shape.target_dim.map(|_| y.len()))?;
            check_part(Part::X, shape.dim, &mut saved.rows.x, x)?;
            if let Some(t) = shape.target_dim {
                check_part(Part::Y, t, &mut saved.rows.y, y)?;
            }
            Ok(())
        })?;
        p.finish()
    }
}

impl Spillable for LineRows {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        LineRows::feed(self, chunk)
    }

    fn resident_bytes(&self) -> usize {
        self.rows.resident_bytes() + self.carry.capacity()
    }

    fn split_off(&mut self) -> Self {
        let rows = self.rows.split_off();
        Self {
            rows,
            ..self.clone()
        }
    }
}

/// The line machine: rows into a [`Joined`].
#[derive(Debug, Clone)]
struct LineRows {
    ndjson: bool,
    rows: Joined<f64>,
    /// The start of a line that continues into the next chunk.
    carry: Vec<u8>,
    /// One line's values.
    row: Vec<f64>,
    line_no: usize,
    /// Longest line accepted, in bytes.
    max_line: usize,
}

impl LineRows {
    fn new(ndjson: bool, shape: Shape, limit: RowLimit) -> Self {
        Self {
            ndjson,
            rows: Joined::new(shape, limit),
            carry: Vec::new(),
            row: Vec::with_capacity(shape.row_width()),
            line_no: 0,
            max_line: (1 << 20) + 64 * shape.row_width(),
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<(), FormatError> {
        self.line_no += 1;
        let line_no = self.line_no;
        self.row.clear();
        let kind = if self.ndjson {
            ndjson_line(line, self.rows.shape, &mut self.row)
        } else {
            let header_allowed = self.rows.rows() == 0 && self.line_no == 1;
            csv_line(line, header_allowed, &mut self.row)
        }
        .map_err(|e| at_line(e, line_no))?;
        if kind != LineKind::Row {
            return Ok(());
        }
        self.push_row()
    }

    /// Appends the values in `self.row` as the row of line `self.line_no`.
    fn push_row(&mut self) -> Result<(), FormatError> {
        let line_no = self.line_no;
        self.rows.open_row()?;
        for &v in &self.row {
            self.rows.push(v);
        }
        self.rows.close_row(&|| format!(" (line {line_no})"))
    }

    /// Reads the next line in the common form straight from `chunk` (see
    /// [`super::line_fast`]); the bytes used, or `None` to take the general path.
    #[inline]
    fn fast_line(&mut self, chunk: &[u8]) -> Result<Option<usize>, FormatError> {
        self.row.clear();
        // A line longer than `max_line` (newline included) is the general path's to
        // refuse, so the values of one line stay bounded by it whatever the chunk size.
        let window = &chunk[..chunk.len().min(self.max_line + 2)];
        let used = if self.ndjson {
            line_fast::ndjson_row(window, &mut self.row)
        } else {
            line_fast::csv_row(window, &mut self.row)
        };
        let Some(used) = used else {
            return Ok(None);
        };
        self.line_no += 1;
        self.push_row()?;
        Ok(Some(used))
    }

    fn too_long(&self) -> FormatError {
        FormatError::Malformed(format!(
            "line {} is longer than {} bytes",
            self.line_no + 1,
            self.max_line
        ))
    }

    /// Takes the next bytes of the body.
    fn feed(&mut self, mut chunk: &[u8]) -> Result<(), FormatError> {
        if !self.carry.is_empty() {
            let Some(nl) = chunk.iter().position(|&b| b == b'\n') else {
                if self.carry.len() + chunk.len() > self.max_line {
                    return Err(self.too_long());
                }
                self.carry.extend_from_slice(chunk);
                return Ok(());
            };
            if self.carry.len() + nl > self.max_line {
                return Err(self.too_long());
            }
            let mut line = std::mem::take(&mut self.carry);
            line.extend_from_slice(&chunk[..nl]);
            let r = self.line(&line);
            line.clear();
            self.carry = line;
            r?;
            chunk = &chunk[nl + 1..];
        }
        loop {
            if let Some(used) = self.fast_line(chunk)? {
                chunk = &chunk[used..];
                continue;
            }
            let Some(nl) = chunk.iter().position(|&b| b == b'\n') else {
                break;
            };
            if nl > self.max_line {
                return Err(self.too_long());
            }
            self.line(&chunk[..nl])?;
            chunk = &chunk[nl + 1..];
        }
        if chunk.len() > self.max_line {
            return Err(self.too_long());
        }
        self.carry.extend_from_slice(chunk);
        Ok(())
    }

    /// Reads a last line without `\n`.
    fn last_line(&mut self) -> Result<(), FormatError> {
        if !self.carry.is_empty() {
            let line = std::mem::take(&mut self.carry);
            self.line(&line)?;
        }
        Ok(())
    }

    /// Ends the body and checks the batch.
    fn finish(mut self) -> Result<Batch, FormatError> {
        self.last_line()?;
        self.rows.finish_with(|x, y| BatchData::F64 { x, y })
    }
}
