//! What a model is created with: its [`ModelName`] and [`ModelConfig`], validated in one
//! place. The same struct is the body of `POST /v1/models` (after defaults), the
//! `model.json` each model directory holds, and the head of every snapshot.
//!
//! A leaf module: it depends on nothing in the crate but [`crate::pca`]'s optimiser
//! settings, so the storage layer can read and write it without reaching up.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pca::{FitParams, OptimizerKind, PcaError, ValidParams};

/// Largest input or target dimension any server accepts, whatever `--max-dim` says. The
/// accumulator holds an n×n float64 scatter per partition: 16 384 is 2 GiB each.
pub const MAX_DIM: usize = 16_384;
/// Largest number of components a model may have.
pub const MAX_COMPONENTS: usize = 1024;
/// Most partitions a model may have.
pub const MAX_PARTITIONS: usize = 64;
/// Default convergence tolerance, in radians.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;
/// Longest model name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A configuration field out of range: the field as users spell it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameter `{field}`: {reason}")]
pub struct ConfigError {
    /// The field, e.g. `"dim"`.
    pub field: &'static str,
    /// Why it is invalid, with the numbers.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// A valid model name: `[a-z0-9][a-z0-9_-]{0,63}`. Lower case only, so a name is also a
/// safe, case-stable directory name, metric label and NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl ModelName {
    /// Checks `name`.
    ///
    /// # Errors
    /// [`ConfigError`] on `name` when it does not match `[a-z0-9][a-z0-9_-]{0,63}`.
    pub fn new(name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        let b = name.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_NAME_LEN
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
        if ok {
            Ok(Self(name))
        } else {
            Err(invalid(
                "name",
                format!("`{name}` does not match [a-z0-9][a-z0-9_-]{{0,63}}"),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelName {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        Self::new(s)
    }
}

impl From<ModelName> for String {
    fn from(n: ModelName) -> Self {
        n.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ModelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn default_tolerance() -> f64 {
    DEFAULT_TOLERANCE
}

/// The default false-alarm rate of ingest scoring (`score=true`).
pub const DEFAULT_ALPHA: f64 = 0.01;

fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}

/// Models written before partitions existed (format v1) are one partition.
fn one() -> usize {
    1
}

/// A model's immutable configuration: what it was created with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name.
    pub name: ModelName,
    /// Input dimension n.
    pub dim: usize,
    /// Number of ordered components p.
    pub components: usize,
    /// Target dimension n_y for regression models; `None` for autoencoders.
    #[serde(default)]
    pub target_dim: Option<usize>,
    /// Forgetting half-life in samples; `None` keeps every sample.
    #[serde(default)]
    pub half_life: Option<f64>,
    /// Which optimiser.
    #[serde(default, with = "optimizer_name")]
    pub optimizer: OptimizerKind,
    /// Convergence tolerance on every error bound, in radians.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Number of partitions K: independent accumulators, each with its own lock and log,
    /// merged for every fit (1 ≤ K ≤ [`MAX_PARTITIONS`]).
    #[serde(default = "one")]
    pub partitions: usize,
    /// PCA of the correlation matrix: every variable scaled by its running standard
    /// deviation (taken exactly from the accumulator) before the fit, and queries in the
    /// same scaled space. Autoencoders only.
    #[serde(default)]
    pub standardize: bool,
    /// False-alarm rate α of the control limits ingest scoring (`score=true`) counts
    /// outliers against, in (0, 0.5).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

mod optimizer_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::pca::OptimizerKind;

    pub fn serialize<S: Serializer>(k: &OptimizerKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OptimizerKind, D::Error> {
        let s = String::deserialize(d)?;
        OptimizerKind::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "optimizer must be \"subspace\" or \"gradient\", got {s:?}"
            ))
        })
    }
}

impl ModelConfig {
    /// Checks every field against the hard limits of this build ([`MAX_DIM`],
    /// [`MAX_COMPONENTS`], [`MAX_PARTITIONS`]) and derives the trainer's parameters.
    /// The server's configurable limits (`--max-dim` and friends) are checked by the
    /// registry on top of this, for creation and import alike.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<ValidParams, ConfigError> {
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(invalid(
                "dim",
                format!("must be between 1 and {MAX_DIM}, got {}", self.dim),
            ));
        }
        if let Some(t) = self.target_dim {
            if t == 0 || t > MAX_DIM {
                return Err(invalid(
                    "target_dim",
                    format!("must be between 1 and {MAX_DIM}, got {t}"),
                ));
            }
        }
        let m = self.target_dim.unwrap_or(self.dim);
        let most = MAX_COMPONENTS.min(m);
        if self.components == 0 || self.components > most {
            return Err(invalid(
                "components",
                format!(
                    "must be between 1 and {most} (the {} dimension, capped at \
                     {MAX_COMPONENTS}), got {}",
                    if self.target_dim.is_some() {
                        "target"
                    } else {
                        "input"
                    },
                    self.components
                ),
            ));
        }
        if let Some(h) = self.half_life {
            if !(h.is_finite() && h > 0.0) {
                return Err(invalid(
                    "half_life",
                    format!("must be a positive number of samples, got {h}"),
                ));
            }
        }
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(invalid(
                "partitions",
                format!(
                    "must be between 1 and {MAX_PARTITIONS}, got {}",
                    self.partitions
                ),
            ));
        }
        if self.standardize && self.target_dim.is_some() {
            return Err(invalid(
                "standardize",
                "applies to autoencoder models only (this model has target_dim)",
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(invalid(
                "alpha",
                format!("must be in (0, 0.5), got {}", self.alpha),
            ));
        }
        let mut params = FitParams::new(self.components, self.optimizer);
        params.tolerance = self.tolerance;
        params.check(m).map_err(|e| match e {
            PcaError::InvalidParam { name, reason } => invalid(name, reason),
            other => invalid("components", other.to_string()),
        })
    }

    /// Values per row when x and y travel together: `dim + target_dim`.
    pub fn row_width(&self) -> usize {
        self.dim + self.target_dim.unwrap_or(0)
    }

    /// The shape every batch for this model must have.
    pub fn shape(&self) -> crate::pca::Shape {
        crate::pca::Shape {
            dim: self.dim,
            target_dim: self.target_dim,
        }
    }

    /// Bytes of one partition's accumulator state (or of a trainer's merge buffer):
    /// 8·(dim + target_dim)², an upper bound of the scatters Σ_xx and Σ_yx.
    pub fn scatter_bytes(&self) -> u64 {
        let n = self.row_width() as u64;
        8 * n * n
    }

    /// Bytes the model holds in the state budget: one scatter per partition plus the
    /// trainer's merge buffer.
    pub fn state_bytes(&self) -> u64 {
        self.scatter_bytes()
            .saturating_mul(self.partitions as u64 + 1)
    }
}

/// The default number of partitions: the CPUs this process may use, at most 8.
pub fn default_partitions() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 8)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        ModelConfig {
            name: ModelName::new("m").unwrap(),
            dim: 4,
            components: 2,
            target_dim: None,
            half_life: None,
            optimizer: OptimizerKind::Subspace,
            tolerance: DEFAULT_TOLERANCE,
            partitions: 2,
            standardize: false,
            alpha: DEFAULT_ALPHA,
        }
    }

    #[test]
    fn names_follow_one_rule() {
        for good in ["a", "0", "a-b_c", &"x".repeat(64)] {
            assert!(ModelName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "-a", "_a", "a.b", "a/b", "é", &"x".repeat(65)] {
            assert_eq!(ModelName::new(bad).unwrap_err().field, "name", "{bad}");
        }
        // The same rule when read from a file.
        let e = serde_json::from_str::<ModelName>("\"Upper\"").unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn a_v1_model_json_reads_as_one_partition() {
        let v1 = r#"{"name":"m","dim":3,"components":2,"target_dim":null,
            "half_life":null,"optimizer":"subspace","tolerance":1e-6}"#;
        let c: ModelConfig = serde_json::from_str(v1).unwrap();
        assert_eq!(c.partitions, 1);
        assert!(!c.standardize);
        assert_eq!(c.alpha.to_bits(), DEFAULT_ALPHA.to_bits());
        assert_eq!(c.optimizer, OptimizerKind::Subspace);
    }

    #[test]
    fn fields_out_of_range_are_named() {
        type Change = fn(&mut ModelConfig);
        let cases: [(&str, Change); 8] = [
            ("dim", |c| c.dim = 0),
            ("components", |c| c.components = 5),
            ("target_dim", |c| c.target_dim = Some(0)),
            ("half_life", |c| c.half_life = Some(-1.0)),
            ("tolerance", |c| c.tolerance = 2.0),
            ("partitions", |c| c.partitions = 65),
            ("alpha", |c| c.alpha = 0.5),
            ("standardize", |c| {
                c.standardize = true;
                c.target_dim = Some(2);
            }),
        ];
        for (field, change) in cases {
            let mut c = config();
            change(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
        assert!(config().validate().is_ok());
        assert_eq!(config().state_bytes(), 3 * 8 * 16);
    }
}
