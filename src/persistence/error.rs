//! Errors of the storage layer. Every I/O error carries the path and the operation that
//! failed (qdrant's `fs_err` habit), so a log line says which file to look at without a
//! backtrace.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in [`crate::persistence`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on a file or directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing, e.g. `"fsync"`, `"rename into place"`.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file's bytes fail a checksum or do not decode. The file is left untouched.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file was written by a format version this build does not read.
    #[error("{} has format version {version}; this build reads version {supported}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        version: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// Snapshots exist but none of them is readable. Each file and its problem is
    /// listed; nothing was deleted or renamed.
    #[error("no readable snapshot in {}: {}", dir.display(), list(problems))]
    NoValidSnapshot {
        /// The model directory.
        dir: PathBuf,
        /// Every snapshot file tried, newest first, with why it was rejected.
        problems: Vec<(PathBuf, String)>,
    },
    /// A snapshot (for example one uploaded for import) is malformed or inconsistent.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(#[from] FormatError),
    /// A log record to append is malformed (too large for one record).
    #[error("invalid log record: {reason}")]
    InvalidRecord {
        /// What is wrong with it.
        reason: String,
    },
    /// A log append whose stamp does not follow the log's last one.
    #[error("log {}: sequence {got} does not follow the last logged sequence {last}", path.display())]
    OutOfOrder {
        /// The log.
        path: PathBuf,
        /// The last sequence in the log.
        last: u64,
        /// The sequence offered.
        got: u64,
    },
    /// A write or fsync of the log failed earlier; what reached the disk is unknown, so
    /// the handle refuses further work. Reopen the log (restart) to recover from disk.
    #[error("log {} is unusable after an earlier failure: {reason}", path.display())]
    WalPoisoned {
        /// The log.
        path: PathBuf,
        /// The earlier failure.
        reason: String,
    },
    /// A model of this name already exists.
    #[error("model `{name}` already exists")]
    ModelExists {
        /// The model name.
        name: String,
    },
    /// No model of this name exists.
    #[error("model `{name}` not found")]
    ModelNotFound {
        /// The model name.
        name: String,
    },
}

/// Why bytes do not form a valid snapshot, independent of where they came from (a file
/// or an HTTP upload). [`FormatError::at`] attaches a path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Bad magic, checksum, length or structure.
    #[error("{0}")]
    Corrupt(String),
    /// Structurally valid bytes whose contents are inconsistent (shapes, ranges).
    #[error("{0}")]
    Inconsistent(String),
    /// A format version this build does not read.
    #[error("format version {version}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
}

impl FormatError {
    /// The same problem, found in the file `path`.
    pub fn at(self, path: impl Into<PathBuf>) -> Error {
        let path = path.into();
        match self {
            Self::Corrupt(reason) | Self::Inconsistent(reason) => Error::Corrupt { path, reason },
            Self::UnsupportedVersion { version, supported } => Error::UnsupportedVersion {
                path,
                version,
                supported,
            },
        }
    }
}

/// Shorthand for the storage layer's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the path and operation to an [`io::Error`].
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`Error::Io`].
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.into(),
            source,
        })
    }
}

fn list(problems: &[(PathBuf, String)]) -> impl fmt::Display + '_ {
    struct List<'a>(&'a [(PathBuf, String)]);
    impl fmt::Display for List<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (i, (path, why)) in self.0.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "{}: {why}", path.display())?;
            }
            Ok(())
        }
    }
    List(problems)
}
