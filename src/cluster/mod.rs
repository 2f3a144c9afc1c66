//! Cluster mode: streampca on a NATS JetStream cluster. Any node ingests, partitions
//! are folded on any node with failover, every node answers from the same published
//! fit. The embedded single-process mode stays the default; this is used when the
//! service is given NATS URLs.
//!
//! # Architecture
//!
//! - **Catalog** (KV bucket `<prefix>_models`, key = model name): the model's
//!   configuration, partition count K and generation. Create-if-absent; delete by
//!   compare-and-set; generations from a CAS counter (`_generation`), never reused.
//!   Every node follows it with a KV watch.
//! - **Stream per model generation** `<PREFIX>_<model>_<gen>`, subjects
//!   `<prefix>.<model>.<gen>.p<k>` for k in 0..K. One stream, so its sequence is one
//!   strictly increasing number per model and `Nats-Msg-Id` deduplication spans every
//!   partition. Discard policy *new*: a full stream refuses batches (503), it never drops
//!   unfolded ones. Atomic batch publish is allowed (server 2.12+) for batches over
//!   `max_payload`.
//! - **Ingest** ([`ClusterNode::ingest`]): the checked batch is encoded ([`wire`]),
//!   given a message id (the client's `Idempotency-Key`, or a random one), sent to
//!   partition `crc32(id) mod K`, and acknowledged after JetStream's ack; retried with
//!   the same id while the stream has no leader.
//! - **Fold** ([`fold`]): per partition, the node holding the KV lease
//!   `lease.<model>.<gen>.fold<k>` reads the subject from its newest checkpoint on,
//!   folds each batch once (idempotent by stream sequence, gaps reported), and commits
//!   checkpoints: the accumulator as a snapshot object `ckpt/<model>/<gen>/<k>/…` in
//!   the object store `<prefix>_blobs`, then the KV pointer `ckpt.<model>.<gen>.<k>` by
//!   compare-and-set (the commit point).
//! - **Train** ([`trainer`]): the holder of `lease.<model>.<gen>.train` merges the
//!   newest checkpoints in partition order, fits, and publishes the view (object
//!   `view/<model>/<gen>/…` + pointer `view.<model>.<gen>`); it also trims the stream
//!   below the smallest `covered` of all partitions.
//! - **Queries**: every node watches the state bucket and serves the newest view it has
//!   read: the same components on every node.
//! - **Forgetting** (`half_life`) is refused in cluster mode: it is not exact across
//!   partitions.

pub mod catalog;
pub mod checkpoint;
pub mod codec;
pub mod connect;
pub mod error;
pub mod fold;
pub mod lease;
mod lifecycle;
pub mod metrics;
pub mod names;
pub mod node;
pub mod publish;
mod roles;
mod served;
pub mod settings;
pub mod store;
pub mod trainer;
mod transfer;
pub mod view;
pub mod wire;

pub use catalog::ModelRecord;
pub use error::ClusterError;
pub use metrics::ClusterMetrics;
pub use node::{ClusterNode, IngestReceipt, ModelStatus, PartitionStatus, Readiness, ServedView};
pub use publish::PublishReceipt;
pub use settings::ClusterSettings;
pub use view::ViewPointer;
