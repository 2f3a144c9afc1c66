//! Subspace drift: how far a model's top-p subspace has turned over a fixed interval.
//!
//! Owns the short history of published subspaces each model needs for that, and nothing
//! else; [`crate::metrics`] reports the angle. The angle is the largest principal angle
//! ([`max_principal_angle`]) between the subspace published now and the newest one
//! published at least `interval` earlier.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nalgebra::DMatrix;

use crate::pca::max_principal_angle;

/// Default interval over which drift is measured.
pub const DEFAULT_DRIFT_INTERVAL: Duration = Duration::from_secs(300);

/// A model's recent subspaces, at most about nine, spaced `interval / 8` apart.
#[derive(Debug, Clone)]
pub struct DriftTracker {
    interval: Duration,
    /// (publication time, orthonormal components m×r), oldest first.
    history: VecDeque<(Instant, DMatrix<f64>)>,
}

impl DriftTracker {
    /// A tracker measuring drift over `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            history: VecDeque::new(),
        }
    }

    /// Records the subspace published at `now` (columns of `vectors`, m×r) and returns
    /// its largest principal angle in radians to the newest subspace published at least
    /// one interval before, or `None` while no subspace is that old.
    pub fn observe(&mut self, now: Instant, vectors: &DMatrix<f64>) -> Option<f64> {
        let age = |t: Instant| now.saturating_duration_since(t);
        // Keep the front as the newest entry that is at least one interval old.
        while self.history.len() >= 2 && age(self.history[1].0) >= self.interval {
            self.history.pop_front();
        }
        let drift = self
            .history
            .front()
            .filter(|(t, _)| age(*t) >= self.interval)
            .map(|(_, old)| max_principal_angle(old, vectors));
        let spacing = self.interval / 8;
        if self.history.back().is_none_or(|(t, _)| age(*t) >= spacing) && vectors.ncols() > 0 {
            self.history.push_back((now, vectors.clone()));
        }
        drift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(t: f64) -> DMatrix<f64> {
        DMatrix::from_column_slice(3, 2, &[1.0, 0.0, 0.0, 0.0, t.cos(), t.sin()])
    }

    #[test]
    fn drift_compares_with_the_subspace_one_interval_earlier() {
        let start = Instant::now();
        let mut d = DriftTracker::new(Duration::from_secs(80));
        assert_eq!(d.observe(start, &plane(0.0)), None);
        // Turn 0.01 rad every 10 s: after 80 s the angle to the start is 0.08.
        let mut last = None;
        for i in 1..=20 {
            last = d.observe(start + Duration::from_secs(10 * i), &plane(0.01 * i as f64));
            if i < 8 {
                assert_eq!(last, None, "no subspace is an interval old at {} s", 10 * i);
            }
        }
        let drift = last.expect("defined after one interval");
        assert!((drift - 0.08).abs() < 1e-12, "drift {drift}");
        assert!(
            d.history.len() <= 10,
            "history stays short: {}",
            d.history.len()
        );
    }
}
