//! The upgrade from release 0.1: a model directory with one `wal.log` (log format v1)
//! and snapshots of format v1 becomes a one-partition model of this release.

use std::fs;
use std::path::Path;

use crate::model::config::ModelConfig;

use super::error::{Error, IoContext, Result};
use super::fsutil;
use super::record::{EncodedRecord, Stamp};
use super::recovery::{self, TailProblem};
use super::snapshot;
use super::store::{log_file, V1_LOG_FILE};

/// Migrates a release-0.1 model directory (`wal.log`, snapshot format v1) to one
/// partition: every v1 record is rewritten into `partition-0.log` with `local =
/// sequence` and a row clock counted from the log's first record; each v1 snapshot is
/// rewritten as v2 with the clock of the records it covers; then `wal.log` is removed.
/// Each step is atomic and the whole is repeated from `wal.log` if a crash interrupts
/// it, so it is safe to crash anywhere. Returns the v1 log's torn tail, if it had one.
///
/// # Errors
/// [`Error::Corrupt`] for a model of more than one partition or a damaged v1 file;
/// [`Error::Io`].
pub fn migrate_v1(dir: &Path, config: &ModelConfig) -> Result<Option<TailProblem>> {
    let v1 = dir.join(V1_LOG_FILE);
    if config.partitions != 1 {
        return Err(Error::Corrupt {
            path: v1,
            reason: format!(
                "a release-0.1 log in a model of {} partitions",
                config.partitions
            ),
        });
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&v1)
        .at("open", &v1)?;
    let len = file.metadata().at("stat", &v1)?.len();
    let header = recovery::read_header(&file, &v1, len)?;
    let scan = recovery::scan(&file, &v1, len, header)?;
    let tail = recovery::cut_tail(&file, &v1, len, &scan)?;
    // Row clock of each record: rows from the log's first record through it.
    let mut clock = 0u64;
    let mut clocks = Vec::with_capacity(scan.records.len());
    for (r, _) in &scan.records {
        clock += r.batch.rows() as u64;
        clocks.push((r.stamp.sequence, clock));
    }
    let clock_at = |sequence: u64| {
        clocks
            .iter()
            .take_while(|(s, _)| *s <= sequence)
            .last()
            .map_or(0, |(_, c)| *c)
    };
    let mut newest = 0;
    for (seq, path) in snapshot::list(dir)? {
        let bytes = fs::read(&path).at("read", &path)?;
        let Ok(mut snap) = snapshot::decode(&bytes) else {
            continue; // left for load_latest to report and quarantine
        };
        snap.partitions[0].accumulator.clock = clock_at(seq);
        snapshot::write(dir, &snap)?;
        newest = newest.max(seq);
    }
    let first_local = scan
        .records
        .first()
        .map_or(newest + 1, |(r, _)| r.stamp.sequence);
    let target = dir.join(log_file(0));
    let mut bytes = recovery::Header {
        version: recovery::LOG_VERSION,
        partition: 0,
        first_local,
    }
    .encode()
    .to_vec();
    for ((r, _), (_, c)) in scan.records.iter().zip(&clocks) {
        let mut e = EncodedRecord::new(&r.batch)?;
        e.stamp(Stamp {
            sequence: r.stamp.sequence,
            local: r.stamp.sequence,
            clock: *c,
        });
        bytes.extend_from_slice(e.as_bytes());
    }
    fsutil::write_atomic(&target, |w| std::io::Write::write_all(w, &bytes))?;
    fs::remove_file(&v1).at("remove migrated log", &v1)?;
    fsutil::sync_dir(dir)?;
    tracing::info!(dir = %dir.display(), records = clocks.len(), "migrated a release-0.1 model to one partition");
    Ok(tail)
}
