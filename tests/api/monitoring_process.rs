//! Monitoring a simulated process of the Tennessee-Eastman kind over HTTP: 52 variables
//! in mixed units driven by a few latent factors, near-constant and constant variables,
//! a standardised model fitted on normal operation, and faults that show in T², in SPE,
//! or in neither, judged with the service's own limits.

use nalgebra::{DMatrix, DVector};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};
use crate::monitoring::{counter, create, ingest_scored, limits_ok, project_ok};

const VARIABLES: usize = 52;
const FACTORS: usize = 4;
const ALPHA: f64 = 0.01;

/// A linear Gaussian process: `x = μ + D (L f + e)`, f ~ N(0, diag(σ_f²)) (4 factors),
/// e ~ N(0, diag(σ_e²)), D the units of each variable (1e-3 … 1e4), μ the operating
/// point. Variable 50 is a set point (exactly constant: the service gives it no weight);
/// variable 51 is near-constant next to its level (it moves by about 1e-7 of its
/// operating value, so its z-scores come out of a cancellation of seven digits).
struct Process {
    mean: DVector<f64>,
    units: DVector<f64>,
    loadings: DMatrix<f64>,
    factor_sd: [f64; FACTORS],
    noise_sd: DVector<f64>,
    rng: StdRng,
}

const SET_POINT: usize = 50;
const NEAR_CONSTANT: usize = 51;

impl Process {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let loadings = DMatrix::from_fn(VARIABLES, FACTORS, |i, _| {
            if i == SET_POINT {
                0.0
            } else {
                rng.sample::<f64, _>(rand_distr::StandardNormal)
            }
        });
        let units = DVector::from_fn(VARIABLES, |_, _| 10f64.powf(rng.gen_range(-3.0..4.0)));
        let mean = DVector::from_fn(VARIABLES, |i, _| match i {
            NEAR_CONSTANT => units[i] * 3e7,
            _ => units[i] * rng.gen_range(-50.0..500.0),
        });
        let noise_sd = DVector::from_fn(VARIABLES, |i, _| match i {
            SET_POINT => 0.0,
            _ => rng.gen_range(0.1..0.4),
        });
        Self {
            mean,
            units,
            loadings,
            factor_sd: [3.0, 2.0, 1.5, 1.0],
            noise_sd,
            rng,
        }
    }

    /// The standard deviation of variable i in normal operation, in input units.
    fn sd(&self, i: usize) -> f64 {
        let latent: f64 = (0..FACTORS)
            .map(|j| (self.loadings[(i, j)] * self.factor_sd[j]).powi(2))
            .sum();
        self.units[i] * (latent + self.noise_sd[i].powi(2)).sqrt()
    }

    /// `rows` rows of normal operation, each passed through `fault` (in input units).
    fn rows(&mut self, rows: usize, fault: impl Fn(&mut [f64])) -> Vec<Vec<f64>> {
        (0..rows)
            .map(|_| {
                let f: Vec<f64> = self
                    .factor_sd
                    .iter()
                    .map(|s| s * self.rng.sample::<f64, _>(rand_distr::StandardNormal))
                    .collect();
                let mut row: Vec<f64> = (0..VARIABLES)
                    .map(|i| {
                        let latent: f64 = (0..FACTORS).map(|j| self.loadings[(i, j)] * f[j]).sum();
                        let e: f64 = self.rng.sample(rand_distr::StandardNormal);
                        self.mean[i] + self.units[i] * (latent + self.noise_sd[i] * e)
                    })
                    .collect();
                fault(&mut row);
                row
            })
            .collect()
    }
}

/// How many rows are over each limit at false-alarm rate `alpha` by the service's own
/// flags (`project` with `alpha`), in batches under `max_query_rows`.
async fn over_at(app: &TestApp, rows: &[Vec<f64>], alpha: f64) -> (usize, usize) {
    let (mut t2, mut spe) = (0usize, 0usize);
    for chunk in rows.chunks(5000) {
        let out = project_ok(app, "te", json!({"x": chunk, "alpha": alpha})).await;
        let count = |key: &str| {
            out[key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| **b == json!(true))
                .count()
        };
        t2 += count("outlier_t2");
        spe += count("outlier_spe");
    }
    (t2, spe)
}

/// Rows over each limit at the model's alpha.
async fn over(app: &TestApp, rows: &[Vec<f64>]) -> (usize, usize) {
    over_at(app, rows, ALPHA).await
}

/// The share of rows over each limit at false-alarm rate `alpha`.
async fn rates_at(app: &TestApp, rows: &[Vec<f64>], alpha: f64) -> (f64, f64) {
    let (t2, spe) = over_at(app, rows, alpha).await;
    let n = rows.len() as f64;
    (t2 as f64 / n, spe as f64 / n)
}

/// The share of rows over each limit at the model's alpha.
async fn rates(app: &TestApp, rows: &[Vec<f64>]) -> (f64, f64) {
    let (t2, spe) = over(app, rows).await;
    let n = rows.len() as f64;
    (t2 as f64 / n, spe as f64 / n)
}

/// The 99.9 % interval of the T² false-alarm rate over `m` fresh rows against a fit of
/// `n` rows at `k` components, limit `limit`. Two independent sources of spread: the
/// binomial count of m rows, `α(1−α)/m`, and the rate *given the fit*, which differs
/// from α because the k eigenvalues (the scale of each whitened score) are estimated
/// from n rows, each with relative error √(2/n). By the delta method, a relative change
/// ε_i of eigenvalue i moves the rate by `ε_i · L f(L)/k` (f the χ²_k density at the
/// limit L, shared equally by the k scores), so its variance is `(L f(L))² · 2/(k n)`.
/// (At n = 5000, k = 4, α = 0.01 this is 5.8e-4², beside the binomial 7.0e-4² of
/// m = 20 000: a binomial interval alone would ignore a spread as large as its own.)
fn t2_rate_interval(alpha: f64, m: usize, n: usize, k: usize, limit: f64) -> (f64, f64) {
    use statrs::distribution::{ChiSquared, Continuous};
    let f = ChiSquared::new(k as f64).unwrap().pdf(limit);
    let given_fit = (limit * f).powi(2) * 2.0 / (k as f64 * n as f64);
    let binomial = alpha * (1.0 - alpha) / m as f64;
    let half = 3.2905 * (binomial + given_fit).sqrt();
    (alpha - half, alpha + half)
}

#[tokio::test]
async fn a_52_variable_process_in_mixed_units_detects_faults_in_t2_and_spe_at_the_false_alarm_rate()
{
    // Arrange: fit 5000 rows of normal operation, standardised, k = 4 factors.
    let app = spawn_app_with(|mut s| {
        s.limits.max_query_rows = 5000;
        s
    })
    .await;
    create(
        &app,
        json!({"name": "te", "dim": VARIABLES, "components": FACTORS, "standardize": true,
               "alpha": ALPHA}),
    )
    .await;
    let mut process = Process::new(2024);
    let normal = process.rows(5000, |_| {});
    let seq = app.ingest_json("te", &normal).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("te", seq).await;
    let limits = limits_ok(&app, "te", "").await;
    eprintln!("limits: {limits}");
    assert_eq!(limits["k"], json!(FACTORS));
    assert_eq!(limits["alpha"], json!(ALPHA));

    // Act: fresh normal rows, and three faults of 2000 rows each.
    let fresh = process.rows(20_000, |_| {});
    // A mean shift along the first factor (6 of its standard deviations): inside the
    // retained subspace.
    let shift: Vec<f64> = (0..VARIABLES)
        .map(|i| process.units[i] * process.loadings[(i, 0)] * 6.0 * process.factor_sd[0])
        .collect();
    let in_plane = process.rows(2000, |r| {
        r.iter_mut().zip(&shift).for_each(|(v, s)| *v += s)
    });
    // A sensor bias of 2 standard deviations on variable 7: off the subspace.
    let bias = 2.0 * process.sd(7);
    let sensor = process.rows(2000, |r| r[7] += bias);
    // A bias of a tenth of a standard deviation on variable 7: in neither statistic.
    let small = 0.1 * process.sd(7);
    let invisible = process.rows(2000, |r| r[7] += small);

    let (fa_t2, fa_spe) = rates(&app, &fresh).await;
    let (fa5_t2, fa5_spe) = rates_at(&app, &fresh, 0.05).await;
    let (shift_t2, shift_spe) = rates(&app, &in_plane).await;
    let (bias_t2, bias_spe) = rates(&app, &sensor).await;
    let (small_t2, small_spe) = rates(&app, &invisible).await;
    eprintln!(
        "false alarms T² {fa_t2:.4}, SPE {fa_spe:.4} (α = {ALPHA}, 20 000 rows); \
         factor shift: T² {shift_t2:.4}, SPE {shift_spe:.4}; \
         sensor bias: T² {bias_t2:.4}, SPE {bias_spe:.4}; \
         small bias: T² {small_t2:.4}, SPE {small_spe:.4}; \
         false alarms at α = 0.05: T² {fa5_t2:.4}, SPE {fa5_spe:.4}"
    );

    // Assert
    let limit_t2 = limits["t2"].as_f64().unwrap();
    let (lo, hi) = t2_rate_interval(ALPHA, fresh.len(), normal.len(), FACTORS, limit_t2);
    eprintln!("T² false-alarm interval at α = {ALPHA}: [{lo:.4}, {hi:.4}]");
    assert!(
        (lo..=hi).contains(&fa_t2),
        "T² false-alarm rate {fa_t2} outside [{lo}, {hi}]"
    );
    assert!(
        (fa_spe - ALPHA).abs() <= 0.25 * ALPHA,
        "SPE false-alarm rate {fa_spe}"
    );
    let limit5 = limits_ok(&app, "te", "alpha=0.05").await["t2"]
        .as_f64()
        .unwrap();
    let (lo, hi) = t2_rate_interval(0.05, fresh.len(), normal.len(), FACTORS, limit5);
    eprintln!("T² false-alarm interval at α = 0.05: [{lo:.4}, {hi:.4}]");
    assert!(
        (lo..=hi).contains(&fa5_t2),
        "T² false-alarm rate {fa5_t2} outside [{lo}, {hi}] at α = 0.05"
    );
    assert!(
        (fa5_spe - 0.05).abs() <= 0.25 * 0.05,
        "SPE false-alarm rate {fa5_spe} at α = 0.05"
    );
    assert!(
        shift_t2 > 0.95,
        "a 6σ factor shift is detected by T²: {shift_t2}"
    );
    assert!(shift_spe < 3.0 * ALPHA, "…and barely by SPE: {shift_spe}");
    assert!(
        bias_spe > 0.95,
        "a 2σ sensor bias is detected by SPE: {bias_spe}"
    );
    assert!(bias_t2 < 0.5, "…much less by T²: {bias_t2}");
    assert!(
        small_t2 < 3.0 * ALPHA && small_spe < 3.0 * ALPHA,
        "{small_t2}, {small_spe}"
    );

    // The same rows scored at ingest count what the flags count.
    let (t2, spe) = over(&app, &sensor).await;
    let receipt = ingest_scored(&app, "te", &sensor).await;
    let scored = &receipt["scored"];
    assert_eq!(scored["rows"], json!(2000));
    assert_eq!(scored["t2"], json!(t2), "{receipt}");
    assert_eq!(scored["spe"], json!(spe), "{receipt}");
    let text = app.metrics().await;
    let series = r#"streampca_model_outliers_total{model="te",statistic="spe"}"#;
    assert_eq!(counter(&text, series), Some(spe as u64));
}
