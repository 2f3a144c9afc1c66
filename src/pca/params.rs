//! What a fit is asked to do: which optimiser, how many components, the tolerance and
//! the step budget, checked once against the component space's dimension
//! ([`FitParams::check`] → [`ValidParams`], the only way to build a `Trainer`).

use super::PcaError;

/// Which optimiser trains a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptimizerKind {
    /// Gradient steps with exact subspace search (fast; the default).
    #[default]
    Subspace,
    /// Plain gradient descent on the ordered loss (slow; for comparison).
    Gradient,
}

impl OptimizerKind {
    /// The name users write: `"subspace"` or `"gradient"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subspace => "subspace",
            Self::Gradient => "gradient",
        }
    }

    /// Parses [`Self::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "subspace" => Some(Self::Subspace),
            "gradient" => Some(Self::Gradient),
            _ => None,
        }
    }
}

/// Unchecked fit parameters; [`FitParams::check`] turns them into [`ValidParams`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitParams {
    /// Number of ordered components p to learn and report.
    pub components: usize,
    /// Guard columns q carried beyond p by the subspace optimiser.
    pub guard: usize,
    /// Convergence tolerance on every error bound, in radians.
    pub tolerance: f64,
    /// Step budget per [`Trainer::fit`] call.
    pub max_steps: usize,
    /// Which optimiser.
    pub optimizer: OptimizerKind,
    /// Seed of the random start.
    pub seed: u64,
}

impl FitParams {
    /// Defaults for `components` components: 4 guard columns, tolerance 1e-6 rad,
    /// 50 steps per fit for the subspace optimiser (a cap: a cold fit of Fashion-MNIST at
    /// p = 16 takes 12, docs/DESIGN.md §4), 2000 for plain gradient descent.
    pub fn new(components: usize, optimizer: OptimizerKind) -> Self {
        Self {
            components,
            guard: 4,
            tolerance: 1e-6,
            max_steps: match optimizer {
                OptimizerKind::Subspace => 50,
                OptimizerKind::Gradient => 2000,
            },
            optimizer,
            seed: 0x5eed,
        }
    }

    /// Checks the parameters against the component space's dimension `m`.
    ///
    /// # Errors
    /// [`PcaError::InvalidParam`] naming the first parameter out of range.
    pub fn check(self, m: usize) -> Result<ValidParams, PcaError> {
        if self.components == 0 || self.components > m {
            return Err(PcaError::InvalidParam {
                name: "components",
                reason: format!(
                    "must be between 1 and {m} (the dimension), got {}",
                    self.components
                ),
            });
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err(PcaError::InvalidParam {
                name: "tolerance",
                reason: format!("must be in (0, 1) radians, got {}", self.tolerance),
            });
        }
        if self.max_steps == 0 {
            return Err(PcaError::InvalidParam {
                name: "max_steps",
                reason: "must be at least 1".into(),
            });
        }
        Ok(ValidParams {
            inner: self,
            dim: m,
        })
    }
}

/// Parameters checked against a dimension; the only way to build a [`Trainer`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidParams {
    /// The checked parameters (read by the trainer; only [`FitParams::check`] builds
    /// this struct).
    pub(crate) inner: FitParams,
    /// The component space's dimension m they were checked against.
    pub(crate) dim: usize,
}

impl ValidParams {
    /// The checked parameters.
    pub fn params(&self) -> &FitParams {
        &self.inner
    }

    /// Columns carried by the subspace optimiser: `k = min(p + q, m)`.
    pub fn block(&self) -> usize {
        (self.inner.components + self.inner.guard).min(self.dim)
    }

    /// Samples needed before a fit: `k + 1` (a scatter of N samples has rank ≤ N − 1).
    pub fn min_samples(&self) -> usize {
        self.block() + 1
    }
}
