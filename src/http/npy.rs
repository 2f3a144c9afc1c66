//! `application/x-npy` request bodies: one NumPy `.npy` file (format version 1, 2 or 3)
//! holding a 2-D little-endian float32 (`<f4`) or float64 (`<f8`) array in C or Fortran
//! order, read into row-major values of the width it arrived in.
//!
//! A minimal, whole-body parser for the ingest and projection routes (the streaming
//! parsers of `src/format/` will replace it). It never allocates what the header merely
//! claims: the shape is checked against the bytes actually present before any value is
//! read, and the header itself is a slice of the body. Every refusal names the problem.

use super::body::{check_finite, split_rows};
use super::error::ApiError;
use crate::registry::{Batch, ModelConfig};

/// The `.npy` magic string.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// `<f4`: little-endian IEEE single precision (4 bytes).
    F32,
    /// `<f8`: little-endian IEEE double precision (8 bytes).
    F64,
}

impl Elem {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F64 => "float64",
        }
    }
}

/// A parsed `.npy` body: its header and a view of its data bytes (exactly
/// `rows · cols · elem.size()` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpyView<'a> {
    /// Element type.
    pub elem: Elem,
    /// Rows (first axis).
    pub rows: usize,
    /// Values per row (second axis).
    pub cols: usize,
    /// Column-major (Fortran) storage when true.
    pub fortran: bool,
    /// The data bytes.
    pub data: &'a [u8],
}

/// The values of an array, row-major (rows×cols), in the width they arrived in.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// From a float32 array.
    F32(Vec<f32>),
    /// From a float64 array.
    F64(Vec<f64>),
}

fn malformed(reason: impl std::fmt::Display) -> ApiError {
    ApiError::MalformedBody(format!("not a usable .npy body: {reason}"))
}

/// Parses the header of a `.npy` body and checks that the data that follows is exactly
/// what the header describes.
///
/// # Errors
/// [`ApiError::MalformedBody`] for a missing magic string, an unknown version, a
/// truncated or unparsable header, an element type other than `<f4`/`<f8`, a shape that
/// is not 2-D, or data bytes that do not match the shape (truncated or trailing);
/// [`ApiError::EmptyBatch`] for zero rows.
pub fn view(body: &[u8]) -> Result<NpyView<'_>, ApiError> {
    if body.len() < 8 || &body[..6] != MAGIC {
        return Err(malformed(
            "it does not start with the \\x93NUMPY magic string",
        ));
    }
    let (major, minor) = (body[6], body[7]);
    let (header_len, prefix) = match major {
        1 => {
            let b = body
                .get(8..10)
                .ok_or_else(|| malformed("truncated header"))?;
            (usize::from(u16::from_le_bytes([b[0], b[1]])), 10usize)
        }
        2 | 3 => {
            let b = body
                .get(8..12)
                .ok_or_else(|| malformed("truncated header"))?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (usize::try_from(len).unwrap_or(usize::MAX), 12usize)
        }
        v => {
            return Err(malformed(format!(
                "format version {v}.{minor} (versions 1, 2 and 3 are read)"
            )))
        }
    };
    let end = prefix
        .checked_add(header_len)
        .filter(|&e| e <= body.len())
        .ok_or_else(|| {
            malformed(format!(
                "the header claims {header_len} bytes but the body has only {} after the \
                 {prefix}-byte preamble",
                body.len() - prefix.min(body.len())
            ))
        })?;
    let header = &body[prefix..end];
    let header = if major == 3 {
        std::str::from_utf8(header)
            .map_err(|e| malformed(format!("the header is not UTF-8: {e}")))?
            .to_owned()
    } else {
        // Versions 1 and 2 are Latin-1: every byte is one character.
        header.iter().map(|&b| char::from(b)).collect()
    };
    let dict = parse_header(&header)?;
    let data = &body[end..];
    let want = dict
        .rows
        .checked_mul(dict.cols)
        .and_then(|n| n.checked_mul(dict.elem.size()))
        .ok_or_else(|| {
            malformed(format!(
                "shape ({}, {}) is too large to exist",
                dict.rows, dict.cols
            ))
        })?;
    if data.len() != want {
        return Err(malformed(format!(
            "the header describes a ({}, {}) {} array ({want} bytes of data) but the body \
             has {} bytes after the header{}",
            dict.rows,
            dict.cols,
            dict.elem.name(),
            data.len(),
            if data.len() < want {
                " (truncated?)"
            } else {
                ""
            }
        )));
    }
    if dict.rows == 0 {
        return Err(ApiError::EmptyBatch);
    }
    Ok(NpyView {
        elem: dict.elem,
        rows: dict.rows,
        cols: dict.cols,
        fortran: dict.fortran,
        data,
    })
}

impl NpyView<'_> {
    /// The values, row-major, in their own width.
    pub fn values(&self) -> Values {
        match self.elem {
            Elem::F32 => {
                Values::F32(self.row_major(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            }
            Elem::F64 => Values::F64(self.row_major(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
            })),
        }
    }

    /// The values widened to f64, row-major.
    pub fn values_f64(&self) -> Vec<f64> {
        match self.values() {
            Values::F32(v) => v.into_iter().map(f64::from).collect(),
            Values::F64(v) => v,
        }
    }

    fn row_major<T: Copy + Default>(&self, read: impl Fn(&[u8]) -> T) -> Vec<T> {
        let size = self.elem.size();
        let stored: Vec<T> = self.data.chunks_exact(size).map(read).collect();
        if !self.fortran || self.rows == 1 || self.cols == 1 {
            return stored;
        }
        // Column-major storage: element (i, j) is at j·rows + i.
        let mut out = vec![T::default(); stored.len()];
        for (j, col) in stored.chunks_exact(self.rows).enumerate() {
            for (i, v) in col.iter().enumerate() {
                out[i * self.cols + j] = *v;
            }
        }
        out
    }
}

/// Parses an ingest body for the model `cfg`: shape (rows, dim) for autoencoders,
/// (rows, dim + target_dim) for regression models (x columns then y columns). Float32
/// arrays stay f32, float64 arrays stay f64.
///
/// # Errors
/// Those of [`view`]; [`ApiError::DimensionMismatch`] for the wrong number of columns;
/// [`ApiError::NonFinite`] / [`ApiError::OutOfRange`] for a bad value.
pub fn parse_batch(body: &[u8], cfg: &ModelConfig) -> Result<Batch, ApiError> {
    let v = view(body)?;
    let width = cfg.row_width();
    check_width(&v, width, cfg.target_dim.map(|t| (cfg.dim, t)))?;
    Ok(match v.values() {
        Values::F32(values) => {
            check_finite("x", &values, width)?;
            let (x, y) = split_rows(values, cfg);
            Batch::f32(v.rows, x, y)
        }
        Values::F64(values) => {
            check_finite("x", &values, width)?;
            let (x, y) = split_rows(values, cfg);
            Batch::f64(v.rows, x, y)
        }
    })
}

/// Checks that a parsed array has `width` columns.
///
/// # Errors
/// [`ApiError::DimensionMismatch`] naming expected and got (and, for regression models,
/// how the width is made up).
pub fn check_width(
    v: &NpyView<'_>,
    width: usize,
    regression: Option<(usize, usize)>,
) -> Result<(), ApiError> {
    if v.cols == width {
        return Ok(());
    }
    let detail = regression.map_or_else(String::new, |(d, t)| {
        format!(" (dim {d} x columns then target_dim {t} y columns)")
    });
    Err(ApiError::DimensionMismatch(format!(
        "expected an array of shape (rows, {width}){detail}, got ({}, {})",
        v.rows, v.cols
    )))
}

/// The three header fields.
#[derive(Debug, PartialEq)]
struct Header {
    elem: Elem,
    fortran: bool,
    rows: usize,
    cols: usize,
}

/// A Python literal in the header dictionary.
#[derive(Debug, PartialEq)]
enum Literal {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// Parses the header: a Python dict literal with exactly the keys `descr`,
/// `fortran_order` and `shape` (what `numpy.lib.format` writes), padded with spaces and
/// ended by a newline.
fn parse_header(h: &str) -> Result<Header, ApiError> {
    let mut p = Cursor {
        s: h.as_bytes(),
        i: 0,
    };
    p.skip_ws();
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            other => return Err(malformed(format!("unexpected header key '{other}'"))),
        };
        if slot.replace(p.literal()?).is_some() {
            return Err(malformed(format!("header key '{key}' appears twice")));
        }
        p.skip_ws();
        if p.eat(b',') {
            continue;
        }
        p.skip_ws();
        p.expect(b'}')?;
        break;
    }
    if p.s[p.i..].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(malformed("text after the header dictionary"));
    }
    let elem = match descr {
        Some(Literal::Str(d)) => match d.as_str() {
            "<f4" => Elem::F32,
            "<f8" => Elem::F64,
            ">f4" | ">f8" => {
                return Err(malformed(format!(
                    "dtype '{d}' is big-endian; send little-endian data (a.astype('<f8'))"
                )))
            }
            other => {
                return Err(malformed(format!(
                    "dtype '{other}' (only little-endian float32 '<f4' and float64 '<f8' \
                     are accepted)"
                )))
            }
        },
        Some(_) => return Err(malformed("'descr' must be a string such as '<f8'")),
        None => return Err(malformed("the header has no 'descr'")),
    };
    let fortran = match fortran {
        Some(Literal::Bool(b)) => b,
        Some(_) => return Err(malformed("'fortran_order' must be True or False")),
        None => return Err(malformed("the header has no 'fortran_order'")),
    };
    let (rows, cols) = match shape {
        Some(Literal::Tuple(dims)) => match dims[..] {
            [r, c] => (
                usize::try_from(r).map_err(|_| malformed(format!("{r} rows")))?,
                usize::try_from(c).map_err(|_| malformed(format!("{c} columns")))?,
            ),
            _ => {
                return Err(malformed(format!(
                    "shape {dims:?} has {} dimensions; a 2-D array (rows, values per row) \
                     is required",
                    dims.len()
                )))
            }
        },
        Some(_) => return Err(malformed("'shape' must be a tuple of integers")),
        None => return Err(malformed("the header has no 'shape'")),
    };
    Ok(Header {
        elem,
        fortran,
        rows,
        cols,
    })
}

/// A byte cursor over the header text.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), ApiError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(malformed(format!(
                "header: expected '{}' at character {}",
                char::from(b),
                self.i + 1
            )))
        }
    }

    fn string(&mut self) -> Result<String, ApiError> {
        let Some(&quote @ (b'\'' | b'"')) = self.s.get(self.i) else {
            return Err(malformed(format!(
                "header: expected a quoted string at character {}",
                self.i + 1
            )));
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&b| b == quote)
            .ok_or_else(|| malformed("header: unterminated string"))?;
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn literal(&mut self) -> Result<Literal, ApiError> {
        match self.s.get(self.i) {
            Some(b'\'' | b'"') => self.string().map(Literal::Str),
            Some(b'(') => self.tuple().map(Literal::Tuple),
            _ => {
                for (word, v) in [("True", true), ("False", false)] {
                    if self.s[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Ok(Literal::Bool(v));
                    }
                }
                Err(malformed(format!(
                    "header: unexpected value at character {}",
                    self.i + 1
                )))
            }
        }
    }

    /// `()`, `(3,)`, `(3, 4)`, `(3, 4,)`: non-negative integers.
    fn tuple(&mut self) -> Result<Vec<u64>, ApiError> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(out);
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let n: u64 = digits.parse().map_err(|_| {
                malformed(format!(
                    "header: shape entries must be non-negative integers (character {})",
                    start + 1
                ))
            })?;
            out.push(n);
            if out.len() > 32 {
                return Err(malformed("header: shape has more than 32 dimensions"));
            }
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                self.expect(b')')?;
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::pca::OptimizerKind;

    fn cfg(dim: usize, target_dim: Option<usize>) -> ModelConfig {
        ModelConfig {
            name: "m".into(),
            dim,
            components: 1,
            target_dim,
            half_life: None,
            optimizer: OptimizerKind::Subspace,
            tolerance: 1e-6,
        }
    }

    /// A `.npy` file as numpy writes it: version `major`, the dict padded so that the
    /// preamble and header take a multiple of 64 bytes.
    fn npy(major: u8, descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let f = if fortran { "True" } else { "False" };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}");
        let pre = if major == 1 { 10 } else { 12 };
        while (pre + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&u16::try_from(h.len()).unwrap_or(0).to_le_bytes());
        } else {
            out.extend_from_slice(&u32::try_from(h.len()).unwrap_or(0).to_le_bytes());
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn every_version_and_order_gives_the_same_rows() {
        let c = cfg(3, None);
        // The 2×3 array [[1, 2, 3], [4, 5, 6]] in C order and in Fortran order.
        let c_order = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f_order = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        for major in [1, 2, 3] {
            let a = parse_batch(&npy(major, "<f8", false, "(2, 3)", &f64s(&c_order)), &c);
            let b = parse_batch(&npy(major, "<f8", true, "(2, 3)", &f64s(&f_order)), &c);
            assert_eq!(a, Ok(Batch::f64(2, c_order.to_vec(), None)), "v{major}");
            assert_eq!(b, Ok(Batch::f64(2, c_order.to_vec(), None)), "v{major}");
        }
        let f32_order: Vec<f32> = f_order.iter().map(|&v| v as f32).collect();
        let got = parse_batch(&npy(1, "<f4", true, "(2, 3)", &f32s(&f32_order)), &c);
        let want: Vec<f32> = c_order.iter().map(|&v| v as f32).collect();
        assert_eq!(got, Ok(Batch::f32(2, want, None)));
    }

    #[test]
    fn regression_rows_split_into_x_then_y() {
        let c = cfg(2, Some(1));
        let body = npy(
            1,
            "<f8",
            false,
            "(2, 3)",
            &f64s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        );
        assert_eq!(
            parse_batch(&body, &c),
            Ok(Batch::f64(
                2,
                vec![1.0, 2.0, 4.0, 5.0],
                Some(vec![3.0, 6.0])
            ))
        );
        let narrow = npy(1, "<f8", false, "(1, 2)", &f64s(&[1.0, 2.0]));
        let msg = parse_batch(&narrow, &c).err().map(|e| e.to_string());
        assert_eq!(
            msg.as_deref(),
            Some(
                "dimension mismatch: expected an array of shape (rows, 3) (dim 2 x columns \
                 then target_dim 1 y columns), got (1, 2)"
            )
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let c = cfg(2, None);
        let ok = f64s(&[1.0, 2.0]);
        let err = |body: &[u8]| {
            parse_batch(body, &c)
                .err()
                .map(|e| (e.code(), e.to_string()))
                .unwrap_or_default()
        };
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (b"NUMPY".to_vec(), "malformed_body", "magic"),
            (
                npy(4, "<f8", false, "(1, 2)", &ok),
                "malformed_body",
                "version 4",
            ),
            (
                npy(1, "<i8", false, "(1, 2)", &ok),
                "malformed_body",
                "'<i8'",
            ),
            (
                npy(1, ">f8", false, "(1, 2)", &ok),
                "malformed_body",
                "big-endian",
            ),
            (npy(1, "<f8", false, "(2,)", &ok), "malformed_body", "2-D"),
            (
                npy(1, "<f8", false, "(1, 1, 2)", &ok),
                "malformed_body",
                "3 dimensions",
            ),
            (
                npy(1, "<f8", false, "(2, 2)", &ok),
                "malformed_body",
                "truncated",
            ),
            (
                npy(1, "<f8", false, "(1, 1)", &ok),
                "malformed_body",
                "8 bytes of data",
            ),
            (npy(1, "<f8", false, "(0, 2)", &[]), "empty_batch", "empty"),
            (
                npy(1, "<f8", false, "(1, 3)", &f64s(&[1.0, 2.0, 3.0])),
                "dimension_mismatch",
                "(rows, 2)",
            ),
            (
                npy(1, "<f8", false, "(1, 2)", &f64s(&[1.0, f64::NAN])),
                "non_finite",
                "row 0, column 1",
            ),
            (
                npy(1, "<f4", false, "(1, 2)", &f32s(&[f32::INFINITY, 1.0])),
                "non_finite",
                "inf",
            ),
            (
                npy(1, "<f8", false, "(1, 2)", &f64s(&[1e31, 1.0])),
                "value_out_of_range",
                "1e31",
            ),
            (
                npy(
                    1,
                    "<f8",
                    false,
                    "(18446744073709551615, 18446744073709551615)",
                    &ok,
                ),
                "malformed_body",
                "too large",
            ),
        ];
        for (body, code, needle) in cases {
            let (got_code, msg) = err(&body);
            assert_eq!(got_code, code, "{msg}");
            assert!(msg.contains(needle), "{msg} lacks {needle}");
        }
        // A header length beyond the body, and a header cut short.
        let mut lying = npy(1, "<f8", false, "(1, 2)", &ok);
        lying[8] = 0xff;
        lying[9] = 0xff;
        assert!(err(&lying).1.contains("claims 65535 bytes"));
        let cut = &npy(1, "<f8", false, "(1, 2)", &ok)[..40];
        assert_eq!(err(cut).0, "malformed_body");
        for header in [
            "{'descr': '<f8', 'shape': (1, 2), }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), 'extra': 1}",
            "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1, 2)}",
            "{'descr': '<f8', 'fortran_order': Maybe, 'shape': (1, 2)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1, -2)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2)} x",
            "{'descr': '<f8, 'fortran_order': False, 'shape': (1, 2)}",
        ] {
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(&[1, 0]);
            body.extend_from_slice(&u16::try_from(header.len()).unwrap_or(0).to_le_bytes());
            body.extend_from_slice(header.as_bytes());
            body.extend_from_slice(&ok);
            assert_eq!(err(&body).0, "malformed_body", "{header}");
        }
    }

    #[test]
    fn double_quotes_and_no_trailing_comma_are_read() {
        let h = r#"{"descr": "<f8", "fortran_order": false, "shape": (1, 2)}"#;
        let mut p = Cursor {
            s: h.as_bytes(),
            i: 0,
        };
        // `false` is not Python: refused.
        assert!(p.literal().is_err());
        let h = r#"{"descr": "<f8", "fortran_order": False, "shape": (1,2)}"#;
        assert_eq!(
            parse_header(h),
            Ok(Header {
                elem: Elem::F64,
                fortran: false,
                rows: 1,
                cols: 2
            })
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_after_the_magic_never_panic(
                tail in prop::collection::vec(any::<u8>(), 0..256),
                dim in 1usize..5,
            ) {
                let mut body = MAGIC.to_vec();
                body.extend_from_slice(&tail);
                if let Err(e) = parse_batch(&body, &cfg(dim, None)) {
                    prop_assert!(e.status_and_code().0.is_client_error());
                }
            }

            #[test]
            fn mutated_valid_bodies_are_accepted_whole_or_refused(
                at in 0usize..200,
                byte in any::<u8>(),
                values in prop::collection::vec(-1e6f64..1e6, 1..12),
            ) {
                let rows = values.len();
                let mut body = npy(1, "<f8", false, &format!("({rows}, 1)"), &f64s(&values));
                let i = at % body.len();
                body[i] = byte;
                match parse_batch(&body, &cfg(1, None)) {
                    Ok(b) => prop_assert!(b.rows >= 1),
                    Err(e) => prop_assert!(e.status_and_code().0.is_client_error()),
                }
            }
        }
    }
}
