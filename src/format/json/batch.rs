//! `application/json` batches on top of the JSON object machine.

use super::{JsonObject, Key};
use crate::format::{FormatError, RowLimit};
use crate::pca::{Batch, BatchData, Shape};

const BATCH_KEYS: &[(&str, Key)] = &[("x", Key::X), ("y", Key::Y)];

/// `application/json` batches: `{"x": [[…], …], "y"?: [[…], …]}`, `y` also a flat list
/// when `target_dim` is 1, keys in any order, `"y": null` as no `y`.
#[derive(Debug)]
pub struct JsonBatchParser {
    obj: JsonObject,
    shape: Shape,
}

impl JsonBatchParser {
    /// A parser for rows of `shape`, at most `limit.max` rows.
    pub fn new(shape: Shape, limit: RowLimit) -> Self {
        Self {
            obj: JsonObject::new(shape, limit, BATCH_KEYS, 0),
            shape,
        }
    }

    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// The first syntax error (with its byte offset), a row of the wrong length, too
    /// many rows, or `y` for a model without targets.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        self.obj.feed(chunk)
    }

    /// Ends the body and checks the batch.
    ///
    /// # Errors
    /// A truncated body, a missing `x`, or any check of [`Batch::new`].
    pub fn finish(self) -> Result<Batch, FormatError> {
        self.obj.end()?;
        let y_given = self.obj.y_given;
        let x = self.obj.x.into_values();
        let y = match self.obj.y {
            Some(y) if y_given => Some(y.into_values()),
            _ => None,
        };
        Ok(Batch::new(self.shape, BatchData::F64 { x, y })?)
    }
}
