//! Binary answers: an uncompressed `.npz` archive (a zip of `.npy` files, what
//! `numpy.savez` writes and `numpy.load` reads), built in memory.
//!
//! Each member is a version-1 `.npy` file (little-endian, C order, header padded to 64
//! bytes) stored without compression: a local file header, the data, then one central
//! directory record per member and the end-of-central-directory record. Sizes and
//! offsets are 32-bit (no ZIP64), so the whole archive must stay below 4 GiB.

use super::error::ApiError;

/// One array of an archive.
#[derive(Debug, Clone, PartialEq)]
pub enum Array<'a> {
    /// A float64 matrix (rows×cols), row-major.
    F64Matrix {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// rows·cols values, row-major.
        values: &'a [f64],
    },
    /// A float64 vector.
    F64Vector(&'a [f64]),
    /// A 0-d int64 array (a scalar).
    I64Scalar(i64),
    /// A 0-d float64 array (a scalar).
    F64Scalar(f64),
    /// A boolean vector (`|b1`, one byte per value).
    BoolVector(&'a [bool]),
}

impl Array<'_> {
    fn descr(&self) -> &'static str {
        match self {
            Self::F64Matrix { .. } | Self::F64Vector(_) => "<f8",
            Self::I64Scalar(_) => "<i8",
            Self::F64Scalar(_) => "<f8",
            Self::BoolVector(_) => "|b1",
        }
    }

    fn shape(&self) -> String {
        match self {
            Self::F64Matrix { rows, cols, .. } => format!("({rows}, {cols})"),
            Self::F64Vector(v) => format!("({},)", v.len()),
            Self::I64Scalar(_) | Self::F64Scalar(_) => "()".to_owned(),
            Self::BoolVector(v) => format!("({},)", v.len()),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Self::F64Matrix { values, .. } | Self::F64Vector(values) => 8 * values.len(),
            Self::I64Scalar(_) | Self::F64Scalar(_) => 8,
            Self::BoolVector(v) => v.len(),
        }
    }

    fn write_data(&self, out: &mut Vec<u8>) {
        match self {
            Self::F64Matrix { values, .. } | Self::F64Vector(values) => {
                out.reserve(8 * values.len());
                for v in *values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Self::I64Scalar(v) => out.extend_from_slice(&v.to_le_bytes()),
            Self::F64Scalar(v) => out.extend_from_slice(&v.to_le_bytes()),
            Self::BoolVector(v) => out.extend(v.iter().map(|b| u8::from(*b))),
        }
    }
}

/// The `.npy` (version 1.0) preamble and header for `a`, padded with spaces so that the
/// data starts at a multiple of 64 bytes, as numpy writes it.
fn npy_header(a: &Array<'_>) -> Vec<u8> {
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        a.descr(),
        a.shape()
    );
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    // The dict is short (shapes of two integers): its length fits in u16.
    let len = u16::try_from(dict.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Bytes of the archive holding `arrays` (member `{name}.npy` for each), without
/// writing it: used to refuse an answer too large before building it.
pub fn archive_len(arrays: &[(&str, Array<'_>)]) -> u64 {
    let members: u64 = arrays
        .iter()
        .map(|(name, a)| {
            let file = (npy_header(a).len() + a.data_len()) as u64;
            let name = (name.len() + 4) as u64;
            30 + name + file + 46 + name
        })
        .sum();
    members + 22
}

/// Largest archive a 32-bit zip can describe.
const MAX_ZIP_BYTES: u64 = u32::MAX as u64;

/// Builds an uncompressed `.npz` archive with one member `{name}.npy` per array, in the
/// order given.
///
/// # Errors
/// [`ApiError::TooManyRows`]-like refusal as [`ApiError::InvalidParameter`] (`Accept`)
/// when the archive would exceed 4 GiB (ask for fewer rows, or JSON).
pub fn write(arrays: &[(&str, Array<'_>)]) -> Result<Vec<u8>, ApiError> {
    let total = archive_len(arrays);
    if total > MAX_ZIP_BYTES {
        return Err(ApiError::invalid(
            "Accept",
            format!(
                "the binary answer would take {total} bytes, more than an .npz without \
                 ZIP64 can hold (4 GiB); project fewer rows per request"
            ),
        ));
    }
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut central = Vec::new();
    for (name, a) in arrays {
        let member = format!("{name}.npy");
        let offset = out.len();
        let mut file = npy_header(a);
        a.write_data(&mut file);
        let crc = crc32fast::hash(&file);
        // All three fit in u32: the whole archive does (checked above).
        let size = u32::try_from(file.len()).unwrap_or(u32::MAX);
        let offset = u32::try_from(offset).unwrap_or(u32::MAX);
        let name_len = u16::try_from(member.len()).unwrap_or(u16::MAX);
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common_fields(&mut out, crc, size, name_len);
        out.extend_from_slice(&0u16.to_le_bytes()); // extra field length
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(&file);
        // Central directory record.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by: 2.0, MS-DOS
        common_fields(&mut central, crc, size, name_len);
        central.extend_from_slice(&0u16.to_le_bytes()); // extra field length
        central.extend_from_slice(&0u16.to_le_bytes()); // comment length
        central.extend_from_slice(&0u16.to_le_bytes()); // disk number start
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(member.as_bytes());
    }
    let cd_offset = u32::try_from(out.len()).unwrap_or(u32::MAX);
    let cd_size = u32::try_from(central.len()).unwrap_or(u32::MAX);
    let entries = u16::try_from(arrays.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&central);
    // End of central directory.
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // this disk
    out.extend_from_slice(&0u16.to_le_bytes()); // disk with the central directory
    out.extend_from_slice(&entries.to_le_bytes());
    out.extend_from_slice(&entries.to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    Ok(out)
}

/// The fields the local header and the central record share, from "version needed"
/// through the name length.
fn common_fields(out: &mut Vec<u8>, crc: u32, size: u32, name_len: u16) {
    out.extend_from_slice(&20u16.to_le_bytes()); // version needed: 2.0
    out.extend_from_slice(&0u16.to_le_bytes()); // flags
    out.extend_from_slice(&0u16.to_le_bytes()); // method: stored
    out.extend_from_slice(&0u16.to_le_bytes()); // time 00:00:00
    out.extend_from_slice(&0x0021u16.to_le_bytes()); // date 1980-01-01
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes()); // compressed
    out.extend_from_slice(&size.to_le_bytes()); // uncompressed
    out.extend_from_slice(&name_len.to_le_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], i: usize) -> usize {
        usize::from(u16::from_le_bytes([b[i], b[i + 1]]))
    }

    fn u32_at(b: &[u8], i: usize) -> usize {
        u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize
    }

    /// Reads the archive back through its central directory, as a zip reader does, and
    /// returns (name, stored file) per member, checking each CRC-32.
    fn members(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
        let eocd = zip.len() - 22;
        assert_eq!(u32_at(zip, eocd), 0x0605_4b50);
        let entries = u16_at(zip, eocd + 10);
        let cd_size = u32_at(zip, eocd + 12);
        let mut at = u32_at(zip, eocd + 16);
        assert_eq!(at + cd_size, eocd);
        let mut out = Vec::new();
        for _ in 0..entries {
            assert_eq!(u32_at(zip, at), 0x0201_4b50);
            let crc = u32_at(zip, at + 16);
            let size = u32_at(zip, at + 20);
            assert_eq!(size, u32_at(zip, at + 24));
            let name_len = u16_at(zip, at + 28);
            let local = u32_at(zip, at + 42);
            let name = String::from_utf8(zip[at + 46..at + 46 + name_len].to_vec()).unwrap();
            assert_eq!(u32_at(zip, local), 0x0403_4b50);
            assert_eq!(u16_at(zip, local + 26), name_len);
            let start = local + 30 + name_len + u16_at(zip, local + 28);
            let file = zip[start..start + size].to_vec();
            assert_eq!(crc32fast::hash(&file) as usize, crc);
            out.push((name, file));
            at += 46 + name_len;
        }
        out
    }

    #[test]
    fn members_are_npy_files_with_their_values() {
        let scores = [1.5, -2.0, 3.25, 4.0, 0.0, -0.5];
        let norms = [0.1, 0.2];
        let arrays = [
            (
                "scores",
                Array::F64Matrix {
                    rows: 2,
                    cols: 3,
                    values: &scores,
                },
            ),
            ("residual_norms", Array::F64Vector(&norms)),
            ("k", Array::I64Scalar(3)),
            ("limit", Array::F64Scalar(-0.75)),
        ];
        let zip = write(&arrays).unwrap();
        assert_eq!(zip.len() as u64, archive_len(&arrays));
        let m = members(&zip);
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["scores.npy", "residual_norms.npy", "k.npy", "limit.npy"]
        );
        // The npy reader of this crate reads the matrix back exactly.
        let limit = crate::format::RowLimit {
            max: 10,
            setting: "test",
        };
        let back = crate::format::parse_batch(
            crate::format::Format::Npy,
            crate::pca::Shape::inputs(3),
            limit,
            &m[0].1,
        )
        .unwrap();
        assert_eq!(back.rows(), 2);
        assert_eq!(back.to_f64().0, scores);
        // Headers are padded to 64 bytes and say what they hold.
        for (_, file) in &m {
            let hl = u16_at(file, 8);
            assert_eq!((10 + hl) % 64, 0);
        }
        let h = String::from_utf8_lossy(&m[1].1[10..]).into_owned();
        assert!(h.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"));
        let k = &m[2].1;
        let h = String::from_utf8_lossy(&k[10..k.len() - 8]).into_owned();
        assert!(h.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (), }"));
        assert_eq!(&k[k.len() - 8..], &3i64.to_le_bytes());
        let l = &m[3].1;
        let h = String::from_utf8_lossy(&l[10..l.len() - 8]).into_owned();
        assert!(h.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (), }"));
        assert_eq!(&l[l.len() - 8..], &(-0.75f64).to_le_bytes());
    }
}
