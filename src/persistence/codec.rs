//! Little-endian primitives shared by the WAL and snapshot formats: a checksumming
//! writer that streams through any [`Write`], and a bounds-checked reader over a byte
//! slice. Floats are written as their raw IEEE-754 bits, so a round trip is bit-exact
//! (signed zeros, subnormals and NaN payloads included).

use std::io::{self, Write};

use nalgebra::{DMatrix, DVector};

/// Values converted per chunk when streaming floats; keeps the stack buffer small while
/// turning millions of 8-byte writes into a few thousand `write_all` calls.
const CHUNK: usize = 1024;

/// A writer that feeds every byte it passes on into a CRC-32 (IEEE) hasher.
pub(crate) struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    /// The checksum of everything written so far, and the inner writer.
    pub(crate) fn finish(self) -> (u32, W) {
        (self.hasher.finalize(), self.inner)
    }

    pub(crate) fn u8(&mut self, v: u8) -> io::Result<()> {
        self.write_all(&[v])
    }

    pub(crate) fn u32(&mut self, v: u32) -> io::Result<()> {
        self.write_all(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> io::Result<()> {
        self.write_all(&v.to_le_bytes())
    }

    pub(crate) fn usize(&mut self, v: usize) -> io::Result<()> {
        self.u64(v as u64)
    }

    pub(crate) fn f64(&mut self, v: f64) -> io::Result<()> {
        self.u64(v.to_bits())
    }

    /// `u8` presence flag, then the value's bits (0 when absent, to keep a fixed size).
    pub(crate) fn opt_f64(&mut self, v: Option<f64>) -> io::Result<()> {
        self.u8(u8::from(v.is_some()))?;
        self.f64(v.unwrap_or(0.0))
    }

    /// `u32` byte length, then UTF-8 bytes.
    pub(crate) fn str(&mut self, s: &str) -> io::Result<()> {
        let len = u32::try_from(s.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string too long"))?;
        self.u32(len)?;
        self.write_all(s.as_bytes())
    }

    pub(crate) fn f64s(&mut self, values: &[f64]) -> io::Result<()> {
        let mut buf = [0u8; CHUNK * 8];
        for chunk in values.chunks(CHUNK) {
            for (dst, v) in buf.chunks_exact_mut(8).zip(chunk) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            self.write_all(&buf[..chunk.len() * 8])?;
        }
        Ok(())
    }

    /// `u64` length, then the entries.
    pub(crate) fn vector(&mut self, v: &DVector<f64>) -> io::Result<()> {
        self.usize(v.len())?;
        self.f64s(v.as_slice())
    }

    /// `u64` rows, `u64` columns, then the entries in column-major order (nalgebra's
    /// storage order, so no transposition is needed either way).
    pub(crate) fn matrix(&mut self, m: &DMatrix<f64>) -> io::Result<()> {
        self.usize(m.nrows())?;
        self.usize(m.ncols())?;
        self.f64s(m.as_slice())
    }

    /// `u8` presence flag, then the vector when present.
    pub(crate) fn opt_vector(&mut self, v: Option<&DVector<f64>>) -> io::Result<()> {
        self.u8(u8::from(v.is_some()))?;
        v.map_or(Ok(()), |v| self.vector(v))
    }

    /// `u8` presence flag, then the matrix when present.
    pub(crate) fn opt_matrix(&mut self, m: Option<&DMatrix<f64>>) -> io::Result<()> {
        self.u8(u8::from(m.is_some()))?;
        m.map_or(Ok(()), |m| self.matrix(m))
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A bounds-checked cursor over bytes. Every read names what it was reading, so a
/// truncated or malformed input gives a precise message instead of a panic, and every
/// length is checked against the bytes left before anything is allocated (a corrupt
/// length cannot make us allocate gigabytes).
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{what}: needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn usize(&mut self, what: &str) -> Result<usize, String> {
        let v = self.u64(what)?;
        usize::try_from(v).map_err(|_| format!("{what}: {v} does not fit in usize"))
    }

    pub(crate) fn f64(&mut self, what: &str) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64(what)?))
    }

    pub(crate) fn flag(&mut self, what: &str) -> Result<bool, String> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("{what}: presence flag must be 0 or 1, got {other}")),
        }
    }

    pub(crate) fn opt_f64(&mut self, what: &str) -> Result<Option<f64>, String> {
        let present = self.flag(what)?;
        let v = self.f64(what)?;
        Ok(present.then_some(v))
    }

    pub(crate) fn str(&mut self, what: &str) -> Result<String, String> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("{what}: not UTF-8: {e}"))
    }

    /// `count` f64 values; the byte count is checked before allocating.
    pub(crate) fn f64s(&mut self, count: usize, what: &str) -> Result<Vec<f64>, String> {
        let n = count
            .checked_mul(8)
            .ok_or_else(|| format!("{what}: {count} values overflow"))?;
        let bytes = self.take(n, what)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f64::from_le_bytes(a)
            })
            .collect())
    }

    /// `count` f32 values; the byte count is checked before allocating.
    pub(crate) fn f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>, String> {
        let n = count
            .checked_mul(4)
            .ok_or_else(|| format!("{what}: {count} values overflow"))?;
        let bytes = self.take(n, what)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| {
                let mut a = [0u8; 4];
                a.copy_from_slice(c);
                f32::from_le_bytes(a)
            })
            .collect())
    }

    pub(crate) fn vector(&mut self, what: &str) -> Result<DVector<f64>, String> {
        let len = self.usize(what)?;
        Ok(DVector::from_vec(self.f64s(len, what)?))
    }

    pub(crate) fn matrix(&mut self, what: &str) -> Result<DMatrix<f64>, String> {
        let rows = self.usize(what)?;
        let cols = self.usize(what)?;
        let count = rows
            .checked_mul(cols)
            .ok_or_else(|| format!("{what}: {rows}×{cols} overflows"))?;
        Ok(DMatrix::from_vec(rows, cols, self.f64s(count, what)?))
    }

    pub(crate) fn opt_vector(&mut self, what: &str) -> Result<Option<DVector<f64>>, String> {
        if self.flag(what)? {
            self.vector(what).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn opt_matrix(&mut self, what: &str) -> Result<Option<DMatrix<f64>>, String> {
        if self.flag(what)? {
            self.matrix(what).map(Some)
        } else {
            Ok(None)
        }
    }
}
