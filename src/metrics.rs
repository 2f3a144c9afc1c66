//! Every Prometheus metric of the service: names, help texts, labels and buckets live
//! here and nowhere else, with the middleware that counts requests and the text
//! rendering for `GET /metrics`.
//!
//! Each [`Metrics`] owns its own [`prometheus::Registry`] (not the global default), so
//! several services can run in one process (the integration tests do).
//!
//! Label cardinality is bounded: `route` comes from the route template (`MatchedPath`,
//! `"unmatched"` otherwise), `model` only from models that exist (their series are removed
//! when the model is deleted), `code` from the fixed set of error codes, `component` from
//! `0..components`, `statistic` from [`STATISTICS`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::pca::Components;

/// Latency buckets for HTTP requests, in seconds (100 µs … 10 s).
const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for one optimiser step, in seconds (10 µs … 10 s).
const STEP_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
];

/// Buckets for one WAL durability wait (group-commit fsync), in seconds (10 µs … 5 s).
const FSYNC_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 5.0,
];

/// Values of the `statistic` label of `streampca_model_outliers_total`.
pub const STATISTICS: [&str; 2] = ["t2", "spe"];

/// The service's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    samples_ingested: IntCounterVec,
    batches_ingested: IntCounterVec,
    batches_rejected: IntCounterVec,
    training_steps: IntCounterVec,
    step_duration: HistogramVec,
    model_samples: GaugeVec,
    model_loss: GaugeVec,
    model_max_error_bound: GaugeVec,
    model_converged: GaugeVec,
    model_eigenvalue: GaugeVec,
    model_explained_variance: GaugeVec,
    model_drift: GaugeVec,
    models: IntGauge,
    model_held: GaugeVec,
    /// The rejection codes each model's `batches_rejected` series were created with,
    /// so deleting the model removes exactly those series.
    rejected_codes: Mutex<HashMap<String, BTreeSet<String>>>,
    wal_append_failures: IntCounterVec,
    snapshot_failures: IntCounterVec,
    wal_torn_records: IntCounterVec,
    wal_fsync_duration: Histogram,
    snapshot_last_success: GaugeVec,
    rows_scored: IntCounterVec,
    outliers: IntCounterVec,
    model_alpha: GaugeVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter definition");
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge definition");
    r.register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid histogram definition");
    r.register(Box::new(h.clone()))
        .expect("metric names are unique");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    ///
    /// # Panics
    /// Only if the definitions below are inconsistent (a programming error caught by
    /// any test that starts the service).
    pub fn new() -> Self {
        let r = Registry::new();
        let models = IntGauge::new("streampca_models", "Number of models.").expect("valid gauge");
        r.register(Box::new(models.clone()))
            .expect("metric names are unique");
        let wal_fsync_duration = Histogram::with_opts(
            HistogramOpts::new(
                "streampca_wal_fsync_duration_seconds",
                "Time an acknowledged batch waited for the write-ahead log to be durable \
                 (its share of a group-commit fsync), in seconds.",
            )
            .buckets(FSYNC_BUCKETS.to_vec()),
        )
        .expect("valid histogram definition");
        r.register(Box::new(wal_fsync_duration.clone()))
            .expect("metric names are unique");
        Self {
            wal_append_failures: counter(
                &r,
                "streampca_wal_append_failures_total",
                "Batches refused because appending them to the write-ahead log or making \
                 it durable failed.",
                &["model"],
            ),
            snapshot_failures: counter(
                &r,
                "streampca_snapshot_failures_total",
                "Snapshots of a model that could not be written.",
                &["model"],
            ),
            wal_torn_records: counter(
                &r,
                "streampca_wal_torn_records_total",
                "Torn or corrupt write-ahead log tails cut off during recovery.",
                &["model"],
            ),
            wal_fsync_duration,
            snapshot_last_success: gauge(
                &r,
                "streampca_snapshot_last_success_timestamp_seconds",
                "Unix time of a model's last successful snapshot.",
                &["model"],
            ),
            http_requests: counter(
                &r,
                "streampca_http_requests_total",
                "HTTP requests by route template, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: histogram(
                &r,
                "streampca_http_request_duration_seconds",
                "HTTP request latency by route template and method, in seconds.",
                &["route", "method"],
                REQUEST_BUCKETS,
            ),
            samples_ingested: counter(
                &r,
                "streampca_samples_ingested_total",
                "Rows accepted into a model's accumulator.",
                &["model"],
            ),
            batches_ingested: counter(
                &r,
                "streampca_batches_ingested_total",
                "Batches accepted into a model's accumulator.",
                &["model"],
            ),
            batches_rejected: counter(
                &r,
                "streampca_batches_rejected_total",
                "Batches rejected for an existing model, by error code.",
                &["model", "code"],
            ),
            training_steps: counter(
                &r,
                "streampca_training_steps_total",
                "Optimiser steps taken by a model's background trainer.",
                &["model"],
            ),
            step_duration: histogram(
                &r,
                "streampca_training_step_duration_seconds",
                "Duration of one optimiser step, in seconds: each fit's wall time divided \
                 by its steps, observed once per step.",
                &["model"],
                STEP_BUCKETS,
            ),
            model_samples: gauge(
                &r,
                "streampca_model_samples",
                "Samples in a model's accumulator (weighted count under forgetting).",
                &["model"],
            ),
            model_loss: gauge(
                &r,
                "streampca_model_loss",
                "Ordered loss per sample at the last published fit.",
                &["model"],
            ),
            model_max_error_bound: gauge(
                &r,
                "streampca_model_max_error_bound",
                "Largest component error bound at the last published fit, in radians.",
                &["model"],
            ),
            model_converged: gauge(
                &r,
                "streampca_model_converged",
                "1 when the last published fit converged, else 0.",
                &["model"],
            ),
            model_eigenvalue: gauge(
                &r,
                "streampca_model_eigenvalue",
                "Eigenvalue estimate of each component (0-based index) at the last published fit.",
                &["model", "component"],
            ),
            model_explained_variance: gauge(
                &r,
                "streampca_model_explained_variance_ratio",
                "Share of total (target) variance along each component (0-based index), in [0, 1].",
                &["model", "component"],
            ),
            model_drift: gauge(
                &r,
                "streampca_model_subspace_drift_radians",
                "Largest principal angle between the top-p subspace published now and the one published one drift interval earlier, in radians.",
                &["model"],
            ),
            model_held: gauge(
                &r,
                "streampca_model_recovery_held",
                "1 for a model that recovery held back because acknowledged data is missing \
                 (not served until deleted or the service runs with --accept-data-loss).",
                &["model"],
            ),
            rows_scored: counter(
                &r,
                "streampca_model_rows_scored_total",
                "Ingested rows scored against the published fit before they were folded \
                 (`POST /samples?score=true` once a fit with control limits exists).",
                &["model"],
            ),
            outliers: counter(
                &r,
                "streampca_model_outliers_total",
                "Scored rows over the control limit of one statistic (`t2`: Hotelling's \
                 T², `spe`: squared prediction error) at the model's alpha and the fit's k.",
                &["model", "statistic"],
            ),
            model_alpha: gauge(
                &r,
                "streampca_model_alpha",
                "The model's false-alarm rate alpha: the expected share of scored rows over \
                 each limit while the process is in control (set from the first fit on).",
                &["model"],
            ),
            models,
            rejected_codes: Mutex::new(HashMap::new()),
            registry: r,
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Sets the number of models.
    pub fn set_models(&self, n: usize) {
        self.models.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records a model being served (created, recovered or imported) with `samples`
    /// samples: every per-model series exists from then on.
    pub fn model_created(&self, model: &str, samples: f64) {
        self.model_samples.with_label_values(&[model]).set(samples);
        self.model_converged.with_label_values(&[model]).set(0.0);
        // Counters start at 0 so `increase()` sees the first event.
        for c in [
            &self.samples_ingested,
            &self.batches_ingested,
            &self.training_steps,
            &self.wal_append_failures,
            &self.snapshot_failures,
            &self.wal_torn_records,
            &self.rows_scored,
        ] {
            c.with_label_values(&[model]).inc_by(0);
        }
        for statistic in STATISTICS {
            self.outliers
                .with_label_values(&[model, statistic])
                .inc_by(0);
        }
    }

    /// Records `rows` ingested rows scored against a fit, `t2` and `spe` of them over
    /// the respective limit.
    pub fn rows_scored(&self, model: &str, rows: usize, t2: usize, spe: usize) {
        self.rows_scored
            .with_label_values(&[model])
            .inc_by(rows as u64);
        for (statistic, n) in STATISTICS.iter().zip([t2, spe]) {
            self.outliers
                .with_label_values(&[model, statistic])
                .inc_by(n as u64);
        }
    }

    /// Sets the model's false-alarm rate `alpha` (the outlier-rate alert compares the
    /// share of scored rows over a limit with it).
    pub fn model_alpha(&self, model: &str, alpha: f64) {
        self.model_alpha.with_label_values(&[model]).set(alpha);
    }

    /// Records a batch refused because the log could not take it.
    pub fn wal_append_failed(&self, model: &str) {
        self.wal_append_failures.with_label_values(&[model]).inc();
    }

    /// Records one durability wait of `elapsed`.
    pub fn wal_fsync_waited(&self, elapsed: Duration) {
        self.wal_fsync_duration.observe(elapsed.as_secs_f64());
    }

    /// Sets whether `model` is held back after recovery (the series is removed when
    /// it is no longer held).
    pub fn model_held(&self, model: &str, held: bool) {
        if held {
            self.model_held.with_label_values(&[model]).set(1.0);
        } else {
            let _ = self.model_held.remove_label_values(&[model]);
        }
    }

    /// Records a torn or corrupt log tail found at recovery.
    pub fn wal_torn_record(&self, model: &str) {
        self.wal_torn_records.with_label_values(&[model]).inc();
    }

    /// Records a failed snapshot.
    pub fn snapshot_failed(&self, model: &str) {
        self.snapshot_failures.with_label_values(&[model]).inc();
    }

    /// Records a successful snapshot at Unix time `unix_seconds`.
    pub fn snapshot_succeeded(&self, model: &str, unix_seconds: f64) {
        self.snapshot_last_success
            .with_label_values(&[model])
            .set(unix_seconds);
    }

    /// Records an accepted batch of `rows` rows; `samples` is the model's new count.
    pub fn batch_accepted(&self, model: &str, rows: usize, samples: f64) {
        self.samples_ingested
            .with_label_values(&[model])
            .inc_by(rows as u64);
        self.batches_ingested.with_label_values(&[model]).inc();
        self.model_samples.with_label_values(&[model]).set(samples);
    }

    /// Records a rejected batch for an existing model.
    pub fn batch_rejected(&self, model: &str, code: &str) {
        self.batches_rejected
            .with_label_values(&[model, code])
            .inc();
        self.rejected_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(model.to_owned())
            .or_default()
            .insert(code.to_owned());
    }

    /// Records one published fit of `elapsed` wall time; `components` is how many the
    /// model was configured with (eigenvalue series past the reported ones are removed);
    /// `drift` the subspace's turn over the drift interval, once known.
    pub fn fit_published(
        &self,
        model: &str,
        fit: &Components,
        elapsed: Duration,
        components: usize,
        drift: Option<f64>,
    ) {
        let steps = fit.steps as u64;
        self.training_steps
            .with_label_values(&[model])
            .inc_by(steps);
        if steps > 0 {
            let per_step = elapsed.as_secs_f64() / steps as f64;
            let h = self.step_duration.with_label_values(&[model]);
            for _ in 0..steps {
                h.observe(per_step);
            }
        }
        self.model_loss.with_label_values(&[model]).set(fit.loss);
        self.model_max_error_bound
            .with_label_values(&[model])
            .set(fit.max_error_bound());
        self.model_converged
            .with_label_values(&[model])
            .set(if fit.converged { 1.0 } else { 0.0 });
        for i in 0..components {
            let idx = i.to_string();
            let labels = [model, idx.as_str()];
            match (fit.eigenvalues.get(i), fit.explained_variance_ratio.get(i)) {
                (Some(v), Some(r)) => {
                    self.model_eigenvalue.with_label_values(&labels).set(*v);
                    self.model_explained_variance
                        .with_label_values(&labels)
                        .set(*r);
                }
                _ => {
                    let _ = self.model_eigenvalue.remove_label_values(&labels);
                    let _ = self.model_explained_variance.remove_label_values(&labels);
                }
            }
        }
        if let Some(angle) = drift {
            self.model_drift.with_label_values(&[model]).set(angle);
        }
    }

    /// Removes every series labelled with `model` (called when it is deleted).
    /// `components` bounds the eigenvalue series.
    pub fn model_removed(&self, model: &str, components: usize) {
        for v in [
            &self.samples_ingested,
            &self.batches_ingested,
            &self.training_steps,
            &self.wal_append_failures,
            &self.snapshot_failures,
            &self.wal_torn_records,
            &self.rows_scored,
        ] {
            let _ = v.remove_label_values(&[model]);
        }
        for statistic in STATISTICS {
            let _ = self.outliers.remove_label_values(&[model, statistic]);
        }
        for v in [
            &self.model_samples,
            &self.model_loss,
            &self.model_max_error_bound,
            &self.model_converged,
            &self.model_drift,
            &self.snapshot_last_success,
            &self.model_alpha,
        ] {
            let _ = v.remove_label_values(&[model]);
        }
        let _ = self.step_duration.remove_label_values(&[model]);
        let codes = self
            .rejected_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(model)
            .unwrap_or_default();
        for code in &codes {
            let _ = self.batches_rejected.remove_label_values(&[model, code]);
        }
        for i in 0..components {
            let idx = i.to_string();
            let _ = self.model_eigenvalue.remove_label_values(&[model, &idx]);
            let _ = self
                .model_explained_variance
                .remove_label_values(&[model, &idx]);
        }
    }

    fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }
}

/// Middleware: counts every request and its latency by route template, method and
/// status. Unmatched paths share the route label `"unmatched"`.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Methods outside the standard set would be user input: fold them into one label.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let response = next.run(req).await;
    metrics.observe_request(&route, method, response.status().as_u16(), start.elapsed());
    response
}
