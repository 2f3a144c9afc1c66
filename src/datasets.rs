//! Test and benchmark data sets; not used by the service.
//!
//! One reader for IDX files (the format of MNIST and Fashion-MNIST, plain or
//! gzip-compressed), which the numerical tests, `benches/pca.rs` and `examples/load.rs`
//! share, and the two data sets they use:
//!
//! - [`digits`]: the 1 797 handwritten 8 × 8 digits shipped in `tests/data/` (n = 64,
//!   values 0–16; provenance and licence in `tests/data/README.md`). Always present.
//! - [`fashion_mnist_test`], [`fashion_mnist_train`]: Fashion-MNIST (n = 784, values
//!   0–255) from Debian's `dataset-fashion-mnist`, which may be absent. Absent gives
//!   `Ok(None)` (the caller skips), unless `STREAMPCA_REQUIRE_DATASETS=1`, which makes
//!   absence an error naming the package ([`DatasetError::Missing`]).
//!
//! Every check returns an error instead of panicking: the magic number, the element
//! type, the rank, and the length against the dimensions (a short file and trailing
//! bytes are both errors). Memory grows only with the bytes actually read, never with
//! what a header claims.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The environment variable that turns an absent optional data set into a failure when
/// set to `1` (`.ci/run` sets it).
pub const REQUIRE_DATASETS_ENV: &str = "STREAMPCA_REQUIRE_DATASETS";

/// Where Debian's `dataset-fashion-mnist` installs its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Overrides [`FASHION_MNIST_DIR`] (a copy elsewhere, or a directory that does not exist
/// to run the tests as on a machine without the package).
pub const FASHION_MNIST_DIR_ENV: &str = "STREAMPCA_FASHION_MNIST_DIR";

/// The Debian package that provides Fashion-MNIST.
pub const FASHION_MNIST_PACKAGE: &str = "dataset-fashion-mnist";

/// The digits shipped with the repository (an absolute path fixed at compile time).
pub const DIGITS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/digits-images-idx3-ubyte.gz"
);

/// IDX element type code of unsigned bytes, the only one read here.
const TYPE_U8: u8 = 0x08;

/// The first two bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What is wrong with a data set file.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Opening, reading or decompressing failed (a corrupt or cut gzip stream is
    /// reported here by the decoder).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The bytes are not the IDX file they should be.
    #[error("{}: {problem}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: IdxProblem,
    },
    /// An optional data set is absent while `STREAMPCA_REQUIRE_DATASETS=1`.
    #[error(
        "{} is missing: install Debian's `{package}` (apt-get install {package}); \
         {REQUIRE_DATASETS_ENV}=1 makes its absence a failure",
        path.display()
    )]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
        /// The Debian package that provides it.
        package: &'static str,
    },
}

/// A malformed IDX file, or one that is not the data set it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdxProblem {
    /// Fewer bytes than the header needs (4 magic bytes and 4 per dimension).
    #[error("{found} bytes where the header needs {expected}")]
    ShortHeader {
        /// Header bytes needed.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The first two bytes are not zero.
    #[error("not an IDX file: the magic number is {found:02x?}, expected [00, 00, type, rank]")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// An element type other than unsigned bytes (0x08).
    #[error("element type 0x{code:02x} is not unsigned bytes (0x08), the only type read here")]
    UnsupportedType {
        /// The type byte.
        code: u8,
    },
    /// A rank of zero.
    #[error("rank 0: an IDX file needs at least one dimension")]
    NoDimensions,
    /// The product of the dimensions does not fit in 64 bits.
    #[error("dimensions {dims:?} overflow a 64-bit byte count")]
    TooLarge {
        /// The dimensions in the header.
        dims: Vec<u64>,
    },
    /// The data end before the dimensions say they should.
    #[error("{found} data bytes where the dimensions {dims:?} need {expected}")]
    Truncated {
        /// The dimensions in the header.
        dims: Vec<usize>,
        /// Data bytes needed.
        expected: u64,
        /// Data bytes present.
        found: u64,
    },
    /// More bytes than the dimensions account for.
    #[error("more than the {expected} data bytes the dimensions {dims:?} need")]
    TrailingBytes {
        /// The dimensions in the header.
        dims: Vec<usize>,
        /// Data bytes needed.
        expected: u64,
    },
    /// Not a set of images: fewer than two dimensions, or a zero one.
    #[error(
        "dimensions {dims:?} are not a set of images (a count, then at least one non-zero \
         pixel dimension)"
    )]
    NotImages {
        /// The dimensions in the header.
        dims: Vec<usize>,
    },
    /// A well-formed file with the wrong shape for the data set it should hold.
    #[error("{found_rows} images of {found_dim} pixels, expected {expected}")]
    WrongShape {
        /// What was expected, e.g. "1797 images of 64 pixels".
        expected: String,
        /// Images in the file.
        found_rows: usize,
        /// Pixels per image in the file.
        found_dim: usize,
    },
}

/// The contents of an IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first (images: count, rows, columns).
    pub dims: Vec<usize>,
    /// The elements in row-major order (the last dimension varies fastest);
    /// `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// A set of images as rows of pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Number of images N.
    pub rows: usize,
    /// Pixels per image n (the product of the image dimensions, 784 for 28 × 28).
    pub dim: usize,
    /// N × n pixels, row-major (image after image).
    pub pixels: Vec<u8>,
}

impl Images {
    /// The N × n pixels as row-major `f32`, the form producers send.
    pub fn to_f32(&self) -> Vec<f32> {
        self.pixels.iter().map(|&p| f32::from(p)).collect()
    }

    /// The N × n pixels as row-major `f64`.
    pub fn to_f64(&self) -> Vec<f64> {
        self.pixels.iter().map(|&p| f64::from(p)).collect()
    }

    /// Reads the images of an IDX file (rank ≥ 2: count, then the image dimensions).
    ///
    /// # Errors
    /// Those of [`read_idx`]; [`IdxProblem::NotImages`] for rank 1 or a zero dimension.
    pub fn read(path: &Path) -> Result<Self, DatasetError> {
        let idx = read_idx(path)?;
        let format = |problem| DatasetError::Format {
            path: path.to_path_buf(),
            problem,
        };
        let [rows, image @ ..] = idx.dims.as_slice() else {
            return Err(format(IdxProblem::NoDimensions));
        };
        let dim: usize = image.iter().product();
        if image.is_empty() || *rows == 0 || dim == 0 {
            return Err(format(IdxProblem::NotImages { dims: idx.dims }));
        }
        Ok(Self {
            rows: *rows,
            dim,
            pixels: idx.data,
        })
    }

    /// Checks the shape a data set should have.
    fn expect(self, path: &Path, rows: Option<usize>, dim: usize) -> Result<Self, DatasetError> {
        if rows.is_some_and(|r| r != self.rows) || self.dim != dim {
            let expected = match rows {
                Some(r) => format!("{r} images of {dim} pixels"),
                None => format!("images of {dim} pixels"),
            };
            return Err(DatasetError::Format {
                path: path.to_path_buf(),
                problem: IdxProblem::WrongShape {
                    expected,
                    found_rows: self.rows,
                    found_dim: self.dim,
                },
            });
        }
        Ok(self)
    }
}

/// Reads an IDX file of unsigned bytes, gzip-compressed or not (told apart by the gzip
/// magic number, not by the name).
///
/// # Errors
/// [`DatasetError::Io`] if the file cannot be opened or read or its gzip stream is
/// corrupt or cut; [`DatasetError::Format`] for a short header, a wrong magic number, an
/// element type other than `u8`, rank 0, dimensions whose product overflows, or a
/// length that does not match the dimensions.
pub fn read_idx(path: &Path) -> Result<Idx, DatasetError> {
    let io_err = |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io_err)?);
    let gzipped = file.fill_buf().map_err(io_err)?.starts_with(&GZIP_MAGIC);
    let parsed = if gzipped {
        parse_idx(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        parse_idx(file)
    };
    match parsed {
        Ok(idx) => Ok(idx),
        Err(Parse::Io(source)) => Err(io_err(source)),
        Err(Parse::Format(problem)) => Err(DatasetError::Format {
            path: path.to_path_buf(),
            problem,
        }),
    }
}

enum Parse {
    Io(io::Error),
    Format(IdxProblem),
}

impl From<io::Error> for Parse {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads into `buf` until it is full or the stream ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn parse_idx(mut r: impl Read) -> Result<Idx, Parse> {
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut r, &mut magic)?;
    if got < 4 {
        return Err(Parse::Format(IdxProblem::ShortHeader {
            expected: 4,
            found: got,
        }));
    }
    if magic[..2] != [0, 0] {
        return Err(Parse::Format(IdxProblem::BadMagic { found: magic }));
    }
    if magic[2] != TYPE_U8 {
        return Err(Parse::Format(IdxProblem::UnsupportedType {
            code: magic[2],
        }));
    }
    let rank = usize::from(magic[3]);
    if rank == 0 {
        return Err(Parse::Format(IdxProblem::NoDimensions));
    }
    let mut raw = vec![0u8; 4 * rank];
    let got = read_up_to(&mut r, &mut raw)?;
    if got < raw.len() {
        return Err(Parse::Format(IdxProblem::ShortHeader {
            expected: 4 + raw.len(),
            found: 4 + got,
        }));
    }
    let dims64: Vec<u64> = raw
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let expected = dims64
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&e| usize::try_from(e).is_ok())
        .ok_or_else(|| {
            Parse::Format(IdxProblem::TooLarge {
                dims: dims64.clone(),
            })
        })?;
    // Each dimension fits in usize because their product does.
    let dims: Vec<usize> = dims64.iter().map(|&d| d as usize).collect();
    // One byte more than needed, to see trailing bytes; the buffer grows only with what
    // is actually read.
    let mut data = Vec::new();
    r.take(expected.saturating_add(1)).read_to_end(&mut data)?;
    let found = data.len() as u64;
    if found < expected {
        return Err(Parse::Format(IdxProblem::Truncated {
            dims,
            expected,
            found,
        }));
    }
    if found > expected {
        return Err(Parse::Format(IdxProblem::TrailingBytes { dims, expected }));
    }
    Ok(Idx { dims, data })
}

/// Whether `STREAMPCA_REQUIRE_DATASETS=1` is set.
pub fn datasets_required() -> bool {
    std::env::var_os(REQUIRE_DATASETS_ENV).is_some_and(|v| v == "1")
}

/// Reads images that an optional package provides: `Ok(None)` when `path` does not
/// exist and `required` is false.
///
/// # Errors
/// [`DatasetError::Missing`] (naming `package`) when it does not exist and `required`
/// is true; otherwise those of [`Images::read`], also when `required` is false (a file
/// that is present but broken is never skipped).
pub fn optional_images(
    path: &Path,
    package: &'static str,
    required: bool,
) -> Result<Option<Images>, DatasetError> {
    match std::fs::metadata(path) {
        Ok(_) => Images::read(path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if required {
                Err(DatasetError::Missing {
                    path: path.to_path_buf(),
                    package,
                })
            } else {
                Ok(None)
            }
        }
        Err(source) => Err(DatasetError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The Fashion-MNIST directory: `$STREAMPCA_FASHION_MNIST_DIR`, else
/// [`FASHION_MNIST_DIR`].
pub fn fashion_mnist_dir() -> PathBuf {
    std::env::var_os(FASHION_MNIST_DIR_ENV)
        .map_or_else(|| PathBuf::from(FASHION_MNIST_DIR), PathBuf::from)
}

fn fashion_mnist(file: &str, rows: usize) -> Result<Option<Images>, DatasetError> {
    let path = fashion_mnist_dir().join(file);
    optional_images(&path, FASHION_MNIST_PACKAGE, datasets_required())?
        .map(|images| images.expect(&path, Some(rows), 784))
        .transpose()
}

/// Fashion-MNIST's 10 000 test images, 10 000 × 784 pixels in 0–255.
///
/// `Ok(None)` when the package is not installed, unless `STREAMPCA_REQUIRE_DATASETS=1`.
///
/// # Errors
/// Those of [`optional_images`]; [`IdxProblem::WrongShape`] if the file is not
/// 10 000 × 784.
pub fn fashion_mnist_test() -> Result<Option<Images>, DatasetError> {
    fashion_mnist("t10k-images-idx3-ubyte.gz", 10_000)
}

/// Fashion-MNIST's 60 000 training images, 60 000 × 784 pixels in 0–255.
///
/// `Ok(None)` when the package is not installed, unless `STREAMPCA_REQUIRE_DATASETS=1`.
///
/// # Errors
/// Those of [`optional_images`]; [`IdxProblem::WrongShape`] if the file is not
/// 60 000 × 784.
pub fn fashion_mnist_train() -> Result<Option<Images>, DatasetError> {
    fashion_mnist("train-images-idx3-ubyte.gz", 60_000)
}

/// The handwritten digits shipped in `tests/data/`: 1 797 × 64 pixels in 0–16.
///
/// # Errors
/// Those of [`Images::read`] (the file is part of the repository, so any error means
/// a broken checkout); [`IdxProblem::WrongShape`] if it is not 1 797 × 64.
pub fn digits() -> Result<Images, DatasetError> {
    let path = Path::new(DIGITS_PATH);
    Images::read(path)?.expect(path, Some(1797), 64)
}

#[cfg(test)]
mod tests;
