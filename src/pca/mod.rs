//! The numerical core: streaming moments, the ordered loss, its optimisers, and what a
//! fit reports. Pure numerics on nalgebra types (faer runs the hot kernels underneath);
//! no async, HTTP, serialisation, file system or metrics here.
//!
//! Data flow: rows → [`Accumulator::update`] → [`Accumulator::target`] → [`Trainer::fit`]
//! → [`Components`] → [`Components::project`].

pub mod accumulator;
pub mod batch;
pub mod cancel;
pub mod components;
mod error;
mod linalg;
pub mod loss;
pub mod monitoring;
#[cfg(test)]
mod monitoring_tests;
pub mod optimizer;
pub mod params;
#[cfg(test)]
mod real_data_tests;
pub mod standardize;
#[cfg(test)]
mod tests;

pub use accumulator::{all_finite, Accumulator, AccumulatorParts, FitTarget};
pub(crate) use batch::{check_counts, first_out_of_bound};
pub use batch::{Batch, BatchData, BatchError, Part, Shape, MAX_ABS_VALUE};
pub use cancel::Cancel;
pub use components::{max_principal_angle, Components, Projection};
pub use error::PcaError;
pub use monitoring::{
    limits, Contributions, LimitMoments, Limits, OutlierCounts, RowStatistics, SpeMethod,
    THETA_FLOOR,
};
pub use optimizer::{Trainer, TrainerState};
pub use params::{FitParams, OptimizerKind, ValidParams};
pub use standardize::{correlation_target, Standardizer, CONSTANT_RELATIVE};
