//! Streaming row readers for the client: CSV, NDJSON, NumPy `.npy` and raw f32 files,
//! read a batch at a time so that a file of any size uses memory for one batch only.
//!
//! Every row is checked here against the model's row width and the server's value
//! checks (finite, at most 1e30 in magnitude), with the file and line (or row) in the
//! message, before anything is sent. The row grammar and the `.npy` header are the
//! server's own ([`crate::format`]); rows and columns are 1-based.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{CliError, FileFormat};
use crate::format::{self, npy, LineKind};
use crate::pca::Shape;

/// The format of `path`: `format` if given, else from the extension.
///
/// # Errors
/// [`CliError::Input`] for an unknown extension.
pub fn detect(path: &Path, format: Option<FileFormat>) -> Result<FileFormat, CliError> {
    if let Some(f) = format {
        return Ok(f);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv" | "txt") => Ok(FileFormat::Csv),
        Some("ndjson" | "jsonl") => Ok(FileFormat::Ndjson),
        Some("npy") => Ok(FileFormat::Npy),
        Some("f32" | "bin" | "raw") => Ok(FileFormat::F32),
        _ => Err(CliError::Input(format!(
            "{}: cannot tell the format from the extension (use .csv, .ndjson, .jsonl, .npy, \
             .f32, .bin or .raw, or pass --format)",
            path.display()
        ))),
    }
}

#[derive(Debug, Clone, Copy)]
enum Elem {
    F32,
    F64,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

#[derive(Debug)]
enum Kind {
    Lines { ndjson: bool, line_no: usize },
    Binary { elem: Elem, rows_left: u64 },
}

/// Reads rows of `width` values from one file, a batch at a time.
#[derive(Debug)]
pub struct RowReader {
    path: PathBuf,
    reader: BufReader<File>,
    kind: Kind,
    shape: Shape,
    width: usize,
    what: String,
    rows_read: u64,
    bytes_read: u64,
    total_bytes: u64,
    total_rows: Option<u64>,
    buf: String,
    bytes: Vec<u8>,
}

impl RowReader {
    /// Opens `path` for rows of `shape` (`dim + target_dim` values, x then y); `what`
    /// describes the shape in messages (e.g. "model `m` has dim 3").
    ///
    /// # Errors
    /// [`CliError::Input`] when the file cannot be opened or its header (`.npy`) or size
    /// (raw f32) does not fit the shape.
    pub fn open(
        path: &Path,
        format: FileFormat,
        shape: Shape,
        what: &str,
    ) -> Result<Self, CliError> {
        let width = shape.row_width();
        let io = |e: std::io::Error| CliError::Input(format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(io)?;
        let total_bytes = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut bytes_read = 0;
        let (kind, total_rows) = match format {
            FileFormat::Csv => (
                Kind::Lines {
                    ndjson: false,
                    line_no: 0,
                },
                None,
            ),
            FileFormat::Ndjson => (
                Kind::Lines {
                    ndjson: true,
                    line_no: 0,
                },
                None,
            ),
            FileFormat::F32 => {
                let row = 4 * width as u64;
                if total_bytes % row != 0 {
                    return Err(CliError::Input(format!(
                        "{}: {total_bytes} bytes is not a whole number of rows of {width} f32 \
                         values ({row} bytes each; {what})",
                        path.display()
                    )));
                }
                let rows = total_bytes / row;
                (
                    Kind::Binary {
                        elem: Elem::F32,
                        rows_left: rows,
                    },
                    Some(rows),
                )
            }
            FileFormat::Npy => {
                let (elem, rows, cols, header) = npy_header(&mut reader, path)?;
                bytes_read = header;
                if cols != width as u64 {
                    return Err(CliError::Input(format!(
                        "{}: the array has {cols} columns but {width} values per row are \
                         expected ({what})",
                        path.display()
                    )));
                }
                let need = header + rows * cols * elem.size() as u64;
                if total_bytes < need {
                    return Err(CliError::Input(format!(
                        "{}: truncated: the header promises {rows} rows ({need} bytes) but \
                         the file has {total_bytes} bytes",
                        path.display()
                    )));
                }
                (
                    Kind::Binary {
                        elem,
                        rows_left: rows,
                    },
                    Some(rows),
                )
            }
        };
        Ok(Self {
            path: path.to_owned(),
            reader,
            kind,
            shape,
            width,
            what: what.to_owned(),
            rows_read: 0,
            bytes_read,
            total_bytes,
            total_rows,
            buf: String::new(),
            bytes: Vec::new(),
        })
    }

    /// Rows in the file, when the format says so up front (`.npy`, raw f32).
    pub fn total_rows(&self) -> Option<u64> {
        self.total_rows
    }

    /// Size of the file in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Rows returned so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// Appends up to `max_rows` rows (row-major) to `out`, which is cleared first, and
    /// returns how many were read: 0 at the end of the file.
    ///
    /// # Errors
    /// [`CliError::Input`] naming the file and line (or row) of the first bad row:
    /// unreadable, not numbers, the wrong number of values, or not finite.
    pub fn next_batch(&mut self, max_rows: usize, out: &mut Vec<f64>) -> Result<usize, CliError> {
        out.clear();
        let got = match self.kind {
            Kind::Lines { .. } => self.read_lines(max_rows, out)?,
            Kind::Binary { .. } => self.read_binary(max_rows, out)?,
        };
        self.rows_read += got as u64;
        Ok(got)
    }

    fn err(&self, at: &str, msg: impl std::fmt::Display) -> CliError {
        CliError::Input(format!("{}:{at}: {msg}", self.path.display()))
    }

    fn read_lines(&mut self, max_rows: usize, out: &mut Vec<f64>) -> Result<usize, CliError> {
        let Kind::Lines {
            ndjson,
            ref mut line_no,
        } = self.kind
        else {
            return Ok(0);
        };
        let mut rows = 0;
        while rows < max_rows {
            self.buf.clear();
            let n = self
                .reader
                .read_line(&mut self.buf)
                .map_err(|e| CliError::Input(format!("{}: {e}", self.path.display())))?;
            if n == 0 {
                break;
            }
            self.bytes_read += n as u64;
            *line_no += 1;
            let at = line_no.to_string();
            let line = self.buf.trim();
            if line.is_empty() {
                continue;
            }
            let start = out.len();
            let header_allowed = !ndjson && self.rows_read == 0 && rows == 0;
            let kind = if ndjson {
                format::ndjson_line(line.as_bytes(), self.shape, out)
            } else {
                format::csv_line(line.as_bytes(), header_allowed, out)
            }
            .map_err(|e| CliError::Input(format!("{}:{at}: {e}", self.path.display())))?;
            if kind != LineKind::Row {
                continue;
            }
            let got = out.len() - start;
            if got != self.width {
                return Err(CliError::Input(format!(
                    "{}:{at}: expected {} values per row ({}), got {got}",
                    self.path.display(),
                    self.width,
                    self.what
                )));
            }
            let row = usize::try_from(self.rows_read).unwrap_or(usize::MAX) + rows + 1;
            format::check_row(&out[start..], row, self.shape)
                .map_err(|e| CliError::Input(format!("{}:{at}: {e}", self.path.display())))?;
            rows += 1;
        }
        Ok(rows)
    }

    fn read_binary(&mut self, max_rows: usize, out: &mut Vec<f64>) -> Result<usize, CliError> {
        let Kind::Binary {
            elem,
            ref mut rows_left,
        } = self.kind
        else {
            return Ok(0);
        };
        let rows = (*rows_left).min(max_rows as u64) as usize;
        *rows_left -= rows as u64;
        let len = rows * self.width * elem.size();
        self.bytes.resize(len, 0);
        self.reader
            .read_exact(&mut self.bytes)
            .map_err(|e| CliError::Input(format!("{}: {e}", self.path.display())))?;
        self.bytes_read += len as u64;
        match elem {
            Elem::F32 => out.extend(
                self.bytes
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            ),
            Elem::F64 => out.extend(
                self.bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
            ),
        }
        for (i, r) in out.chunks_exact(self.width.max(1)).enumerate() {
            let row = usize::try_from(self.rows_read).unwrap_or(usize::MAX) + i + 1;
            format::check_row(r, row, self.shape)
                .map_err(|e| self.err(&format!("row {row}"), e))?;
        }
        Ok(rows)
    }
}

/// Reads a `.npy` header ([`npy::preamble`], [`npy::parse_header`]): element type,
/// rows, columns and the header's length in bytes. Fortran-order arrays are refused
/// here: the client streams a file a batch at a time, in row order.
fn npy_header(r: &mut impl Read, path: &Path) -> Result<(Elem, u64, u64, u64), CliError> {
    let bad =
        |m: String| CliError::Input(format!("{}: not a usable .npy file: {m}", path.display()));
    let mut head = vec![0u8; 12];
    r.read_exact(&mut head[..10])
        .map_err(|e| bad(format!("reading the header: {e}")))?;
    if head[6] != 1 {
        r.read_exact(&mut head[10..])
            .map_err(|e| bad(format!("reading the header: {e}")))?;
    } else {
        head.truncate(10);
    }
    let (prefix, len) = npy::preamble(&head)
        .map_err(bad)?
        .ok_or_else(|| bad("a short header".into()))?;
    let mut h = vec![0u8; len];
    r.read_exact(&mut h)
        .map_err(|e| bad(format!("reading the header: {e}")))?;
    let h = npy::parse_header(&h).map_err(bad)?;
    if h.fortran_order {
        return Err(bad(
            "the array is in Fortran order; save it with np.save(path, np.ascontiguousarray(a))"
                .into(),
        ));
    }
    let elem = match h.dtype {
        npy::Dtype::F4 => Elem::F32,
        npy::Dtype::F8 => Elem::F64,
    };
    Ok((elem, h.rows, h.cols, (prefix + len) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let dims: Vec<u64> = shape
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(|d| d.trim().parse().unwrap_or(0))
            .collect();
        npy::encode(descr, false, dims[0], dims[1], data)
    }

    fn read_all(bytes: &[u8], ext: &str, width: usize) -> Result<Vec<f64>, CliError> {
        let dir = tempfile::tempdir().map_err(|e| CliError::Input(e.to_string()))?;
        let path = dir.path().join(format!("data.{ext}"));
        let mut f = File::create(&path).map_err(|e| CliError::Input(e.to_string()))?;
        f.write_all(bytes)
            .map_err(|e| CliError::Input(e.to_string()))?;
        let mut r = RowReader::open(&path, detect(&path, None)?, Shape::inputs(width), "test")?;
        let (mut all, mut batch) = (Vec::new(), Vec::new());
        while r.next_batch(2, &mut batch)? > 0 {
            all.extend_from_slice(&batch);
        }
        Ok(all)
    }

    #[test]
    fn every_format_reads_the_same_rows() {
        let want = vec![1.0, 2.0, 3.5, -4.0, 0.25, 6.0];
        let f32s: Vec<u8> = want
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect();
        let f64s: Vec<u8> = want.iter().flat_map(|v: &f64| v.to_le_bytes()).collect();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"a,b\n1,2\r\n\"3.5\",-4\n\n0.25,6\n".to_vec(), "csv"),
            (b"[1,2]\n{\"x\":[3.5,-4]}\n[0.25, 6]\n".to_vec(), "ndjson"),
            (f32s.clone(), "f32"),
            (npy("<f4", "(3, 2)", &f32s), "npy"),
            (npy("<f8", "(3, 2)", &f64s), "npy"),
        ];
        for (bytes, ext) in cases {
            let got = read_all(&bytes, ext, 2).unwrap_or_else(|e| panic!("{ext}: {e}"));
            assert_eq!(got.len(), want.len(), "{ext}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{ext}: {got:?}");
            }
        }
    }

    #[test]
    fn bad_rows_are_named_by_file_and_line() {
        let e = read_all(b"1,2\n3,4,5\n", "csv", 2)
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("data.csv:2: expected 2 values per row"), "{e}");
        let e = read_all(b"[1,2]\n[1,nan]\n", "ndjson", 2)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("data.ndjson:2")));
        let e = read_all(&npy("<f4", "(1, 3)", &[0; 12]), "npy", 2)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("3 columns")));
        let e = read_all(&npy("<i8", "(1, 2)", &[0; 16]), "npy", 2)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("<i8")));
        // The server's magnitude bound, checked before sending (1-based row and column).
        let e = read_all(b"x,y\n1,2\n1,-2e31\n", "csv", 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("data.csv:3: value out of range: x row 2, column 2"),
            "{e}"
        );
        let big: Vec<u8> = [0.0f32, 0.0, 0.0, 3e38]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = read_all(&big, "f32", 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("row 2: value out of range: x row 2, column 2"),
            "{e}"
        );
        let e = read_all(b"{\"x\": [1, 2], \"z\": 1}\n", "ndjson", 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("data.ndjson:1: unknown field `z`"), "{e}");
        let e = read_all(&[0; 12], "f32", 2).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("not a whole number of rows")));
    }
}
