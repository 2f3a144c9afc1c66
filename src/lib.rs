//! streampca: learns the ordered principal components of a live data stream and serves
//! them over HTTP.
//!
//! - [`pca`]: the numerical core (accumulators, ordered loss, optimisers, projections).
//! - [`persistence`]: the write-ahead log, snapshots and data directory (blocking file
//!   I/O; no HTTP).

pub mod pca;
pub mod persistence;
