//! The view a model's trainer publishes and every node serves: which checkpoint of each
//! partition it merged, the merged counts, and the fit (components plus the trainer's
//! warm-start state, so a new trainer resumes where the last one stopped).
//!
//! ```text
//! object: "SPCAVIEW" · version u8 = 1 · has_components u8 ·
//!         [vectors mat · eigenvalues f64s · explained_variance_ratio f64s ·
//!          error_bounds f64s · relative_gaps f64s · loss f64 · converged u8 ·
//!          steps u64 · products f64 · mean f64s · mean_y opt_f64s ·
//!          regression opt_mat · samples f64] ·
//!         q opt_mat · a opt_mat · b opt_mat · previous opt_mat · total_steps u64 ·
//!         crc32 u32
//! ```
//! Every f64 is its raw bits, so every node serves the same numbers bit for bit.

use serde::{Deserialize, Serialize};

use crate::pca::{Components, TrainerState};

use super::codec::{vector, DecodeError, Reader, Writer};

const MAGIC: &[u8; 8] = b"SPCAVIEW";
const VERSION: u8 = 1;

/// The KV pointer to a model's newest view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewPointer {
    /// For each partition k, the `seq` of the checkpoint merged (0: none).
    pub seqs: Vec<u64>,
    /// Merged sample count N.
    pub samples: f64,
    /// Batches folded over all partitions.
    pub batches: u64,
    /// Rows folded over all partitions.
    pub rows: u64,
    /// Batches refused at fold time over all partitions.
    pub rejected: u64,
    /// The view object (components and trainer state).
    pub object: String,
    /// Whether the object holds components (false before enough samples).
    pub fitted: bool,
    /// Whether the fit converged (every error bound within the tolerance).
    pub converged: bool,
    /// Trainer node.
    pub node: String,
    /// Publication time, ms since the Unix epoch.
    pub written_ms: u64,
}

/// Encodes a view object.
pub fn encode(components: Option<&Components>, trainer: &TrainerState) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(MAGIC);
    w.u8(VERSION);
    match components {
        Some(c) => {
            w.u8(1);
            w.matrix(&c.vectors);
            w.f64s(&c.eigenvalues);
            w.f64s(&c.explained_variance_ratio);
            w.f64s(&c.error_bounds);
            w.f64s(&c.relative_gaps);
            w.f64(c.loss);
            w.u8(u8::from(c.converged));
            w.u64(c.steps as u64);
            w.f64(c.products);
            w.f64s(c.mean.as_slice());
            w.opt_f64s(c.mean_y.as_ref().map(|m| m.as_slice()));
            w.opt_matrix(c.regression.as_ref());
            w.f64(c.samples);
        }
        None => w.u8(0),
    }
    w.opt_matrix(trainer.q.as_ref());
    w.opt_matrix(trainer.a.as_ref());
    w.opt_matrix(trainer.b.as_ref());
    w.opt_matrix(trainer.previous.as_ref());
    w.u64(trainer.total_steps);
    let crc = crc32fast::hash(&w.buf);
    w.u32(crc);
    w.buf
}

/// Decodes a view object.
///
/// # Errors
/// A bad checksum, magic, version or structure.
pub fn decode(bytes: &[u8]) -> Result<(Option<Components>, TrainerState), DecodeError> {
    if bytes.len() < MAGIC.len() + 5 {
        return Err(DecodeError("view too short".into()));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) != crc32fast::hash(body) {
        return Err(DecodeError("view checksum mismatch".into()));
    }
    let mut r = Reader::new(body);
    if r.take(8)? != MAGIC {
        return Err(DecodeError("not a view (bad magic)".into()));
    }
    let v = r.u8()?;
    if v != VERSION {
        return Err(DecodeError(format!("view version {v}")));
    }
    let components = match r.u8()? {
        0 => None,
        1 => Some(Components {
            vectors: r.matrix()?,
            eigenvalues: r.f64s()?,
            explained_variance_ratio: r.f64s()?,
            error_bounds: r.f64s()?,
            relative_gaps: r.f64s()?,
            loss: r.f64()?,
            converged: r.u8()? == 1,
            steps: usize::try_from(r.u64()?).map_err(|_| DecodeError("steps".into()))?,
            products: r.f64()?,
            mean: vector(r.f64s()?),
            mean_y: r.opt_f64s()?.map(vector),
            regression: r.opt_matrix()?,
            samples: r.f64()?,
        }),
        f => return Err(DecodeError(format!("bad flag {f}"))),
    };
    let trainer = TrainerState {
        q: r.opt_matrix()?,
        a: r.opt_matrix()?,
        b: r.opt_matrix()?,
        previous: r.opt_matrix()?,
        total_steps: r.u64()?,
    };
    if r.remaining() != 0 {
        return Err(DecodeError(format!("{} trailing bytes", r.remaining())));
    }
    Ok((components, trainer))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use nalgebra::{DMatrix, DVector};

    use super::*;

    #[test]
    fn views_round_trip_bit_for_bit_and_damage_is_refused() {
        let c = Components {
            vectors: DMatrix::from_fn(5, 2, |i, j| (i as f64 - 2.0) * 0.1 + j as f64 / 3.0),
            eigenvalues: vec![3.5, 1.0 / 3.0],
            explained_variance_ratio: vec![0.7, 0.2],
            error_bounds: vec![1e-9, 2e-8],
            relative_gaps: vec![0.9, 0.5],
            loss: 0.125,
            converged: true,
            steps: 7,
            products: 21.5,
            mean: DVector::from_vec(vec![1.0, -2.0, f64::MIN_POSITIVE, 4.0, 5.0]),
            mean_y: None,
            regression: Some(DMatrix::from_element(1, 5, -0.5)),
            samples: 1234.0,
        };
        let t = TrainerState {
            q: Some(DMatrix::from_element(5, 3, 0.25)),
            a: None,
            b: None,
            previous: Some(c.vectors.clone()),
            total_steps: 99,
        };
        let bytes = encode(Some(&c), &t);
        let (c2, t2) = decode(&bytes).unwrap();
        assert_eq!(c2.as_ref(), Some(&c));
        assert_eq!(t2, t);
        let empty = encode(None, &TrainerState::default());
        assert_eq!(decode(&empty).unwrap(), (None, TrainerState::default()));
        let mut bad = bytes.clone();
        bad[20] ^= 0x40;
        assert!(decode(&bad).unwrap_err().0.contains("checksum"));
    }
}
