//! The memory bound for text bodies: whatever a body holds, the values kept while it
//! is read never take more than [`BUDGET_NUM`]/[`BUDGET_DEN`] (2) times the bytes
//! read so far.
//!
//! A text number may be as short as two bytes (`0,`) and becomes eight bytes of f64, so
//! storing every value as it is parsed can take 4× the body. [`Spill`] wraps a text
//! parser and stores values while they fit the budget; once they would not, it keeps a
//! copy of the parser's state with the values so far (the *saved* parser), lets the
//! live parser go on *counting* (the whole grammar, row lengths and row limit checked as
//! before, each value checked for finiteness and magnitude, nothing stored) and keeps
//! the remaining raw bytes. At the end:
//!
//! - a body the live parser refuses is refused with its error, having held at most the
//!   budget's values plus the raw bytes after the switch: at most 2× the body (plus
//!   one piece's values and one block, a constant ~3 MiB);
//! - a body it accepts is checked as [`crate::pca::Batch::new`] would check it (shape
//!   from the counts, the first bad value of x then of y, stored part first), so a body
//!   refused there is refused before any conversion; only a body that passes is then
//!   fed again, from the raw bytes (each freed once fed), to the saved parser, which
//!   ends as usual. Its values are the same bits as without the switch.
//!
//! Memory of an accepted text body: its values (≤ 4× the body: 8 bytes for ≥ 2 bytes of
//! text) plus what is left of the raw bytes while they are fed again, and one copy of
//! the values when they are gathered into the batch: at most ~8× the body for the
//! shortest numbers, ~1.6× (plus the gather) for full-precision ones, which never
//! switch. (The batch's log record then adds 8 bytes a value while it is appended.)

use std::collections::VecDeque;

use super::store::Store;
use super::FormatError;
use crate::pca::{BatchError, Part};

/// The budget: values kept ≤ `BUDGET_NUM / BUDGET_DEN` × bytes read. Two: a body of
/// pixel values printed as `0.0,` (8 bytes of f64 per 4 bytes of text) stays under it
/// and is parsed once; at 1.5 such bodies were parsed twice (2.3× slower, criterion).
pub(crate) const BUDGET_NUM: usize = 2;
/// See [`BUDGET_NUM`].
pub(crate) const BUDGET_DEN: usize = 1;

/// Bytes fed to the parser at once, so that one feed adds at most 4× this in values
/// (each value takes at least two bytes of text).
const PIECE: usize = 64 * 1024;

/// A text parser that can split into a saved state and a counting one.
pub(crate) trait Spillable: Sized {
    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// The parser's first problem.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError>;

    /// Bytes the stored values (and any carried bytes) occupy.
    fn resident_bytes(&self) -> usize;

    /// A copy of the state that holds the stored values; `self` counts from now on.
    fn split_off(&mut self) -> Self;
}

/// A [`Spillable`] parser under the memory budget.
#[derive(Debug)]
pub(crate) struct Spill<P> {
    live: P,
    /// After the switch: the saved parser and the raw bytes read since, in blocks of
    /// `PIECE`.
    saved: Option<Box<(P, VecDeque<Vec<u8>>)>>,
    received: usize,
    /// Bytes fed at once ([`PIECE`]).
    piece: usize,
    /// The budget as a fraction ([`BUDGET_NUM`] / [`BUDGET_DEN`]).
    budget: (usize, usize),
}

impl<P: Spillable> Spill<P> {
    pub(crate) fn new(parser: P) -> Self {
        Self {
            live: parser,
            saved: None,
            received: 0,
            piece: PIECE,
            budget: (BUDGET_NUM, BUDGET_DEN),
        }
    }

    /// Tests: a budget of nothing (the switch comes at the second piece that finds a
    /// value stored) and pieces of `piece` bytes, so that small bodies take the path
    /// of large ones.
    #[cfg(test)]
    pub(crate) fn force(&mut self, piece: usize) {
        self.piece = piece.max(1);
        self.budget = (0, 1);
    }

    /// The live parser (the whole parser until the switch; counting after it).
    pub(crate) fn live(&self) -> &P {
        &self.live
    }

    /// Tests: bytes read, bytes held (stored values and raw bytes kept), and whether
    /// the values stopped being stored.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> Stats {
        let raw = |r: &VecDeque<Vec<u8>>| r.iter().map(Vec::capacity).sum::<usize>();
        Stats {
            received: self.received,
            held: self.live.resident_bytes()
                + (self.saved.as_ref()).map_or(0, |s| s.0.resident_bytes() + raw(&s.1)),
            switched: self.saved.is_some(),
        }
    }

    /// Takes the next bytes of the body.
    ///
    /// # Errors
    /// The parser's first problem.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        let (num, den) = self.budget;
        for piece in chunk.chunks(self.piece) {
            if self.saved.is_none() && self.live.resident_bytes() * den > self.received * num {
                self.saved = Some(Box::new((self.live.split_off(), VecDeque::new())));
            }
            self.received += piece.len();
            self.live.feed(piece)?;
            if let Some(saved) = &mut self.saved {
                let raw = &mut saved.1;
                match raw.back_mut() {
                    Some(b) if b.capacity() - b.len() >= piece.len() => b.extend_from_slice(piece),
                    _ => {
                        let mut b = Vec::with_capacity(self.piece.max(PIECE));
                        b.extend_from_slice(piece);
                        raw.push_back(b);
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the body: the parser that holds every value, for the format's own finish.
    /// `check` ends the body on the live parser and makes every check the format's
    /// finish makes, given the saved parser (whose stores hold the values stored before
    /// the switch); it runs only when the switch happened.
    ///
    /// # Errors
    /// `check`'s, or (which cannot happen: the same bytes passed the same grammar) the
    /// saved parser's on the raw bytes.
    pub(crate) fn finish(
        self,
        check: impl FnOnce(P, &mut P) -> Result<(), FormatError>,
    ) -> Result<P, FormatError> {
        let Some(saved) = self.saved else {
            return Ok(self.live);
        };
        let (mut saved, mut raw) = *saved;
        check(self.live, &mut saved)?;
        while let Some(b) = raw.pop_front() {
            saved.feed(&b)?;
        }
        Ok(saved)
    }
}

/// What a [`Spill`] holds (tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    /// Bytes of body read.
    pub(crate) received: usize,
    /// Bytes of values stored and raw body kept.
    pub(crate) held: usize,
    /// Whether the values stopped being stored.
    pub(crate) switched: bool,
}

/// The first out-of-bound value of one part split between a saved store (the values
/// before the switch) and a counting one (after), as `Batch::new` reports it.
///
/// # Errors
/// [`BatchError::NonFinite`] or [`BatchError::OutOfRange`] with the 1-based row and
/// column.
pub(crate) fn check_part<T: Copy + Into<f64>>(
    part: Part,
    width: usize,
    saved: &mut Store<T>,
    live: &mut Store<T>,
) -> Result<(), BatchError> {
    let Some((i, value)) = saved.first_bad().or_else(|| live.first_bad()) else {
        return Ok(());
    };
    let w = width.max(1);
    Err(BatchError::out_of_bound(part, i / w + 1, i % w + 1, value))
}

#[cfg(test)]
#[path = "spill_tests.rs"]
mod tests;
