//! streampca: learns the ordered principal components of a live data stream and serves
//! them over HTTP.
//!
//! One direction, top to bottom: [`http`] → [`model`] → a model's partitions → each
//! partition's log ([`persistence`]) and accumulator ([`pca`]).
//!
//! - [`app`]: start-up wiring and the orderly stop ([`run`]).
//! - [`http`]: the router, handlers, body formats and the API's errors.
//! - [`format`]: the body formats (JSON, NDJSON, CSV, raw f32, `.npy`) as push parsers,
//!   shared by the server and the client.
//! - [`model`]: live models: registry, partitions, trainer, snapshot schedule, recovery.
//! - [`persistence`]: partition logs, snapshots and the data directory (blocking file
//!   I/O; no HTTP).
//! - [`pca`]: the numerical core (checked batches, accumulators, the ordered loss,
//!   optimisers, projections); no I/O.
//! - [`metrics`]: every Prometheus metric, the request-counting middleware, `/metrics`.
//! - [`drift`]: how far a model's subspace turned over a fixed interval.
//! - [`config`]: the service's settings; [`telemetry`], [`shutdown`]: logging and the
//!   stop signal.
//! - [`datasets`]: the IDX reader and the data sets of the tests and benches (not used
//!   by the service).
//! - [`cli`]: the command-line tree and the client (`streampca models|ingest|…`), which
//!   talks to a running server over HTTP only.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod datasets;
pub mod drift;
pub mod format;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pca;
pub mod persistence;
pub mod shutdown;
pub mod telemetry;

pub use app::run;
