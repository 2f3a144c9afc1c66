//! Process monitoring in the client: `streampca limits`, the statistics columns that
//! `streampca project --alpha` adds, and the totals of `streampca ingest --score`.

use serde_json::{json, Value};

use super::{CliError, Client, Connection, LimitsArgs};

fn unexpected(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Server(format!("unexpected {what} response: {e}"))
}

/// `streampca limits`: the control limits of T² and SPE for a model's latest fit.
///
/// # Errors
/// As [`Client::call`] (409 `not_fitted` before the first fit, 400 naming `k` or
/// `alpha` when out of range).
pub async fn limits(a: LimitsArgs) -> Result<(), CliError> {
    let client = connect(&a.conn)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(k) = a.k {
        query.push(("k", k.to_string()));
    }
    if let Some(alpha) = a.alpha {
        query.push(("alpha", alpha.to_string()));
    }
    let l = client
        .get(&["v1", "models", &a.model, "limits"], &query)
        .await?;
    if a.json {
        let s = serde_json::to_string_pretty(&l).map_err(|e| unexpected("limits", e))?;
        println!("{s}");
        return Ok(());
    }
    let num = |key: &str| l[key].as_f64().ok_or_else(|| unexpected("limits", key));
    let theta: Vec<f64> =
        serde_json::from_value(l["theta"].clone()).map_err(|e| unexpected("limits", e))?;
    println!(
        "model `{}`: control limits of the latest fit ({} samples)",
        a.model,
        num("samples")?
    );
    println!("{:<12} {}", "k", l["k"]);
    println!("{:<12} {}", "alpha", num("alpha")?);
    println!("{:<12} {:.6}", "T² limit", num("t2")?);
    println!(
        "{:<12} {:.6} ({}; Box's approximation: {:.6})",
        "SPE limit",
        num("spe")?,
        l["spe_method"].as_str().unwrap_or("?"),
        num("spe_box")?
    );
    println!(
        "{:<12} {}",
        "θ₁ θ₂ θ₃",
        theta
            .iter()
            .map(|t| format!("{t:.6e}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("{:<12} {:.6}", "h₀", num("h0")?);
    Ok(())
}

fn connect(conn: &Connection) -> Result<Client, CliError> {
    Client::new(&conn.url, conn.api_key.clone())
}

/// The monitoring part of one projection answer (requested with `alpha`): per-row T²,
/// SPE and flags, and the limits they were judged by.
#[derive(Debug, Clone, PartialEq)]
pub struct RowMonitoring {
    t2: Vec<f64>,
    spe: Vec<f64>,
    limit_t2: f64,
    limit_spe: f64,
    outlier_t2: Vec<bool>,
    outlier_spe: Vec<bool>,
}

/// Extra CSV columns of `project --alpha`, after `residual_norm`.
pub const CSV_COLUMNS: [&str; 6] = [
    "t2",
    "spe",
    "limit_t2",
    "limit_spe",
    "outlier_t2",
    "outlier_spe",
];

impl RowMonitoring {
    /// Reads the statistics, limits and flags of a projection answer of `rows` rows.
    ///
    /// # Errors
    /// [`CliError::Server`] when the answer lacks them or has another length.
    pub fn from_response(r: &Value, rows: usize) -> Result<Self, CliError> {
        let get = |key: &str| r[key].clone();
        let parse_err = |e: serde_json::Error| unexpected("projection", e);
        let out = Self {
            t2: serde_json::from_value(get("t2")).map_err(parse_err)?,
            spe: serde_json::from_value(get("spe")).map_err(parse_err)?,
            limit_t2: r["limits"]["t2"]
                .as_f64()
                .ok_or_else(|| unexpected("projection", "no limits.t2"))?,
            limit_spe: r["limits"]["spe"]
                .as_f64()
                .ok_or_else(|| unexpected("projection", "no limits.spe"))?,
            outlier_t2: serde_json::from_value(get("outlier_t2")).map_err(parse_err)?,
            outlier_spe: serde_json::from_value(get("outlier_spe")).map_err(parse_err)?,
        };
        let lens = [
            out.t2.len(),
            out.spe.len(),
            out.outlier_t2.len(),
            out.outlier_spe.len(),
        ];
        if lens.iter().any(|l| *l != rows) {
            return Err(unexpected(
                "projection",
                format!("statistics for {lens:?} rows, expected {rows}"),
            ));
        }
        Ok(out)
    }

    /// Row i's values for [`CSV_COLUMNS`].
    pub fn csv_fields(&self, i: usize) -> [String; 6] {
        [
            self.t2[i].to_string(),
            self.spe[i].to_string(),
            self.limit_t2.to_string(),
            self.limit_spe.to_string(),
            self.outlier_t2[i].to_string(),
            self.outlier_spe[i].to_string(),
        ]
    }

    /// Adds row i's statistics, limits and flags to its NDJSON object.
    pub fn add_to(&self, i: usize, o: &mut Value) {
        for (key, v) in [
            ("t2", json!(self.t2[i])),
            ("spe", json!(self.spe[i])),
            ("limit_t2", json!(self.limit_t2)),
            ("limit_spe", json!(self.limit_spe)),
            ("outlier_t2", json!(self.outlier_t2[i])),
            ("outlier_spe", json!(self.outlier_spe[i])),
        ] {
            o[key] = v;
        }
    }

    /// Rows over the (T², SPE) limits.
    pub fn counts(&self) -> (usize, usize) {
        let n = |v: &[bool]| v.iter().filter(|b| **b).count();
        (n(&self.outlier_t2), n(&self.outlier_spe))
    }
}

/// Totals of `ingest --score` (or `project --alpha`) over every batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreTally {
    /// Rows scored.
    pub rows: u64,
    /// Rows over the T² limit.
    pub t2: u64,
    /// Rows over the SPE limit.
    pub spe: u64,
    /// Batches the server did not score (no fit with limits yet).
    pub unscored_batches: u64,
    /// The server's reason for the last unscored batch.
    pub last_reason: Option<String>,
}

impl ScoreTally {
    /// The ingest query string: `score=true` when `score`, else empty.
    pub fn query(score: bool) -> Vec<(&'static str, String)> {
        score
            .then(|| ("score", "true".to_owned()))
            .into_iter()
            .collect()
    }

    /// Adds one ingest answer (`scored` or `scored: null` and `not_scored`).
    pub fn add(&mut self, receipt: &Value) {
        let s = &receipt["scored"];
        if s.is_object() {
            self.rows += s["rows"].as_u64().unwrap_or(0);
            self.t2 += s["t2"].as_u64().unwrap_or(0);
            self.spe += s["spe"].as_u64().unwrap_or(0);
        } else {
            self.unscored_batches += 1;
            self.last_reason = receipt["not_scored"].as_str().map(str::to_owned);
        }
    }

    /// Adds the rows of one projection answer.
    pub fn count(&mut self, m: &RowMonitoring) {
        let (t2, spe) = m.counts();
        self.rows += m.t2.len() as u64;
        self.t2 += t2 as u64;
        self.spe += spe as u64;
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let pct = |n: u64| {
            if self.rows == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.rows as f64
            }
        };
        let mut s = format!(
            "scored {} rows against the published fit: {} ({:.2}%) over the T² limit, \
             {} ({:.2}%) over the SPE limit",
            self.rows,
            self.t2,
            pct(self.t2),
            self.spe,
            pct(self.spe)
        );
        if self.unscored_batches > 0 {
            s.push_str(&format!(
                "; {} batches not scored ({})",
                self.unscored_batches,
                self.last_reason.as_deref().unwrap_or("no reason given")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_adds_scored_batches_and_keeps_the_reason_of_unscored_ones() {
        let mut t = ScoreTally::default();
        t.add(&json!({"scored": null, "not_scored": "no fit yet"}));
        t.add(&json!({"scored": {"rows": 200, "t2": 3, "spe": 5}}));
        t.add(&json!({"scored": {"rows": 50, "t2": 2, "spe": 0}}));
        assert_eq!((t.rows, t.t2, t.spe, t.unscored_batches), (250, 5, 5, 1));
        let s = t.summary();
        assert!(s.contains("scored 250 rows") && s.contains("5 (2.00%) over the T² limit"));
        assert!(s.contains("1 batches not scored (no fit yet)"), "{s}");
    }

    #[test]
    fn row_monitoring_reads_a_projection_answer_and_refuses_a_short_one() {
        let r = json!({"t2": [1.5, 9.0], "spe": [0.1, 0.2], "limits": {"t2": 8.0, "spe": 0.15},
                       "outlier_t2": [false, true], "outlier_spe": [false, true]});
        let m = RowMonitoring::from_response(&r, 2).expect("a valid answer");
        assert_eq!(m.counts(), (1, 1));
        let mut t = ScoreTally::default();
        t.count(&m);
        t.count(&m);
        assert_eq!((t.rows, t.t2, t.spe), (4, 2, 2));
        assert_eq!(m.csv_fields(1), ["9", "0.2", "8", "0.15", "true", "true"]);
        let mut o = json!({});
        m.add_to(0, &mut o);
        assert_eq!(o["outlier_spe"], json!(false));
        assert_eq!(o["limit_t2"], json!(8.0));
        assert!(RowMonitoring::from_response(&r, 3).is_err());
    }
}
