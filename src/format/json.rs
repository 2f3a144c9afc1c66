//! The JSON object push parser: a small state machine over bytes for
//! `{"x": [[…], …], "y"?: …}` batches and `{"x": [[…]], "k"?: …}` projection queries.
//! Numbers go straight into the row buffers; a token split across chunks is carried in
//! a small buffer. Keys may come in any order; unknown and repeated keys are refused, as
//! serde's `deny_unknown_fields` refuses them. Errors carry the byte offset.

use super::number::{self, MAX_NUMBER_LEN};
use super::rows::Rows;
use super::{FormatError, RowLimit};
use crate::pca::{Batch, BatchData, Part, Shape};

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
#[derive(Debug)]
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
            let r = self.token_done(&tok, 0);
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

    /// The hot loop inside a row: `, number` pairs that lie whole in this chunk, pushed
    /// straight into the row. Stops (leaving `self.st` right) at anything else, which
    /// the general machine then handles: `]`, a number that reaches the chunk's end, a
    /// syntax error.
    #[inline]
    fn run_row(&mut self, c: &[u8], mut i: usize) -> usize {
        let n = c.len();
        let mut want_number = self.st == St::RowNext;
        let rows = match (self.current, self.y.as_mut()) {
            (Key::Y, Some(y)) => y,
            _ => &mut self.x,
        };
        loop {
            while i < n && is_ws(c[i]) {
                i += 1;
            }
            if i >= n {
                break;
            }
            if want_number {
                let Some(len) = number::json_number_len(&c[i..]) else {
                    break;
                };
                if i + len >= n {
                    break;
                }
                match number::decimal(&c[i..i + len]) {
                    Some(v) if v.is_finite() => rows.push(v),
                    _ => break,
                }
                i += len;
                want_number = false;
            } else if c[i] == b',' {
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
    fn number_at(&mut self, c: &[u8], i: usize, ctx: Ctx) -> Result<usize, FormatError> {
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

    fn token_done(&mut self, tok: &[u8], at: usize) -> Result<(), FormatError> {
        if self.tok_number {
            self.number_done(tok, at)
        } else {
            self.literal_done(tok, at)
        }
    }

    #[inline]
    fn number_done(&mut self, tok: &[u8], at: usize) -> Result<(), FormatError> {
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

    fn literal_done(&mut self, tok: &[u8], at: usize) -> Result<(), FormatError> {
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

    /// Reads key bytes from `c[i..]`; returns the index after them.
    fn key_bytes(&mut self, c: &[u8], mut i: usize) -> Result<usize, FormatError> {
        while i < c.len() {
            let b = c[i];
            i += 1;
            if self.key_escape {
                self.key_escape = false;
            } else if b == b'\\' {
                self.key_escape = true;
            } else if b == b'"' {
                return self.key_done(i - 1).map(|()| i);
            } else if b < 0x20 {
                return Err(self.err(i - 1, "a control character in a key"));
            }
            if self.key.len() < MAX_KEY_LEN {
                self.key.push(b);
            } else {
                self.key_long = true;
            }
        }
        Ok(i)
    }

    fn key_done(&mut self, at: usize) -> Result<(), FormatError> {
        let name: Option<String> = if self.key_long {
            None
        } else if self.key.contains(&b'\\') {
            let mut quoted = Vec::with_capacity(self.key.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(&self.key);
            quoted.push(b'"');
            match serde_json::from_slice::<String>(&quoted) {
                Ok(s) => Some(s),
                Err(_) => return Err(self.err(at, "an invalid escape in a key")),
            }
        } else {
            match std::str::from_utf8(&self.key) {
                Ok(s) => Some(s.to_owned()),
                Err(_) => return Err(self.err(at, "a key that is not UTF-8")),
            }
        };
        let found = name
            .as_deref()
            .and_then(|n| self.keys.iter().position(|(k, _)| *k == n));
        let Some(idx) = found else {
            let expected: Vec<String> = self.keys.iter().map(|(k, _)| format!("`{k}`")).collect();
            let shown = name.unwrap_or_else(|| "(a long key)".into());
            return Err(self.err(
                at,
                format_args!(
                    "unknown field `{shown}`, expected one of {}",
                    expected.join(", ")
                ),
            ));
        };
        if self.seen & (1 << idx) != 0 {
            return Err(self.err(at, format_args!("duplicate field `{}`", self.keys[idx].0)));
        }
        self.seen |= 1 << idx;
        self.current = self.keys[idx].1;
        self.st = St::Colon;
        Ok(())
    }

    /// The first byte of a value for the current key.
    fn value_start(&mut self, c: &[u8], i: usize) -> Result<usize, FormatError> {
        let b = c[i];
        match self.current {
            Key::X => {
                if b != b'[' {
                    return Err(self.unexpected(i, b, "an array of rows for `x`"));
                }
                self.st = St::MatOpen;
                Ok(i + 1)
            }
            Key::Y => match (b, self.y.is_some()) {
                (b'n', _) => self.literal_at(c, i, Ctx::NullY),
                (_, false) => Err(FormatError::InvalidParameter {
                    name: "y",
                    reason: "this model has no targets (target_dim is not set)".into(),
                }),
                (b'[', true) => {
                    self.y_given = true;
                    self.st = St::MatOpen;
                    Ok(i + 1)
                }
                _ => Err(self.unexpected(i, b, "an array for `y`")),
            },
            Key::Opt(k) => {
                if b == b'-' || b.is_ascii_digit() {
                    self.number_at(c, i, Ctx::Opt(k))
                } else if b.is_ascii_lowercase() {
                    self.literal_at(c, i, Ctx::Opt(k))
                } else {
                    Err(self.unexpected(i, b, "a number, `true`, `false` or `null`"))
                }
            }
        }
    }

    fn literal_at(&mut self, c: &[u8], i: usize, ctx: Ctx) -> Result<usize, FormatError> {
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

/// The machine never dispatches on `Token` inside its loop (a token is finished before
/// the loop or ends the chunk), so reaching it is a bug; answered as a malformed body
/// rather than a panic.
fn unreachable_token() -> Result<(), FormatError> {
    Err(FormatError::Malformed("internal parser state".into()))
}

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
