//! Tests of the snapshot format: bit-exact round trips, every flipped byte and
//! truncation detected, inconsistent contents refused, files, fallback and pruning.

#![allow(clippy::unwrap_used, reason = "tests")]

use super::*;
use nalgebra::DMatrix;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::fs::OpenOptions;

fn config(dim: usize, target_dim: Option<usize>, half_life: Option<f64>) -> ModelConfig {
    ModelConfig {
        name: ModelName::new("m-1").unwrap(),
        dim,
        components: 2.min(target_dim.unwrap_or(dim)),
        target_dim,
        half_life,
        optimizer: OptimizerKind::Subspace,
        tolerance: 1e-6,
        partitions: 2,
        standardize: false,
        alpha: 0.01,
    }
}

/// A snapshot of two partitions, each a real accumulator fed random batches (the
/// first up to `sequence`), with a trainer state holding some matrices and not
/// others.
fn sample(
    dim: usize,
    target_dim: Option<usize>,
    half_life: Option<f64>,
    sequence: u64,
) -> Snapshot {
    let mut rng = StdRng::seed_from_u64(sequence ^ dim as u64);
    let mut partitions = Vec::new();
    for k in 0..2u64 {
        let mut acc = Accumulator::new(dim, target_dim, half_life).unwrap();
        for _ in 0..3 {
            let rows = 5;
            let x: Vec<f64> = (0..rows * dim)
                .map(|_| rng.gen_range(-3.0..3.0) + 10.0)
                .collect();
            let y: Option<Vec<f64>> =
                target_dim.map(|m| (0..rows * m).map(|_| rng.gen::<f64>()).collect());
            acc.update(&x, y.as_deref()).unwrap();
        }
        partitions.push(PartitionState {
            position: Position {
                sequence: sequence - k,
                local: 3,
                batches: 3,
            },
            accumulator: acc.to_parts(),
        });
    }
    let mut random = |r, c| DMatrix::from_fn(r, c, |_, _| rng.gen::<f64>() - 0.5);
    let trainer = TrainerState {
        q: Some(random(dim, 2)),
        a: None,
        b: Some(random(2, dim)),
        previous: Some(random(dim, 1)),
        total_steps: 42,
    };
    Snapshot {
        config: config(dim, target_dim, half_life),
        partitions,
        trainer,
    }
}

fn f64_bits<'a>(it: impl Iterator<Item = &'a f64>) -> Vec<u64> {
    it.map(|v| v.to_bits()).collect()
}

/// Every f64 in the snapshot, as bits, in a fixed order.
fn all_bits(s: &Snapshot) -> Vec<u64> {
    let t = &s.trainer;
    let mut v = vec![s.config.tolerance.to_bits()];
    for p in &s.partitions {
        let a = &p.accumulator;
        v.extend([a.count.to_bits(), a.tr_syy.to_bits(), a.clock]);
        v.extend(f64_bits(a.mean_x.iter()));
        v.extend(f64_bits(a.sxx.iter()));
        v.extend(f64_bits(a.mean_y.iter().flatten()));
        v.extend(f64_bits(a.syx.iter().flatten()));
    }
    for m in [&t.q, &t.a, &t.b, &t.previous] {
        v.push(
            m.as_ref()
                .map_or(u64::MAX, |m| (m.nrows() * 1000 + m.ncols()) as u64),
        );
        v.extend(f64_bits(m.iter().flatten()));
    }
    v
}

/// Sets the version field and re-seals the checksum, as a future build would write.
fn with_version(mut bytes: Vec<u8>, version: u32) -> Vec<u8> {
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let n = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn encode_then_decode_is_bit_exact() {
    for (target_dim, half_life) in [(None, None), (Some(3), Some(250.5)), (None, Some(1e-3))] {
        let mut s = sample(6, target_dim, half_life, 17);
        let a = &mut s.partitions[1].accumulator;
        a.sxx[(0, 5)] = -0.0; // upper triangle is not authoritative, but kept
        a.sxx[(1, 5)] = f64::MIN_POSITIVE / 7.0;

        let back = decode(&encode(&s).unwrap()).unwrap();

        assert_eq!(back, s);
        assert_eq!(all_bits(&back), all_bits(&s));
    }
}

#[test]
fn every_flipped_byte_and_every_truncation_is_detected() {
    let bytes = encode(&sample(3, None, None, 5)).unwrap();

    for pos in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[pos] ^= 0x10;
        assert!(
            decode(&damaged).is_err(),
            "flip at byte {pos} of {} went unnoticed",
            bytes.len()
        );
    }
    for len in 0..bytes.len() {
        assert!(
            decode(&bytes[..len]).is_err(),
            "truncation to {len} bytes went unnoticed"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&longer).is_err(), "trailing garbage went unnoticed");
}

#[test]
fn an_unknown_version_is_a_clear_error() {
    let bytes = with_version(encode(&sample(3, None, None, 5)).unwrap(), 3);

    let err = decode(&bytes).unwrap_err();

    assert_eq!(
        err,
        FormatError::UnsupportedVersion {
            version: 3,
            supported: 2
        }
    );
    assert!(err.to_string().contains("format version 3"), "{err}");
}

#[test]
fn an_inconsistent_snapshot_is_rejected_even_with_a_good_checksum() {
    let mut wrong_dim = sample(4, None, None, 5);
    wrong_dim.config.dim = 5;
    let mut bad_shape = sample(4, None, None, 5);
    bad_shape.partitions[1].accumulator.sxx = DMatrix::zeros(4, 3);
    let mut not_finite = sample(4, None, None, 5);
    not_finite.partitions[0].accumulator.mean_x[2] = f64::NAN;
    let mut huge_diagonal = sample(4, None, None, 5);
    huge_diagonal.partitions[0].accumulator.sxx[(1, 1)] = 1e300;
    let mut negative_diagonal = sample(4, None, None, 5);
    negative_diagonal.partitions[0].accumulator.sxx[(2, 2)] = -1.0;
    let mut far_sequence = sample(4, None, None, 5);
    far_sequence.partitions[0].position.sequence = u64::MAX - 1;
    let mut bad_position = sample(4, None, None, 5);
    bad_position.partitions[1].position.local = 99;

    for s in [
        wrong_dim,
        bad_shape,
        not_finite,
        huge_diagonal,
        negative_diagonal,
        far_sequence,
        bad_position,
    ] {
        let err = decode(&encode(&s).unwrap()).unwrap_err();
        assert!(matches!(err, FormatError::Inconsistent(_)), "{err}");
    }
    // A partition count that disagrees with the states is refused too.
    let mut s = sample(4, None, None, 5);
    s.partitions.pop();
    assert!(decode(&encode(&s).unwrap()).is_err());
}

#[test]
fn the_config_check_runs_before_any_matrix_is_read() {
    let mut s = sample(4, None, None, 5);
    // Claim a huge dimension with matrices of the real size: the check refuses the
    // header, and nothing proportional to the claim is ever allocated.
    s.config.dim = 16_000;
    let bytes = encode(&s).unwrap();
    let mut seen = None;
    let err = decode_checked(&bytes, |c| {
        seen = Some(c.dim);
        Err(format!("dim {} is over the limit", c.dim))
    })
    .unwrap_err();
    assert_eq!(seen, Some(16_000));
    assert!(err.to_string().contains("over the limit"), "{err}");
    // Without a limit the shapes disagree and it is refused before allocation.
    let err = decode(&bytes).unwrap_err();
    assert!(
        err.to_string().contains("sxx") || err.to_string().contains("mean_x"),
        "{err}"
    );
}

#[test]
fn a_release_0_1_snapshot_reads_as_one_partition() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/v1/plain-export.bin"
    );
    let s = decode(&fs::read(path).unwrap()).unwrap();
    assert_eq!(s.config.partitions, 1);
    assert_eq!(s.partitions.len(), 1);
    assert_eq!(s.sequence(), 10);
    let p = s.partitions[0].position;
    assert_eq!((p.sequence, p.local, p.batches), (10, 10, 10));
    assert_eq!(
        s.partitions[0].accumulator.count.to_bits(),
        30.0f64.to_bits()
    );
    assert_eq!(s.partitions[0].accumulator.clock, 0);
}

#[test]
fn a_784_dimensional_snapshot_streams_to_a_file_and_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample(784, None, None, 9);

    let path = write(dir.path(), &s).unwrap();

    assert_eq!(
        path.file_name().unwrap(),
        "snapshot-00000000000000000009.bin"
    );
    let size = fs::metadata(&path).unwrap().len();
    assert!(size > 784 * 784 * 8, "{size} bytes");
    let back = read(&path).unwrap();
    assert_eq!(all_bits(&back), all_bits(&s));
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_the_previous_and_is_left_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &sample(3, None, None, 5)).unwrap();
    let newest = write(dir.path(), &sample(3, None, None, 9)).unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    bytes[40] ^= 0xff;
    fs::write(&newest, &bytes).unwrap();

    let loaded = load_latest(dir.path()).unwrap().unwrap();

    assert_eq!(loaded.snapshot.sequence(), 5);
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].0, newest);
    assert!(
        loaded.skipped[0].1.contains("checksum"),
        "{}",
        loaded.skipped[0].1
    );
    assert_eq!(
        fs::read(&newest).unwrap(),
        bytes,
        "corrupt file left as it was"
    );
}

#[test]
fn when_every_snapshot_is_corrupt_the_error_names_each_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), &sample(3, None, None, 5)).unwrap();
    let b = write(dir.path(), &sample(3, None, None, 9)).unwrap();
    fs::write(&a, b"SPCASNAP garbage").unwrap();
    let len = fs::metadata(&b).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let err = load_latest(dir.path()).unwrap_err();

    let msg = err.to_string();
    assert!(matches!(err, Error::NoValidSnapshot { ref problems, .. } if problems.len() == 2));
    assert!(msg.contains("snapshot-00000000000000000005.bin"), "{msg}");
    assert!(msg.contains("snapshot-00000000000000000009.bin"), "{msg}");
}

#[test]
fn a_snapshot_of_a_newer_format_stops_loading_instead_of_falling_back() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &sample(3, None, None, 5)).unwrap();
    let newest = write(dir.path(), &sample(3, None, None, 9)).unwrap();
    fs::write(&newest, with_version(fs::read(&newest).unwrap(), 3)).unwrap();

    let err = load_latest(dir.path()).unwrap_err();

    assert!(
        matches!(err, Error::UnsupportedVersion { version: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("snapshot-00000000000000000009.bin"),
        "{err}"
    );
}

#[test]
fn a_temp_file_left_by_a_crash_before_rename_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &sample(3, None, None, 5)).unwrap();
    // Simulate a crash mid-write of snapshot 9: its temporary file, half written.
    let full = encode(&sample(3, None, None, 9)).unwrap();
    let tmp = fsutil::temp_sibling(&dir.path().join(file_name(9)));
    fs::write(&tmp, &full[..full.len() / 2]).unwrap();

    let loaded = load_latest(dir.path()).unwrap().unwrap();

    assert_eq!(loaded.snapshot.sequence(), 5);
    assert!(loaded.skipped.is_empty(), "a temp file is not a snapshot");
}

#[test]
fn a_snapshot_whose_contents_disagree_with_its_name_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &sample(3, None, None, 5)).unwrap();
    let nine = write(dir.path(), &sample(3, None, None, 9)).unwrap();
    fs::rename(&nine, dir.path().join(file_name(12))).unwrap();

    let loaded = load_latest(dir.path()).unwrap().unwrap();

    assert_eq!(loaded.snapshot.sequence(), 5);
    assert!(
        loaded.skipped[0].1.contains("sequence 9"),
        "{:?}",
        loaded.skipped
    );
}

#[test]
fn prune_keeps_the_two_newest() {
    let dir = tempfile::tempdir().unwrap();
    for seq in [3, 10, 7, 12] {
        write(dir.path(), &sample(2, None, None, seq)).unwrap();
    }

    let removed = prune(dir.path(), KEEP).unwrap();

    assert_eq!(removed.len(), 2);
    let left: Vec<u64> = list(dir.path())
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(left, vec![10, 12]);
    assert_eq!(
        load_latest(dir.path())
            .unwrap()
            .unwrap()
            .snapshot
            .sequence(),
        12
    );
}

#[test]
fn an_empty_directory_has_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_latest(dir.path()).unwrap().is_none());
    assert_eq!(parse_file_name("snapshot-1.bin"), None);
    assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
}
