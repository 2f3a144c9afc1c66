//! Cluster metrics, per partition where it matters: consumer lag, owner, checkpoint
//! age, fold rate, publish latency, gaps. Kept in their own registry; the service's
//! `/metrics` appends [`ClusterMetrics::gather`] to its own output.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Every cluster metric of this node.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    registry: Registry,
    lag: GaugeVec,
    owned: GaugeVec,
    checkpoint_ts: GaugeVec,
    folded_batches: IntCounterVec,
    folded_rows: IntCounterVec,
    gaps: IntCounterVec,
    publish: HistogramVec,
    publish_retries: IntCounterVec,
    checkpoint_write: HistogramVec,
    fit: HistogramVec,
}

const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterMetrics {
    /// A fresh registry with every metric defined.
    ///
    /// # Panics
    /// Never: the definitions below are fixed and their names unique.
    #[allow(clippy::expect_used, reason = "static metric definitions")]
    pub fn new() -> Self {
        let registry = Registry::new();
        let pk = &["model", "partition"];
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY.to_vec()),
                labels,
            )
            .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        Self {
            lag: gauge(
                "streampca_cluster_partition_lag_messages",
                "Messages of the partition not yet folded (reported by its owner).",
                pk,
            ),
            owned: gauge(
                "streampca_cluster_partition_owned",
                "1 while this node folds the partition (role=fold) or trains the model (partition=\"train\").",
                pk,
            ),
            checkpoint_ts: gauge(
                "streampca_cluster_checkpoint_timestamp_seconds",
                "Unix time of the partition's newest committed checkpoint.",
                pk,
            ),
            folded_batches: counter(
                "streampca_cluster_folded_batches_total",
                "Batches folded into the partition's accumulator by this node.",
                pk,
            ),
            folded_rows: counter(
                "streampca_cluster_folded_rows_total",
                "Rows folded into the partition's accumulator by this node.",
                pk,
            ),
            gaps: counter(
                "streampca_cluster_fold_gaps_total",
                "Times the fold found messages missing from the stream or damaged (it stops, never folds past).",
                pk,
            ),
            publish: histogram(
                "streampca_cluster_publish_seconds",
                "Time from publish to JetStream acknowledgement of one batch, retries included.",
                &["model"],
            ),
            publish_retries: counter(
                "streampca_cluster_publish_retries_total",
                "Publish attempts retried (no stream leader, timeouts).",
                &["model"],
            ),
            checkpoint_write: histogram(
                "streampca_cluster_checkpoint_write_seconds",
                "Time to encode, store and commit one partition checkpoint.",
                &["model"],
            ),
            fit: histogram(
                "streampca_cluster_fit_seconds",
                "Time of one merge-and-fit by the model's trainer.",
                &["model"],
            ),
            registry,
        }
    }

    /// The text exposition of every cluster metric.
    pub fn gather(&self) -> String {
        let mut out = Vec::new();
        // Encoding into memory cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Sets the owner's view of a partition's lag.
    pub fn set_lag(&self, model: &str, partition: &str, messages: u64) {
        self.lag
            .with_label_values(&[model, partition])
            .set(messages as f64);
    }

    /// Marks this node as holding (or no longer holding) a role.
    pub fn set_owned(&self, model: &str, partition: &str, owned: bool) {
        self.owned
            .with_label_values(&[model, partition])
            .set(if owned { 1.0 } else { 0.0 });
    }

    /// Records a committed checkpoint's time (seconds since the Unix epoch).
    pub fn set_checkpoint_time(&self, model: &str, partition: &str, unix_secs: f64) {
        self.checkpoint_ts
            .with_label_values(&[model, partition])
            .set(unix_secs);
    }

    /// Counts a folded batch.
    pub fn folded(&self, model: &str, partition: &str, rows: usize) {
        self.folded_batches
            .with_label_values(&[model, partition])
            .inc();
        self.folded_rows
            .with_label_values(&[model, partition])
            .inc_by(rows as u64);
    }

    /// Counts a gap or damaged message.
    pub fn gap(&self, model: &str, partition: &str) {
        self.gaps.with_label_values(&[model, partition]).inc();
    }

    /// Records one acknowledged publish.
    pub fn published(&self, model: &str, took: Duration, retries: u64) {
        self.publish
            .with_label_values(&[model])
            .observe(took.as_secs_f64());
        if retries > 0 {
            self.publish_retries
                .with_label_values(&[model])
                .inc_by(retries);
        }
    }

    /// Records one checkpoint write.
    pub fn checkpoint_written(&self, model: &str, took: Duration) {
        self.checkpoint_write
            .with_label_values(&[model])
            .observe(took.as_secs_f64());
    }

    /// Records one fit.
    pub fn fitted(&self, model: &str, took: Duration) {
        self.fit
            .with_label_values(&[model])
            .observe(took.as_secs_f64());
    }

    /// Drops every series of a deleted model.
    pub fn remove_model(&self, model: &str, partitions: u32) {
        for k in (0..partitions)
            .map(|k| k.to_string())
            .chain(["train".to_owned()])
        {
            let l = &[model, k.as_str()];
            let _ = self.lag.remove_label_values(l);
            let _ = self.owned.remove_label_values(l);
            let _ = self.checkpoint_ts.remove_label_values(l);
            let _ = self.folded_batches.remove_label_values(l);
            let _ = self.folded_rows.remove_label_values(l);
            let _ = self.gaps.remove_label_values(l);
        }
        for h in [&self.publish, &self.checkpoint_write, &self.fit] {
            let _ = h.remove_label_values(&[model]);
        }
        let _ = self.publish_retries.remove_label_values(&[model]);
    }
}
