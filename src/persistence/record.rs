//! The log record: one checked [`Batch`] with the [`Stamp`] that places it in the model's
//! stream, encoded so that replay feeds the accumulator the very same numbers.
//!
//! # Format (version 2)
//!
//! ```text
//! record  : len u32 LE · crc u32 LE · payload (len bytes)
//! payload : kind u8 (= 1, batch) · value width u8 (4 = f32, 8 = f64) ·
//!           sequence u64 · local u64 · clock u64 ·
//!           rows u32 · dim u32 · target_dim u32 (0 = none) ·
//!           x (rows·dim values) · y (rows·target_dim values), values little-endian
//! ```
//!
//! Version 1 (release 0.1, one log per model) had no `local` and no `clock`; its
//! payloads decode with `local = sequence` (one partition, consecutive sequences) and
//! `clock = 0`, which the migration in [`super::store`] then fills in.
//!
//! The CRC-32 (IEEE, `crc32fast`) covers the four length bytes *and* the payload, so a
//! flipped bit in the length is caught even when the wrong length lands inside the file.

use crate::pca::{Batch, BatchData, Shape};

use super::codec::Reader;
use super::error::{Error, Result};

/// Length plus checksum in front of every payload.
pub const RECORD_HEADER_LEN: u64 = 8;
/// Largest payload accepted (1 GiB). A length above it is corruption, not a batch.
pub const MAX_PAYLOAD: u32 = 1 << 30;
/// Payload kind of a batch record (the only kind so far).
const KIND_BATCH: u8 = 1;
/// Fixed part of a v2 payload: kind, width, sequence, local, clock, rows, dim, target_dim.
const PAYLOAD_FIXED: usize = 1 + 1 + 8 + 8 + 8 + 4 + 4 + 4;
/// Byte offset of the stamp in an encoded record: length (4), checksum (4), kind (1),
/// width (1).
const STAMP_OFFSET: usize = 10;

/// Where a batch sits in its model's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// The model-wide sequence number the producer was answered (strictly increasing
    /// over every partition of the model).
    pub sequence: u64,
    /// The record's index in its partition's log: 1 for the partition's first batch,
    /// then +1 per batch, with no gaps. What recovery checks for completeness.
    pub local: u64,
    /// The model's row clock after this batch: rows of every batch with a sequence up
    /// to this one, over all partitions (forgetting weighs rows by it).
    pub clock: u64,
}

/// A record encoded for the log, before its [`Stamp`] is known: encoding (the O(rows·n)
/// part) happens outside the partition's lock; under it [`EncodedRecord::stamp`] only
/// writes the stamp and the checksum.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    bytes: Vec<u8>,
}

/// Writes `values` little-endian at the start of `out` (W bytes each) and returns the rest.
fn put_le<'a, T: Copy, const W: usize>(
    out: &'a mut [u8],
    values: &[T],
    le: impl Fn(T) -> [u8; W],
) -> &'a mut [u8] {
    let (head, rest) = out.split_at_mut(values.len() * W);
    for (dst, v) in head.chunks_exact_mut(W).zip(values) {
        dst.copy_from_slice(&le(*v));
    }
    rest
}

impl EncodedRecord {
    /// Encodes `batch` with a zero stamp and no checksum yet.
    ///
    /// # Errors
    /// [`Error::InvalidRecord`] for a batch too large for one record (1 GiB) or with a
    /// dimension beyond `u32`.
    pub fn new(batch: &Batch) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidRecord { reason };
        let shape = batch.shape();
        let u32_of = |v: usize, what: &str| {
            u32::try_from(v).map_err(|_| invalid(format!("{what} {v} exceeds u32")))
        };
        let rows = u32_of(batch.rows(), "rows")?;
        let dim = u32_of(shape.dim, "dim")?;
        let target = u32_of(shape.target_dim.unwrap_or(0), "target_dim")?;
        let data = batch.data();
        let payload_len = PAYLOAD_FIXED + data.value_bytes();
        let len = u32::try_from(payload_len)
            .ok()
            .filter(|l| *l <= MAX_PAYLOAD)
            .ok_or_else(|| {
                invalid(format!(
                    "payload of {payload_len} bytes exceeds {MAX_PAYLOAD}"
                ))
            })?;
        let mut buf = Vec::with_capacity(RECORD_HEADER_LEN as usize + payload_len);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&[0; 4]); // checksum, filled by `stamp`
        buf.push(KIND_BATCH);
        buf.push(data.width());
        buf.extend_from_slice(&[0; 24]); // stamp, filled by `stamp`
        buf.extend_from_slice(&rows.to_le_bytes());
        buf.extend_from_slice(&dim.to_le_bytes());
        buf.extend_from_slice(&target.to_le_bytes());
        // One resize, then fixed-width stores the compiler turns into plain copies (a
        // push per value re-checked the capacity every 4 bytes: 4 % of a server's CPU).
        let values = buf.len();
        buf.resize(values + data.value_bytes(), 0);
        let out = &mut buf[values..];
        match data {
            BatchData::F32 { x, y } => {
                let rest = put_le(out, x, |v| v.to_le_bytes());
                put_le(rest, y.as_deref().unwrap_or_default(), |v| v.to_le_bytes());
            }
            BatchData::F64 { x, y } => {
                let rest = put_le(out, x, |v| v.to_le_bytes());
                put_le(rest, y.as_deref().unwrap_or_default(), |v| v.to_le_bytes());
            }
        }
        Ok(Self { bytes: buf })
    }

    /// Writes the stamp and the checksum (one CRC pass).
    pub fn stamp(&mut self, stamp: Stamp) {
        let at = STAMP_OFFSET;
        self.bytes[at..at + 8].copy_from_slice(&stamp.sequence.to_le_bytes());
        self.bytes[at + 8..at + 16].copy_from_slice(&stamp.local.to_le_bytes());
        self.bytes[at + 16..at + 24].copy_from_slice(&stamp.clock.to_le_bytes());
        let crc = record_crc(&self.bytes[0..4], &self.bytes[8..]);
        self.bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    /// The encoded bytes (header and payload).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One decoded log record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Where the batch sits in the stream.
    pub stamp: Stamp,
    /// The batch, checked again on the way out.
    pub batch: Batch,
}

/// The CRC of a record: over its length bytes and its payload.
pub fn record_crc(len_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(payload);
    h.finalize()
}

/// Decodes a payload of log format `version` (1 or 2) whose checksum already matched.
///
/// # Errors
/// A description of what does not decode, including a batch that [`Batch::new`]
/// refuses (a record only holds checked batches, so that is damage).
pub fn decode(payload: &[u8], version: u32) -> std::result::Result<LogRecord, String> {
    let mut r = Reader::new(payload);
    let kind = r.u8("record kind")?;
    if kind != KIND_BATCH {
        return Err(format!("unknown record kind {kind}"));
    }
    let width = r.u8("value width")?;
    let sequence = r.u64("sequence")?;
    let (local, clock) = if version >= 2 {
        (r.u64("local index")?, r.u64("clock")?)
    } else {
        (sequence, 0)
    };
    let rows = r.u32("rows")? as usize;
    let dim = r.u32("dim")? as usize;
    let target_dim = match r.u32("target_dim")? {
        0 => None,
        m => Some(m as usize),
    };
    if rows == 0 || dim == 0 {
        return Err(format!("empty batch: {rows} rows of dim {dim}"));
    }
    let nx = rows.checked_mul(dim).ok_or("rows×dim overflows")?;
    let ny = target_dim
        .map(|m| rows.checked_mul(m).ok_or("rows×target_dim overflows"))
        .transpose()?;
    let data = match width {
        4 => BatchData::F32 {
            x: r.f32s(nx, "x values")?,
            y: ny.map(|n| r.f32s(n, "y values")).transpose()?,
        },
        8 => BatchData::F64 {
            x: r.f64s(nx, "x values")?,
            y: ny.map(|n| r.f64s(n, "y values")).transpose()?,
        },
        w => return Err(format!("unknown value width {w}")),
    };
    if r.remaining() != 0 {
        return Err(format!(
            "{} unexpected bytes after the values",
            r.remaining()
        ));
    }
    let batch = Batch::new(Shape { dim, target_dim }, data).map_err(|e| e.to_string())?;
    Ok(LogRecord {
        stamp: Stamp {
            sequence,
            local,
            clock,
        },
        batch,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_record_decodes_to_the_same_batch_and_stamp() {
        for data in [
            BatchData::F32 {
                x: vec![1.5, -0.0, 3.0, f32::MIN_POSITIVE],
                y: Some(vec![7.0, 8.0]),
            },
            BatchData::F64 {
                x: vec![1e-300, 2.0, -3.5, 4.0],
                y: Some(vec![0.1, 0.2]),
            },
        ] {
            let batch = Batch::new(
                Shape {
                    dim: 2,
                    target_dim: Some(1),
                },
                data,
            )
            .unwrap();
            let mut e = EncodedRecord::new(&batch).unwrap();
            let stamp = Stamp {
                sequence: 9,
                local: 4,
                clock: 123,
            };
            e.stamp(stamp);
            let bytes = e.as_bytes();
            let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
            assert_eq!(len + 8, bytes.len());
            let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
            assert_eq!(crc, record_crc(&bytes[0..4], &bytes[8..]));
            let r = decode(&bytes[8..], 2).unwrap();
            assert_eq!(r.stamp, stamp);
            assert_eq!(r.batch, batch);
        }
    }

    #[test]
    fn a_payload_with_bad_values_or_trailing_bytes_is_refused() {
        let batch = Batch::new(
            Shape::inputs(1),
            BatchData::F64 {
                x: vec![1.0],
                y: None,
            },
        )
        .unwrap();
        let mut e = EncodedRecord::new(&batch).unwrap();
        e.stamp(Stamp::default());
        let mut payload = e.as_bytes()[8..].to_vec();
        let n = payload.len();
        payload[n - 8..].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(decode(&payload, 2).unwrap_err().contains("non-finite"));
        payload.push(0);
        assert!(decode(&payload, 2)
            .unwrap_err()
            .contains("unexpected bytes"));
    }
}
