//! The memory budget through the real parsers: adversarial bodies hold at most 2× the
//! bytes read (plus the constant slack), refused bodies are refused with the errors the
//! unbounded path gives, and accepted ones give the same values, bit for bit.

#![allow(clippy::unwrap_used, reason = "tests")]

use proptest::prelude::*;

use super::{Stats, BUDGET_DEN, BUDGET_NUM, PIECE};
use crate::format::{
    FormatError, JsonBatchParser, LinesParser, ProjectParser, ProjectQuery, RowLimit,
};
use crate::pca::{Batch, BatchData, BatchError, Part, Shape};

/// What the budget may exceed 2× the bytes read by: one open block of 2^18 values per
/// part (x and y) and the values of one piece read past the check plus one raw piece.
const SLACK: usize = 2 * (1 << 18) * 8 + 5 * PIECE;

/// Feeds `body` to `p` in chunks of an odd size, checking the budget after every chunk;
/// the largest bytes held and the last stats.
fn feed_all<P>(
    p: &mut P,
    body: &[u8],
    feed: impl Fn(&mut P, &[u8]) -> Result<(), FormatError>,
    stats: impl Fn(&mut P) -> Stats,
) -> Result<(usize, Stats), FormatError> {
    let mut max_held = 0;
    for c in body.chunks(10_007) {
        feed(p, c)?;
        let s = stats(p);
        assert!(
            s.held * BUDGET_DEN <= s.received * BUDGET_NUM + SLACK * BUDGET_DEN,
            "{} bytes held after {} read",
            s.held,
            s.received
        );
        max_held = max_held.max(s.held);
    }
    Ok((max_held, stats(p)))
}

/// `n` values, the shortest text (`0`) with `0.1` every seventh: the values and their
/// text.
fn short_values(n: usize) -> (Vec<f64>, Vec<&'static str>) {
    (0..n)
        .map(|i| if i % 7 == 3 { (0.1, "0.1") } else { (0.0, "0") })
        .unzip()
}

fn json_rows(text: &[&str], width: usize) -> String {
    let rows: Vec<String> = text
        .chunks(width)
        .map(|r| format!("[{}]", r.join(",")))
        .collect();
    format!("[{}]", rows.join(","))
}

fn json_batch(shape: Shape, body: &str) -> Result<(usize, Stats, Batch), FormatError> {
    let mut p = JsonBatchParser::new(shape, RowLimit::NONE);
    let (held, stats) = feed_all(
        &mut p,
        body.as_bytes(),
        |p, c| p.feed(c),
        |p| p.spill().stats(),
    )?;
    Ok((held, stats, p.finish()?))
}

fn lines(csv: bool, shape: Shape, body: &str) -> Result<(usize, Stats, Batch), FormatError> {
    let mut p = if csv {
        LinesParser::csv(shape, RowLimit::NONE)
    } else {
        LinesParser::ndjson(shape, RowLimit::NONE)
    };
    let (held, stats) = feed_all(
        &mut p,
        body.as_bytes(),
        |p, c| p.feed(c),
        |p| p.spill().stats(),
    )?;
    Ok((held, stats, p.finish()?))
}

const N: usize = 3_000_000;

#[test]
fn a_json_body_of_the_shortest_numbers_stays_within_the_budget() {
    let shape = Shape::inputs(50);
    let (values, text) = short_values(N);
    let body = format!("{{\"x\": {}}}", json_rows(&text, 50));
    let (held, stats, batch) = json_batch(shape, &body).unwrap();
    assert!(stats.switched);
    // Storing every value would take 8 bytes each: 24 MiB for this 6.4 MiB body.
    assert!(held < N * 8 / 2, "{held}");
    assert_eq!(batch.data(), &BatchData::F64 { x: values, y: None });

    // The same body with its last value out of range, then with a syntax error.
    let bad = body.replacen("0]]}", "1e31]]}", 1);
    assert!(bad.len() > body.len());
    let e = json_batch(shape, &bad).unwrap_err();
    let rows = N / 50;
    assert_eq!(
        e,
        FormatError::Batch(BatchError::OutOfRange {
            part: Part::X,
            row: rows,
            column: 50,
            value: 1e31
        })
    );
    let bad = format!("{}nan]]}}", &body[..body.len() - 4]);
    let e = json_batch(shape, &bad).unwrap_err();
    assert!(
        matches!(&e, FormatError::Malformed(m) if m.contains(&format!("at byte {}", body.len() - 4))),
        "{e:?}"
    );
    // A bad value in the first row (stored before the switch) is the one named.
    let bad = body.replacen("[[0,", "[[-1e300,", 1);
    let e = json_batch(shape, &bad).unwrap_err();
    assert!(matches!(
        e,
        FormatError::Batch(BatchError::OutOfRange {
            part: Part::X,
            row: 1,
            column: 1,
            ..
        })
    ));
}

#[test]
fn regression_targets_stay_within_the_budget_and_are_checked_before_conversion() {
    let shape = Shape {
        dim: 3,
        target_dim: Some(1),
    };
    let rows = N / 4;
    let (xv, xt) = short_values(rows * 3);
    let (yv, yt) = short_values(rows);
    let body = format!(
        "{{\"x\": {}, \"y\": [{}]}}",
        json_rows(&xt, 3),
        yt.join(",")
    );
    let (held, stats, batch) = json_batch(shape, &body).unwrap();
    assert!(stats.switched && held < N * 8 / 2, "{held}");
    assert_eq!(batch.data(), &BatchData::F64 { x: xv, y: Some(yv) });
    let bad = format!("{}-2e31]}}", &body[..body.len() - 3]);
    let e = json_batch(shape, &bad).unwrap_err();
    assert_eq!(
        e,
        FormatError::Batch(BatchError::OutOfRange {
            part: Part::Y,
            row: rows,
            column: 1,
            value: -2e31
        })
    );
    // No y at all for a regression model.
    let no_y = format!("{{\"x\": {}}}", json_rows(&xt, 3));
    let e = json_batch(shape, &no_y).unwrap_err();
    assert_eq!(
        e,
        FormatError::Batch(BatchError::TargetsMissing { target_dim: 1 })
    );
}

#[test]
fn csv_and_ndjson_bodies_stay_within_the_budget() {
    let shape = Shape {
        dim: 9,
        target_dim: Some(1),
    };
    let (values, text) = short_values(N);
    let csv: String = text.chunks(10).map(|r| r.join(",") + "\n").collect();
    let (held, stats, batch) = lines(true, shape, &csv).unwrap();
    assert!(stats.switched && held < N * 8 / 2, "{held}");
    assert_eq!(
        batch.data(),
        &BatchData::from_joined_f64(values.clone(), shape)
    );
    // `nan` is a CSV number: refused as not finite, by row and column of y.
    let bad = format!("{}nan\n", &csv[..csv.len() - 2]);
    let e = lines(true, shape, &bad).unwrap_err();
    assert_eq!(
        format!("{e:?}"),
        format!(
            "{:?}",
            FormatError::Batch(BatchError::NonFinite {
                part: Part::Y,
                row: N / 10,
                column: 1,
                value: f64::NAN
            })
        )
    );

    let nd: String = text
        .chunks(10)
        .map(|r| format!("[{}]\n", r.join(",")))
        .collect();
    let (held, stats, batch) = lines(false, shape, &nd).unwrap();
    assert!(stats.switched && held < N * 8 / 2, "{held}");
    assert_eq!(batch.data(), &BatchData::from_joined_f64(values, shape));
    let bad = format!("{}0,0]\n", &nd[..nd.len() - 2]);
    let e = lines(false, shape, &bad).unwrap_err();
    assert_eq!(
        e,
        FormatError::RaggedRows(format!(
            "x row {} (line {}) (x then y) has 11 values but rows 1–{} have 10",
            N / 10,
            N / 10,
            N / 10 - 1
        ))
    );
}

#[test]
fn a_projection_body_stays_within_the_budget_and_its_options_are_checked_first() {
    let (values, text) = short_values(N);
    let body = format!("{{\"k\": 2, \"x\": {}}}", json_rows(&text, 20));
    let run = |body: &str| -> Result<(usize, Stats, ProjectQuery), FormatError> {
        let mut p = ProjectParser::json(20, RowLimit::NONE);
        let (held, stats) = feed_all(
            &mut p,
            body.as_bytes(),
            |p, c| p.feed(c),
            |p| p.spill().unwrap().stats(),
        )?;
        Ok((held, stats, p.finish()?))
    };
    let (held, stats, q) = run(&body).unwrap();
    assert!(stats.switched && held < N * 8 / 2, "{held}");
    assert_eq!(q.options.k, Some(2));
    assert_eq!(q.x.data(), &BatchData::F64 { x: values, y: None });
    let bad = format!("{}, \"whiten\": 3}}", &body[..body.len() - 1]);
    assert_eq!(
        run(&bad).unwrap_err(),
        FormatError::Malformed("`whiten` must be true or false".into())
    );
}

/// A token of a row: numbers short and long, and things that are not numbers.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("0".to_string()),
        2 => any::<f32>().prop_map(|v| format!("{:?}", f64::from(v))),
        1 => Just("1e31".to_string()),
        1 => Just("-1e400".to_string()),
        1 => Just("nan".to_string()),
        1 => Just("x".to_string()),
    ]
}

/// Rows of tokens, most of them `width` long.
fn rows(width: usize) -> impl Strategy<Value = Vec<Vec<String>>> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::collection::vec(token(), width),
            1 => proptest::collection::vec(token(), 0..width + 2),
        ],
        0..12,
    )
}

fn run_json(shape: Shape, body: &[u8], force: Option<usize>) -> Result<Batch, FormatError> {
    let mut p = JsonBatchParser::new(
        shape,
        RowLimit {
            max: 9,
            setting: "s",
        },
    );
    if let Some(piece) = force {
        p.spill().force(piece);
    }
    for c in body.chunks(5) {
        p.feed(c)?;
    }
    p.finish()
}

fn run_lines(
    csv: bool,
    shape: Shape,
    body: &[u8],
    force: Option<usize>,
) -> Result<Batch, FormatError> {
    let limit = RowLimit {
        max: 9,
        setting: "s",
    };
    let mut p = if csv {
        LinesParser::csv(shape, limit)
    } else {
        LinesParser::ndjson(shape, limit)
    };
    if let Some(piece) = force {
        p.spill().force(piece);
    }
    for c in body.chunks(5) {
        p.feed(c)?;
    }
    p.finish()
}

fn run_project(dim: usize, body: &[u8], force: Option<usize>) -> Result<ProjectQuery, FormatError> {
    let mut p = ProjectParser::json(
        dim,
        RowLimit {
            max: 9,
            setting: "s",
        },
    );
    if let (Some(piece), Some(s)) = (force, p.spill()) {
        s.force(piece);
    }
    for c in body.chunks(5) {
        p.feed(c)?;
    }
    p.finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// With the switch forced early (pieces of a few bytes), every body gives what it
    /// gives without the budget: the same batch or the same error.
    #[test]
    fn the_switch_changes_no_result(
        width in 1usize..4,
        target in prop_oneof![Just(None), Just(Some(1usize)), Just(Some(2))],
        xs in rows(3),
        ys in rows(2),
        flat_y in any::<bool>(),
        options in prop_oneof![Just(""), Just("\"k\": 1, "), Just("\"whiten\": 2, ")],
        cut in proptest::option::of(0usize..400),
        piece in 1usize..20,
    ) {
        let shape = Shape { dim: width, target_dim: target };
        let json_rows = |rows: &[Vec<String>]| -> String {
            let r: Vec<String> = rows.iter().map(|r| format!("[{}]", r.join(","))).collect();
            format!("[{}]", r.join(", "))
        };
        let y = if flat_y {
            format!("[{}]", ys.iter().filter_map(|r| r.first().cloned()).collect::<Vec<_>>().join(","))
        } else {
            json_rows(&ys)
        };
        let mut json = format!("{{\"x\": {}, \"y\": {y}}}", json_rows(&xs));
        let mut project = format!("{{{options}\"x\": {}}}", json_rows(&xs));
        let mut csv: String = xs.iter().zip(ys.iter().chain(std::iter::repeat(&Vec::new())))
            .map(|(x, y)| {
                let mut r = x.clone();
                r.extend(y.iter().cloned());
                r.join(",") + "\n"
            })
            .collect();
        let mut nd: String = csv.lines().map(|l| format!("[{l}]\n")).collect();
        if let Some(cut) = cut {
            for s in [&mut json, &mut project, &mut csv, &mut nd] {
                let at = cut.min(s.len());
                s.truncate(at);
            }
        }
        let j = |f| run_json(shape, json.as_bytes(), f);
        prop_assert_eq!(format!("{:?}", j(Some(piece))), format!("{:?}", j(None)));
        let p = |f| run_project(width, project.as_bytes(), f);
        prop_assert_eq!(format!("{:?}", p(Some(piece))), format!("{:?}", p(None)));
        for (is_csv, body) in [(true, &csv), (false, &nd)] {
            let l = |f| run_lines(is_csv, shape, body.as_bytes(), f);
            prop_assert_eq!(format!("{:?}", l(Some(piece))), format!("{:?}", l(None)));
        }
    }
}
