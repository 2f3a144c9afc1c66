//! The few file-system moves that make a change durable and atomic: fsync a directory
//! after creating, renaming or removing an entry in it, and replace a file by writing a
//! temporary sibling, fsyncing it and renaming it into place.
//!
//! Why the directory fsync: on Linux a rename or create is only durable once the
//! directory itself is synced; without it a crash can forget a renamed file that was
//! already acknowledged (see the ext4 and PostgreSQL notes on `fsync` of directories).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{IoContext, Result};

/// fsyncs a directory so the entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .at("open directory", dir)?
        .sync_all()
        .at("fsync directory", dir)
}

/// fsyncs the directory containing `path`.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// A temporary name next to `path` that no other writer in this process uses:
/// `.<file name>.<pid>.<counter>.tmp`. The leading dot keeps it out of every listing
/// that looks for real files.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Whether a directory entry is one of [`temp_sibling`]'s names.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Replaces `path` atomically and durably with what `fill` writes: a temporary sibling
/// is written through a `BufWriter`, flushed, fsynced and renamed into place, then the
/// directory is fsynced. A crash leaves the old file or the new one, never a mix; a
/// stray temporary file is all a crash can add. On error the temporary file is removed.
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| -> Result<()> {
        let file = File::create(&tmp).at("create", &tmp)?;
        let mut out = BufWriter::with_capacity(1 << 16, &file);
        fill(&mut out).at("write", &tmp)?;
        out.flush().at("write", &tmp)?;
        drop(out);
        file.sync_all().at("fsync", &tmp)?;
        drop(file);
        fs::rename(&tmp, path).at("rename into place", path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp); // best effort; leftovers are ignored and cleaned later
    }
    result?;
    sync_parent(path)
}
