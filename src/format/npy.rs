//! The NumPy `.npy` header (format versions 1, 2 and 3): what the server's
//! [`super::NpyParser`] and the client's file reader both read first.
//!
//! Layout: `\x93NUMPY`, major and minor version bytes, the header length (u16 for
//! version 1, u32 for 2 and 3, little-endian), then the header: a Python dict literal
//! such as `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }`.

/// Longest header accepted, in bytes (numpy's own reader refuses more than 10 000 by
/// default); a longer claimed length is refused before any of it is read.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// Element type of the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// Little-endian float32 (`<f4`).
    F4,
    /// Little-endian float64 (`<f8`).
    F8,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F4 => 4,
            Self::F8 => 8,
        }
    }
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Element type.
    pub dtype: Dtype,
    /// Whether the data is column-major.
    pub fortran_order: bool,
    /// Rows of the 2-D array.
    pub rows: u64,
    /// Columns (values per row).
    pub cols: u64,
}

impl Header {
    /// Bytes of data the header promises, or `None` if that overflows a u64.
    pub fn data_len(&self) -> Option<u64> {
        self.rows
            .checked_mul(self.cols)?
            .checked_mul(self.dtype.size() as u64)
    }
}

/// From the first bytes of a file (at least 12, or all there are): the length of the
/// fixed prefix (10 or 12 bytes) and of the header that follows it. `Ok(None)` when more
/// bytes are needed.
///
/// # Errors
/// A message for a missing magic string, an unknown version or a header longer than
/// [`MAX_HEADER_LEN`].
pub fn preamble(first: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let magic = b"\x93NUMPY";
    let n = first.len().min(6);
    if first[..n] != magic[..n] {
        return Err("missing the \\x93NUMPY magic string".into());
    }
    let Some(&major) = first.get(6) else {
        return Ok(None);
    };
    let (prefix, len) = match major {
        1 => match first.get(8..10) {
            Some(l) => (10, usize::from(u16::from_le_bytes([l[0], l[1]]))),
            None => return Ok(None),
        },
        2 | 3 => match first.get(8..12) {
            Some(l) => {
                let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
                (12, usize::try_from(len).unwrap_or(usize::MAX))
            }
            None => return Ok(None),
        },
        v => return Err(format!("format version {v} (versions 1, 2 and 3 are read)")),
    };
    if len > MAX_HEADER_LEN {
        return Err(format!(
            "a header of {len} bytes (at most {MAX_HEADER_LEN} are accepted)"
        ));
    }
    Ok(Some((prefix, len)))
}

/// Parses the header: a Python dict literal with exactly the keys `'descr'`,
/// `'fortran_order'` and `'shape'` (in any order, single or double quotes, an optional
/// trailing comma), followed only by padding (spaces, a newline). numpy's reader refuses
/// other keys too.
///
/// # Errors
/// A message naming the first thing that is missing, repeated, unknown or not supported:
/// element types other than little-endian float32/float64, shapes that are not 2-D or
/// whose dimensions are not non-negative integers that fit in 64 bits.
pub fn parse_header(h: &[u8]) -> Result<Header, String> {
    let text = std::str::from_utf8(h).map_err(|_| "the header is not text".to_owned())?;
    let mut p = Literal { s: text, at: 0 };
    p.expect('{')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        if p.eat('}') {
            break;
        }
        let key = p
            .string()
            .map_err(|e| format!("{e} (a key of the header dict)"))?;
        p.expect(':')?;
        let seen = match key {
            "descr" => descr.replace(p.value()?).is_some(),
            "fortran_order" => fortran_order.replace(p.value()?).is_some(),
            "shape" => shape.replace(p.value()?).is_some(),
            other => {
                return Err(format!(
                    "unknown key '{}' in the header (only 'descr', 'fortran_order' and \
                     'shape' are allowed)",
                    other.chars().take(40).collect::<String>()
                ))
            }
        };
        if seen {
            return Err(format!("the header has '{key}' twice"));
        }
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    if !p
        .rest()
        .chars()
        .all(|c| c == ' ' || c == '\n' || c == '\t' || c == '\r')
    {
        return Err(format!(
            "unexpected text after the header dict at byte {}",
            p.at
        ));
    }
    let dtype = match descr.ok_or("no 'descr' in the header")? {
        Value::Str(d) => dtype(d)?,
        other => {
            return Err(format!(
                "'descr' is {other}; a string such as '<f8' is expected"
            ))
        }
    };
    let fortran_order = match fortran_order.ok_or("no 'fortran_order' in the header")? {
        Value::Bool(b) => b,
        other => {
            return Err(format!(
                "'fortran_order' is {other}; True or False is expected"
            ))
        }
    };
    let dims = match shape.ok_or("no 'shape' in the header")? {
        Value::Tuple(dims) => dims,
        other => {
            return Err(format!(
                "'shape' is {other}; a tuple such as (rows, columns) is expected"
            ))
        }
    };
    let shown = format!("({})", dims.join(", "));
    let dims: Vec<u64> = dims
        .iter()
        .map(|d| {
            d.parse::<u64>().map_err(|_| {
                if d.starts_with('-') {
                    format!("shape {shown}: dimensions must be non-negative integers")
                } else {
                    format!("shape {shown}: the dimension {d} does not fit in 64 bits")
                }
            })
        })
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!(
            "shape {shown} has {} dimension{}: a 2-D array (rows × values per row) is required",
            dims.len(),
            if dims.len() == 1 { "" } else { "s" }
        ));
    };
    Ok(Header {
        dtype,
        fortran_order,
        rows,
        cols,
    })
}

fn dtype(descr: &str) -> Result<Dtype, String> {
    let little = cfg!(target_endian = "little");
    Ok(match descr {
        "<f4" => Dtype::F4,
        "<f8" => Dtype::F8,
        "=f4" | "|f4" if little => Dtype::F4,
        "=f8" | "|f8" if little => Dtype::F8,
        other => {
            return Err(format!(
                "element type '{}' (only little-endian float32 '<f4' and float64 '<f8' are \
                 read)",
                other.chars().take(40).collect::<String>()
            ))
        }
    })
}

/// A value of the header dict.
#[derive(Debug)]
enum Value<'a> {
    Str(&'a str),
    Bool(bool),
    /// The items of a tuple of integers, as written (sign and digits).
    Tuple(Vec<&'a str>),
}

impl std::fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Str(s) => write!(f, "the string '{}'", s.chars().take(40).collect::<String>()),
            Self::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Self::Tuple(t) => write!(f, "the tuple ({})", t.join(", ")),
        }
    }
}

/// A cursor over the header's text: the few Python literals a `.npy` header holds.
struct Literal<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Literal<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn skip_space(&mut self) {
        let r = self.rest();
        self.at += r.len() - r.trim_start().len();
    }

    /// Consumes `c` (after spaces) if it is next.
    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn found(&self) -> String {
        match self.rest().chars().next() {
            Some(c) => format!("`{c}` at byte {} of the header", self.at),
            None => "the end of the header".to_owned(),
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected `{c}` in the header dict, found {}",
                self.found()
            ))
        }
    }

    /// A quoted string without escapes (what numpy writes).
    fn string(&mut self) -> Result<&'a str, String> {
        self.skip_space();
        let r = self.rest();
        let Some(q) = r.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            return Err(format!("expected a quoted string, found {}", self.found()));
        };
        let Some(end) = r[1..].find(q) else {
            return Err(format!(
                "an unterminated string at byte {} of the header",
                self.at
            ));
        };
        let s = &r[1..1 + end];
        if s.contains('\\') {
            return Err(format!(
                "a string with escapes at byte {} of the header",
                self.at
            ));
        }
        self.at += end + 2;
        Ok(s)
    }

    fn value(&mut self) -> Result<Value<'a>, String> {
        self.skip_space();
        let r = self.rest();
        if r.starts_with('\'') || r.starts_with('"') {
            return self.string().map(Value::Str);
        }
        for (word, b) in [("True", true), ("False", false)] {
            if r.starts_with(word)
                && !r[word.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                self.at += word.len();
                return Ok(Value::Bool(b));
            }
        }
        if self.eat('(') {
            let mut items = Vec::new();
            loop {
                if self.eat(')') {
                    return Ok(Value::Tuple(items));
                }
                self.skip_space();
                let r = self.rest();
                let sign = usize::from(r.starts_with('-'));
                let len = sign + r[sign..].len()
                    - r[sign..]
                        .trim_start_matches(|c: char| c.is_ascii_digit())
                        .len();
                if len == sign {
                    return Err(format!(
                        "expected an integer in the header's tuple, found {}",
                        self.found()
                    ));
                }
                items.push(&r[..len]);
                self.at += len;
                if !self.eat(',') {
                    self.expect(')')?;
                    return Ok(Value::Tuple(items));
                }
            }
        }
        Err(format!(
            "expected a string, True, False or a tuple in the header, found {}",
            self.found()
        ))
    }
}

/// A `.npy` file's bytes for a 2-D array (tests, benchmarks and the client's tests).
pub fn encode(descr: &str, fortran_order: bool, rows: u64, cols: u64, data: &[u8]) -> Vec<u8> {
    let order = if fortran_order { "True" } else { "False" };
    let mut h =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': ({rows}, {cols}), }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&u16::try_from(h.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(h: &str) -> String {
        parse_header(h.as_bytes()).expect_err(h)
    }

    #[test]
    fn what_numpy_writes_in_any_key_order_and_quoting() {
        let want = Header {
            dtype: Dtype::F8,
            fortran_order: true,
            rows: 7,
            cols: 3,
        };
        for h in [
            "{'descr': '<f8', 'fortran_order': True, 'shape': (7, 3), }          \n",
            "{\"shape\": (7,3), \"descr\": \"<f8\", \"fortran_order\": True}",
            "{ 'fortran_order':True,'shape':( 7 , 3 ,),'descr':'<f8' }\n",
        ] {
            assert_eq!(parse_header(h.as_bytes()), Ok(want.clone()), "{h}");
        }
        let h = parse_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5)}");
        assert_eq!(
            h.map(|h| (h.dtype, h.fortran_order, h.rows, h.cols)),
            Ok((Dtype::F4, false, 0, 5))
        );
    }

    #[test]
    fn anything_else_is_named() {
        let ok = "'descr': '<f8', 'fortran_order': False";
        for (h, words) in [
            (
                format!("{{{ok}, 'shape': (2, 3), 'x': 1}}"),
                "unknown key 'x'",
            ),
            (
                format!("{{{ok}, 'shape': (2, 3), 'descr': '<f8'}}"),
                "'descr' twice",
            ),
            (
                "{'descr': '<f8', 'shape': (2, 3)}".into(),
                "no 'fortran_order'",
            ),
            (format!("{{{ok}}}"), "no 'shape'"),
            (
                "{'descr': '<f8', 'fortran_order': 0, 'shape': (2, 3)}".into(),
                "expected a string, True, False or a tuple in the header, found `0`",
            ),
            (
                "{'descr': '<f8', 'fortran_order': 'no', 'shape': (2, 3)}".into(),
                "'fortran_order' is the string 'no'; True or False is expected",
            ),
            (
                "{'descr': True, 'fortran_order': False, 'shape': (2, 3)}".into(),
                "'descr' is True",
            ),
            (
                format!("{{{ok}, 'shape': 'big'}}"),
                "'shape' is the string 'big'",
            ),
            (
                format!("{{{ok}, 'shape': (2, -3)}}"),
                "shape (2, -3): dimensions must be non-negative integers",
            ),
            (
                format!("{{{ok}, 'shape': (99999999999999999999, 3)}}"),
                "the dimension 99999999999999999999 does not fit in 64 bits",
            ),
            (
                format!("{{{ok}, 'shape': (2, 3, 1)}}"),
                "shape (2, 3, 1) has 3 dimensions: a 2-D array",
            ),
            (
                format!("{{{ok}, 'shape': (3,)}}"),
                "shape (3) has 1 dimension:",
            ),
            (format!("{{{ok}, 'shape': (2, x)}}"), "expected an integer"),
            (
                format!("{{{ok}, 'shape': (2, 3)}} junk"),
                "unexpected text after the header dict",
            ),
            (
                format!("{{{ok}, 'shape': (2, 3)"),
                "found the end of the header",
            ),
            ("{'descr: '<f8'}".into(), "expected `:`"),
            ("['descr']".into(), "expected `{`"),
            (
                "{'descr': '>f8', 'fortran_order': False, 'shape': (2, 3)}".into(),
                "element type '>f8' (only little-endian",
            ),
            (
                "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2, 3)}".into(),
                "expected a string, True, False or a tuple",
            ),
        ] {
            let m = err(&h);
            assert!(m.contains(words), "{h}: {m}");
        }
        assert_eq!(
            parse_header(&[0xff, b'{']),
            Err("the header is not text".into())
        );
    }
}
