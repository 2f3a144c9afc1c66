//! Process monitoring over HTTP (issue 17): the statistics and control limits of
//! `POST /project` and `GET /limits` against an independent reference computed here from
//! the same rows (nalgebra's `SymmetricEigen` of the N−1 covariance or correlation
//! matrix; scipy for the quantiles when available), standardised models, ingest scoring
//! and its counters, and the errors.

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    angle, assert_error, matrix, reference, spawn_app, spawn_app_in, spiked_rows, vector, TestApp,
};

/// Creates a model from `body` and asserts 201.
pub async fn create(app: &TestApp, body: Value) {
    let r = app.create_model(body).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

/// Posts a projection and returns the answer, asserting 200.
pub async fn project_ok(app: &TestApp, name: &str, body: Value) -> Value {
    let r = app.project(name, body).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// `GET /limits` with a query, asserting 200.
pub async fn limits_ok(app: &TestApp, name: &str, query: &str) -> Value {
    let (s, v) = app
        .get_json(&format!("/v1/models/{name}/limits?{query}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// Ingests JSON rows with `?score=true`, asserting 200.
pub async fn ingest_scored(app: &TestApp, name: &str, rows: &[Vec<f64>]) -> Value {
    let r = app
        .client
        .post(app.url(&format!("/v1/models/{name}/samples?score=true")))
        .json(&json!({ "x": rows }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// The value of one series (`name{labels}` exactly as rendered) in `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The value of one counter series, as an integer.
pub fn counter(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts `|got − want| ≤ tol·scale` and returns `|got − want|/scale`.
fn close(got: f64, want: f64, tol: f64, scale: f64, what: &str) -> f64 {
    let rel = (got - want).abs() / scale;
    assert!(
        (got - want).abs() <= tol * scale,
        "{what}: {got:e} vs {want:e} ({rel:e} relative to {scale:e})"
    );
    rel
}

/// Eigenpairs of a symmetric matrix, largest first.
fn eig_sorted(c: DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
    let n = c.nrows();
    let e = SymmetricEigen::new(c);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| e.eigenvalues[b].total_cmp(&e.eigenvalues[a]));
    let values = order.iter().map(|&i| e.eigenvalues[i]).collect();
    let vectors = DMatrix::from_fn(n, n, |r, c| e.eigenvectors[(r, order[c])]);
    (values, vectors)
}

/// The reference correlation PCA of `rows`: means, standard deviations (N−1; 0 for a
/// constant column), and the eigenpairs of the correlation matrix with constant rows and
/// columns zero.
struct CorrelationReference {
    mean: DVector<f64>,
    scale: DVector<f64>,
    eigenvalues: Vec<f64>,
    vectors: DMatrix<f64>,
}

fn correlation_reference(rows: &[Vec<f64>]) -> CorrelationReference {
    let n = rows[0].len();
    let count = rows.len() as f64;
    let x = DMatrix::from_fn(rows.len(), n, |r, c| rows[r][c]);
    let mean = DVector::from_fn(n, |j, _| x.column(j).sum() / count);
    let centred = DMatrix::from_fn(rows.len(), n, |r, c| x[(r, c)] - mean[c]);
    let cov = centred.transpose() * &centred / (count - 1.0);
    let top = (0..n).map(|j| cov[(j, j)].sqrt()).fold(0.0, f64::max);
    let scale = DVector::from_fn(n, |j, _| {
        let s = cov[(j, j)].sqrt();
        if s > 1e-12 * top {
            s
        } else {
            0.0
        }
    });
    let inv = scale.map(|s| if s > 0.0 { 1.0 / s } else { 0.0 });
    let corr = DMatrix::from_fn(n, n, |i, j| cov[(i, j)] * inv[i] * inv[j]);
    let (eigenvalues, vectors) = eig_sorted(corr);
    CorrelationReference {
        mean,
        scale,
        eigenvalues,
        vectors,
    }
}

/// Reference statistics of one centred (and, for correlation PCA, scaled) row `z` on
/// the first k eigenpairs: T², SPE, and the complete-decomposition contributions
/// `(U_k Λ_k^{-1/2} U_kᵀ z)_j²` and `((I − U_k U_kᵀ) z)_j²`.
struct RowReference {
    t2: f64,
    spe: f64,
    contributions_t2: Vec<f64>,
    contributions_spe: Vec<f64>,
}

fn row_reference(z: &DVector<f64>, vectors: &DMatrix<f64>, lam: &[f64], k: usize) -> RowReference {
    let uk = vectors.columns(0, k);
    let s = uk.transpose() * z;
    let t2 = (0..k).map(|i| s[i] * s[i] / lam[i]).sum();
    let residual = z - uk * &s;
    let whitened = DVector::from_fn(k, |i, _| s[i] / lam[i].sqrt());
    let w = uk * whitened;
    RowReference {
        t2,
        spe: residual.norm_squared(),
        contributions_t2: w.iter().map(|v| v * v).collect(),
        contributions_spe: residual.iter().map(|v| v * v).collect(),
    }
}

/// Asserts a row's statistics and contributions against the reference: each to 1e-9
/// relative to the statistic (contributions: relative to the statistic they sum to, as
/// single contributions can be arbitrarily small), and that they sum to it.
fn assert_row(out: &Value, r: usize, want: &RowReference) -> f64 {
    let t2 = vector(&out["t2"])[r];
    let spe = vector(&out["spe"])[r];
    let mut worst = close(t2, want.t2, 1e-9, want.t2, &format!("T² of row {r}"));
    worst = worst.max(close(
        spe,
        want.spe,
        1e-9,
        want.spe,
        &format!("SPE of row {r}"),
    ));
    let ct2 = &matrix(&out["contributions_t2"])[r];
    let cspe = &matrix(&out["contributions_spe"])[r];
    for j in 0..ct2.len() {
        let what = format!("row {r}, variable {j}");
        let (tw, sw) = (&want.contributions_t2, &want.contributions_spe);
        let e1 = close(
            ct2[j],
            tw[j],
            1e-9,
            want.t2,
            &format!("T² contribution, {what}"),
        );
        let e2 = close(
            cspe[j],
            sw[j],
            1e-9,
            want.spe,
            &format!("SPE contribution, {what}"),
        );
        worst = worst.max(e1).max(e2);
    }
    close(
        ct2.iter().sum(),
        t2,
        1e-12,
        t2,
        &format!("Σ T² contributions, row {r}"),
    );
    close(
        cspe.iter().sum(),
        spe,
        1e-12,
        spe,
        &format!("Σ SPE contributions, row {r}"),
    );
    worst
}

/// `θ_i = Σ_{j>k} λ_j^i` of a full spectrum.
fn theta(lam: &[f64], k: usize) -> [f64; 3] {
    let tail = &lam[k..];
    [1, 2, 3].map(|i| tail.iter().map(|l| l.powi(i)).sum())
}

/// Runs `tests/reference/monitoring_limits.py` on `fixture` and returns its answer, or
/// `None` when python3 with numpy and scipy is absent (a failure instead when
/// `STREAMPCA_REQUIRE_PYTHON=1`).
///
/// Async, so the test's runtime keeps serving its client's connections meanwhile (a
/// kept-alive connection the server closes after its idle timeout is then dropped from
/// the pool instead of being reused and reset).
pub async fn scipy_reference(fixture: &Value) -> Option<Value> {
    let available = tokio::process::Command::new("python3")
        .args(["-c", "import numpy, scipy.stats"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("STREAMPCA_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "STREAMPCA_REQUIRE_PYTHON=1 but python3 with numpy and scipy is not available"
        );
        eprintln!("skipped the scipy comparison: python3 with numpy and scipy not available");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixture.json");
    std::fs::write(&path, serde_json::to_vec(fixture).unwrap()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/monitoring_limits.py"
    );
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// Compares the service's `/limits` at every (k, α) with scipy's answers for `rows`.
async fn assert_limits_match_scipy(
    app: &TestApp,
    name: &str,
    rows: &[Vec<f64>],
    standardize: bool,
    ks: &[usize],
    alphas: &[f64],
) {
    let fixture = json!({
        "datasets": [{
            "dim": rows[0].len(),
            "rows": rows.concat(),
            "standardize": standardize,
            "ks": ks,
            "alphas": alphas,
        }],
        "spectra": [],
        "quantiles": [],
    });
    let Some(reference) = scipy_reference(&fixture).await else {
        return;
    };
    let expected = reference["datasets"][0].as_array().unwrap();
    assert_eq!(expected.len(), ks.len() * alphas.len());
    let mut worst: f64 = 0.0;
    for want in expected {
        let (k, alpha) = (want["k"].as_u64().unwrap(), want["alpha"].as_f64().unwrap());
        let got = limits_ok(app, name, &format!("k={k}&alpha={alpha}")).await;
        for key in ["t2", "spe", "spe_box", "h0"] {
            let (g, w) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
            close(
                g,
                w,
                1e-9,
                w.abs(),
                &format!("{key} at k = {k}, α = {alpha}"),
            );
            worst = worst.max((g - w).abs() / w.abs());
        }
        for i in 0..3 {
            let (g, w) = (
                got["theta"][i].as_f64().unwrap(),
                want["theta"][i].as_f64().unwrap(),
            );
            close(g, w, 1e-9, w, &format!("θ{} at k = {k}", i + 1));
        }
    }
    eprintln!("{name}: limits vs scipy, worst relative difference {worst:.1e}");
}

#[tokio::test]
async fn project_statistics_contributions_and_limits_match_an_independent_eigendecomposition() {
    // Arrange: 12 variables, a geometric spectrum, 3000 rows.
    let app = spawn_app().await;
    let (dim, p) = (12, 5);
    create(
        &app,
        json!({"name": "mon", "dim": dim, "components": p, "tolerance": 1e-10}),
    )
    .await;
    let rows = spiked_rows(dim, 3000, 31);
    let seq = app.ingest_json("mon", &rows).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("mon", seq).await;
    let want = reference(&rows);
    let queries = spiked_rows(dim, 40, 32);

    for k in [2, p] {
        // Act
        let out = project_ok(
            &app,
            "mon",
            json!({"x": queries, "k": k, "alpha": 0.01, "contributions": true}),
        )
        .await;

        // Assert: every row against the reference eigenpairs.
        let mut worst: f64 = 0.0;
        for (r, q) in queries.iter().enumerate() {
            let z = DVector::from_column_slice(q) - &want.mean;
            let expected = row_reference(&z, &want.vectors, &want.eigenvalues, k);
            worst = worst.max(assert_row(&out, r, &expected));
        }
        eprintln!("k = {k}: T², SPE, contributions vs the reference, worst {worst:.1e}");
        // The flags are the statistics against the answered limits.
        let (lt2, lspe) = (
            out["limits"]["t2"].as_f64().unwrap(),
            out["limits"]["spe"].as_f64().unwrap(),
        );
        let flags = |key: &str| -> Vec<bool> { serde_json::from_value(out[key].clone()).unwrap() };
        let expect = |key: &str, limit: f64| -> Vec<bool> {
            vector(&out[key]).iter().map(|v| *v > limit).collect()
        };
        assert_eq!(flags("outlier_t2"), expect("t2", lt2));
        assert_eq!(flags("outlier_spe"), expect("spe", lspe));
        assert_eq!(out["limits"]["k"], json!(k));
    }

    // θ against the full spectrum wherever the discarded variance is above 1e-6 tr C.
    let trace: f64 = want.eigenvalues.iter().sum();
    let mut worst: f64 = 0.0;
    for k in 1..=p {
        let limits = limits_ok(&app, "mon", &format!("k={k}&alpha=0.05")).await;
        let th = theta(&want.eigenvalues, k);
        assert!(th[0] > 1e-6 * trace);
        for i in 0..3 {
            let got = limits["theta"][i].as_f64().unwrap();
            close(got, th[i], 1e-9, th[i], &format!("θ{} at k = {k}", i + 1));
            worst = worst.max((got - th[i]).abs() / th[i]);
        }
        assert_eq!(limits["samples"], json!(3000.0));
    }
    eprintln!("θ vs the full eigendecomposition: worst relative difference {worst:.1e}");
    let ks: Vec<usize> = (1..=p).collect();
    assert_limits_match_scipy(&app, "mon", &rows, false, &ks, &[0.01, 0.05]).await;
}

/// Mixed units (1e-3 … 1e5), a constant column, three latent factors.
fn mixed_unit_rows(rows: usize, constant: usize, seed: u64) -> Vec<Vec<f64>> {
    let dim = 10;
    let mut rng = StdRng::seed_from_u64(seed);
    let loadings = DMatrix::from_fn(dim, 3, |_, _| {
        rng.sample::<f64, _>(rand_distr::StandardNormal)
    });
    let units = [1e-3, 1.0, 1e3, 1e5, 0.5, 20.0, 1.0, 3e-2, 7e2, 1e4];
    let offsets = [0.2, 15.0, 2.7e3, 1e6, -4.0, 300.0, 42.5, 0.01, 5e4, -2e5];
    let mut normal = move || rng.sample::<f64, _>(rand_distr::StandardNormal);
    (0..rows)
        .map(|_| {
            let f = [3.0 * normal(), 2.0 * normal(), normal()];
            (0..dim)
                .map(|j| {
                    if j == constant {
                        return offsets[j];
                    }
                    let latent: f64 = (0..3).map(|i| loadings[(j, i)] * f[i]).sum();
                    offsets[j] + units[j] * (latent + 0.3 * normal())
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_standardised_model_of_mixed_units_is_the_correlation_pca_and_ignores_a_constant_column()
{
    // Arrange
    let app = spawn_app().await;
    let (dim, p, constant) = (10, 4, 6);
    create(
        &app,
        json!({"name": "std", "dim": dim, "components": p, "tolerance": 1e-10,
               "standardize": true, "alpha": 0.05}),
    )
    .await;
    let rows = mixed_unit_rows(4000, constant, 41);
    let seq = app.ingest_json("std", &rows).await["sequence"]
        .as_u64()
        .unwrap();
    let c = app.wait_converged("std", seq).await;
    let want = correlation_reference(&rows);
    assert!(want.scale[constant] == 0.0 && want.scale.iter().filter(|s| **s > 0.0).count() == 9);

    // Assert: the components and eigenvalues are the correlation matrix's.
    let comps = matrix(&c["components"]);
    let eig = vector(&c["eigenvalues"]);
    for i in 0..p {
        let u: Vec<f64> = want.vectors.column(i).iter().copied().collect();
        let a = angle(&comps[i], &u);
        assert!(
            a < 1e-9,
            "component {i} is {a:e} rad from the correlation matrix's"
        );
        eprintln!("standardised: component {i} is {a:.1e} rad from the reference");
        close(
            eig[i],
            want.eigenvalues[i],
            1e-9,
            want.eigenvalues[i],
            &format!("eigenvalue {i}"),
        );
        assert!(
            comps[i][constant].abs() < 1e-12,
            "component {i} weighs the constant column"
        );
    }
    // The explained variance is against tr C = 9 (the non-constant variables).
    let ratio = vector(&c["explained_variance_ratio"]);
    close(
        ratio[0],
        want.eigenvalues[0] / 9.0,
        1e-9,
        ratio[0],
        "explained variance ratio",
    );

    // Act: project new rows, one of which moves the constant column far away.
    let mut queries = mixed_unit_rows(30, constant, 42);
    queries[3][constant] = 1e6;
    let k = 3;
    let out = project_ok(
        &app,
        "std",
        json!({"x": queries, "k": k, "alpha": 0.05, "contributions": true, "reconstruct": true}),
    )
    .await;

    // Assert: statistics in z space against the reference, finite, and nothing from the
    // constant column.
    let text = out.to_string();
    assert!(!text.contains("null") && !text.contains("NaN"), "{text}");
    let recon = matrix(&out["reconstructions"]);
    let (mut worst, mut constant_worst) = (0.0f64, 0.0f64);
    for (r, q) in queries.iter().enumerate() {
        let z = DVector::from_fn(dim, |j, _| {
            if want.scale[j] > 0.0 {
                (q[j] - want.mean[j]) / want.scale[j]
            } else {
                0.0
            }
        });
        let expected = row_reference(&z, &want.vectors, &want.eigenvalues, k);
        worst = worst.max(assert_row(&out, r, &expected));
        let (ct2, cspe) = (
            matrix(&out["contributions_t2"])[r][constant],
            matrix(&out["contributions_spe"])[r][constant],
        );
        assert!(ct2 <= 1e-24 * expected.t2 && cspe <= 1e-24 * expected.spe);
        constant_worst = constant_worst
            .max(ct2 / expected.t2)
            .max(cspe / expected.spe);
        // Reconstructions are back in input units: μ + s ⊙ U_k U_kᵀ z.
        let uk = want.vectors.columns(0, k);
        let back = uk * (uk.transpose() * &z);
        for j in 0..dim {
            let w = want.mean[j] + want.scale[j] * back[j];
            close(
                recon[r][j],
                w,
                1e-9,
                want.mean[j].abs() + want.scale[j],
                &format!("reconstruction {r},{j}"),
            );
        }
    }

    eprintln!(
        "standardised: T², SPE, contributions vs the reference, worst {worst:.1e}; \
         constant column's contribution / statistic at most {constant_worst:.1e}"
    );

    // θ and the limits in z space: tr C = 9.
    for kk in 1..=p {
        let limits = limits_ok(&app, "std", &format!("k={kk}")).await;
        assert_eq!(
            limits["alpha"],
            json!(0.05),
            "the model's alpha is the default"
        );
        let th = theta(&want.eigenvalues, kk);
        for i in 0..3 {
            let got = limits["theta"][i].as_f64().unwrap();
            close(got, th[i], 1e-9, th[i], &format!("θ{} at k = {kk}", i + 1));
        }
        let kept: f64 = want.eigenvalues[..kk].iter().sum();
        close(
            limits["theta"][0].as_f64().unwrap() + kept,
            9.0,
            1e-12,
            9.0,
            "tr C",
        );
    }
    let ks: Vec<usize> = (1..=p).collect();
    assert_limits_match_scipy(&app, "std", &rows, true, &ks, &[0.01, 0.05]).await;
}

/// Reference rows, then rows of which every fifth is pushed out of the fitted plane and
/// every seventh blown up along it, so that both statistics have rows over their limits.
pub fn rows_with_outliers(dim: usize, rows: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut out = spiked_rows(dim, rows, seed);
    for (r, row) in out.iter_mut().enumerate() {
        if r % 5 == 0 {
            row[dim - 1] += 4.0;
        }
        if r % 7 == 0 {
            for (j, v) in row.iter_mut().enumerate() {
                *v = 3.0 + 0.5 * j as f64 + 4.0 * (*v - 3.0 - 0.5 * j as f64);
            }
        }
    }
    out
}

#[tokio::test]
async fn ingest_scoring_counts_the_flags_project_gives_and_moves_the_counters_by_them() {
    // Arrange: a fitted model; then the project answer for the rows to be scored.
    let app = spawn_app().await;
    let (dim, p) = (8, 3);
    create(
        &app,
        json!({"name": "sc", "dim": dim, "components": p, "alpha": 0.05}),
    )
    .await;
    let seq = app.ingest_json("sc", &spiked_rows(dim, 1500, 51)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("sc", seq).await;
    let batch = rows_with_outliers(dim, 400, 52);
    let projected = project_ok(&app, "sc", json!({"x": batch, "alpha": 0.05})).await;
    let count = |key: &str| {
        projected[key]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| **b == json!(true))
            .count()
    };
    let (t2, spe) = (count("outlier_t2"), count("outlier_spe"));
    assert!(
        t2 > 20 && spe > 20 && t2 < 400 && spe < 400,
        "T² {t2}, SPE {spe}"
    );
    let before = app.metrics().await;

    // Act
    let receipt = ingest_scored(&app, "sc", &batch).await;

    // Assert: the same counts, k, α, limits and fit as the projection.
    let scored = &receipt["scored"];
    assert_eq!(scored["rows"], json!(400), "{receipt}");
    assert_eq!(scored["t2"], json!(t2), "{receipt}");
    assert_eq!(scored["spe"], json!(spe), "{receipt}");
    assert_eq!(scored["k"], json!(p));
    assert_eq!(scored["alpha"], json!(0.05));
    assert_eq!(scored["limit_t2"], projected["limits"]["t2"]);
    assert_eq!(scored["limit_spe"], projected["limits"]["spe"]);
    assert_eq!(scored["fitted_sequence"], projected["sequence"]);
    assert_eq!(receipt["accepted"], json!(400));
    assert_eq!(receipt["sequence"], json!(seq + 1));
    assert!(receipt.get("not_scored").is_none(), "{receipt}");
    // openapi.yaml's ScoredBatch lists exactly the keys of the answer.
    let spec: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap(),
    )
    .unwrap();
    let schema = &spec["components"]["schemas"]["ScoredBatch"];
    let names = |v: &serde_yaml::Value| -> std::collections::BTreeSet<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    };
    let documented = names(&schema["required"]);
    let answered: std::collections::BTreeSet<String> =
        scored.as_object().unwrap().keys().cloned().collect();
    assert_eq!(documented, answered);
    let properties: std::collections::BTreeSet<String> = schema["properties"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(properties, answered);
    let after = app.metrics().await;
    let moved = |series: &str| counter(&after, series).unwrap() - counter(&before, series).unwrap();
    assert_eq!(
        moved(r#"streampca_model_rows_scored_total{model="sc"}"#),
        400
    );
    let t2_series = r#"streampca_model_outliers_total{model="sc",statistic="t2"}"#;
    let spe_series = r#"streampca_model_outliers_total{model="sc",statistic="spe"}"#;
    assert_eq!(moved(t2_series), t2 as u64);
    assert_eq!(moved(spe_series), spe as u64);
    assert_eq!(
        metric(&after, r#"streampca_model_alpha{model="sc"}"#),
        Some(0.05)
    );

    // A raw f32 body (the single-precision path) scores like its projection too.
    let seq2 = receipt["sequence"].as_u64().unwrap();
    app.wait_converged("sc", seq2).await;
    let raw: Vec<Vec<f64>> = rows_with_outliers(dim, 300, 53)
        .iter()
        .map(|r| r.iter().map(|v| f64::from(*v as f32)).collect())
        .collect();
    let projected = project_ok(&app, "sc", json!({"x": raw, "alpha": 0.05})).await;
    let f32s: Vec<u8> = raw
        .iter()
        .flatten()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    let r = app
        .client
        .post(app.url("/v1/models/sc/samples?score=1"))
        .header("content-type", "application/octet-stream")
        .body(f32s)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let receipt: Value = r.json().await.unwrap();
    let flags = |key: &str| {
        projected[key]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| **b == json!(true))
            .count()
    };
    assert_eq!(
        receipt["scored"]["t2"],
        json!(flags("outlier_t2")),
        "{receipt}"
    );
    assert_eq!(
        receipt["scored"]["spe"],
        json!(flags("outlier_spe")),
        "{receipt}"
    );
    assert_eq!(receipt["scored"]["fitted_sequence"], json!(seq2));
    let last = app.metrics().await;
    assert_eq!(
        counter(&last, r#"streampca_model_rows_scored_total{model="sc"}"#),
        Some(700)
    );
    assert_eq!(
        counter(&last, t2_series),
        Some((t2 + flags("outlier_t2")) as u64)
    );
}

#[tokio::test]
async fn scoring_never_refuses_a_batch_and_says_why_it_did_not_score() {
    let app = spawn_app().await;
    app.create_autoencoder("cold", 3, 3).await;
    let rows = spiked_rows(3, 200, 61);

    // Before any fit: accepted, `scored: null` and the reason; the counters stay at 0.
    let first = ingest_scored(&app, "cold", &rows).await;
    assert_eq!(first["accepted"], json!(200));
    assert_eq!(first["scored"], Value::Null, "{first}");
    assert!(
        first["not_scored"].as_str().unwrap().contains("no fit yet"),
        "{first}"
    );
    let text = app.metrics().await;
    assert_eq!(
        counter(&text, r#"streampca_model_rows_scored_total{model="cold"}"#),
        Some(0)
    );
    for s in ["t2", "spe"] {
        let series = format!(r#"streampca_model_outliers_total{{model="cold",statistic="{s}"}}"#);
        assert_eq!(counter(&text, &series), Some(0), "{text}");
    }

    // Without `score`, the receipt is as before.
    let plain = app.ingest_json("cold", &rows).await;
    assert!(
        plain.get("scored").is_none() && plain.get("not_scored").is_none(),
        "{plain}"
    );

    // Every component of a 3-variable model: k = 3 leaves only round-off, so there is
    // no SPE limit. The batch is still folded; the reason names k.
    app.wait_converged("cold", plain["sequence"].as_u64().unwrap())
        .await;
    let third = ingest_scored(&app, "cold", &rows).await;
    assert_eq!(third["sequence"], json!(3));
    assert_eq!(third["scored"], Value::Null, "{third}");
    let reason = third["not_scored"].as_str().unwrap();
    assert!(
        reason.contains("k = 3") && reason.contains("round-off"),
        "{reason}"
    );
    let text = app.metrics().await;
    assert_eq!(
        counter(&text, r#"streampca_model_rows_scored_total{model="cold"}"#),
        Some(0)
    );

    // A bad `score` value or an unknown key: 400 naming it, nothing folded.
    for (query, name) in [("score=yes", "`score`"), ("scores=true", "`query`")] {
        let r = app
            .client
            .post(app.url(&format!("/v1/models/cold/samples?{query}")))
            .json(&json!({"x": rows}))
            .send()
            .await
            .unwrap();
        let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
        assert!(msg.contains(name), "{msg}");
    }
    assert_eq!(app.status("cold").await["sequence"], json!(3));
}

#[tokio::test]
async fn limits_refuse_alpha_out_of_range_a_missing_fit_and_a_round_off_k() {
    let app = spawn_app().await;
    // alpha at creation.
    for alpha in [0.0, 0.5, 0.7, -0.1] {
        let r = app
            .create_model(json!({"name": "bad", "dim": 4, "components": 2, "alpha": alpha}))
            .await;
        let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
        assert!(msg.contains("alpha"), "{msg}");
    }
    let (s, _) = app.get_json("/v1/models/bad").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Before a fit: 409 not_fitted from /limits and from a projection with alpha.
    app.create_autoencoder("lim", 4, 4).await;
    let r = app
        .client
        .get(app.url("/v1/models/lim/limits"))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::CONFLICT, "not_fitted").await;
    let r = app
        .project("lim", json!({"x": [[1, 2, 3, 4]], "alpha": 0.01}))
        .await;
    assert_error(r, StatusCode::CONFLICT, "not_fitted").await;

    let seq = app.ingest_json("lim", &spiked_rows(4, 300, 71)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("lim", seq).await;

    // alpha out of range, in the query and in a projection.
    for alpha in ["0", "0.5", "1", "-0.01", "NaN"] {
        let r = app
            .client
            .get(app.url(&format!("/v1/models/lim/limits?k=2&alpha={alpha}")))
            .send()
            .await
            .unwrap();
        let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
        assert!(msg.contains("alpha"), "{alpha}: {msg}");
    }
    for alpha in [0.0, 0.5, 2.0] {
        let r = app
            .project("lim", json!({"x": [[1, 2, 3, 4]], "k": 2, "alpha": alpha}))
            .await;
        let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
        assert!(msg.contains("alpha"), "{msg}");
    }

    // k = 4 of 4 variables leaves only round-off: 400 naming k and the usable k.
    let r = app
        .client
        .get(app.url("/v1/models/lim/limits?k=4"))
        .send()
        .await
        .unwrap();
    let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    assert!(
        msg.contains("`k`") && msg.contains("round-off") && msg.contains("use k ≤ 3"),
        "{msg}"
    );
    let r = app
        .project("lim", json!({"x": [[1, 2, 3, 4]], "alpha": 0.01}))
        .await;
    let msg = assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    assert!(msg.contains("`k`"), "{msg}");
    // k out of range and unknown keys.
    for query in ["k=0", "k=5", "kk=1"] {
        let r = app
            .client
            .get(app.url(&format!("/v1/models/lim/limits?{query}")))
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "invalid_parameter").await;
    }
    // …while k = 3 has limits, and the default alpha is the model's (0.01).
    let ok = limits_ok(&app, "lim", "k=3").await;
    assert_eq!(ok["alpha"], json!(0.01));
    assert!(ok["t2"].as_f64().unwrap() > 0.0 && ok["spe"].as_f64().unwrap() > 0.0);
}

/// The `.npy` member `name` of an uncompressed `.npz` body: its header and data bytes.
fn npz_member<'a>(body: &'a [u8], name: &str) -> Option<(String, &'a [u8])> {
    let member = format!("{name}.npy");
    let at = body
        .windows(member.len())
        .position(|w| w == member.as_bytes())?
        + member.len();
    let file = &body[at..];
    assert_eq!(&file[..6], b"\x93NUMPY");
    let len = usize::from(u16::from_le_bytes([file[8], file[9]]));
    let header = String::from_utf8_lossy(&file[10..10 + len]).into_owned();
    Some((header, &file[10 + len..]))
}

fn f64s(data: &[u8], n: usize) -> Vec<f64> {
    data.chunks_exact(8)
        .take(n)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn npz_project_answers_carry_the_statistics_limits_flags_and_contributions() {
    let app = spawn_app().await;
    let (dim, p) = (6, 2);
    app.create_autoencoder("nz", dim, p).await;
    let seq = app.ingest_json("nz", &spiked_rows(dim, 600, 81)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("nz", seq).await;
    let queries = rows_with_outliers(dim, 35, 82);
    let body = json!({"x": queries, "alpha": 0.05, "contributions": true});
    let json_answer = project_ok(&app, "nz", body.clone()).await;

    let r = app
        .client
        .post(app.url("/v1/models/nz/project"))
        .header("accept", "application/x-npz")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-npz");
    let npz = r.bytes().await.unwrap();

    for (key, shape) in [
        ("t2", format!("({},)", queries.len())),
        ("spe", format!("({},)", queries.len())),
        ("contributions_t2", format!("({}, {dim})", queries.len())),
        ("contributions_spe", format!("({}, {dim})", queries.len())),
    ] {
        let (header, data) = npz_member(&npz, key).unwrap_or_else(|| panic!("no {key}"));
        assert!(
            header.contains("'<f8'") && header.contains(&shape),
            "{key}: {header}"
        );
        let want = match &json_answer[key] {
            Value::Array(a) if a[0].is_array() => matrix(&json_answer[key]).concat(),
            v => vector(v),
        };
        let got = f64s(data, want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-12 * w.abs().max(1e-300),
                "{key}: {g} vs {w}"
            );
        }
    }
    for key in ["outlier_t2", "outlier_spe"] {
        let (header, data) = npz_member(&npz, key).unwrap_or_else(|| panic!("no {key}"));
        assert!(header.contains("'|b1'"), "{key}: {header}");
        let want: Vec<bool> = serde_json::from_value(json_answer[key].clone()).unwrap();
        let got: Vec<bool> = data[..want.len()].iter().map(|b| *b == 1).collect();
        assert_eq!(got, want, "{key}");
        assert!(
            want.contains(&true),
            "{key}: the test rows should have outliers"
        );
    }
    for (key, want) in [("limit_t2", "t2"), ("limit_spe", "spe")] {
        let (header, data) = npz_member(&npz, key).unwrap_or_else(|| panic!("no {key}"));
        assert!(header.contains("'<f8'"), "{key}: {header}");
        let w = json_answer["limits"][want].as_f64().unwrap();
        assert_eq!(f64s(data, 1)[0].to_bits(), w.to_bits(), "{key}");
    }
}

#[tokio::test]
async fn scoring_series_start_at_zero_for_created_and_recovered_models_and_leave_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    app.create_autoencoder("ser", 4, 2).await;
    let series = [
        r#"streampca_model_rows_scored_total{model="ser"}"#,
        r#"streampca_model_outliers_total{model="ser",statistic="t2"}"#,
        r#"streampca_model_outliers_total{model="ser",statistic="spe"}"#,
    ];
    let text = app.metrics().await;
    for s in series {
        assert_eq!(counter(&text, s), Some(0), "{s} in\n{text}");
    }
    let seq = app.ingest_json("ser", &spiked_rows(4, 300, 91)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("ser", seq).await;
    let scored = ingest_scored(&app, "ser", &spiked_rows(4, 50, 92)).await;
    assert_eq!(scored["scored"]["rows"], json!(50));
    let text = app.metrics().await;
    assert_eq!(counter(&text, series[0]), Some(50));
    assert_eq!(
        metric(&text, r#"streampca_model_alpha{model="ser"}"#),
        Some(0.01)
    );
    assert!(app.stop().await);

    // Recovered: the counters start again at 0.
    let app = spawn_app_in(dir.path()).await;
    let text = app.metrics().await;
    for s in series {
        assert_eq!(counter(&text, s), Some(0), "{s} in\n{text}");
    }
    let r = app
        .client
        .delete(app.url("/v1/models/ser"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let text = app.metrics().await;
    assert!(!text.contains(r#"model="ser""#), "{text}");
}
