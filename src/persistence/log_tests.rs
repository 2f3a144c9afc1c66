//! Tests of the local partition log: round trips, torn and corrupt tails at every
//! offset, ordering, group commit under eight threads, crash-safe rewrites.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Mutex;

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;
use crate::pca::{Accumulator, Batch, BatchData, Shape};
use crate::persistence::recovery::{TailReason, HEADER_LEN};

/// A deterministic batch for `seq`: f32 on odd, f64 on even sequences, targets on
/// every third, with awkward values (signed zero, subnormals) mixed in.
fn batch(seq: u64, dim: usize) -> Batch {
    let mut rng = StdRng::seed_from_u64(seq);
    let rows = 1 + (seq % 3) as usize;
    let target_dim = seq.is_multiple_of(3).then_some(2);
    let mut x: Vec<f64> = (0..rows * dim).map(|_| rng.gen_range(-1e3..1e3)).collect();
    x[0] = -0.0;
    if x.len() > 1 {
        x[1] = f64::MIN_POSITIVE / 3.0;
    }
    let y: Option<Vec<f64>> =
        target_dim.map(|m| (0..rows * m).map(|_| rng.gen::<f64>() - 0.5).collect());
    let data = if seq % 2 == 1 {
        BatchData::F32 {
            x: x.iter().map(|v| *v as f32).collect(),
            y: y.map(|y| y.iter().map(|v| *v as f32).collect()),
        }
    } else {
        BatchData::F64 { x, y }
    };
    Batch::new(Shape { dim, target_dim }, data).unwrap()
}

/// The record of batch `seq`: local index = sequence, clock = 10·sequence.
fn record(seq: u64, dim: usize) -> LogRecord {
    LogRecord {
        stamp: Stamp {
            sequence: seq,
            local: seq,
            clock: 10 * seq,
        },
        batch: batch(seq, dim),
    }
}

fn append(wal: &Wal, r: &LogRecord) -> Result<()> {
    let mut e = EncodedRecord::new(&r.batch).unwrap();
    wal.append(&mut e, r.stamp)
}

fn write(wal: &Wal, r: &LogRecord) -> Result<Ticket> {
    let mut e = EncodedRecord::new(&r.batch).unwrap();
    wal.write(&mut e, r.stamp)
}

fn new_log(path: &Path, sync: SyncMode) -> Wal {
    Wal::create_file(path, 0, 1).unwrap();
    Wal::open(path, 0, sync).unwrap().0
}

/// Bit patterns of a record, so comparisons are exact (and NaN-safe).
fn bits(r: &LogRecord) -> (Stamp, Vec<u64>) {
    let values = match r.batch.data() {
        BatchData::F32 { x, y } => x
            .iter()
            .chain(y.iter().flatten())
            .map(|v| u64::from(v.to_bits()) | 1 << 40)
            .collect(),
        BatchData::F64 { x, y } => x
            .iter()
            .chain(y.iter().flatten())
            .map(|v| v.to_bits())
            .collect(),
    };
    (r.stamp, values)
}

fn assert_same(got: &[LogRecord], want: &[LogRecord]) {
    assert_eq!(got.len(), want.len(), "record count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(bits(g), bits(w), "record {}", w.stamp.sequence);
    }
}

/// Writes records 1..=n and returns them with the file length after each.
fn write_log(path: &Path, n: u64, dim: usize) -> (Vec<LogRecord>, Vec<u64>) {
    let wal = new_log(path, SyncMode::Never);
    let mut ends = vec![wal.size_bytes().unwrap()];
    let records: Vec<_> = (1..=n).map(|s| record(s, dim)).collect();
    for r in &records {
        append(&wal, r).unwrap();
        ends.push(wal.size_bytes().unwrap());
    }
    (records, ends)
}

#[test]
fn records_round_trip_bit_exactly_through_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let (records, ends) = write_log(&path, 7, 5);

    let (wal, recovery) = Wal::open(&path, 0, SyncMode::Always).unwrap();

    assert_same(&recovery.records, &records);
    assert_eq!(recovery.torn_tail, None);
    assert_eq!(wal.last_stamp().unwrap().map(|s| s.sequence), Some(7));
    assert_eq!(wal.size_bytes().unwrap(), *ends.last().unwrap());
    assert_eq!(fs::metadata(&path).unwrap().len(), *ends.last().unwrap());
}

#[test]
fn a_log_cut_anywhere_inside_the_last_record_recovers_exactly_the_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.log");
    let (records, ends) = write_log(&original, 3, 3);
    let (good_end, full_end) = (ends[2], ends[3]);

    for cut in good_end..full_end {
        let path = dir.path().join(format!("cut-{cut}.log"));
        fs::copy(&original, &path).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();

        let (wal, recovery) = Wal::open(&path, 0, SyncMode::Always).unwrap();

        assert_same(&recovery.records, &records[..2]);
        let tail = recovery.torn_tail.clone();
        if cut == good_end {
            assert_eq!(tail, None, "cut at a record boundary is not torn");
        } else {
            let tail = tail.unwrap();
            assert_eq!(
                (tail.offset, tail.discarded),
                (good_end, cut - good_end),
                "cut {cut}"
            );
            assert!(
                matches!(tail.reason, TailReason::Short { .. }),
                "cut {cut}: {}",
                tail.reason
            );
            let saved = fs::read(&tail.saved_to).unwrap();
            assert_eq!(saved.len() as u64, cut - good_end, "torn bytes kept aside");
            assert!(tail.saved_to.to_string_lossy().contains(".torn-"));
        }
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            good_end,
            "file truncated to last whole record"
        );

        // Appends after recovery land right after the last whole record.
        let next = record(3, 3);
        append(&wal, &next).unwrap();
        drop(wal);
        let (_, again) = Wal::open(&path, 0, SyncMode::Always).unwrap();
        assert_same(&again.records, &records);
        assert_eq!(again.torn_tail, None);
    }
}

#[test]
fn a_flipped_byte_anywhere_in_the_last_record_is_detected_and_recovery_stops_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.log");
    let (records, ends) = write_log(&original, 3, 3);
    let bytes = fs::read(&original).unwrap();
    let (good_end, full_end) = (ends[2], ends[3]);

    for pos in good_end..full_end {
        let path = dir.path().join(format!("flip-{pos}.log"));
        let mut damaged = bytes.clone();
        damaged[pos as usize] ^= 0x5a;
        fs::write(&path, &damaged).unwrap();

        let (wal, recovery) = Wal::open(&path, 0, SyncMode::Always).unwrap();

        assert_same(&recovery.records, &records[..2]);
        let tail = recovery.torn_tail.clone().unwrap();
        assert_eq!(tail.offset, good_end, "byte {pos}");
        assert_eq!(fs::metadata(&path).unwrap().len(), good_end);
        // A length grown past the end of the file looks exactly like a torn write.
        if matches!(tail.reason, TailReason::Short { .. }) {
            assert!(pos < good_end + 4, "byte {pos}: {}", tail.reason);
        }
        assert_eq!(
            fs::read(&tail.saved_to).unwrap(),
            &damaged[good_end as usize..],
            "discarded bytes kept aside"
        );

        append(&wal, &record(3, 3)).unwrap();
        drop(wal);
        let (_, again) = Wal::open(&path, 0, SyncMode::Always).unwrap();
        assert_same(&again.records, &records);
    }
}

#[test]
fn a_second_corruption_at_the_same_offset_keeps_the_first_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let (_, ends) = write_log(&path, 2, 2);
    let damage = |path: &Path| {
        let mut b = fs::read(path).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(path, b).unwrap();
    };

    damage(&path);
    let (wal, first) = Wal::open(&path, 0, SyncMode::Always).unwrap();
    append(&wal, &record(2, 2)).unwrap();
    drop(wal);
    damage(&path);
    let (_, second) = Wal::open(&path, 0, SyncMode::Always).unwrap();

    let (a, b) = (first.torn_tail.unwrap(), second.torn_tail.unwrap());
    assert_eq!((a.offset, b.offset), (ends[1], ends[1]));
    assert_ne!(a.saved_to, b.saved_to);
    assert!(a.saved_to.exists() && b.saved_to.exists());
}

#[test]
fn an_out_of_order_sequence_is_rejected_and_leaves_the_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let (records, ends) = write_log(&path, 3, 2);
    let (wal, _) = Wal::open(&path, 0, SyncMode::Always).unwrap();

    let err = append(&wal, &record(3, 2)).unwrap_err();

    assert!(
        matches!(
            err,
            Error::OutOfOrder {
                last: 3,
                got: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(wal.size_bytes().unwrap(), ends[3]);
    drop(wal);
    assert_same(
        &Wal::open(&path, 0, SyncMode::Always).unwrap().1.records,
        &records,
    );
}

#[test]
fn stamps_out_of_order_are_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let wal = new_log(&dir.path().join("p.log"), SyncMode::Always);
    append(&wal, &record(1, 2)).unwrap();
    let end = wal.size_bytes().unwrap();
    let mut skip_local = record(2, 2);
    skip_local.stamp.local = 3;
    let mut same_sequence = record(2, 2);
    same_sequence.stamp.sequence = 1;
    let mut clock_back = record(2, 2);
    clock_back.stamp.clock = 5;

    for bad in [skip_local, same_sequence, clock_back] {
        let err = append(&wal, &bad).unwrap_err();
        assert!(matches!(err, Error::OutOfOrder { .. }), "{err}");
    }
    assert_eq!(wal.size_bytes().unwrap(), end);
    append(&wal, &record(2, 2)).unwrap();
}

#[test]
fn a_log_that_starts_after_a_rewrite_expects_its_first_local_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    Wal::create_file(&path, 3, 8).unwrap();
    let (wal, rec) = Wal::open(&path, 3, SyncMode::Never).unwrap();
    assert_eq!(rec.first_local, 8);
    assert!(
        append(&wal, &record(7, 2)).is_err(),
        "local 7 is before the start"
    );
    let mut r = record(9, 2);
    r.stamp.local = 8;
    append(&wal, &r).unwrap();
    drop(wal);
    let err = Wal::open(&path, 2, SyncMode::Never).unwrap_err();
    assert!(err.to_string().contains("partition 3"), "{err}");
    assert_same(
        &Wal::open(&path, 3, SyncMode::Never).unwrap().1.records,
        &[r],
    );
}

#[test]
fn concurrent_appends_from_eight_threads_all_land_once_and_share_fsyncs() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let wal = new_log(&path, SyncMode::Always);
    // The service's pattern: stamp + write under the partition lock, wait outside it.
    let model_lock = Mutex::new(0u64);

    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..PER_THREAD {
                    let ticket = {
                        let mut last = model_lock.lock().unwrap();
                        *last += 1;
                        write(&wal, &record(*last, 4)).unwrap()
                    };
                    wal.wait(ticket).unwrap();
                }
            });
        }
    });

    let appends = THREADS * PER_THREAD;
    let fsyncs = wal.fsync_count();
    eprintln!("group commit: {fsyncs} fsyncs for {appends} appends from {THREADS} threads");
    assert!(fsyncs > 0, "SyncMode::Always must fsync");
    assert!(
        fsyncs < appends,
        "group commit should share fsyncs: {fsyncs} for {appends} appends"
    );
    drop(wal);
    let (_, recovery) = Wal::open(&path, 0, SyncMode::Always).unwrap();
    let want: Vec<_> = (1..=appends).map(|s| record(s, 4)).collect();
    assert_same(&recovery.records, &want);
    assert_eq!(recovery.torn_tail, None);
}

#[test]
fn truncating_while_eight_threads_append_loses_nothing_after_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let wal = new_log(&path, SyncMode::Always);
    let model_lock = Mutex::new(0u64);
    let mut cut = 0;

    std::thread::scope(|s| {
        let appenders: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..25 {
                        let ticket = {
                            let mut last = model_lock.lock().unwrap();
                            *last += 1;
                            write(&wal, &record(*last, 3)).unwrap()
                        };
                        wal.wait(ticket).unwrap();
                    }
                })
            })
            .collect();
        while !appenders.iter().all(|h| h.is_finished()) {
            let last = *model_lock.lock().unwrap();
            cut = cut.max(last.saturating_sub(10));
            wal.truncate_through(cut).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });

    drop(wal);
    let (_, recovery) = Wal::open(&path, 0, SyncMode::Always).unwrap();
    let want: Vec<_> = (cut + 1..=200).map(|s| record(s, 3)).collect();
    assert_same(&recovery.records, &want);
    assert_eq!(recovery.torn_tail, None);
}

#[test]
fn append_alone_returns_only_after_its_own_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let wal = new_log(&dir.path().join("p.log"), SyncMode::Always);

    append(&wal, &record(1, 2)).unwrap();
    append(&wal, &record(2, 2)).unwrap();

    assert_eq!(wal.fsync_count(), 2, "one uncontended append, one fsync");
}

#[test]
fn sync_mode_never_does_not_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let wal = new_log(&dir.path().join("p.log"), SyncMode::Never);

    for s in 1..=5 {
        append(&wal, &record(s, 2)).unwrap();
    }

    assert_eq!(wal.fsync_count(), 0);
}

#[test]
fn truncate_through_drops_covered_records_keeps_later_ones_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let (records, _) = write_log(&path, 10, 3);
    let (wal, _) = Wal::open(&path, 0, SyncMode::Always).unwrap();

    assert_eq!(wal.truncate_through(6).unwrap(), 6);
    assert_eq!(wal.truncate_through(6).unwrap(), 0, "idempotent");
    assert_eq!(wal.len().unwrap(), 4);
    append(&wal, &record(11, 3)).unwrap();
    drop(wal);

    let (wal, recovery) = Wal::open(&path, 0, SyncMode::Always).unwrap();
    let mut want = records[6..].to_vec();
    want.push(record(11, 3));
    assert_same(&recovery.records, &want);

    assert_eq!(wal.truncate_through(100).unwrap(), 5);
    assert!(wal.is_empty().unwrap());
    assert_eq!(wal.size_bytes().unwrap(), HEADER_LEN);
    let err = append(&wal, &record(11, 3)).unwrap_err();
    assert!(
        matches!(err, Error::OutOfOrder { .. }),
        "order survives an empty log: {err}"
    );
    append(&wal, &record(12, 3)).unwrap();
    drop(wal);
    assert_same(
        &Wal::open(&path, 0, SyncMode::Always).unwrap().1.records,
        &[record(12, 3)],
    );
    let strays: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "p.log")
        .collect();
    assert!(strays.is_empty(), "no temporary files left: {strays:?}");
}

#[test]
fn a_file_that_is_not_a_wal_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    fs::write(&path, b"hello, this is not a log at all").unwrap();

    let err = Wal::open(&path, 0, SyncMode::Always).unwrap_err();

    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("p.log"),
        "error names the file: {err}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"hello, this is not a log at all");
}

#[test]
fn a_newer_log_version_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let mut h = [0u8; 12];
    h[..8].copy_from_slice(crate::persistence::recovery::MAGIC);
    h[8..].copy_from_slice(&7u32.to_le_bytes());
    fs::write(&path, h).unwrap();

    let err = Wal::open(&path, 0, SyncMode::Always).unwrap_err();

    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                version: 7,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_empty_file_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    fs::write(&path, b"").unwrap();
    let err = Wal::open(&path, 0, SyncMode::Always).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("shorter than a log header"),
        "{err}"
    );
}

#[test]
fn replayed_records_feed_the_accumulator_the_same_numbers() {
    let mut live = Accumulator::new(3, None, None).unwrap();
    let mut replayed = live.clone();
    let batch = Batch::new(
        Shape::inputs(3),
        BatchData::F32 {
            x: vec![0.1, 0.2, 0.3, 1.5, -2.5, 3.25],
            y: None,
        },
    )
    .unwrap();
    live.fold(&batch, 2, &mut Vec::new()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.log");
    let wal = new_log(&path, SyncMode::Always);
    let rec = LogRecord {
        stamp: Stamp {
            sequence: 1,
            local: 1,
            clock: 2,
        },
        batch,
    };
    append(&wal, &rec).unwrap();
    drop(wal);
    let (_, recovery) = Wal::open(&path, 0, SyncMode::Always).unwrap();
    let r = &recovery.records[0];
    replayed
        .fold(&r.batch, r.stamp.clock, &mut Vec::new())
        .unwrap();

    assert_eq!(live, replayed);
    assert_eq!(r.batch.rows(), 2);
}
