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

/// Parses the header dict.
///
/// # Errors
/// A message naming the first thing that is missing or not supported: element types
/// other than little-endian float32/float64, shapes that are not 2-D.
pub fn parse_header(h: &[u8]) -> Result<Header, String> {
    let h = std::str::from_utf8(h).map_err(|_| "the header is not text".to_owned())?;
    let field = |key: &str| -> Option<&str> {
        let i = h
            .find(&format!("'{key}'"))
            .or_else(|| h.find(&format!("\"{key}\"")))?
            + key.len()
            + 2;
        let rest = h[i..].trim_start().strip_prefix(':')?.trim_start();
        let end = if rest.starts_with('(') {
            rest.find(')')? + 1
        } else {
            rest.find([',', '}'])?
        };
        Some(rest[..end].trim())
    };
    let descr = field("descr").ok_or("no 'descr' in the header")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let little = cfg!(target_endian = "little");
    let dtype = match descr {
        "<f4" => Dtype::F4,
        "<f8" => Dtype::F8,
        "=f4" | "|f4" if little => Dtype::F4,
        "=f8" | "|f8" if little => Dtype::F8,
        other => {
            return Err(format!(
                "element type {other} (only little-endian float32 `<f4` and float64 `<f8` \
                 are read)"
            ))
        }
    };
    let fortran_order = match field("fortran_order") {
        Some("False") => false,
        Some("True") => true,
        Some(other) => return Err(format!("fortran_order {other}")),
        None => return Err("no 'fortran_order' in the header".into()),
    };
    let shape = field("shape").ok_or("no 'shape' in the header")?;
    let dims: Vec<u64> = shape
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("shape {shape}"))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("shape {shape}"))?;
    let [rows, cols] = dims[..] else {
        return Err(format!(
            "shape {shape}: a 2-D array (rows × values per row) is required"
        ));
    };
    Ok(Header {
        dtype,
        fortran_order,
        rows,
        cols,
    })
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
