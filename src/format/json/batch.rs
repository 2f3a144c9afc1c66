//! `application/json` batches on top of the JSON object machine.

use super::{JsonObject, Key};
use crate::format::spill::{check_part, Spill};
use crate::format::{FormatError, RowLimit};
use crate::pca::check_counts;
use crate::pca::{Batch, BatchData, Part, Shape};

const BATCH_KEYS: &[(&str, Key)] = &[("x", Key::X), ("y", Key::Y)];

/// `application/json` batches: `{"x": [[…], …], "y"?: [[…], …]}`, `y` also a flat list
/// when `target_dim` is 1, keys in any order, `"y": null` as no `y`.
#[derive(Debug)]
pub struct JsonBatchParser {
    obj: Spill<JsonObject>,
    shape: Shape,
}

impl JsonBatchParser {
    /// A parser for rows of `shape`, at most `limit.max` rows.
    pub fn new(shape: Shape, limit: RowLimit) -> Self {
        Self {
            obj: Spill::new(JsonObject::new(shape, limit, BATCH_KEYS, 0)),
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

    /// Tests: the memory budget's state, and forcing its path (see [`Spill::force`]).
    #[cfg(test)]
    pub(crate) fn spill(&mut self) -> &mut Spill<JsonObject> {
        &mut self.obj
    }

    /// Ends the body and checks the batch.
    ///
    /// # Errors
    /// A truncated body, a missing `x`, or any check of [`Batch::new`].
    pub fn finish(self) -> Result<Batch, FormatError> {
        let shape = self.shape;
        let obj = self.obj.finish(|mut live, saved| {
            live.end()?;
            let ny = (live.y.as_ref())
                .filter(|_| live.y_given)
                .map(|y| y.values.len());
            check_counts(shape, live.x.values.len(), ny)?;
            check_part(Part::X, shape.dim, &mut saved.x.values, &mut live.x.values)?;
            if let (Some(s), Some(l), true) = (saved.y.as_mut(), live.y.as_mut(), live.y_given) {
                check_part(Part::Y, l.width(), &mut s.values, &mut l.values)?;
            }
            Ok(())
        })?;
        obj.end()?;
        let y_given = obj.y_given;
        let x = obj.x.into_values();
        let y = match obj.y {
            Some(y) if y_given => Some(y.into_values()),
            _ => None,
        };
        Ok(Batch::new(self.shape, BatchData::F64 { x, y })?)
    }
}
