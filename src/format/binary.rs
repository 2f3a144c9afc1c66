//! Binary formats: raw little-endian f32 rows, and NumPy `.npy` arrays (float32 or
//! float64, C or Fortran order). Values keep their width. Memory grows with the bytes
//! that arrived, never with what a header claims.

use super::npy::{self, Dtype, Header};
use super::rows::Joined;
use super::{FormatError, RowLimit};
use crate::pca::{Batch, BatchData, Shape};

/// A little-endian element type.
trait Elem: Copy + Into<f64> + std::fmt::Debug {
    const SIZE: usize;
    fn read(b: &[u8]) -> Self;
    /// Appends the values of `b`, whole elements only (`b.len()` a multiple of `SIZE`).
    /// Written per type over fixed-size chunks so that the loop compiles to a plain
    /// copy: through `chunks_exact(SIZE).map(read)` the conversion was an out-of-line
    /// call per value, 7 % of the server's CPU under 784-wide float64 `.npy` ingest.
    fn extend_le(dst: &mut Vec<Self>, b: &[u8]);
}

impl Elem for f32 {
    const SIZE: usize = 4;
    #[inline]
    fn read(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline]
    fn extend_le(dst: &mut Vec<Self>, b: &[u8]) {
        let (whole, _) = b.as_chunks::<4>();
        dst.extend(whole.iter().map(|c| f32::from_le_bytes(*c)));
    }
}

impl Elem for f64 {
    const SIZE: usize = 8;
    #[inline]
    fn read(b: &[u8]) -> Self {
        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    #[inline]
    fn extend_le(dst: &mut Vec<Self>, b: &[u8]) {
        let (whole, _) = b.as_chunks::<8>();
        dst.extend(whole.iter().map(|c| f64::from_le_bytes(*c)));
    }
}

/// Elements streamed into whole rows: a partial element (fewer than `SIZE` bytes) and a
/// partial row are carried to the next chunk.
#[derive(Debug)]
struct Stream<T> {
    rows: Joined<T>,
    carry: [u8; 8],
    carry_len: usize,
    pending: Vec<T>,
}

impl<T: Elem> Stream<T> {
    fn new(shape: Shape, limit: RowLimit) -> Self {
        Self {
            rows: Joined::new(shape, limit),
            carry: [0; 8],
            carry_len: 0,
            pending: Vec::new(),
        }
    }

    fn feed(&mut self, mut c: &[u8]) -> Result<(), FormatError> {
        if self.carry_len > 0 {
            let take = (T::SIZE - self.carry_len).min(c.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&c[..take]);
            self.carry_len += take;
            c = &c[take..];
            if self.carry_len < T::SIZE {
                return Ok(());
            }
            self.pending.push(T::read(&self.carry));
            self.carry_len = 0;
        }
        let whole = c.len() / T::SIZE * T::SIZE;
        T::extend_le(&mut self.pending, &c[..whole]);
        let rest = &c[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
        self.flush_rows()
    }

    fn flush_rows(&mut self) -> Result<(), FormatError> {
        let w = self.rows.shape.row_width().max(1);
        let k = self.pending.len() / w;
        if k == 0 {
            return Ok(());
        }
        if self.rows.rows() + k > self.rows.limit.max {
            return Err(FormatError::TooManyRows {
                max: self.rows.limit.max,
                setting: self.rows.limit.setting,
            });
        }
        self.rows.push_rows(&self.pending[..k * w]);
        self.pending.drain(..k * w);
        Ok(())
    }

    /// Whether the stream ended on a row boundary.
    fn whole(&self) -> bool {
        self.carry_len == 0 && self.pending.is_empty()
    }
}

/// The push parser for `application/octet-stream` bodies: rows of `dim + target_dim`
/// little-endian f32 values, back to back. Stays f32.
#[derive(Debug)]
pub struct RawF32Parser {
    stream: Stream<f32>,
    bytes: usize,
}

impl RawF32Parser {
    /// A parser for rows of `shape`, at most `limit.max` rows.
    pub fn new(shape: Shape, limit: RowLimit) -> Self {
        Self {
            stream: Stream::new(shape, limit),
            bytes: 0,
        }
    }

    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// [`FormatError::TooManyRows`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        self.bytes += chunk.len();
        self.stream.feed(chunk)
    }

    /// Ends the body and checks the batch.
    ///
    /// # Errors
    /// [`FormatError::DimensionMismatch`] when the body is not whole rows, then any check
    /// of [`Batch::new`].
    pub fn finish(self) -> Result<Batch, FormatError> {
        let shape = self.stream.rows.shape;
        if !self.stream.whole() {
            let w = shape.row_width();
            return Err(FormatError::DimensionMismatch(format!(
                "a body of {} bytes is not a whole number of rows of {w} little-endian f32 \
                 values ({} bytes each)",
                self.bytes,
                4 * w
            )));
        }
        self.stream.rows.finish_with(|x, y| BatchData::F32 { x, y })
    }
}

#[derive(Debug)]
enum NpyState {
    /// Reading the prefix and header into `head`.
    Head,
    /// C order, float32.
    F32(Stream<f32>),
    /// C order, float64.
    F64(Stream<f64>),
    /// Fortran order: the data is buffered as it arrives and transposed at the end.
    Fortran(Vec<u8>),
}

/// The push parser for `application/x-npy` bodies: a 2-D array of `dim + target_dim`
/// columns, float32 or float64, C or Fortran order. A header that does not fit the model
/// or its own bytes is refused; nothing is allocated for what the header claims.
#[derive(Debug)]
pub struct NpyParser {
    shape: Shape,
    limit: RowLimit,
    head: Vec<u8>,
    header: Option<Header>,
    /// Data bytes the header promises.
    expected: u64,
    /// Data bytes received.
    received: u64,
    state: NpyState,
}

fn bad(m: impl std::fmt::Display) -> FormatError {
    FormatError::Malformed(format!("not a usable .npy body: {m}"))
}

impl NpyParser {
    /// A parser for rows of `shape`, at most `limit.max` rows.
    pub fn new(shape: Shape, limit: RowLimit) -> Self {
        Self {
            shape,
            limit,
            head: Vec::new(),
            header: None,
            expected: 0,
            received: 0,
            state: NpyState::Head,
        }
    }

    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// A bad header ([`FormatError::Malformed`]), an array whose columns are not the
    /// model's row width ([`FormatError::DimensionMismatch`]), more rows than the limit,
    /// or more data than the header's shape.
    pub fn feed(&mut self, mut c: &[u8]) -> Result<(), FormatError> {
        if matches!(self.state, NpyState::Head) {
            let used = self.feed_head(c)?;
            c = &c[used..];
            if matches!(self.state, NpyState::Head) {
                return Ok(());
            }
        }
        self.received += c.len() as u64;
        if self.received > self.expected {
            let (rows, cols, width) = self
                .header
                .as_ref()
                .map_or((0, 0, 0), |h| (h.rows, h.cols, h.dtype.size()));
            return Err(bad(format!(
                "more data than the header's shape holds: at least {} bytes after the \
                 header, but shape ({rows}, {cols}) of {width}-byte values is {} bytes",
                self.received, self.expected
            )));
        }
        match &mut self.state {
            NpyState::Head => Ok(()),
            NpyState::F32(s) => s.feed(c),
            NpyState::F64(s) => s.feed(c),
            NpyState::Fortran(buf) => {
                buf.extend_from_slice(c);
                Ok(())
            }
        }
    }

    /// Consumes header bytes from `c`; returns how many.
    fn feed_head(&mut self, c: &[u8]) -> Result<usize, FormatError> {
        let before = self.head.len();
        let want = match npy::preamble(&self.head).map_err(bad)? {
            Some((prefix, len)) => prefix + len,
            None => 12,
        };
        let take = want.saturating_sub(before).min(c.len());
        self.head.extend_from_slice(&c[..take]);
        let Some((prefix, len)) = npy::preamble(&self.head).map_err(bad)? else {
            return if take < c.len() {
                // A version 1 prefix is complete at 10 bytes: read on.
                Ok(take + self.feed_head(&c[take..])?)
            } else {
                Ok(take)
            };
        };
        if self.head.len() < prefix + len {
            let more = (prefix + len - self.head.len()).min(c.len() - take);
            self.head.extend_from_slice(&c[take..take + more]);
            if self.head.len() < prefix + len {
                return Ok(take + more);
            }
            self.start(prefix)?;
            return Ok(take + more);
        }
        // The prefix was read with more bytes than it needed: give the extra back.
        let extra = self.head.len() - (prefix + len);
        self.head.truncate(prefix + len);
        self.start(prefix)?;
        Ok(take - extra)
    }

    fn start(&mut self, prefix: usize) -> Result<(), FormatError> {
        let h = npy::parse_header(&self.head[prefix..]).map_err(bad)?;
        let width = self.shape.row_width() as u64;
        if h.cols != width {
            let layout = match self.shape.target_dim {
                Some(t) => format!(
                    " (dim {} x columns, then target_dim {t} y columns)",
                    self.shape.dim
                ),
                None => String::new(),
            };
            return Err(FormatError::DimensionMismatch(format!(
                "the array's shape is ({}, {}): {} columns, but (rows, {width}){layout} is \
                 expected",
                h.rows, h.cols, h.cols
            )));
        }
        if h.rows > self.limit.max as u64 {
            return Err(FormatError::TooManyRows {
                max: self.limit.max,
                setting: self.limit.setting,
            });
        }
        self.expected = h
            .data_len()
            .ok_or_else(|| bad(format!("shape ({}, {}) is too large", h.rows, h.cols)))?;
        self.state = match (h.fortran_order, h.dtype) {
            (true, _) => NpyState::Fortran(Vec::new()),
            (false, Dtype::F4) => NpyState::F32(Stream::new(self.shape, self.limit)),
            (false, Dtype::F8) => NpyState::F64(Stream::new(self.shape, self.limit)),
        };
        self.header = Some(h);
        self.head = Vec::new();
        Ok(())
    }

    /// Ends the body and checks the batch.
    ///
    /// # Errors
    /// A truncated header or data, then any check of [`Batch::new`].
    pub fn finish(self) -> Result<Batch, FormatError> {
        let Some(h) = self.header else {
            let got = self.head.len();
            return Err(bad(match npy::preamble(&self.head) {
                _ if got == 0 => "the body is empty".to_owned(),
                Ok(Some((prefix, len))) => format!(
                    "the body ends inside the header: {got} bytes, but the prefix says the \
                     header takes {} bytes",
                    prefix + len
                ),
                _ => format!("the body ends inside the header ({got} bytes)"),
            }));
        };
        if self.received < self.expected {
            return Err(bad(format!(
                "truncated: the header promises {} rows of {} values ({} bytes of data) but \
                 the body has {} bytes of data",
                h.rows, h.cols, self.expected, self.received
            )));
        }
        match self.state {
            NpyState::Head => Err(bad("no header")),
            NpyState::F32(s) => s.rows.finish_with(|x, y| BatchData::F32 { x, y }),
            NpyState::F64(s) => s.rows.finish_with(|x, y| BatchData::F64 { x, y }),
            NpyState::Fortran(buf) => {
                let (rows, cols) = (h.rows as usize, h.cols as usize);
                match h.dtype {
                    Dtype::F4 => transpose::<f32>(&buf, rows, cols, self.shape, self.limit)
                        .finish_with(|x, y| BatchData::F32 { x, y }),
                    Dtype::F8 => transpose::<f64>(&buf, rows, cols, self.shape, self.limit)
                        .finish_with(|x, y| BatchData::F64 { x, y }),
                }
            }
        }
    }
}

/// Column-major `rows × cols` elements to row-major rows.
fn transpose<T: Elem>(
    buf: &[u8],
    rows: usize,
    cols: usize,
    shape: Shape,
    limit: RowLimit,
) -> Joined<T> {
    let mut out = Joined::new(shape, limit);
    let mut row = Vec::with_capacity(cols);
    for r in 0..rows {
        row.clear();
        row.extend((0..cols).map(|c| T::read(&buf[(c * rows + r) * T::SIZE..])));
        out.push_rows(&row);
    }
    out
}
