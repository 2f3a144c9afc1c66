//! Cluster-mode settings: how to reach NATS, who this node is, and the shape and limits
//! of what the cluster stores. Plain data with defaults; the CLI maps its flags onto it.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::config::{MAX_COMPONENTS, MAX_DIM};
use crate::model::ModelLimits;

/// How this node connects to NATS and lays out models on JetStream.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Server URLs, e.g. `nats://10.0.0.1:4222` (any node of the NATS cluster; the
    /// client discovers the rest).
    pub urls: Vec<String>,
    /// This node's name in leases, checkpoints and metrics (default: the host name).
    pub node_id: String,
    /// A `.creds` file (JWT + NKey seed) for decentralised auth.
    pub credentials_file: Option<PathBuf>,
    /// A plain token.
    pub token: Option<String>,
    /// Require TLS even for `nats://` URLs.
    pub require_tls: bool,
    /// PEM file of CA certificates to trust.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// JetStream replicas of every stream, bucket and object store. `None`: 3 when the
    /// NATS cluster has at least 3 JetStream servers, otherwise 1.
    pub replicas: Option<usize>,
    /// Partitions K of a model whose creation request does not say (the HTTP layer
    /// fills the configuration's `partitions` with it); each is folded by one node at
    /// a time.
    pub partitions: u32,
    /// The server's limits on models (dimensions, components, how many, accumulator
    /// state), checked at creation and import against the catalog as this node sees
    /// it. Default: only the build's hard caps.
    pub limits: ModelLimits,
    /// Prefix of every subject, stream, bucket and object store name, so several
    /// deployments can share one NATS account.
    pub prefix: String,
    /// How long JetStream remembers a message id: a retry with the same
    /// `Idempotency-Key` inside this window is stored once.
    pub dedup_window: Duration,
    /// Largest size of one model's stream (unfolded and untrimmed batches), bytes
    /// (default 1 GiB). JetStream reserves this much of its storage per stream, so the
    /// server's `max_file_store` bounds how many models fit. When full, ingest answers 503 until folding and trimming free space (the stream
    /// discards new messages, never old ones, so nothing acknowledged is lost).
    pub stream_max_bytes: i64,
    /// How long a lease holder may go without renewing before another node takes over
    /// (observed on the taker's own clock, so clocks need not agree).
    pub lease_ttl: Duration,
    /// Shortest interval between two checkpoints of one partition while batches keep
    /// arriving; an idle partition checkpoints as soon as this much time has passed.
    pub checkpoint_interval: Duration,
    /// How long an ingest keeps retrying while a stream has no leader before it gives
    /// up with 503 and `Retry-After`.
    pub publish_retry: Duration,
    /// Per-request timeout of JetStream API calls and publishes.
    pub request_timeout: Duration,
    /// Whether this node folds partitions and trains models (false: it only ingests
    /// and answers queries).
    pub worker: bool,
    /// Test only: a pause before each chunk after the first of a batch published in
    /// chunks, so a test can kill the process between chunks. Zero in production.
    pub test_chunk_pause: Duration,
}

impl ClusterSettings {
    /// Settings with defaults for everything but the server URLs.
    pub fn new(urls: Vec<String>) -> Self {
        // `--nats a,b` and `STREAMPCA_NATS_URL=a,b` arrive as one string: split it.
        let urls = urls
            .iter()
            .flat_map(|u| u.split(','))
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        Self {
            urls,
            node_id: default_node_id(),
            credentials_file: None,
            token: None,
            require_tls: false,
            tls_ca_file: None,
            tls_client_cert: None,
            replicas: None,
            partitions: 4,
            limits: ModelLimits {
                max_dim: MAX_DIM,
                max_components: MAX_COMPONENTS,
                max_models: usize::MAX,
                max_state_bytes: u64::MAX,
            },
            prefix: "spca".into(),
            dedup_window: Duration::from_secs(600),
            stream_max_bytes: 1 << 30,
            lease_ttl: Duration::from_secs(6),
            checkpoint_interval: Duration::from_secs(1),
            publish_retry: Duration::from_secs(8),
            request_timeout: Duration::from_secs(5),
            worker: true,
            test_chunk_pause: Duration::ZERO,
        }
    }

    /// Checks ranges that would otherwise fail later and less clearly.
    ///
    /// # Errors
    /// A sentence naming the first setting out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("at least one NATS URL is required".into());
        }
        if !(1..=64).contains(&self.partitions) {
            return Err(format!(
                "partitions must be 1..=64, got {}",
                self.partitions
            ));
        }
        if let Some(r) = self.replicas {
            if !(1..=5).contains(&r) {
                return Err(format!("replicas must be 1..=5, got {r}"));
            }
        }
        if self.dedup_window < Duration::from_secs(1) {
            return Err("the dedup window must be at least 1 s".into());
        }
        if self.lease_ttl < Duration::from_millis(900) {
            return Err("the lease TTL must be at least 0.9 s".into());
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.prefix.is_empty() || self.prefix.len() > 16 || !self.prefix.chars().all(ok) {
            return Err(format!(
                "prefix must be 1-16 characters of [A-Za-z0-9_-], got `{}`",
                self.prefix
            ));
        }
        if self.node_id.is_empty() || self.node_id.len() > 64 || !self.node_id.chars().all(ok) {
            return Err(format!(
                "node id must be 1-64 characters of [A-Za-z0-9_-], got `{}`",
                self.node_id
            ));
        }
        Ok(())
    }
}

/// The host name (from `HOSTNAME` or `/etc/hostname`), with characters other than
/// `[A-Za-z0-9_-]` replaced by `-`; `node` if neither is set.
pub fn default_node_id() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into());
    raw.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}
