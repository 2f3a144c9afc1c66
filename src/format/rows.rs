//! Where parsed values go: x and y buffers filled row by row, each row's length checked
//! against the model's shape as it closes, and the row count against the request's row
//! limit as each row opens. Values past a row's expected length are counted, not
//! stored, so a row of any length costs no memory beyond the model's width.

use super::store::Store;
use super::{FormatError, RowLimit};
use crate::pca::{Batch, BatchData, Part, Shape};

/// One part (x or y) of a batch, row-major.
#[derive(Debug, Clone)]
pub(crate) struct Rows<T> {
    part: Part,
    width: usize,
    pub(crate) values: Store<T>,
    /// Closed rows.
    rows: usize,
    /// Values in the open row (stored or not).
    open: usize,
}

impl<T: Copy + Into<f64>> Rows<T> {
    pub(crate) fn new(part: Part, width: usize) -> Self {
        Self {
            part,
            width,
            values: Store::new(),
            rows: 0,
            open: 0,
        }
    }

    /// Opens row `rows + 1`.
    ///
    /// # Errors
    /// [`FormatError::TooManyRows`] when that row is beyond `limit`.
    #[inline]
    pub(crate) fn open_row(&mut self, limit: RowLimit) -> Result<(), FormatError> {
        if self.rows >= limit.max {
            return Err(FormatError::TooManyRows {
                max: limit.max,
                setting: limit.setting,
            });
        }
        self.open = 0;
        Ok(())
    }

    /// Appends a value to the open row.
    #[inline]
    pub(crate) fn push(&mut self, v: T) {
        if self.open < self.width {
            self.values.push(v);
        }
        self.open += 1;
    }

    /// Closes the open row, checking its length. `at` says where the row is (e.g.
    /// ` (line 4)`), for the message.
    ///
    /// # Errors
    /// [`FormatError::DimensionMismatch`] for a wrong first row, [`FormatError::RaggedRows`]
    /// for a later row that differs from the rows before it.
    #[inline]
    pub(crate) fn close_row(&mut self, at: &dyn Fn() -> String) -> Result<(), FormatError> {
        if self.open != self.width {
            return Err(row_length(
                self.part,
                self.rows + 1,
                self.open,
                self.width,
                &at(),
            ));
        }
        self.rows += 1;
        self.open = 0;
        Ok(())
    }

    pub(crate) fn into_values(self) -> Vec<T> {
        self.values.into_vec()
    }

    /// Values per row.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// A copy of this part's state holding its stored values; this one only counts
    /// from now on (see [`super::spill`]).
    pub(crate) fn split_off(&mut self) -> Self {
        let values = self.values.split_off();
        Self {
            values,
            ..self.clone()
        }
    }
}

/// The error for row `row` (1-based) having `got` values where `width` are expected.
/// The first row sets the batch's width, so a wrong first row is a dimension mismatch
/// (as when every row agrees but the model expects another width); a wrong later row
/// disagrees with the rows before it, which were right: ragged rows.
pub(crate) fn row_length(
    part: Part,
    row: usize,
    got: usize,
    width: usize,
    at: &str,
) -> FormatError {
    if row == 1 {
        FormatError::DimensionMismatch(format!(
            "expected {width} values per row of {part}, got {got} in row 1{at}"
        ))
    } else {
        FormatError::RaggedRows(format!(
            "{part} row {row}{at} has {got} values but rows 1–{} have {width}",
            row - 1
        ))
    }
}

/// x and y together, for the formats whose rows carry x then y (`dim + target_dim`
/// values): CSV, NDJSON array lines, raw f32 and `.npy`.
#[derive(Debug, Clone)]
pub(crate) struct Joined<T> {
    pub(crate) shape: Shape,
    pub(crate) limit: RowLimit,
    pub(crate) x: Store<T>,
    pub(crate) y: Store<T>,
    rows: usize,
    open: usize,
}

impl<T: Copy + Into<f64>> Joined<T> {
    pub(crate) fn new(shape: Shape, limit: RowLimit) -> Self {
        Self {
            shape,
            limit,
            x: Store::new(),
            y: Store::new(),
            rows: 0,
            open: 0,
        }
    }

    /// Closed rows so far.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Opens a row.
    ///
    /// # Errors
    /// [`FormatError::TooManyRows`].
    #[inline]
    pub(crate) fn open_row(&mut self) -> Result<(), FormatError> {
        if self.rows >= self.limit.max {
            return Err(FormatError::TooManyRows {
                max: self.limit.max,
                setting: self.limit.setting,
            });
        }
        self.open = 0;
        Ok(())
    }

    /// Appends a value: the first `dim` of a row go to x, the next `target_dim` to y,
    /// any further ones are only counted.
    #[inline]
    pub(crate) fn push(&mut self, v: T) {
        if self.open < self.shape.dim {
            self.x.push(v);
        } else if self.open < self.shape.row_width() {
            self.y.push(v);
        }
        self.open += 1;
    }

    /// Appends whole rows of `row_width` values (a multiple of it), splitting x and y.
    pub(crate) fn push_rows(&mut self, values: &[T]) {
        let w = self.shape.row_width();
        if self.shape.target_dim.is_none() {
            self.x.extend_from_slice(values);
        } else {
            for r in values.chunks_exact(w) {
                self.x.extend_from_slice(&r[..self.shape.dim]);
                self.y.extend_from_slice(&r[self.shape.dim..]);
            }
        }
        self.rows += values.len() / w;
    }

    /// Closes the open row, checking its length; `at` locates it for the message.
    ///
    /// # Errors
    /// As [`Rows::close_row`], with the width `dim + target_dim`.
    #[inline]
    pub(crate) fn close_row(&mut self, at: &dyn Fn() -> String) -> Result<(), FormatError> {
        let w = self.shape.row_width();
        if self.open != w {
            let at = match self.shape.target_dim {
                Some(_) => format!("{} (x then y)", at()),
                None => at(),
            };
            return Err(row_length(Part::X, self.rows + 1, self.open, w, &at));
        }
        self.rows += 1;
        self.open = 0;
        Ok(())
    }

    /// Makes the checked batch (shape, finiteness, magnitude).
    ///
    /// # Errors
    /// [`FormatError::Batch`].
    pub(crate) fn finish_with(
        self,
        make: impl FnOnce(Vec<T>, Option<Vec<T>>) -> BatchData,
    ) -> Result<Batch, FormatError> {
        let y = self.shape.target_dim.map(|_| self.y.into_vec());
        Ok(Batch::new(self.shape, make(self.x.into_vec(), y))?)
    }

    /// A copy of this state holding the stored values; this one only counts from now
    /// on (see [`super::spill`]).
    pub(crate) fn split_off(&mut self) -> Self {
        let (x, y) = (self.x.split_off(), self.y.split_off());
        Self {
            x,
            y,
            ..self.clone()
        }
    }

    /// Bytes the stored values occupy.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.x.resident_bytes() + self.y.resident_bytes()
    }
}
