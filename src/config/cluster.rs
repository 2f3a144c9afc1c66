//! Cluster-mode settings from flags and environment variables: `--nats URL[,URL…]`
//! selects cluster mode (the service then keeps no data directory; NATS JetStream holds
//! the models). Mapped onto [`crate::cluster::ClusterSettings`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cluster::ClusterSettings;

/// Cluster mode: how to reach NATS and the shape and limits of what it stores.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// NATS server URLs (comma-separated, e.g. `nats://10.0.0.1:4222,nats://10.0.0.2:4222`).
    /// Given: cluster mode (models live on NATS JetStream, any node serves every model);
    /// absent: the embedded single-process mode.
    #[arg(long = "nats", env = "STREAMPCA_NATS_URL")]
    pub nats: Option<String>,
    /// This node's name in leases, checkpoints and metrics (default: the host name).
    #[arg(long, env = "STREAMPCA_NODE_ID")]
    pub node_id: Option<String>,
    /// NATS `.creds` file (JWT + NKey seed).
    #[arg(long, env = "STREAMPCA_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// NATS token.
    #[arg(long, env = "STREAMPCA_NATS_TOKEN")]
    pub nats_token: Option<String>,
    /// Require TLS even for `nats://` URLs.
    #[arg(long, env = "STREAMPCA_NATS_TLS", default_value_t = false)]
    pub nats_tls: bool,
    /// PEM file of CA certificates to trust for NATS.
    #[arg(long, env = "STREAMPCA_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `--nats-tls-key`).
    #[arg(long, env = "STREAMPCA_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM client key for mutual TLS (with `--nats-tls-cert`).
    #[arg(long, env = "STREAMPCA_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// JetStream replicas of streams, buckets and object stores (default: 3 when the
    /// NATS cluster has at least 3 JetStream servers, else 1).
    #[arg(long, env = "STREAMPCA_CLUSTER_REPLICAS")]
    pub cluster_replicas: Option<usize>,
    /// Partitions of a model whose creation request does not say (cluster mode).
    #[arg(long, env = "STREAMPCA_CLUSTER_PARTITIONS", default_value_t = 4)]
    pub cluster_partitions: u32,
    /// Largest size of one model's stream of unfolded batches, bytes (JetStream reserves
    /// it per model).
    #[arg(long, env = "STREAMPCA_CLUSTER_STREAM_MAX_BYTES", default_value_t = 1 << 30)]
    pub cluster_stream_max_bytes: i64,
    /// Seconds JetStream remembers an `Idempotency-Key` (dedup window).
    #[arg(
        long,
        env = "STREAMPCA_CLUSTER_DEDUP_WINDOW_SECS",
        default_value_t = 600
    )]
    pub cluster_dedup_window_secs: u64,
    /// Seconds a fold/train lease survives its holder's silence before another node
    /// takes over (failover time).
    #[arg(long, env = "STREAMPCA_CLUSTER_LEASE_TTL_SECS", default_value_t = 6.0)]
    pub cluster_lease_ttl_secs: f64,
    /// Shortest interval between two checkpoints of one partition, milliseconds.
    #[arg(
        long,
        env = "STREAMPCA_CLUSTER_CHECKPOINT_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub cluster_checkpoint_interval_ms: u64,
    /// Seconds an ingest keeps retrying while a stream has no leader before answering
    /// 503 with `Retry-After`.
    #[arg(
        long,
        env = "STREAMPCA_CLUSTER_PUBLISH_RETRY_SECS",
        default_value_t = 8.0
    )]
    pub cluster_publish_retry_secs: f64,
    /// Only ingest and answer queries; never fold partitions or train.
    #[arg(long, env = "STREAMPCA_CLUSTER_NO_WORKER", default_value_t = false)]
    pub cluster_no_worker: bool,
    /// Test only: milliseconds to pause between the chunks of a batch larger than
    /// NATS' `max_payload` (lets a test kill the process mid-batch).
    #[arg(
        long,
        env = "STREAMPCA_CLUSTER_TEST_CHUNK_PAUSE_MS",
        default_value_t = 0,
        hide = true
    )]
    pub cluster_test_chunk_pause_ms: u64,
}

impl ClusterArgs {
    /// The cluster settings when `--nats` was given, `None` in embedded mode.
    ///
    /// # Errors
    /// A message naming the first setting out of range.
    pub fn settings(&self) -> Result<Option<ClusterSettings>, String> {
        let Some(urls) = &self.nats else {
            return Ok(None);
        };
        let mut s = ClusterSettings::new(vec![urls.clone()]);
        if let Some(id) = &self.node_id {
            s.node_id.clone_from(id);
        }
        s.credentials_file.clone_from(&self.nats_creds);
        s.token.clone_from(&self.nats_token);
        s.require_tls = self.nats_tls;
        s.tls_ca_file.clone_from(&self.nats_tls_ca);
        s.tls_client_cert = self.nats_tls_cert.clone().zip(self.nats_tls_key.clone());
        s.replicas = self.cluster_replicas;
        s.partitions = self.cluster_partitions;
        s.stream_max_bytes = self.cluster_stream_max_bytes;
        s.dedup_window = Duration::from_secs(self.cluster_dedup_window_secs);
        s.lease_ttl = secs("cluster_lease_ttl_secs", self.cluster_lease_ttl_secs)?;
        s.checkpoint_interval = Duration::from_millis(self.cluster_checkpoint_interval_ms);
        s.publish_retry = secs(
            "cluster_publish_retry_secs",
            self.cluster_publish_retry_secs,
        )?;
        s.worker = !self.cluster_no_worker;
        s.test_chunk_pause = Duration::from_millis(self.cluster_test_chunk_pause_ms);
        if s.stream_max_bytes < 1 << 20 {
            return Err(format!(
                "cluster_stream_max_bytes must be at least 1 MiB, got {}",
                s.stream_max_bytes
            ));
        }
        s.validate()?;
        Ok(Some(s))
    }
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| *d <= Duration::from_secs(3600))
        .ok_or_else(|| format!("{name} must be between 0 and 3600 seconds, got {v}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn embedded_without_nats_and_cluster_with_it() {
        assert!(ClusterArgs::default().settings().unwrap().is_none());
        let a = ClusterArgs {
            nats: Some("nats://a:4222, nats://b:4222".into()),
            node_id: Some("n1".into()),
            cluster_partitions: 8,
            cluster_stream_max_bytes: 1 << 30,
            cluster_dedup_window_secs: 600,
            cluster_lease_ttl_secs: 3.0,
            cluster_checkpoint_interval_ms: 500,
            cluster_publish_retry_secs: 8.0,
            ..ClusterArgs::default()
        };
        let s = a.settings().unwrap().unwrap();
        assert_eq!(s.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!((s.node_id.as_str(), s.partitions), ("n1", 8));
        assert_eq!(s.lease_ttl, Duration::from_secs(3));
        let bad = ClusterArgs {
            cluster_lease_ttl_secs: -1.0,
            ..a.clone()
        };
        assert!(bad
            .settings()
            .unwrap_err()
            .contains("cluster_lease_ttl_secs"));
        let bad = ClusterArgs {
            cluster_partitions: 0,
            ..a
        };
        assert!(bad.settings().unwrap_err().contains("partitions"));
    }
}
