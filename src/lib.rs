//! streampca: learns the ordered principal components of a live data stream and serves
//! them over HTTP.
//!
//! - [`pca`]: the numerical core (accumulators, ordered loss, optimisers, projections).

pub mod pca;
