//! Keys of the JSON object (escapes, unknown and repeated keys) and the first byte of
//! each key's value.

use super::{Ctx, JsonObject, Key, St, MAX_KEY_LEN};
use crate::format::FormatError;

impl JsonObject {
    /// Reads key bytes from `c[i..]`; returns the index after them.
    pub(super) fn key_bytes(&mut self, c: &[u8], mut i: usize) -> Result<usize, FormatError> {
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

    pub(super) fn key_done(&mut self, at: usize) -> Result<(), FormatError> {
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
    pub(super) fn value_start(&mut self, c: &[u8], i: usize) -> Result<usize, FormatError> {
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
}
