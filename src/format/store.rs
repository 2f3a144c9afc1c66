//! Where a part's parsed values are kept: fixed-size blocks rather than one growing
//! `Vec`, so that growth never copies (a reallocating `Vec` touches the old and the new
//! buffer, and the allocator keeps the freed one resident for a while), and what the
//! values occupy is known at any time ([`Store::resident_bytes`]).
//!
//! A store is either *storing* (the values are kept) or *counting* (see
//! [`super::spill`]): a counting store keeps only how many values it was given and the
//! first one that is not finite or beyond [`crate::pca::MAX_ABS_VALUE`], checked a scratch block at a
//! time. Both modes cost the same one comparison a value on the hot path.

use crate::pca::first_out_of_bound;

/// Values per full block (2 MiB of f64). The first block grows as a `Vec` does, so a
/// small body allocates little; a body of at most this many values per part is handed
/// over without a copy.
const BLOCK: usize = 1 << 18;

/// Values checked at once by a counting store.
const SCRATCH: usize = 4096;

/// One part's values, stored in blocks or only counted.
#[derive(Debug, Clone)]
pub(crate) struct Store<T> {
    /// Full blocks of `BLOCK` values (storing mode only).
    full: Vec<Vec<T>>,
    /// The open block (storing) or the scratch block (counting).
    cur: Vec<T>,
    /// `cur`'s length at which the cold path runs.
    limit: usize,
    /// Values before `cur`, stored or counted.
    base: usize,
    counting: bool,
    /// The first value out of bound seen while counting: its index and value.
    bad: Option<(usize, f64)>,
}

impl<T: Copy + Into<f64>> Store<T> {
    pub(crate) fn new() -> Self {
        Self {
            full: Vec::new(),
            cur: Vec::new(),
            limit: BLOCK,
            base: 0,
            counting: false,
            bad: None,
        }
    }

    /// Appends a value (stored, or counted and checked).
    #[inline]
    pub(crate) fn push(&mut self, v: T) {
        if self.cur.len() == self.limit {
            self.cold();
        }
        self.cur.push(v);
    }

    /// Appends values.
    pub(crate) fn extend_from_slice(&mut self, mut values: &[T]) {
        while !values.is_empty() {
            if self.cur.len() == self.limit {
                self.cold();
            }
            let n = values.len().min(self.limit - self.cur.len());
            self.cur.extend_from_slice(&values[..n]);
            values = &values[n..];
        }
    }

    #[cold]
    #[inline(never)]
    fn cold(&mut self) {
        if self.counting {
            self.flush_scratch();
        } else {
            let block = std::mem::replace(&mut self.cur, Vec::with_capacity(BLOCK));
            self.base += block.len();
            self.full.push(block);
        }
    }

    /// Counting: checks the scratch block and empties it.
    fn flush_scratch(&mut self) {
        if self.bad.is_none() {
            if let Some(i) = first_out_of_bound(&self.cur) {
                self.bad = Some((self.base + i, self.cur[i].into()));
            }
        }
        self.base += self.cur.len();
        self.cur.clear();
    }

    /// Values given so far, stored or counted.
    pub(crate) fn len(&self) -> usize {
        self.base + self.cur.len()
    }

    /// Bytes the stored values occupy: full blocks whole, the open block as far as it
    /// is written (its untouched capacity is address space, not resident memory; while
    /// the first block grows, a reallocation may hold its old copy too: at most one
    /// block, 2 MiB, counted in the constant slack).
    pub(crate) fn resident_bytes(&self) -> usize {
        let full: usize = self.full.iter().map(Vec::capacity).sum();
        (full + self.cur.len()) * std::mem::size_of::<T>()
    }

    /// Moves the stored values into a new storing store and turns this one into a
    /// counting store that carries on from the same index.
    pub(crate) fn split_off(&mut self) -> Self {
        let counting = Self {
            full: Vec::new(),
            cur: Vec::with_capacity(SCRATCH),
            limit: SCRATCH,
            base: self.len(),
            counting: true,
            bad: None,
        };
        std::mem::replace(self, counting)
    }

    /// The first value that is not finite or beyond [`crate::pca::MAX_ABS_VALUE`]: its index among
    /// all the values given and the value.
    pub(crate) fn first_bad(&mut self) -> Option<(usize, f64)> {
        if self.counting {
            self.flush_scratch();
            return self.bad;
        }
        let mut base = 0;
        for b in self.full.iter().chain(std::iter::once(&self.cur)) {
            if let Some(i) = first_out_of_bound(b) {
                return Some((base + i, b[i].into()));
            }
            base += b.len();
        }
        None
    }

    /// The stored values in one `Vec` of exactly their number: the first block as it
    /// is when it is the only one, else a copy that frees each block once copied.
    pub(crate) fn into_vec(self) -> Vec<T> {
        if self.full.is_empty() {
            return self.cur;
        }
        let mut out = Vec::with_capacity(self.full.len() * BLOCK + self.cur.len());
        for b in self.full {
            out.extend_from_slice(&b);
        }
        out.extend_from_slice(&self.cur);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_hold_the_values_in_order_and_hand_them_over_whole() {
        let mut s = Store::new();
        let n = 2 * BLOCK + 17;
        for i in 0..n {
            s.push(i as f64);
        }
        s.extend_from_slice(&[1.5; BLOCK]);
        assert_eq!(s.len(), n + BLOCK);
        // No block is larger than asked for: the store occupies its values plus at
        // most one open block.
        assert!(s.resident_bytes() <= (n + 2 * BLOCK) * 8);
        assert_eq!(s.first_bad(), None);
        let v = s.into_vec();
        assert_eq!(v.len(), n + BLOCK);
        assert_eq!(v.capacity(), n + BLOCK);
        assert!((v[..n].iter().enumerate()).all(|(i, &x)| x.to_bits() == (i as f64).to_bits()));
        assert!(v[n..].iter().all(|&x| x.to_bits() == 1.5f64.to_bits()));
    }

    #[test]
    fn a_counting_store_keeps_the_index_and_the_first_bad_value_only() {
        let mut s = Store::new();
        for _ in 0..10 {
            s.push(1.0f64);
        }
        s.push(f64::INFINITY);
        let mut saved = s.split_off();
        assert_eq!(saved.first_bad(), Some((10, f64::INFINITY)));
        for i in 0..(3 * SCRATCH) {
            s.push(if i == SCRATCH + 5 { 2e30 } else { 0.0 });
        }
        s.push(f64::NAN);
        assert_eq!(s.len(), 11 + 3 * SCRATCH + 1);
        assert!(s.resident_bytes() <= SCRATCH * 8);
        assert_eq!(s.first_bad(), Some((11 + SCRATCH + 5, 2e30)));
        assert_eq!(saved.into_vec().len(), 11);
    }
}
