//! The monitoring side of the `streampca` client, run as the real binary against a real
//! server: `models create --standardize --alpha`, `project --alpha`, `limits` and
//! `ingest --score`, each compared with the API's own answer for the same request.

use serde_json::{json, Value};

use crate::cli::{csv, ok, run, stderr, write};
use crate::helpers::{spawn_app, spiked_rows, vector, TestApp};
use crate::monitoring::{limits_ok, project_ok, rows_with_outliers};

/// The rows of `v[key]` that are `true`.
fn count_true(v: &Value, key: &str) -> usize {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| **b == json!(true))
        .count()
}

/// Creates `name` (dim 8, 3 components, alpha 0.05) with the CLI, feeds it reference rows
/// and waits for the fit.
async fn fitted(app: &TestApp, name: &str, standardize: bool) {
    let mut args = vec![
        "models",
        "create",
        name,
        "--dim",
        "8",
        "--components",
        "3",
        "--alpha",
        "0.05",
    ];
    if standardize {
        args.push("--standardize");
    }
    ok(&run(app, &args).await);
    let seq = app.ingest_json(name, &spiked_rows(8, 1500, 71)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged(name, seq).await;
}

#[tokio::test]
async fn project_with_alpha_writes_the_statistics_limits_and_flags_of_the_api() {
    // Arrange: a standardised model created by the CLI; rows with outliers of both kinds.
    let app = spawn_app().await;
    fitted(&app, "cm", true).await;
    let config = app.status("cm").await;
    assert_eq!(config["standardize"], json!(true), "{config}");
    assert_eq!(config["alpha"], json!(0.05), "{config}");
    let queries = rows_with_outliers(8, 60, 72);
    let want = project_ok(&app, "cm", json!({"x": queries, "k": 2, "alpha": 0.01})).await;
    let (t2, spe) = (
        count_true(&want, "outlier_t2"),
        count_true(&want, "outlier_spe"),
    );
    assert!(
        t2 > 0 && spe > 0 && t2 < 60 && spe < 60,
        "T² {t2}, SPE {spe}"
    );
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "q.csv", &csv(&queries));
    let out_csv = dir.path().join("out.csv");
    let out_nd = dir.path().join("out.ndjson");
    let args = |out: &std::path::Path| {
        let out = out.to_str().unwrap().to_owned();
        let input = input.to_str().unwrap().to_owned();
        [
            "project".into(),
            "cm".into(),
            input,
            "-k".into(),
            "2".into(),
            "--alpha".into(),
            "0.01".into(),
            "--batch-size".into(),
            "25".into(),
            "-o".into(),
            out,
        ]
    };

    // Act: batches of 25 rows, so three requests each.
    let a_args = args(&out_csv);
    let b_args = args(&out_nd);
    let a = run(&app, &a_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let b = run(&app, &b_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    ok(&a);
    ok(&b);

    // Assert: the statistics columns are the API's, row by row (bit for bit: the CLI
    // prints shortest round-trip decimals), and the tally counts the API's flags.
    let (t2s, spes) = (vector(&want["t2"]), vector(&want["spe"]));
    let (lt2, lspe) = (
        want["limits"]["t2"].as_f64().unwrap(),
        want["limits"]["spe"].as_f64().unwrap(),
    );
    let text = std::fs::read_to_string(&out_csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("score_0,score_1,residual_norm,t2,spe,limit_t2,limit_spe,outlier_t2,outlier_spe")
    );
    let body: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(body.len(), 60);
    for (i, row) in body.iter().enumerate() {
        let num = |j: usize| row[j].parse::<f64>().unwrap();
        assert_eq!(
            [num(3), num(4), num(5), num(6)].map(f64::to_bits),
            [t2s[i], spes[i], lt2, lspe].map(f64::to_bits),
            "csv row {i}"
        );
        assert_eq!(row[7], want["outlier_t2"][i].to_string(), "csv row {i}");
        assert_eq!(row[8], want["outlier_spe"][i].to_string(), "csv row {i}");
    }
    let objs: Vec<Value> = std::fs::read_to_string(&out_nd)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 60);
    for (i, o) in objs.iter().enumerate() {
        assert_eq!(o["t2"].as_f64(), Some(t2s[i]), "ndjson row {i}");
        assert_eq!(o["spe"].as_f64(), Some(spes[i]), "ndjson row {i}");
        assert_eq!(o["limit_t2"].as_f64(), Some(lt2), "ndjson row {i}");
        assert_eq!(o["limit_spe"].as_f64(), Some(lspe), "ndjson row {i}");
        assert_eq!(o["outlier_t2"], want["outlier_t2"][i], "ndjson row {i}");
        assert_eq!(o["outlier_spe"], want["outlier_spe"][i], "ndjson row {i}");
    }
    let summary = format!(
        "scored 60 rows against the published fit: {t2} ({:.2}%) over the T² limit, \
         {spe} ({:.2}%) over the SPE limit",
        100.0 * t2 as f64 / 60.0,
        100.0 * spe as f64 / 60.0
    );
    assert!(stderr(&a).contains(&summary), "{}", stderr(&a));

    // Without --alpha the columns are not there.
    let plain = run(&app, &["project", "cm", input.to_str().unwrap(), "-k", "2"]).await;
    assert!(ok(&plain).starts_with("score_0,score_1,residual_norm\n"));
}

#[tokio::test]
async fn limits_prints_the_apis_limits_as_json_and_as_a_table_and_its_errors() {
    // Arrange
    let app = spawn_app().await;
    ok(&run(
        &app,
        &["models", "create", "cl", "--dim", "8", "--components", "3"],
    )
    .await);

    // Act / Assert: before a fit, the server's 409 with exit status 1.
    let early = run(&app, &["limits", "cl"]).await;
    assert_eq!(early.status.code(), Some(1));
    assert!(
        stderr(&early).contains("error: not_fitted:"),
        "{}",
        stderr(&early)
    );

    let seq = app.ingest_json("cl", &spiked_rows(8, 1500, 73)).await["sequence"]
        .as_u64()
        .unwrap();
    app.wait_converged("cl", seq).await;
    let want = limits_ok(&app, "cl", "k=2&alpha=0.05").await;
    let want_default = limits_ok(&app, "cl", "").await;
    let json_out = run(
        &app,
        &["limits", "cl", "-k", "2", "--alpha", "0.05", "--json"],
    )
    .await;
    let json_default = run(&app, &["limits", "cl", "--json"]).await;
    let table = run(&app, &["limits", "cl", "-k", "2", "--alpha", "0.05"]).await;
    let bad_alpha = run(&app, &["limits", "cl", "--alpha", "0.7"]).await;
    let bad_k = run(&app, &["limits", "cl", "-k", "9"]).await;

    let got: Value = serde_json::from_str(&ok(&json_out)).unwrap();
    assert_eq!(got, want);
    let got_default: Value = serde_json::from_str(&ok(&json_default)).unwrap();
    assert_eq!(got_default, want_default);
    assert_eq!(got_default["k"], json!(3));
    assert_eq!(got_default["alpha"], json!(0.01));
    let t = ok(&table);
    let num = |key: &str| want[key].as_f64().unwrap();
    for line in [
        "k            2".to_owned(),
        "alpha        0.05".to_owned(),
        format!("T² limit     {:.6}", num("t2")),
        format!(
            "SPE limit    {:.6} ({}; Box's approximation: {:.6})",
            num("spe"),
            want["spe_method"].as_str().unwrap(),
            num("spe_box")
        ),
        format!("h₀           {:.6}", num("h0")),
    ] {
        assert!(t.lines().any(|l| l == line), "no line `{line}` in\n{t}");
    }
    assert!(
        t.contains(&format!("{:.6e}", want["theta"][0].as_f64().unwrap())),
        "{t}"
    );
    assert_eq!(bad_alpha.status.code(), Some(1));
    assert!(
        stderr(&bad_alpha).contains("error: invalid_parameter:")
            && stderr(&bad_alpha).contains("alpha"),
        "{}",
        stderr(&bad_alpha)
    );
    assert_eq!(bad_k.status.code(), Some(1));
    assert!(
        stderr(&bad_k).contains("error: invalid_parameter:") && stderr(&bad_k).contains('k'),
        "{}",
        stderr(&bad_k)
    );
}

#[tokio::test]
async fn ingest_score_prints_the_counts_the_api_flags_for_the_same_rows() {
    // Arrange: a fitted model; the API's flags for the rows at the model's alpha.
    let app = spawn_app().await;
    fitted(&app, "ci", false).await;
    let rows = rows_with_outliers(8, 300, 74);
    let want = project_ok(&app, "ci", json!({"x": rows, "alpha": 0.05})).await;
    let (t2, spe) = (
        count_true(&want, "outlier_t2"),
        count_true(&want, "outlier_spe"),
    );
    assert!(t2 > 0 && spe > 0, "T² {t2}, SPE {spe}");
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "rows.csv", &csv(&rows));
    let before = app.metrics().await;

    // Act: one batch, so it is scored against the fit the projection used.
    let o = run(
        &app,
        &[
            "ingest",
            "ci",
            input.to_str().unwrap(),
            "--batch-size",
            "300",
            "--score",
            "--quiet",
        ],
    )
    .await;

    // Assert
    let out = ok(&o);
    let summary = format!(
        "scored 300 rows against the published fit: {t2} ({:.2}%) over the T² limit, \
         {spe} ({:.2}%) over the SPE limit",
        100.0 * t2 as f64 / 300.0,
        100.0 * spe as f64 / 300.0
    );
    assert!(out.contains(&summary), "{out}");
    let after = app.metrics().await;
    let moved = |series: &str| {
        crate::monitoring::counter(&after, series).unwrap()
            - crate::monitoring::counter(&before, series).unwrap()
    };
    assert_eq!(
        moved(r#"streampca_model_rows_scored_total{model="ci"}"#),
        300
    );
    assert_eq!(
        moved(r#"streampca_model_outliers_total{model="ci",statistic="t2"}"#),
        t2 as u64
    );

    // A model without a fit: the batches are folded and the reason is printed.
    ok(&run(
        &app,
        &[
            "models",
            "create",
            "cold",
            "--dim",
            "8",
            "--components",
            "3",
        ],
    )
    .await);
    let cold = run(
        &app,
        &[
            "ingest",
            "cold",
            input.to_str().unwrap(),
            "--score",
            "--quiet",
        ],
    )
    .await;
    let out = ok(&cold);
    assert!(
        out.contains("scored 0 rows") && out.contains("batches not scored (no fit yet"),
        "{out}"
    );
    assert_eq!(app.status("cold").await["samples"], json!(300.0));
}
