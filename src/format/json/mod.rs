//! The JSON object push parser: a small state machine over bytes for
//! `{"x": [[…], …], "y"?: …}` batches and `{"x": [[…]], "k"?: …}` projection queries.
//! Numbers go straight into the row buffers; a token split across chunks is carried in
//! a small buffer. Keys may come in any order; unknown and repeated keys are refused, as
//! serde's `deny_unknown_fields` refuses them. Errors carry the byte offset.
//!
//! This file holds the machine's state and its byte loop; `row.rs` the numbers (the hot
//! loop over a row's numbers, and tokens carried across chunks), `keys.rs` keys and the
//! start of each value, `batch.rs` the batch parser on top.

mod batch;
mod keys;
mod row;

pub use batch::JsonBatchParser;

use super::number::{self, MAX_NUMBER_LEN};
use super::rows::Rows;
use super::spill::Spillable;
use super::{FormatError, RowLimit};
use crate::pca::{Part, Shape};

/// Longest key kept; any longer key is unknown anyway.
const MAX_KEY_LEN: usize = 64;

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// The rows `x`.
    X,
    /// The targets `y`: rows, or a flat list when `target_dim` is 1.
    Y,
    /// A scalar option (number, boolean or null), by index in the option table.
    Opt(usize),
}

/// A scalar option's value as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number; `int` is its value when it is written as a non-negative integer.
    Number {
        /// The value.
        value: f64,
        /// The value as an integer, when the token is one (no point, exponent or sign).
        int: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Start,
    FirstKey,
    NextKey,
    Key,
    Colon,
    Value,
    MatOpen,
    RowFirst,
    RowNext,
    RowAfter,
    MatAfterRow,
    MatNextRow,
    FlatNext,
    FlatAfter,
    AfterValue,
    Done,
    /// Inside a number or literal that continues past the chunk.
    Token,
}

/// Where a finished number or literal goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Row,
    Flat,
    Opt(usize),
    NullY,
}

/// The JSON object machine shared by batches and projection queries.
#[derive(Debug, Clone)]
pub(crate) struct JsonObject {
    st: St,
    /// Bytes of the body before the current chunk.
    base: usize,
    keys: &'static [(&'static str, Key)],
    seen: u64,
    key: Vec<u8>,
    key_escape: bool,
    key_long: bool,
    current: Key,
    tok: Vec<u8>,
    tok_number: bool,
    ctx: Ctx,
    limit: RowLimit,
    pub(crate) x: Rows<f64>,
    /// `Some` for regression models.
    pub(crate) y: Option<Rows<f64>>,
    /// Whether `y` was given (and not `null`).
    pub(crate) y_given: bool,
    pub(crate) target_dim: Option<usize>,
    /// Scalar options, by index in the key table.
    pub(crate) opts: Vec<Option<Scalar>>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("`{}`", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

impl JsonObject {
    pub(crate) fn new(
        shape: Shape,
        limit: RowLimit,
        keys: &'static [(&'static str, Key)],
        options: usize,
    ) -> Self {
        Self {
            st: St::Start,
            base: 0,
            keys,
            seen: 0,
            key: Vec::new(),
            key_escape: false,
            key_long: false,
            current: Key::X,
            tok: Vec::new(),
            tok_number: false,
            ctx: Ctx::Row,
            limit,
            x: Rows::new(Part::X, shape.dim),
            y: shape.target_dim.map(|t| Rows::new(Part::Y, t)),
            y_given: false,
            target_dim: shape.target_dim,
            opts: vec![None; options],
        }
    }

    fn err(&self, at: usize, what: impl std::fmt::Display) -> FormatError {
        FormatError::Malformed(format!("{what} at byte {}", self.base + at))
    }

    fn unexpected(&self, at: usize, b: u8, expected: &str) -> FormatError {
        self.err(
            at,
            format_args!("expected {expected}, found {}", describe(b)),
        )
    }

    fn rows(&mut self) -> &mut Rows<f64> {
        match (self.current, self.y.as_mut()) {
            (Key::Y, Some(y)) => y,
            _ => &mut self.x,
        }
    }

    /// Takes the next chunk of the body.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        let r = self.feed_inner(chunk);
        self.base += chunk.len();
        r
    }

    fn feed_inner(&mut self, c: &[u8]) -> Result<(), FormatError> {
        let n = c.len();
        let mut i = 0;
        if self.st == St::Token {
            let run = if self.tok_number {
                number::number_run(c)
            } else {
                c.iter().position(|b| !b.is_ascii_lowercase()).unwrap_or(n)
            };
            if self.tok.len() + run > MAX_NUMBER_LEN {
                return Err(self.err(0, "a token longer than 512 bytes"));
            }
            self.tok.extend_from_slice(&c[..run]);
            if run == n {
                return Ok(());
            }
            let tok = std::mem::take(&mut self.tok);
            // An error names the token's first byte, as for a token whole in a chunk,
            // so that the message does not depend on where the body was split.
            let base = self.base;
            self.base -= tok.len() - run;
            let r = self.token_done(&tok, 0);
            self.base = base;
            self.tok = tok;
            self.tok.clear();
            r?;
            i = run;
        }
        while i < n {
            if matches!(self.st, St::RowNext | St::RowAfter) {
                i = self.run_row(c, i);
                if i >= n {
                    break;
                }
            }
            let b = c[i];
            match self.st {
                St::RowFirst | St::RowNext | St::FlatNext => {
                    if is_ws(b) {
                        i += 1;
                        continue;
                    }
                    if b == b']' && self.st == St::RowFirst {
                        self.rows().close_row(&String::new)?;
                        self.st = St::MatAfterRow;
                        i += 1;
                        continue;
                    }
                    if !(b == b'-' || b.is_ascii_digit()) {
                        return Err(self.unexpected(i, b, "a number"));
                    }
                    let ctx = if self.st == St::FlatNext {
                        let limit = self.limit;
                        self.rows().open_row(limit)?;
                        Ctx::Flat
                    } else {
                        Ctx::Row
                    };
                    i = self.number_at(c, i, ctx)?;
                }
                St::RowAfter => {
                    // The hot path: `,` then the next number, most often with no blank.
                    match b {
                        b',' => {
                            if i + 1 < n && (c[i + 1] == b'-' || c[i + 1].is_ascii_digit()) {
                                i = self.number_at(c, i + 1, Ctx::Row)?;
                            } else {
                                self.st = St::RowNext;
                                i += 1;
                            }
                        }
                        b']' => {
                            self.rows().close_row(&String::new)?;
                            self.st = St::MatAfterRow;
                            i += 1;
                        }
                        _ if is_ws(b) => i += 1,
                        _ => return Err(self.unexpected(i, b, "`,` or `]`")),
                    }
                }
                St::MatAfterRow => match b {
                    b',' => {
                        self.st = St::MatNextRow;
                        i += 1;
                    }
                    b']' => {
                        self.st = St::AfterValue;
                        i += 1;
                    }
                    _ if is_ws(b) => i += 1,
                    _ => return Err(self.unexpected(i, b, "`,` or `]` after a row")),
                },
                St::MatNextRow => match b {
                    b'[' => {
                        let limit = self.limit;
                        self.rows().open_row(limit)?;
                        self.st = St::RowFirst;
                        i += 1;
                    }
                    _ if is_ws(b) => i += 1,
                    _ => return Err(self.unexpected(i, b, "`[` (a row)")),
                },
                St::FlatAfter => match b {
                    b',' => {
                        self.st = St::FlatNext;
                        i += 1;
                    }
                    b']' => {
                        self.st = St::AfterValue;
                        i += 1;
                    }
                    _ if is_ws(b) => i += 1,
                    _ => return Err(self.unexpected(i, b, "`,` or `]`")),
                },
                St::MatOpen => match b {
                    b'[' => {
                        let limit = self.limit;
                        self.rows().open_row(limit)?;
                        self.st = St::RowFirst;
                        i += 1;
                    }
                    b']' => {
                        self.st = St::AfterValue;
                        i += 1;
                    }
                    b'-' | b'0'..=b'9' if self.current == Key::Y => {
                        let t = self.target_dim.unwrap_or(0);
                        if t != 1 {
                            return Err(FormatError::DimensionMismatch(format!(
                                "y must be a list of rows of {t} values; a flat list is only \
                                 accepted when target_dim is 1"
                            )));
                        }
                        let limit = self.limit;
                        self.rows().open_row(limit)?;
                        i = self.number_at(c, i, Ctx::Flat)?;
                    }
                    _ if is_ws(b) => i += 1,
                    _ => return Err(self.unexpected(i, b, "`[`")),
                },
                St::Start => match b {
                    b'{' => {
                        self.st = St::FirstKey;
                        i += 1;
                    }
                    _ if is_ws(b) => i += 1,
                    _ => return Err(self.unexpected(i, b, "a JSON object `{`")),
                },
                St::FirstKey | St::NextKey => match b {
                    b'"' => {
                        self.key.clear();
                        self.key_escape = false;
                        self.key_long = false;
                        self.st = St::Key;
                        i += 1;
                    }
                    b'}' if self.st == St::FirstKey => {
                        self.st = St::Done;
                        i += 1;
                    }
                    _ if is_ws(b) => i += 1,
                    _ => return Err(self.unexpected(i, b, "a key")),
                },
                St::Key => {
                    i = self.key_bytes(c, i)?;
                }
                St::Colon => match b {
                    b':' => {
                        self.st = St::Value;
                        i += 1;
                    }
                    _ if is_ws(b) => i += 1,
                    _ => return Err(self.unexpected(i, b, "`:`")),
                },
                St::Value => {
                    if is_ws(b) {
                        i += 1;
                        continue;
                    }
                    i = self.value_start(c, i)?;
                }
                St::AfterValue => match b {
                    b',' => {
                        self.st = St::NextKey;
                        i += 1;
                    }
                    b'}' => {
                        self.st = St::Done;
                        i += 1;
                    }
                    _ if is_ws(b) => i += 1,
                    _ => return Err(self.unexpected(i, b, "`,` or `}`")),
                },
                St::Done => {
                    if is_ws(b) {
                        i += 1;
                    } else {
                        return Err(self.err(i, "trailing characters after the object"));
                    }
                }
                St::Token => unreachable_token()?,
            }
        }
        Ok(())
    }

    /// Ends the body: the object must be complete and `x` present.
    pub(crate) fn end(&self) -> Result<(), FormatError> {
        if self.st != St::Done {
            return Err(FormatError::Malformed(format!(
                "unexpected end of body at byte {} (the JSON object is not closed)",
                self.base
            )));
        }
        if self.seen & 1 == 0 {
            return Err(FormatError::Malformed("missing field `x`".into()));
        }
        Ok(())
    }
}

impl Spillable for JsonObject {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), FormatError> {
        JsonObject::feed(self, chunk)
    }

    fn resident_bytes(&self) -> usize {
        self.x.values.resident_bytes()
            + self.y.as_ref().map_or(0, |y| y.values.resident_bytes())
            + self.tok.capacity()
            + self.key.capacity()
    }

    fn split_off(&mut self) -> Self {
        let x = self.x.split_off();
        let y = self.y.as_mut().map(Rows::split_off);
        Self {
            x,
            y,
            ..self.clone()
        }
    }
}

/// The machine never dispatches on `Token` inside its loop (a token is finished before
/// the loop or ends the chunk), so reaching it is a bug; answered as a malformed body
/// rather than a panic.
fn unreachable_token() -> Result<(), FormatError> {
    Err(FormatError::Malformed("internal parser state".into()))
}
