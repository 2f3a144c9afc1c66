//! One function per client subcommand. Results go to standard output (tables, or the
//! server's JSON with `--json`); progress and errors go to standard error.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::Body;
use super::input::{detect, RowReader};
use super::monitoring::{RowMonitoring, ScoreTally, CSV_COLUMNS};
use super::synthetic::{angle, Synthetic};
use super::{
    CliError, Client, ComponentsArgs, Connection, DemoArgs, IngestArgs, ModelsOp, OutputFormat,
    ProjectArgs, Wire,
};

fn connect(conn: &Connection) -> Result<Client, CliError> {
    Client::new(&conn.url, conn.api_key.clone())
}

fn print_json(v: &Value) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::Server(format!("printing JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// A count or other plain number as people write it (`4000`, not `4000.0`).
fn count(v: &Value) -> String {
    v.as_f64().map_or_else(|| v.to_string(), |x| x.to_string())
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.6}"),
        None => "-".into(),
    }
}

/// `streampca models …`.
///
/// # Errors
/// As [`Client::call`].
pub async fn models(conn: &Connection, op: ModelsOp) -> Result<(), CliError> {
    let client = connect(conn)?;
    match op {
        ModelsOp::Create {
            name,
            dim,
            components,
            target_dim,
            half_life,
            optimizer,
            tolerance,
            standardize,
            alpha,
            json,
        } => {
            let mut body = json!({ "name": name, "dim": dim, "components": components });
            for (key, value) in [
                ("target_dim", target_dim.map(Value::from)),
                ("half_life", half_life.map(Value::from)),
                ("optimizer", optimizer.map(Value::from)),
                ("tolerance", tolerance.map(Value::from)),
                ("standardize", standardize.then_some(Value::from(true))),
                ("alpha", alpha.map(Value::from)),
            ] {
                if let Some(v) = value {
                    body[key] = v;
                }
            }
            let status = client.post_json(&["v1", "models"], &body).await?;
            if json {
                return print_json(&status);
            }
            println!(
                "model `{name}`: dim {}, {} components{} ({} samples so far)",
                status["dim"],
                status["components"],
                status["target_dim"]
                    .as_u64()
                    .map_or(String::new(), |t| format!(", target_dim {t}")),
                count(&status["samples"])
            );
        }
        ModelsOp::List { json } => {
            let list = client.get(&["v1", "models"], &[]).await?;
            if json {
                return print_json(&list);
            }
            let models = list["models"].as_array().cloned().unwrap_or_default();
            if models.is_empty() {
                println!("no models");
                return Ok(());
            }
            println!(
                "{:<24} {:>6} {:>10} {:>12} {:>9} {:>12}",
                "NAME", "DIM", "COMPONENTS", "SAMPLES", "CONVERGED", "LOSS"
            );
            for m in models {
                println!(
                    "{:<24} {:>6} {:>10} {:>12} {:>9} {:>12}",
                    m["name"].as_str().unwrap_or("?"),
                    count(&m["dim"]),
                    count(&m["components"]),
                    count(&m["samples"]),
                    if m["converged"] == json!(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    num(&m["loss"]),
                );
            }
        }
        ModelsOp::Show { name, json } => {
            let status = client.get(&["v1", "models", &name], &[]).await?;
            if json {
                return print_json(&status);
            }
            if let Some(map) = status.as_object() {
                for (k, v) in map {
                    println!("{k:<16} {v}");
                }
            }
        }
        ModelsOp::Delete { name } => {
            client.delete(&["v1", "models", &name]).await?;
            println!("deleted model `{name}`");
        }
    }
    Ok(())
}

/// The model's row width (`dim + target_dim`), its dim, and a description for messages.
async fn shape(client: &Client, model: &str) -> Result<(usize, usize, Option<usize>), CliError> {
    let status = client.get(&["v1", "models", model], &[]).await?;
    let dim = status["dim"]
        .as_u64()
        .ok_or_else(|| CliError::Server(format!("the status of `{model}` has no dim: {status}")))?;
    let target = status["target_dim"].as_u64().map(|t| t as usize);
    Ok((dim as usize + target.unwrap_or(0), dim as usize, target))
}

/// Encodes a batch of rows of `width` values for the wire.
///
/// # Errors
/// With `Wire::Binary`, the 0-based index of the first value outside f32's range.
fn encode(rows: &[f64], dim: usize, target: Option<usize>, wire: Wire) -> Result<Body, usize> {
    match wire {
        Wire::Binary => {
            let mut out = Vec::with_capacity(rows.len() * 4);
            for (i, v) in rows.iter().enumerate() {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "f32 wire format, range checked"
                )]
                let f = *v as f32;
                if !f.is_finite() {
                    return Err(i);
                }
                out.extend_from_slice(&f.to_le_bytes());
            }
            Ok(Body::Raw("application/octet-stream", Bytes::from(out)))
        }
        Wire::Json => {
            let width = dim + target.unwrap_or(0);
            let x: Vec<&[f64]> = rows.chunks_exact(width).map(|r| &r[..dim]).collect();
            let body = match target {
                None => json!({ "x": x }),
                Some(_) => {
                    let y: Vec<&[f64]> = rows.chunks_exact(width).map(|r| &r[dim..]).collect();
                    json!({ "x": x, "y": y })
                }
            };
            Ok(Body::Json(Bytes::from(
                serde_json::to_vec(&body).unwrap_or_default(),
            )))
        }
    }
}

fn progress(quiet: bool, len: u64, rows_known: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    };
    let template = if rows_known {
        "{bar:40} {human_pos}/{human_len} rows  {per_sec}  eta {eta}"
    } else {
        "{bar:40} {binary_bytes}/{binary_total_bytes}  {msg}  eta {eta}"
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// `streampca ingest`.
///
/// # Errors
/// A bad file (named with its line), a rejected batch, or an unreachable server.
pub async fn ingest(a: IngestArgs) -> Result<(), CliError> {
    let client = connect(&a.conn)?;
    let (width, dim, target) = shape(&client, &a.model).await?;
    let what = match target {
        None => format!("model `{}` has dim {dim}", a.model),
        Some(t) => format!("model `{}` has dim {dim} + target_dim {t}", a.model),
    };
    let batch = usize::try_from(a.batch_size).unwrap_or(usize::MAX);
    let segments = ["v1", "models", a.model.as_str(), "samples"];
    let query = ScoreTally::query(a.score);
    let mut tally = ScoreTally::default();
    let mut rows = Vec::new();
    for path in &a.files {
        let format = detect(path, a.format)?;
        let row_shape = crate::pca::Shape {
            dim,
            target_dim: target,
        };
        let mut reader = RowReader::open(path, format, row_shape, &what)?;
        let rows_known = reader.total_rows().is_some();
        let bar = progress(
            a.quiet,
            reader.total_rows().unwrap_or(reader.total_bytes()),
            rows_known,
        );
        let start = Instant::now();
        let mut last = Value::Null;
        loop {
            let first_row = reader.rows_read();
            let n = reader.next_batch(batch, &mut rows)?;
            if n == 0 {
                break;
            }
            let body = encode(&rows, dim, target, a.wire).map_err(|i| {
                CliError::Input(format!(
                    "{}: row {}, value {}: {} does not fit f32 (use --wire json)",
                    path.display(),
                    first_row + (i / width) as u64 + 1,
                    i % width + 1,
                    rows[i]
                ))
            })?;
            last = client
                .call(Method::POST, &segments, &query, body)
                .await
                .map_err(|e| {
                    bar.abandon();
                    match e {
                        CliError::Rejected {
                            status,
                            code,
                            message,
                        } => CliError::Rejected {
                            status,
                            code,
                            message: format!(
                                "{message} (in the batch of rows {}–{} of {})",
                                first_row + 1,
                                first_row + n as u64,
                                path.display()
                            ),
                        },
                        other => other,
                    }
                })?;
            tally.add(&last);
            if rows_known {
                bar.set_position(reader.rows_read());
            } else {
                bar.set_position(reader.bytes_read());
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "{} rows  {:.0} rows/s",
                    reader.rows_read(),
                    reader.rows_read() as f64 / secs
                ));
            }
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}: {} rows into `{}` in {secs:.2} s ({:.0} rows/s); the model has {} samples (sequence {})",
            path.display(),
            reader.rows_read(),
            a.model,
            reader.rows_read() as f64 / secs.max(1e-9),
            count(&last["samples"]),
            count(&last["sequence"]),
        );
    }
    if a.score {
        println!("{}", tally.summary());
    }
    Ok(())
}

/// `streampca components`.
///
/// # Errors
/// As [`Client::call`].
pub async fn components(a: ComponentsArgs) -> Result<(), CliError> {
    let client = connect(&a.conn)?;
    let query: Vec<(&str, String)> = a.k.map(|k| ("k", k.to_string())).into_iter().collect();
    let c = client
        .get(&["v1", "models", &a.model, "components"], &query)
        .await?;
    if a.json {
        return print_json(&c);
    }
    let eig = c["eigenvalues"].as_array().cloned().unwrap_or_default();
    if eig.is_empty() {
        println!(
            "model `{}` has no fitted components yet ({} samples); ingest more and retry",
            a.model,
            count(&c["samples"])
        );
        return Ok(());
    }
    println!(
        "model `{}`: {} samples, fit of batch {}, {} steps, converged: {}, loss {}",
        a.model,
        count(&c["samples"]),
        count(&c["sequence"]),
        count(&c["steps"]),
        if c["converged"] == json!(true) {
            "yes"
        } else {
            "no"
        },
        num(&c["loss"]),
    );
    println!(
        "{:>4} {:>14} {:>10} {:>11} {:>18}",
        "#", "eigenvalue", "explained", "cumulative", "error bound (rad)"
    );
    let mut cumulative = 0.0;
    for (i, e) in eig.iter().enumerate() {
        let ratio = c["explained_variance_ratio"][i]
            .as_f64()
            .unwrap_or(f64::NAN);
        cumulative += ratio;
        let bound = c["error_bounds"][i].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>4} {:>14.6} {:>9.2}% {:>10.2}% {:>18.2e}",
            i + 1,
            e.as_f64().unwrap_or(f64::NAN),
            100.0 * ratio,
            100.0 * cumulative,
            bound
        );
    }
    Ok(())
}

/// `streampca project`.
///
/// # Errors
/// A bad input file, an unwritable output, or as [`Client::call`].
pub async fn project(a: ProjectArgs) -> Result<(), CliError> {
    let client = connect(&a.conn)?;
    let (_, dim, _) = shape(&client, &a.model).await?;
    let what = format!("model `{}` has dim {dim}", a.model);
    let format = detect(&a.file, a.format)?;
    let mut reader = RowReader::open(&a.file, format, crate::pca::Shape::inputs(dim), &what)?;
    let out_format = a.output_format.unwrap_or_else(|| {
        match a
            .output
            .as_ref()
            .and_then(|p| p.extension())
            .and_then(|e| e.to_str())
        {
            Some("ndjson" | "jsonl") => OutputFormat::Ndjson,
            _ => OutputFormat::Csv,
        }
    });
    let out_name = a
        .output
        .as_ref()
        .map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| CliError::Input(format!("creating {}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let io = |e: std::io::Error| CliError::Input(format!("writing {out_name}: {e}"));
    let batch = usize::try_from(a.batch_size).unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    let mut header_done = false;
    let mut tally = ScoreTally::default();
    loop {
        let n = reader.next_batch(batch, &mut rows)?;
        if n == 0 {
            break;
        }
        let x: Vec<&[f64]> = rows.chunks_exact(dim).collect();
        let mut body = json!({ "x": x, "whiten": a.whiten, "reconstruct": a.reconstruct });
        if let Some(k) = a.k {
            body["k"] = json!(k);
        }
        if let Some(alpha) = a.alpha {
            body["alpha"] = json!(alpha);
        }
        let r = client
            .post_json(&["v1", "models", &a.model, "project"], &body)
            .await?;
        let scores: Vec<Vec<f64>> = serde_json::from_value(r["scores"].clone())
            .map_err(|e| CliError::Server(format!("unexpected projection response: {e}")))?;
        let norms: Vec<f64> = serde_json::from_value(r["residual_norms"].clone())
            .map_err(|e| CliError::Server(format!("unexpected projection response: {e}")))?;
        let recon: Option<Vec<Vec<f64>>> = if a.reconstruct {
            Some(
                serde_json::from_value(r["reconstructions"].clone()).map_err(|e| {
                    CliError::Server(format!("unexpected projection response: {e}"))
                })?,
            )
        } else {
            None
        };
        let stats = a
            .alpha
            .map(|_| RowMonitoring::from_response(&r, scores.len()))
            .transpose()?;
        stats.iter().for_each(|m| tally.count(m));
        for (i, s) in scores.iter().enumerate() {
            let rec = recon.as_ref().and_then(|r| r.get(i));
            let norm = norms.get(i).copied().unwrap_or(f64::NAN);
            match out_format {
                OutputFormat::Csv => {
                    if !header_done {
                        let mut h: Vec<String> =
                            (0..s.len()).map(|j| format!("score_{j}")).collect();
                        if let Some(rec) = rec {
                            h.extend((0..rec.len()).map(|j| format!("recon_{j}")));
                        }
                        h.push("residual_norm".into());
                        if stats.is_some() {
                            h.extend(CSV_COLUMNS.map(String::from));
                        }
                        writeln!(out, "{}", h.join(",")).map_err(io)?;
                        header_done = true;
                    }
                    let mut line: Vec<String> = s.iter().map(f64::to_string).collect();
                    if let Some(rec) = rec {
                        line.extend(rec.iter().map(f64::to_string));
                    }
                    line.push(norm.to_string());
                    if let Some(m) = &stats {
                        line.extend(m.csv_fields(i));
                    }
                    writeln!(out, "{}", line.join(",")).map_err(io)?;
                }
                OutputFormat::Ndjson => {
                    let mut o = json!({ "scores": s, "residual_norm": norm });
                    if let Some(rec) = rec {
                        o["reconstruction"] = json!(rec);
                    }
                    if let Some(m) = &stats {
                        m.add_to(i, &mut o);
                    }
                    writeln!(out, "{o}").map_err(io)?;
                }
            }
        }
    }
    out.flush().map_err(io)?;
    if a.alpha.is_some() {
        eprintln!("{}", tally.summary());
    }
    if a.output.is_some() {
        eprintln!(
            "{}: {} rows projected to {out_name}",
            a.file.display(),
            reader.rows_read()
        );
    }
    Ok(())
}

/// `streampca demo`.
///
/// # Errors
/// An existing, non-empty model of the same name, or as [`Client::call`].
pub async fn demo(a: DemoArgs) -> Result<(), CliError> {
    let client = connect(&a.conn)?;
    let dim = usize::try_from(a.dim).unwrap_or(usize::MAX);
    let p = usize::try_from(a.components).unwrap_or(usize::MAX).min(dim);
    let total = usize::try_from(a.rows).unwrap_or(usize::MAX);
    let batch = usize::try_from(a.batch_size).unwrap_or(usize::MAX);
    let name = a.name.as_str();
    println!(
        "streampca demo: creating model `{name}` (dim {dim}, {p} components) on the server at {} \
         and streaming {total} synthetic rows into it. Nothing is started on this machine; \
         the model is left on the server afterwards.",
        client.base()
    );
    let status = client
        .post_json(
            &["v1", "models"],
            &json!({ "name": name, "dim": dim, "components": p }),
        )
        .await?;
    if status["samples"].as_f64().unwrap_or(0.0) > 0.0 {
        return Err(CliError::Input(format!(
            "model `{name}` already exists with {} samples; delete it first \
             (streampca models delete {name}) or pass --name",
            count(&status["samples"])
        )));
    }
    println!(
        "The data: Gaussian rows whose covariance has eigenvalues 10·0.6^i along known, \
         randomly rotated directions."
    );
    let mut data = Synthetic::new(dim, a.seed);
    let bar = progress(a.quiet, total as u64, true);
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut sent = 0;
    let mut sequence = 0;
    while sent < total {
        let n = batch.min(total - sent);
        rows.clear();
        data.fill(n, &mut rows);
        let body = encode(&rows, dim, None, Wire::Binary)
            .map_err(|_| CliError::Input("synthetic data outside f32 range".into()))?;
        let r = client
            .call(Method::POST, &["v1", "models", name, "samples"], &[], body)
            .await?;
        sequence = r["sequence"].as_u64().unwrap_or(sequence);
        sent += n;
        bar.set_position(sent as u64);
    }
    bar.finish_and_clear();
    println!(
        "Streamed {sent} rows in {:.2} s; waiting for the background fit to catch up...",
        start.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let c = loop {
        let c = client
            .get(&["v1", "models", name, "components"], &[])
            .await?;
        if c["sequence"].as_u64() >= Some(sequence) && c["converged"] == json!(true) {
            break c;
        }
        if Instant::now() > deadline {
            return Err(CliError::Server(format!(
                "the fit of `{name}` did not converge on batch {sequence} within 120 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let learned: Vec<Vec<f64>> = serde_json::from_value(c["components"].clone())
        .map_err(|e| CliError::Server(format!("unexpected components response: {e}")))?;
    let eig: Vec<f64> = serde_json::from_value(c["eigenvalues"].clone())
        .map_err(|e| CliError::Server(format!("unexpected components response: {e}")))?;
    println!(
        "{:>4} {:>12} {:>12} {:>16} {:>18}",
        "#", "true eig.", "learned", "angle to truth", "sampling noise ~"
    );
    let mut worst: f64 = 0.0;
    for (i, u) in learned.iter().enumerate() {
        let a_i = angle(u, &data.eigenvector(i));
        worst = worst.max(a_i);
        // First-order sampling error of an eigenvector estimated from N Gaussian rows:
        // sqrt(Σ_{j≠i} λ_i λ_j / (λ_i − λ_j)² / N).
        let li = Synthetic::eigenvalue(i);
        let noise = ((0..dim)
            .filter(|&j| j != i)
            .map(|j| {
                let lj = Synthetic::eigenvalue(j);
                li * lj / (li - lj).powi(2)
            })
            .sum::<f64>()
            / sent as f64)
            .sqrt();
        println!(
            "{:>4} {:>12.4} {:>12.4} {:>15.3}° {:>17.3}°",
            i + 1,
            li,
            eig.get(i).copied().unwrap_or(f64::NAN),
            a_i.to_degrees(),
            noise.to_degrees()
        );
    }
    println!(
        "closeness: the largest angle between a learned component and the true one is {:.3}° \
         ({:.2e} rad), from {sent} rows; more rows shrink it like 1/√N.",
        worst.to_degrees(),
        worst
    );
    println!("Next: streampca components {name}    streampca models delete {name}");
    Ok(())
}
