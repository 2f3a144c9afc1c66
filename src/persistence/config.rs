//! What the storage layer records about a model besides its state: its name and the
//! settings it was created with. Written once, at creation, to `model.json`, and copied
//! into every snapshot so an exported snapshot is self-describing.
//!
//! This is the storage layer's own plain struct; the HTTP layer maps its request type
//! onto it, so neither depends on the other's serde details.

use serde::{Deserialize, Serialize};

use crate::pca::OptimizerKind;

use super::error::{Error, Result};

/// Longest model name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A model's creation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The model's name; also its directory name (see [`validate_name`]).
    pub name: String,
    /// Input dimension n.
    pub dim: usize,
    /// Number of ordered components p.
    pub components: usize,
    /// Target dimension n_y for regression models; `None` for autoencoders.
    pub target_dim: Option<usize>,
    /// Forgetting half-life in samples; `None` keeps every sample at weight 1.
    pub half_life: Option<f64>,
    /// Optimiser name as users write it (`"subspace"` or `"gradient"`).
    pub optimizer: String,
    /// Convergence tolerance on every error bound, in radians.
    pub tolerance: f64,
}

impl ModelConfig {
    /// Checks every field's range (the same ranges `pca` enforces, checked here so a
    /// bad snapshot or `model.json` is rejected before anything is built from it).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        validate_name(&self.name)?;
        if self.dim == 0 {
            return bad("dim", "must be at least 1".into());
        }
        if self.target_dim == Some(0) {
            return bad("target_dim", "must be at least 1".into());
        }
        let m = self.target_dim.unwrap_or(self.dim);
        if self.components == 0 || self.components > m {
            return bad(
                "components",
                format!("must be between 1 and {m}, got {}", self.components),
            );
        }
        if let Some(h) = self.half_life {
            if !(h.is_finite() && h > 0.0) {
                return bad(
                    "half_life",
                    format!("must be a positive number of samples, got {h}"),
                );
            }
        }
        if OptimizerKind::parse(&self.optimizer).is_none() {
            return bad(
                "optimizer",
                format!("unknown optimizer `{}`", self.optimizer),
            );
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0 && self.tolerance < 1.0) {
            return bad(
                "tolerance",
                format!("must be in (0, 1) radians, got {}", self.tolerance),
            );
        }
        Ok(())
    }
}

/// Checks that a model name is safe as a directory name on every platform we care
/// about: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `_` and `-`, starting
/// with a letter or digit. This rules out `.`/`..`, path separators, and the leading dot
/// the store reserves for its temporary and tombstone directories.
///
/// # Errors
/// [`Error::InvalidConfig`] for field `name`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            field: "name",
            reason: format!(
                "`{name}`: must be 1–{MAX_NAME_LEN} ASCII letters, digits, `_` or `-`, \
                 starting with a letter or digit"
            ),
        })
    }
}
