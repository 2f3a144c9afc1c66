//! The checked mini-batch: the one place where a batch's shape, finiteness and magnitude
//! are checked. Every body parser ends in [`Batch::new`]; the log encodes and decodes a
//! `Batch`; the accumulator folds one. Nothing downstream checks values again except the
//! accumulator's own overflow guard on its running sums.
//!
//! Rows and columns in error messages are **1-based** (the first row of a body is row 1),
//! so they match what a person counts in a file or an editor.

use std::fmt;

/// Largest accepted magnitude of a value. The accumulator sums products of values and the
/// optimiser multiplies those sums again, so values near `f64::MAX.sqrt()` (1e154) would
/// overflow to infinity inside a fit; 1e30 leaves room for both, and with at most 2⁶⁴
/// samples the largest scatter entry stays below 1e81, far from the accumulator's guard.
pub const MAX_ABS_VALUE: f64 = 1e30;

/// The shape every row of a batch must have: `dim` input values and, for regression
/// models, `target_dim` target values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Input dimension n (values per row of `x`).
    pub dim: usize,
    /// Target dimension n_y (values per row of `y`) for regression models; `None` for
    /// autoencoders and for projection queries.
    pub target_dim: Option<usize>,
}

impl Shape {
    /// An autoencoder's (or a query's) shape: `dim` values per row, no targets.
    pub fn inputs(dim: usize) -> Self {
        Self {
            dim,
            target_dim: None,
        }
    }

    /// Values per row when x and y travel together (x then y): `dim + target_dim`.
    pub fn row_width(&self) -> usize {
        self.dim + self.target_dim.unwrap_or(0)
    }
}

/// The values of one batch, row-major, in the width they arrived in: raw f32 bodies stay
/// f32 through the log and into the accumulator (which widens them as it centres them);
/// decimal text is parsed to f64, and a batch whose every value is exactly an f32 is
/// then stored as f32 ([`Batch::narrowed`]).
#[derive(Debug, Clone, PartialEq)]
pub enum BatchData {
    /// Single precision.
    F32 {
        /// Inputs, rows×dim, row-major.
        x: Vec<f32>,
        /// Targets, rows×target_dim, row-major, for regression models.
        y: Option<Vec<f32>>,
    },
    /// Double precision.
    F64 {
        /// Inputs, rows×dim, row-major.
        x: Vec<f64>,
        /// Targets, rows×target_dim, row-major, for regression models.
        y: Option<Vec<f64>>,
    },
}

impl BatchData {
    /// Splits rows of `dim + target_dim` values (x then y, as the CSV, NDJSON-array,
    /// raw and `.npy` formats carry them) into x and y. A trailing partial row is left
    /// in x, where [`Batch::new`] reports it.
    pub fn from_joined_f64(values: Vec<f64>, shape: Shape) -> Self {
        let (x, y) = split_joined(values, shape);
        Self::F64 { x, y }
    }

    /// [`BatchData::from_joined_f64`] for single-precision rows.
    pub fn from_joined_f32(values: Vec<f32>, shape: Shape) -> Self {
        let (x, y) = split_joined(values, shape);
        Self::F32 { x, y }
    }

    /// Number of values in `x` and, if present, in `y`.
    pub fn lens(&self) -> (usize, Option<usize>) {
        match self {
            Self::F32 { x, y } => (x.len(), y.as_ref().map(Vec::len)),
            Self::F64 { x, y } => (x.len(), y.as_ref().map(Vec::len)),
        }
    }

    /// Bytes per value: 4 or 8.
    pub fn width(&self) -> u8 {
        match self {
            Self::F32 { .. } => 4,
            Self::F64 { .. } => 8,
        }
    }

    /// Bytes the values occupy in memory.
    pub fn value_bytes(&self) -> usize {
        let (nx, ny) = self.lens();
        (nx + ny.unwrap_or(0)) * usize::from(self.width())
    }
}

fn split_joined<T: Copy>(values: Vec<T>, shape: Shape) -> (Vec<T>, Option<Vec<T>>) {
    let Some(t) = shape.target_dim else {
        return (values, None);
    };
    let w = shape.dim + t;
    if w == 0 || !values.len().is_multiple_of(w) {
        return (values, Some(Vec::new()));
    }
    let rows = values.len() / w;
    let mut x = Vec::with_capacity(rows * shape.dim);
    let mut y = Vec::with_capacity(rows * t);
    for r in values.chunks_exact(w) {
        x.extend_from_slice(&r[..shape.dim]);
        y.extend_from_slice(&r[shape.dim..]);
    }
    (x, Some(y))
}

/// Which part of a batch a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The inputs.
    X,
    /// The regression targets.
    Y,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::X => "x",
            Self::Y => "y",
        })
    }
}

/// Why a batch was refused. Rows and columns are 1-based.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// No rows at all.
    #[error("empty batch: at least one row is required")]
    Empty,
    /// The values do not make whole rows of the model's width, or x and y disagree on
    /// the number of rows.
    #[error("dimension mismatch: {part} has {got} values, which is not {rows} rows of {width}")]
    Shape {
        /// x or y.
        part: Part,
        /// The row length the model expects.
        width: usize,
        /// The rows of the batch.
        rows: usize,
        /// The values supplied.
        got: usize,
    },
    /// A row of the wrong length, found by a parser as it read the row.
    #[error("dimension mismatch: {part} row {row} has {got} values, expected {expected}")]
    RowLength {
        /// x or y.
        part: Part,
        /// 1-based row.
        row: usize,
        /// Values the model expects per row.
        expected: usize,
        /// Values the row has.
        got: usize,
    },
    /// A regression model's batch without targets.
    #[error("this regression model needs targets `y` ({target_dim} values per row)")]
    TargetsMissing {
        /// Values per row of y.
        target_dim: usize,
    },
    /// Targets sent to a model that has none.
    #[error("this model has no targets (target_dim is not set), but the batch has `y`")]
    TargetsUnexpected,
    /// NaN or an infinity.
    #[error("non-finite value: {part} row {row}, column {column} is {value}")]
    NonFinite {
        /// x or y.
        part: Part,
        /// 1-based row.
        row: usize,
        /// 1-based column.
        column: usize,
        /// The value.
        value: f64,
    },
    /// A finite value larger in magnitude than [`MAX_ABS_VALUE`].
    #[error(
        "value out of range: {part} row {row}, column {column} is {value:e}; values must be \
         at most {MAX_ABS_VALUE:e} in magnitude"
    )]
    OutOfRange {
        /// x or y.
        part: Part,
        /// 1-based row.
        row: usize,
        /// 1-based column.
        column: usize,
        /// The value.
        value: f64,
    },
}

impl BatchError {
    /// The error for `value` at 1-based `row` and `column` of `part` failing the value
    /// check: [`BatchError::NonFinite`] for NaN or ±∞, [`BatchError::OutOfRange`] for a
    /// finite value beyond [`MAX_ABS_VALUE`].
    pub(crate) fn out_of_bound(part: Part, row: usize, column: usize, value: f64) -> Self {
        if value.is_finite() {
            Self::OutOfRange {
                part,
                row,
                column,
                value,
            }
        } else {
            Self::NonFinite {
                part,
                row,
                column,
                value,
            }
        }
    }
}

/// A mini-batch whose shape matches its [`Shape`], with at least one row, and whose
/// every value is finite and at most [`MAX_ABS_VALUE`] in magnitude. Only [`Batch::new`]
/// makes one, so holding a `Batch` is proof of all of that.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    rows: usize,
    shape: Shape,
    data: BatchData,
}

impl Batch {
    /// Checks `data` against `shape` and builds the batch: at least one row, x a whole
    /// number of rows of `shape.dim`, y present exactly when `shape.target_dim` is and
    /// holding as many rows as x, every value finite and within [`MAX_ABS_VALUE`]. One
    /// vectorised pass over the values; the position of a bad value is looked up only
    /// on failure.
    ///
    /// # Errors
    /// The first [`BatchError`] found, in the order listed above.
    pub fn new(shape: Shape, data: BatchData) -> Result<Self, BatchError> {
        let (nx, ny) = data.lens();
        let rows = check_counts(shape, nx, ny)?;
        match &data {
            BatchData::F32 { x, y } => {
                check_values(Part::X, x, shape.dim)?;
                if let (Some(y), Some(t)) = (y, shape.target_dim) {
                    check_values(Part::Y, y, t)?;
                }
            }
            BatchData::F64 { x, y } => {
                check_values(Part::X, x, shape.dim)?;
                if let (Some(y), Some(t)) = (y, shape.target_dim) {
                    check_values(Part::Y, y, t)?;
                }
            }
        }
        Ok(Self { rows, shape, data })
    }

    /// Number of rows (at least 1).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The shape the batch was checked against.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The values.
    pub fn data(&self) -> &BatchData {
        &self.data
    }

    /// The values, by value.
    pub fn into_data(self) -> BatchData {
        self.data
    }

    /// The same batch in single precision when every value of it is exactly an f32 (as
    /// numbers printed from f32 values, or integers below 2^24, are); otherwise the
    /// batch unchanged. No value changes, so the accumulator folds the same numbers;
    /// the log record, the centring and the batch's memory take half the bytes. A
    /// batch that is not exact costs the conversion of its first 256 values.
    #[must_use]
    pub fn narrowed(self) -> Self {
        let BatchData::F64 { x, y } = &self.data else {
            return self;
        };
        let Some(nx) = narrow(x) else {
            return self;
        };
        let ny = match y.as_deref().map(narrow) {
            Some(None) => return self,
            Some(Some(v)) => Some(v),
            None => None,
        };
        Self {
            data: BatchData::F32 { x: nx, y: ny },
            ..self
        }
    }

    /// `x` and `y` widened to f64 (a copy).
    pub fn to_f64(&self) -> (Vec<f64>, Option<Vec<f64>>) {
        match &self.data {
            BatchData::F64 { x, y } => (x.clone(), y.clone()),
            BatchData::F32 { x, y } => {
                let widen = |v: &Vec<f32>| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
                (widen(x), y.as_ref().map(widen))
            }
        }
    }
}

/// Every value finite and within [`MAX_ABS_VALUE`]: one branch-free pass per chunk (it
/// vectorises, where an early-exit search does not).
pub fn all_within_bound<T: Copy + Into<f64>>(values: &[T]) -> bool {
    values
        .chunks(1024)
        .all(|c| c.iter().fold(true, |ok, v| ok & within_bound((*v).into())))
}

/// The index of the first value that is NaN, infinite or beyond [`MAX_ABS_VALUE`]; one
/// branch-free pass when there is none, the search only when there is one.
pub(crate) fn first_out_of_bound<T: Copy + Into<f64>>(values: &[T]) -> Option<usize> {
    if all_within_bound(values) {
        return None;
    }
    values.iter().position(|v| !within_bound((*v).into()))
}

/// `|v| ≤ MAX_ABS_VALUE`, which is false for NaN: one comparison covers NaN, ±∞ and
/// range.
fn within_bound(v: f64) -> bool {
    v.abs() <= MAX_ABS_VALUE
}

/// The checks of [`Batch::new`] that need only the counts, in its order: x not empty
/// and whole rows of `shape.dim`, y present exactly when `shape.target_dim` is, with as
/// many rows as x. `nx`, `ny`: values of x and of y. Returns the number of rows.
///
/// # Errors
/// The [`BatchError`] `Batch::new` returns for these counts.
pub(crate) fn check_counts(
    shape: Shape,
    nx: usize,
    ny: Option<usize>,
) -> Result<usize, BatchError> {
    if nx == 0 || shape.dim == 0 {
        return Err(BatchError::Empty);
    }
    let rows = nx / shape.dim;
    if !nx.is_multiple_of(shape.dim) {
        return Err(BatchError::Shape {
            part: Part::X,
            width: shape.dim,
            rows: rows + 1,
            got: nx,
        });
    }
    match (shape.target_dim, ny) {
        (None, None) => Ok(rows),
        (None, Some(_)) => Err(BatchError::TargetsUnexpected),
        (Some(t), None) => Err(BatchError::TargetsMissing { target_dim: t }),
        (Some(t), Some(ny)) if ny != rows * t => Err(BatchError::Shape {
            part: Part::Y,
            width: t,
            rows,
            got: ny,
        }),
        (Some(_), Some(_)) => Ok(rows),
    }
}

fn check_values<T: Copy + Into<f64>>(
    part: Part,
    values: &[T],
    width: usize,
) -> Result<(), BatchError> {
    let Some(i) = first_out_of_bound(values) else {
        return Ok(());
    };
    Err(BatchError::out_of_bound(
        part,
        i / width + 1,
        i % width + 1,
        values[i].into(),
    ))
}

/// `v` in single precision when every value is exactly an f32, else `None`. Converts and
/// checks 256 values at a time, branch-free within a block (it vectorises), so data
/// that is not f32 is refused after its first block.
fn narrow(v: &[f64]) -> Option<Vec<f32>> {
    const BLOCK: usize = 256;
    let exact = |d: &[f64], s: &[f32]| {
        d.iter().zip(s).fold(true, |ok, (&a, &b)| {
            ok & (f64::from(b).to_bits() == a.to_bits())
        })
    };
    let mut out: Vec<f32> = Vec::new();
    for (i, block) in v.chunks(BLOCK).enumerate() {
        if i == 1 {
            out.reserve_exact(v.len() - BLOCK);
        }
        let start = out.len();
        out.extend(block.iter().map(|&a| a as f32));
        if !exact(block, &out[start..]) {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_f32_values_is_narrowed_without_changing_a_value() {
        // Values an f32 prints, small integers, signed zero, the extremes of the range a
        // batch admits that are f32 values, over several 256-value blocks.
        let mut x: Vec<f64> = (0..1000)
            .map(|i| f64::from((i as f32) * 0.37 - 100.0))
            .collect();
        x[3] = -0.0;
        x[700] = f64::from(f32::MIN_POSITIVE);
        x[999] = f64::from(-1e29f32);
        let y: Vec<f64> = (0..500).map(|i| f64::from(i as f32 / 3.0)).collect();
        let shape = Shape {
            dim: 2,
            target_dim: Some(1),
        };
        let b = Batch::new(
            shape,
            BatchData::F64 {
                x: x.clone(),
                y: Some(y.clone()),
            },
        )
        .unwrap();
        let n = b.clone().narrowed();
        assert_eq!(n.data().width(), 4);
        let (nx, ny) = n.to_f64();
        let bits = |v: &[f64]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&nx), bits(&x));
        assert_eq!(bits(&ny.unwrap()), bits(&y));
        assert_eq!((n.rows(), n.shape()), (b.rows(), b.shape()));
    }

    #[test]
    fn a_batch_with_one_value_that_is_not_an_f32_stays_f64() {
        let base: Vec<f64> = (0..1000).map(f64::from).collect();
        // In the first block, in a later block, the last value; and in y only.
        for at in [0, 255, 256, 511, 999] {
            let mut x = base.clone();
            x[at] = 0.1;
            let b = Batch::new(Shape::inputs(10), BatchData::F64 { x, y: None }).unwrap();
            assert_eq!(b.clone().narrowed(), b, "0.1 at {at}");
        }
        let shape = Shape {
            dim: 2,
            target_dim: Some(1),
        };
        let mut y: Vec<f64> = (0..500).map(f64::from).collect();
        y[300] = 1.0 + f64::EPSILON;
        let b = Batch::new(
            shape,
            BatchData::F64 {
                x: base,
                y: Some(y),
            },
        )
        .unwrap();
        assert_eq!(b.clone().narrowed(), b);
        // An f32 batch is left as it is.
        let f = Batch::new(
            Shape::inputs(1),
            BatchData::F32 {
                x: vec![0.1],
                y: None,
            },
        )
        .unwrap();
        assert_eq!(f.clone().narrowed(), f);
    }

    #[test]
    fn a_well_formed_batch_is_accepted_in_both_widths() {
        let s = Shape::inputs(2);
        let b = Batch::new(
            s,
            BatchData::F64 {
                x: vec![1.0, 2.0, 3.0, 4.0],
                y: None,
            },
        )
        .unwrap();
        assert_eq!(b.rows(), 2);
        let b = Batch::new(
            s,
            BatchData::F32 {
                x: vec![1.0, 2.0],
                y: None,
            },
        )
        .unwrap();
        assert_eq!(b.rows(), 1);
        assert_eq!(b.to_f64().0, vec![1.0, 2.0]);
    }

    #[test]
    fn shape_problems_are_named() {
        let s = Shape::inputs(3);
        assert_eq!(
            Batch::new(s, BatchData::F64 { x: vec![], y: None }),
            Err(BatchError::Empty)
        );
        assert_eq!(
            Batch::new(
                s,
                BatchData::F64 {
                    x: vec![0.0; 4],
                    y: None
                }
            ),
            Err(BatchError::Shape {
                part: Part::X,
                width: 3,
                rows: 2,
                got: 4
            })
        );
        let r = Shape {
            dim: 2,
            target_dim: Some(1),
        };
        assert_eq!(
            Batch::new(
                r,
                BatchData::F64 {
                    x: vec![0.0; 4],
                    y: None
                }
            ),
            Err(BatchError::TargetsMissing { target_dim: 1 })
        );
        assert_eq!(
            Batch::new(
                s,
                BatchData::F64 {
                    x: vec![0.0; 3],
                    y: Some(vec![1.0])
                }
            ),
            Err(BatchError::TargetsUnexpected)
        );
        assert_eq!(
            Batch::new(
                r,
                BatchData::F64 {
                    x: vec![0.0; 4],
                    y: Some(vec![1.0])
                }
            ),
            Err(BatchError::Shape {
                part: Part::Y,
                width: 1,
                rows: 2,
                got: 1
            })
        );
    }

    #[test]
    fn bad_values_are_located_one_based() {
        let s = Shape::inputs(3);
        let mut x = vec![0.0f64; 9];
        x[5] = f64::NAN;
        let e = Batch::new(s, BatchData::F64 { x, y: None }).unwrap_err();
        assert!(
            matches!(
                e,
                BatchError::NonFinite {
                    part: Part::X,
                    row: 2,
                    column: 3,
                    ..
                }
            ),
            "{e}"
        );
        let mut x = vec![0.0f32; 9];
        x[6] = f32::NEG_INFINITY;
        let e = Batch::new(s, BatchData::F32 { x, y: None }).unwrap_err();
        assert!(
            matches!(
                e,
                BatchError::NonFinite {
                    row: 3,
                    column: 1,
                    ..
                }
            ),
            "{e}"
        );
        let r = Shape {
            dim: 1,
            target_dim: Some(2),
        };
        let e = Batch::new(
            r,
            BatchData::F64 {
                x: vec![1.0, 2.0],
                y: Some(vec![0.0, 0.0, 0.0, -2e30]),
            },
        )
        .unwrap_err();
        assert_eq!(
            e,
            BatchError::OutOfRange {
                part: Part::Y,
                row: 2,
                column: 2,
                value: -2e30
            }
        );
        assert!(e.to_string().contains("y row 2, column 2"), "{e}");
    }

    #[test]
    fn joined_rows_split_into_inputs_and_targets() {
        let s = Shape {
            dim: 2,
            target_dim: Some(1),
        };
        let d = BatchData::from_joined_f64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], s);
        assert_eq!(
            d,
            BatchData::F64 {
                x: vec![1.0, 2.0, 4.0, 5.0],
                y: Some(vec![3.0, 6.0])
            }
        );
        // A partial row is not silently dropped.
        let d = BatchData::from_joined_f64(vec![1.0, 2.0, 3.0, 4.0], s);
        assert!(Batch::new(s, d).is_err());
    }
}
