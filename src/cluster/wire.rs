//! How a batch travels through a partition stream: a small versioned binary codec.
//!
//! ```text
//! whole batch: "SPCW" · version u8 = 1 · kind u8 = 0 · width u8 (4|8) · 0u8 ·
//!              dim u32 · target_dim u32 (0 = none) · rows u32 ·
//!              x (rows·dim values) · y (rows·target_dim values) · crc32 u32
//! chunk:       "SPCW" · version u8 = 1 · kind u8 = 1 · 0u8 · 0u8 ·
//!              batch id [16] · index u32 · count u32 · whole length u64 · bytes
//! ```
//!
//! Values are little-endian IEEE-754 in the width they arrived in (raw f32 bodies stay
//! f32). The CRC-32 covers every byte of the whole batch before it, so a batch that was
//! split into chunks is checked once reassembled. A batch larger than one NATS message
//! is split into chunks of the whole encoding, published as one atomic batch (all
//! chunks are stored or none), and reassembled by the fold in stream order.

use crate::pca::{Batch, BatchData, Shape};

use super::codec::{DecodeError, Reader, Writer};

const MAGIC: &[u8; 4] = b"SPCW";
/// The wire format this build writes and reads.
pub const WIRE_VERSION: u8 = 1;
const KIND_WHOLE: u8 = 0;
const KIND_CHUNK: u8 = 1;
/// Bytes of a chunk's header before its payload.
pub const CHUNK_HEADER: usize = 4 + 4 + 16 + 4 + 4 + 8;

/// Encodes a checked batch as one whole-batch message.
pub fn encode(batch: &Batch) -> Vec<u8> {
    let shape = batch.shape();
    let mut w = Writer::with_capacity(32 + batch.data().value_bytes());
    w.bytes(MAGIC);
    w.u8(WIRE_VERSION);
    w.u8(KIND_WHOLE);
    w.u8(batch.data().width());
    w.u8(0);
    // Dimensions are at most MAX_DIM and rows are bounded by the body limit.
    w.u32(u32::try_from(shape.dim).unwrap_or(u32::MAX));
    w.u32(u32::try_from(shape.target_dim.unwrap_or(0)).unwrap_or(u32::MAX));
    w.u32(u32::try_from(batch.rows()).unwrap_or(u32::MAX));
    match batch.data() {
        BatchData::F32 { x, y } => {
            for v in x.iter().chain(y.iter().flatten()) {
                w.bytes(&v.to_le_bytes());
            }
        }
        BatchData::F64 { x, y } => {
            for v in x.iter().chain(y.iter().flatten()) {
                w.bytes(&v.to_le_bytes());
            }
        }
    }
    let crc = crc32fast::hash(&w.buf);
    w.u32(crc);
    w.buf
}

/// Splits a whole-batch encoding into chunk messages of at most `max_message` bytes
/// each (payload plus chunk header). One chunk when it fits.
pub fn chunks(whole: &[u8], batch_id: [u8; 16], max_message: usize) -> Vec<Vec<u8>> {
    let body = max_message.saturating_sub(CHUNK_HEADER).max(1);
    let count = whole.len().div_ceil(body).max(1);
    whole
        .chunks(body)
        .enumerate()
        .map(|(i, part)| {
            let mut w = Writer::with_capacity(CHUNK_HEADER + part.len());
            w.bytes(MAGIC);
            w.u8(WIRE_VERSION);
            w.u8(KIND_CHUNK);
            w.u8(0);
            w.u8(0);
            w.bytes(&batch_id);
            w.u32(u32::try_from(i).unwrap_or(u32::MAX));
            w.u32(u32::try_from(count).unwrap_or(u32::MAX));
            w.u64(whole.len() as u64);
            w.bytes(part);
            w.buf
        })
        .collect()
}

/// One stream message, parsed only as far as its framing.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A whole batch (decode with [`decode`]).
    Whole(&'a [u8]),
    /// One chunk of a batch.
    Chunk {
        /// The batch's id (all its chunks share it).
        id: [u8; 16],
        /// 0-based position.
        index: u32,
        /// Number of chunks.
        count: u32,
        /// Length of the whole encoding.
        total: u64,
        /// This chunk's bytes of the whole encoding.
        body: &'a [u8],
    },
}

/// Parses a message's framing.
///
/// # Errors
/// Bad magic, an unknown version or kind, or a truncated header.
pub fn frame(bytes: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    if r.take(4)? != MAGIC {
        return Err(DecodeError("not a streampca batch (bad magic)".into()));
    }
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(DecodeError(format!(
            "wire version {version}; this build reads {WIRE_VERSION}"
        )));
    }
    match r.u8()? {
        KIND_WHOLE => Ok(Frame::Whole(bytes)),
        KIND_CHUNK => {
            r.take(2)?;
            let mut id = [0u8; 16];
            id.copy_from_slice(r.take(16)?);
            let index = r.u32()?;
            let count = r.u32()?;
            let total = r.u64()?;
            Ok(Frame::Chunk {
                id,
                index,
                count,
                total,
                body: &bytes[CHUNK_HEADER..],
            })
        }
        k => Err(DecodeError(format!("unknown message kind {k}"))),
    }
}

/// Decodes a whole-batch encoding and checks it against the model's shape (and every
/// value, through [`Batch::new`]).
///
/// # Errors
/// A bad checksum, framing, shape, or value.
pub fn decode(bytes: &[u8], shape: Shape) -> Result<Batch, DecodeError> {
    if bytes.len() < 24 {
        return Err(DecodeError(format!("{} bytes is too short", bytes.len())));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(tail);
    if u32::from_le_bytes(stored) != crc32fast::hash(body) {
        return Err(DecodeError("batch checksum mismatch".into()));
    }
    let mut r = Reader::new(body);
    r.take(5)?;
    if r.u8()? != KIND_WHOLE {
        return Err(DecodeError("not a whole batch".into()));
    }
    let width = r.u8()?;
    r.u8()?;
    let dim = r.u32()? as usize;
    let target_dim = match r.u32()? {
        0 => None,
        t => Some(t as usize),
    };
    let rows = r.u32()? as usize;
    if dim != shape.dim || target_dim != shape.target_dim {
        return Err(DecodeError(format!(
            "batch shape (dim {dim}, target_dim {target_dim:?}) is not the model's \
             (dim {}, target_dim {:?})",
            shape.dim, shape.target_dim
        )));
    }
    let nx = rows
        .checked_mul(dim)
        .ok_or_else(|| DecodeError("size overflow".into()))?;
    let ny = rows
        .checked_mul(target_dim.unwrap_or(0))
        .ok_or_else(|| DecodeError("size overflow".into()))?;
    let expect = (nx + ny)
        .checked_mul(usize::from(width))
        .ok_or_else(|| DecodeError("size overflow".into()))?;
    if r.remaining() != expect {
        return Err(DecodeError(format!(
            "{} value bytes for {rows} rows, expected {expect}",
            r.remaining()
        )));
    }
    let data = match width {
        4 => {
            let mut v = r
                .take(expect)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>();
            let y = target_dim.map(|_| v.split_off(nx));
            BatchData::F32 { x: v, y }
        }
        8 => {
            let mut v = r
                .take(expect)?
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b)
                })
                .collect::<Vec<_>>();
            let y = target_dim.map(|_| v.split_off(nx));
            BatchData::F64 { x: v, y }
        }
        w => return Err(DecodeError(format!("value width {w}"))),
    };
    Batch::new(shape, data).map_err(|e| DecodeError(e.to_string()))
}

/// Reassembles chunks arriving in stream order. A chunk out of order (another batch's,
/// or a missing index) is an error: atomic publish stores all of a batch's chunks
/// together, so this means the stream was damaged.
#[derive(Debug, Default)]
pub struct Assembler {
    current: Option<Partial>,
}

/// A batch being reassembled.
#[derive(Debug)]
struct Partial {
    id: [u8; 16],
    next: u32,
    count: u32,
    total: u64,
    buf: Vec<u8>,
}

impl Assembler {
    /// Whether a batch is partly assembled.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Drops a partial batch (after re-reading from an earlier position).
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// Adds a chunk; returns the whole encoding once its last chunk arrived.
    ///
    /// # Errors
    /// A chunk that does not continue the batch in progress, or lengths that disagree.
    pub fn push(
        &mut self,
        id: [u8; 16],
        index: u32,
        count: u32,
        total: u64,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, DecodeError> {
        if count == 0 || index >= count || total > (1 << 32) {
            return Err(DecodeError(format!(
                "bad chunk {index}/{count} of {total} bytes"
            )));
        }
        match &mut self.current {
            None if index == 0 => {
                let mut buf = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
                buf.extend_from_slice(body);
                self.current = Some(Partial {
                    id,
                    next: 1,
                    count,
                    total,
                    buf,
                });
            }
            Some(p) if p.id == id && p.next == index && p.count == count && p.total == total => {
                p.buf.extend_from_slice(body);
                p.next += 1;
            }
            _ => {
                self.current = None;
                return Err(DecodeError(format!(
                    "chunk {index}/{count} does not continue the batch in progress"
                )));
            }
        }
        if self.current.as_ref().is_none_or(|p| p.next != p.count) {
            return Ok(None);
        }
        let Some(Partial { total, buf, .. }) = self.current.take() else {
            return Ok(None);
        };
        if buf.len() as u64 != total {
            return Err(DecodeError(format!(
                "reassembled {} bytes, expected {total}",
                buf.len()
            )));
        }
        Ok(Some(buf))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn batch() -> Batch {
        let shape = Shape {
            dim: 3,
            target_dim: Some(2),
        };
        let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let y: Vec<f32> = (0..8).map(|i| i as f32 * 1.5).collect();
        Batch::new(shape, BatchData::F32 { x, y: Some(y) }).expect("valid batch")
    }

    #[test]
    fn whole_batches_round_trip_bit_for_bit() {
        let b = batch();
        let bytes = encode(&b);
        assert_eq!(frame(&bytes), Ok(Frame::Whole(&bytes)));
        assert_eq!(decode(&bytes, b.shape()), Ok(b.clone()));
        let f64b = Batch::new(
            Shape::inputs(2),
            BatchData::F64 {
                x: vec![1.0, f64::MIN_POSITIVE, -3.25, 1e30],
                y: None,
            },
        )
        .expect("valid");
        assert_eq!(decode(&encode(&f64b), f64b.shape()), Ok(f64b));
    }

    #[test]
    fn a_flipped_bit_or_another_shape_is_refused() {
        let b = batch();
        let mut bytes = encode(&b);
        bytes[30] ^= 1;
        assert!(decode(&bytes, b.shape())
            .unwrap_err()
            .0
            .contains("checksum"));
        let bytes = encode(&b);
        let err = decode(&bytes, Shape::inputs(3)).unwrap_err();
        assert!(err.0.contains("not the model's"), "{err}");
    }

    #[test]
    fn chunks_reassemble_in_order_and_refuse_strangers() {
        let b = batch();
        let whole = encode(&b);
        let parts = chunks(&whole, [7; 16], CHUNK_HEADER + 10);
        assert_eq!(parts.len(), whole.len().div_ceil(10));
        let mut asm = Assembler::default();
        let mut out = None;
        for p in &parts {
            let Ok(Frame::Chunk {
                id,
                index,
                count,
                total,
                body,
            }) = frame(p)
            else {
                panic!("not a chunk");
            };
            assert!(out.is_none());
            out = asm.push(id, index, count, total, body).expect("in order");
        }
        assert_eq!(out.as_deref(), Some(&whole[..]));
        assert_eq!(decode(&whole, b.shape()), Ok(b));
        // A second chunk of another batch while one is in progress is an error.
        let other = chunks(&whole, [9; 16], CHUNK_HEADER + 10);
        let mut asm = Assembler::default();
        for (i, p) in [&parts[0], &other[1]].iter().enumerate() {
            let Ok(Frame::Chunk {
                id,
                index,
                count,
                total,
                body,
            }) = frame(p)
            else {
                panic!("not a chunk");
            };
            let r = asm.push(id, index, count, total, body);
            assert_eq!(r.is_err(), i == 1);
        }
    }
}
