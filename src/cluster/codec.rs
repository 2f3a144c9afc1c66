//! Little-endian binary helpers for the cluster's own formats (the wire batch and the
//! published view): a growable writer and a bounds-checked reader. Every f64 is written
//! as its raw IEEE-754 bits, so what one node writes another reads bit for bit.

use nalgebra::{DMatrix, DVector};

/// Appends little-endian values to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// A writer with `cap` bytes reserved.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: Vec::with_capacity(cap),
        }
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// A u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// An f64's bits.
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Raw bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// `len u64 · f64s`.
    pub fn f64s(&mut self, v: &[f64]) {
        self.u64(v.len() as u64);
        self.buf.reserve(v.len() * 8);
        for x in v {
            self.f64(*x);
        }
    }
    /// `rows u64 · cols u64 · f64s` column-major.
    pub fn matrix(&mut self, m: &DMatrix<f64>) {
        self.u64(m.nrows() as u64);
        self.u64(m.ncols() as u64);
        self.buf.reserve(m.len() * 8);
        for x in m.as_slice() {
            self.f64(*x);
        }
    }
    /// `flag u8 · matrix if 1`.
    pub fn opt_matrix(&mut self, m: Option<&DMatrix<f64>>) {
        match m {
            Some(m) => {
                self.u8(1);
                self.matrix(m);
            }
            None => self.u8(0),
        }
    }
    /// `flag u8 · f64s if 1`.
    pub fn opt_f64s(&mut self, v: Option<&[f64]>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.f64s(v);
            }
            None => self.u8(0),
        }
    }
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Reads what [`Writer`] wrote, refusing to read past the end or to allocate more than
/// the remaining bytes could hold.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// The next `n` bytes.
    ///
    /// # Errors
    /// When fewer than `n` remain.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError(format!(
                "truncated: needed {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// One byte.
    ///
    /// # Errors
    /// At the end.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// A u32.
    ///
    /// # Errors
    /// At the end.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    /// A u64.
    ///
    /// # Errors
    /// At the end.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    /// An f64.
    ///
    /// # Errors
    /// At the end.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    /// A length that must fit `width`-byte items into what is left.
    fn len(&mut self, width: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| DecodeError(format!("length {n} too large")))?;
        if n.checked_mul(width).is_none_or(|b| b > self.buf.len()) {
            return Err(DecodeError(format!(
                "length {n} exceeds the {} bytes left",
                self.buf.len()
            )));
        }
        Ok(n)
    }
    /// `len u64 · f64s`.
    ///
    /// # Errors
    /// Truncated input.
    pub fn f64s(&mut self) -> Result<Vec<f64>, DecodeError> {
        let n = self.len(8)?;
        let raw = self.take(n * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect())
    }
    /// `rows u64 · cols u64 · f64s` column-major.
    ///
    /// # Errors
    /// Truncated input or a size that overflows.
    pub fn matrix(&mut self) -> Result<DMatrix<f64>, DecodeError> {
        let rows = usize::try_from(self.u64()?).map_err(|_| DecodeError("rows".into()))?;
        let cols = usize::try_from(self.u64()?).map_err(|_| DecodeError("cols".into()))?;
        let n = rows
            .checked_mul(cols)
            .filter(|n| n.checked_mul(8).is_some_and(|b| b <= self.buf.len()))
            .ok_or_else(|| DecodeError(format!("{rows}x{cols} matrix exceeds the input")))?;
        let raw = self.take(n * 8)?;
        let v = raw
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect::<Vec<_>>();
        Ok(DMatrix::from_vec(rows, cols, v))
    }
    /// `flag u8 · matrix if 1`.
    ///
    /// # Errors
    /// Truncated input or a flag other than 0/1.
    pub fn opt_matrix(&mut self) -> Result<Option<DMatrix<f64>>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.matrix()?)),
            f => Err(DecodeError(format!("bad option flag {f}"))),
        }
    }
    /// `flag u8 · f64s if 1`.
    ///
    /// # Errors
    /// Truncated input or a flag other than 0/1.
    pub fn opt_f64s(&mut self) -> Result<Option<Vec<f64>>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.f64s()?)),
            f => Err(DecodeError(format!("bad option flag {f}"))),
        }
    }
}

/// A vector from f64s.
pub fn vector(v: Vec<f64>) -> DVector<f64> {
    DVector::from_vec(v)
}
