//! Numbers inside the JSON machine: the hot loop over the numbers of a row that lie
//! whole in the chunk (one pass each, see [`crate::format::decimal`]), and numbers and
//! literals that the general loop reads or that continue into the next chunk.

use super::{is_ws, Ctx, JsonObject, Key, Scalar, St};
use crate::format::decimal;
use crate::format::number::{self, MAX_NUMBER_LEN};
use crate::format::FormatError;

impl JsonObject {
    /// The hot loop inside a row: `, number` pairs that lie whole in this chunk, pushed
    /// straight into the row. Stops (leaving `self.st` right) at anything else, which
    /// the general machine then handles: `]`, a number that reaches the chunk's end, a
    /// syntax error.
    #[inline]
    pub(super) fn run_row(&mut self, c: &[u8], mut i: usize) -> usize {
        let n = c.len();
        let mut want_number = self.st == St::RowNext;
        let rows = match (self.current, self.y.as_mut()) {
            (Key::Y, Some(y)) => y,
            _ => &mut self.x,
        };
        loop {
            if want_number {
                while i < n && is_ws(c[i]) {
                    i += 1;
                }
                // The number must end inside the chunk, at a byte that cannot continue
                // it (else the general path reads or refuses the whole token).
                let Some((v, len)) = decimal::json_prefix(&c[i..]) else {
                    break;
                };
                let end = i + len;
                if end >= n || number::is_number_byte(c[end]) {
                    break;
                }
                rows.push(v);
                i = end;
                want_number = false;
            }
            while i < n && is_ws(c[i]) {
                i += 1;
            }
            if i < n && c[i] == b',' {
                i += 1;
                want_number = true;
            } else {
                break;
            }
        }
        self.st = if want_number {
            St::RowNext
        } else {
            St::RowAfter
        };
        i
    }

    /// Reads a number starting at `c[i]` for `ctx`; returns the index after it, or
    /// `c.len()` when it continues into the next chunk.
    #[inline]
    pub(super) fn number_at(&mut self, c: &[u8], i: usize, ctx: Ctx) -> Result<usize, FormatError> {
        let run = number::number_run(&c[i..]);
        if i + run == c.len() {
            if run > MAX_NUMBER_LEN {
                return Err(self.err(i, "a number longer than 512 bytes"));
            }
            self.tok.clear();
            self.tok.extend_from_slice(&c[i..]);
            self.tok_number = true;
            self.ctx = ctx;
            self.st = St::Token;
            return Ok(c.len());
        }
        self.ctx = ctx;
        self.number_done(&c[i..i + run], i)?;
        Ok(i + run)
    }

    pub(super) fn token_done(&mut self, tok: &[u8], at: usize) -> Result<(), FormatError> {
        if self.tok_number {
            self.number_done(tok, at)
        } else {
            self.literal_done(tok, at)
        }
    }

    #[inline]
    pub(super) fn number_done(&mut self, tok: &[u8], at: usize) -> Result<(), FormatError> {
        let Some(v) = number::json_number(tok) else {
            let shown = String::from_utf8_lossy(&tok[..tok.len().min(40)]).into_owned();
            return Err(if number::is_json_number(tok) {
                self.err(at, format_args!("number `{shown}` out of range"))
            } else {
                self.err(at, format_args!("invalid number `{shown}`"))
            });
        };
        match self.ctx {
            Ctx::Row => {
                self.rows().push(v);
                self.st = St::RowAfter;
            }
            Ctx::Flat => {
                let rows = self.rows();
                rows.push(v);
                rows.close_row(&String::new)?;
                self.st = St::FlatAfter;
            }
            Ctx::Opt(k) => {
                let int = if tok.iter().all(u8::is_ascii_digit) {
                    std::str::from_utf8(tok).ok().and_then(|s| s.parse().ok())
                } else {
                    None
                };
                self.opts[k] = Some(Scalar::Number { value: v, int });
                self.st = St::AfterValue;
            }
            Ctx::NullY => return Err(self.err(at, "expected `null`")),
        }
        Ok(())
    }

    pub(super) fn literal_done(&mut self, tok: &[u8], at: usize) -> Result<(), FormatError> {
        let value = match tok {
            b"true" => Scalar::Bool(true),
            b"false" => Scalar::Bool(false),
            b"null" => Scalar::Null,
            _ => {
                let shown = String::from_utf8_lossy(&tok[..tok.len().min(40)]).into_owned();
                return Err(self.err(at, format_args!("invalid literal `{shown}`")));
            }
        };
        match self.ctx {
            Ctx::Opt(k) => self.opts[k] = Some(value),
            Ctx::NullY if value == Scalar::Null => {}
            _ => return Err(self.err(at, "expected an array")),
        }
        self.st = St::AfterValue;
        Ok(())
    }

    pub(super) fn literal_at(
        &mut self,
        c: &[u8],
        i: usize,
        ctx: Ctx,
    ) -> Result<usize, FormatError> {
        let run = c[i..]
            .iter()
            .position(|b| !b.is_ascii_lowercase())
            .unwrap_or(c.len() - i);
        self.ctx = ctx;
        if i + run == c.len() {
            if run > MAX_NUMBER_LEN {
                return Err(self.err(i, "a token longer than 512 bytes"));
            }
            self.tok.clear();
            self.tok.extend_from_slice(&c[i..]);
            self.tok_number = false;
            self.st = St::Token;
            return Ok(c.len());
        }
        self.literal_done(&c[i..i + run], i)?;
        Ok(i + run)
    }
}
