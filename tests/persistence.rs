//! The storage layer end to end, on real files in temporary directories with real
//! fsyncs: models created and deleted across restarts, recovery from snapshot + log
//! reproducing the live accumulator bit for bit, fallback past a corrupt snapshot, and
//! the leftovers of crashes in the middle of a write.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::path::Path;

use rand::{rngs::StdRng, Rng, SeedableRng};
use streampca::pca::{Accumulator, AccumulatorParts, TrainerState};
use streampca::persistence::{
    BatchData, Error, ModelConfig, RecoveredModel, Snapshot, Store, SyncMode, WalRecord,
};

const DIM: usize = 5;

fn config(name: &str) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        dim: DIM,
        components: 2,
        target_dim: None,
        half_life: Some(500.0),
        optimizer: "subspace".into(),
        tolerance: 1e-6,
    }
}

fn batch(seq: u64) -> WalRecord {
    let mut rng = StdRng::seed_from_u64(seq);
    let rows = 1 + (seq % 4) as usize;
    let x: Vec<f32> = (0..rows * DIM)
        .map(|_| rng.gen_range(-1.0f32..1.0) + 100.0)
        .collect();
    WalRecord {
        sequence: seq,
        dim: DIM,
        target_dim: None,
        data: BatchData::F32 { x, y: None },
    }
}

/// The live model as the service would keep it: accumulator + position.
struct Live {
    acc: Accumulator,
    sequence: u64,
    batches: u64,
}

impl Live {
    fn new(c: &ModelConfig) -> Self {
        Self {
            acc: Accumulator::new(c.dim, c.target_dim, c.half_life).unwrap(),
            sequence: 0,
            batches: 0,
        }
    }

    /// Logs then applies batches `from..=to`, as the ingest path does.
    fn ingest(&mut self, model: &streampca::persistence::ModelStore, from: u64, to: u64) {
        for seq in from..=to {
            let rec = batch(seq);
            model.wal().append(&rec).unwrap();
            rec.apply_to(&mut self.acc).unwrap();
            self.sequence = seq;
            self.batches += 1;
        }
    }

    fn snapshot(&self, c: &ModelConfig) -> Snapshot {
        Snapshot {
            config: c.clone(),
            sequence: self.sequence,
            batches: self.batches,
            accumulator: self.acc.to_parts(),
            trainer: TrainerState {
                total_steps: self.sequence,
                ..TrainerState::default()
            },
        }
    }
}

/// Rebuilds the accumulator the way the service will at startup.
fn restore(m: &RecoveredModel) -> Accumulator {
    let c = m.store.config();
    let mut acc = match &m.snapshot {
        Some(s) => Accumulator::from_parts(s.snapshot.accumulator.clone()).unwrap(),
        None => Accumulator::new(c.dim, c.target_dim, c.half_life).unwrap(),
    };
    for rec in &m.replay {
        rec.apply_to(&mut acc).unwrap();
    }
    acc
}

fn bits(p: &AccumulatorParts) -> Vec<u64> {
    let mut v = vec![p.count.to_bits(), p.tr_syy.to_bits()];
    v.extend(p.mean_x.iter().map(|x| x.to_bits()));
    // The lower triangle is authoritative; compare all of it, and the whole matrix too.
    v.extend(p.sxx.iter().map(|x| x.to_bits()));
    v
}

fn open(dir: &Path) -> (Store, Vec<RecoveredModel>) {
    Store::open(dir, SyncMode::Always).unwrap()
}

fn only(models: Vec<RecoveredModel>, name: &str) -> RecoveredModel {
    models
        .into_iter()
        .find(|m| m.store.config().name == name)
        .unwrap()
}

#[test]
fn created_models_survive_a_restart_and_deleted_ones_stay_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, models) = open(dir.path());
    assert!(models.is_empty());
    drop(store.create(&config("alpha")).unwrap());
    drop(store.create(&config("beta")).unwrap());
    drop(store);

    let (store, models) = open(dir.path());
    let names: Vec<_> = models
        .iter()
        .map(|m| m.store.config().name.clone())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(models[0].store.config(), &config("alpha"));
    assert!(models
        .iter()
        .all(|m| m.snapshot.is_none() && m.replay.is_empty()));
    drop(models);
    store.delete("alpha").unwrap();
    drop(store);

    let (store, models) = open(dir.path());
    assert_eq!(models.len(), 1);
    assert_eq!(store.model_names().unwrap(), ["beta"]);
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("models")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no tombstone left behind");
}

#[test]
fn creating_a_model_twice_or_with_a_bad_name_fails_and_deleting_a_missing_one_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let _m = store.create(&config("alpha")).unwrap();

    assert!(matches!(
        store.create(&config("alpha")),
        Err(Error::ModelExists { .. })
    ));
    for bad in ["", "../etc", ".hidden", "a/b", "-x", &"n".repeat(65)] {
        let err = store.create(&config(bad)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: "name", .. }),
            "{bad:?}: {err}"
        );
    }
    let mut bad = config("gamma");
    bad.components = DIM + 1;
    assert!(matches!(
        store.create(&bad),
        Err(Error::InvalidConfig {
            field: "components",
            ..
        })
    ));
    assert!(matches!(
        store.delete("nobody"),
        Err(Error::ModelNotFound { .. })
    ));
}

#[test]
fn recovery_returns_the_records_after_the_snapshot_and_reproduces_the_state_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _) = open(dir.path());
    let model = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&model, 1, 6);
    let written = model.write_snapshot(&live.snapshot(&c)).unwrap();
    assert_eq!(
        written.wal_records_dropped, 0,
        "one snapshot: the log is kept whole"
    );
    live.ingest(&model, 7, 12);
    drop((model, store));

    let (_, models) = open(dir.path());
    let m = only(models, "m");

    let snap = m.snapshot.as_ref().unwrap();
    assert_eq!((snap.snapshot.sequence, snap.snapshot.batches), (6, 6));
    let seqs: Vec<u64> = m.replay.iter().map(|r| r.sequence).collect();
    assert_eq!(seqs, (7..=12).collect::<Vec<_>>());
    assert_eq!(m.sequence_gap, None);
    assert_eq!(m.wal_tail, None);
    assert_eq!(m.last_sequence(), 12);
    assert_eq!(bits(&restore(&m).to_parts()), bits(&live.acc.to_parts()));
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_and_the_log_still_covers_every_batch_since() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _) = open(dir.path());
    let model = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&model, 1, 4);
    model.write_snapshot(&live.snapshot(&c)).unwrap();
    live.ingest(&model, 5, 8);
    let second = model.write_snapshot(&live.snapshot(&c)).unwrap();
    assert_eq!(
        second.wal_records_dropped, 4,
        "log cut through the older snapshot (4)"
    );
    live.ingest(&model, 9, 12);
    let third = model.write_snapshot(&live.snapshot(&c)).unwrap();
    assert_eq!(third.pruned.len(), 1, "only two snapshots kept");
    assert_eq!(third.wal_records_dropped, 4, "log cut through 8, not 12");
    live.ingest(&model, 13, 14);
    drop((model, store));
    let newest = dir
        .path()
        .join("models/m/snapshot-00000000000000000012.bin");
    let mut bytes = fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&newest, &bytes).unwrap();

    let (_, models) = open(dir.path());
    let m = only(models, "m");

    let snap = m.snapshot.as_ref().unwrap();
    assert_eq!(snap.snapshot.sequence, 8);
    assert_eq!(snap.skipped.len(), 1);
    assert_eq!(snap.skipped[0].0, newest);
    assert!(!newest.exists(), "no longer counts as a snapshot");
    let aside = dir
        .path()
        .join("models/m/snapshot-00000000000000000012.bin.corrupt");
    assert_eq!(m.quarantined.len(), 1);
    assert_eq!(m.quarantined[0], aside);
    assert_eq!(
        fs::read(&aside).unwrap(),
        bytes,
        "kept byte for byte for an operator"
    );
    let seqs: Vec<u64> = m.replay.iter().map(|r| r.sequence).collect();
    assert_eq!(seqs, (9..=14).collect::<Vec<_>>());
    assert_eq!(m.sequence_gap, None);
    assert_eq!(bits(&restore(&m).to_parts()), bits(&live.acc.to_parts()));
}

#[test]
fn a_crash_in_the_middle_of_a_snapshot_write_leaves_the_previous_snapshot_in_charge() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _) = open(dir.path());
    let model = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&model, 1, 5);
    model.write_snapshot(&live.snapshot(&c)).unwrap();
    live.ingest(&model, 6, 9);
    // The kill: snapshot 9's temporary file is half written and never renamed.
    let full = streampca::persistence::snapshot::encode(&live.snapshot(&c)).unwrap();
    let tmp = dir
        .path()
        .join("models/m/.snapshot-00000000000000000009.bin.4242.0.tmp");
    fs::write(&tmp, &full[..full.len() / 3]).unwrap();
    drop((model, store));

    let (_, models) = open(dir.path());
    let m = only(models, "m");

    assert_eq!(m.snapshot.as_ref().unwrap().snapshot.sequence, 5);
    assert!(m.snapshot.as_ref().unwrap().skipped.is_empty());
    assert_eq!(m.replay.first().unwrap().sequence, 6);
    assert_eq!(bits(&restore(&m).to_parts()), bits(&live.acc.to_parts()));
    assert!(!tmp.exists(), "the interrupted write is cleaned up at open");
}

#[test]
fn a_torn_log_tail_is_cut_off_and_reported_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _) = open(dir.path());
    let model = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&model, 1, 3);
    let whole = model.wal().size_bytes().unwrap();
    drop((model, store));
    // A crash while appending batch 4: half its bytes reached the disk.
    let rec4 = batch(4);
    let log = dir.path().join("models/m/wal.log");
    {
        let (wal, _) = streampca::persistence::Wal::open(&log, SyncMode::Always).unwrap();
        wal.append(&rec4).unwrap();
    }
    let full = fs::metadata(&log).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(whole + (full - whole) / 2)
        .unwrap();

    let (store, models) = open(dir.path());
    let m = only(models, "m");

    let tail = m.wal_tail.as_ref().unwrap();
    assert_eq!(tail.offset, whole);
    assert_eq!(m.replay.len(), 3);
    assert_eq!(bits(&restore(&m).to_parts()), bits(&live.acc.to_parts()));
    // Batch 4 was never acknowledged; the producer retries it and it sticks.
    m.store.wal().append(&rec4).unwrap();
    drop((m, store));
    let (_, models) = open(dir.path());
    assert_eq!(only(models, "m").replay.len(), 4);
}

#[test]
fn a_missing_batch_in_the_log_is_reported_as_a_sequence_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let model = store.create(&config("m")).unwrap();
    model.wal().append(&batch(1)).unwrap();
    model.wal().append(&batch(3)).unwrap();
    drop((model, store));

    let (_, models) = open(dir.path());

    let gap = only(models, "m").sequence_gap.unwrap();
    assert_eq!((gap.expected, gap.found), (2, 3));
}

#[test]
fn leftovers_of_interrupted_creates_and_deletes_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    drop(store.create(&config("kept")).unwrap());
    drop(store);
    let models_dir = dir.path().join("models");
    // A create that crashed before its rename, and a delete that crashed after its.
    fs::create_dir(models_dir.join(".ghost.creating-1-2-3")).unwrap();
    fs::write(models_dir.join(".ghost.creating-1-2-3/model.json"), "{}").unwrap();
    fs::rename(
        models_dir.join("kept"),
        models_dir.join(".kept.deleted-1-2-3"),
    )
    .unwrap();

    let (store, models) = open(dir.path());

    assert!(models.is_empty(), "a model mid-delete stays deleted");
    assert_eq!(fs::read_dir(&models_dir).unwrap().count(), 0);
    drop(store.create(&config("kept")).unwrap());
}

#[test]
fn a_snapshot_for_another_config_or_going_backwards_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _) = open(dir.path());
    let model = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&model, 1, 4);
    model.write_snapshot(&live.snapshot(&c)).unwrap();

    let mut other = live.snapshot(&c);
    other.config.tolerance = 1e-3;
    let mut older = live.snapshot(&c);
    older.sequence = 2;

    assert!(matches!(
        model.write_snapshot(&other),
        Err(Error::InvalidSnapshot(_))
    ));
    assert!(matches!(
        model.write_snapshot(&older),
        Err(Error::InvalidSnapshot(_))
    ));
}

#[test]
fn a_damaged_model_json_fails_the_open_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    drop(store.create(&config("m")).unwrap());
    drop(store);
    let path = dir.path().join("models/m/model.json");
    fs::write(&path, "{\"format\": 1, \"config\": {\"name\": \"m\"").unwrap();

    let err = Store::open(dir.path(), SyncMode::Always).unwrap_err();

    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("model.json"), "{err}");
}

#[test]
fn storage_handles_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Store>();
    send_sync::<streampca::persistence::ModelStore>();
    send_sync::<streampca::persistence::Wal>();
    send_sync::<Error>();
}

#[test]
fn a_crash_in_the_middle_of_a_log_rewrite_leaves_the_old_log_in_charge() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _) = open(dir.path());
    let model = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&model, 1, 6);
    let snap = live.snapshot(&c);
    drop((model, store));
    // The kill: a rewrite's temporary log, half written, never renamed over wal.log.
    let tmp = dir.path().join("models/m/.wal.log.4242.7.tmp");
    fs::write(&tmp, b"SPCAWAL\0\x01\0\0\0garbage").unwrap();

    let (store, models) = open(dir.path());
    let m = only(models, "m");

    assert!(
        !tmp.exists(),
        "the interrupted rewrite is cleaned up at open"
    );
    assert_eq!(m.replay.len(), 6);
    assert_eq!(bits(&restore(&m).to_parts()), bits(&live.acc.to_parts()));
    // And the store keeps working: snapshot, more batches, restart.
    m.store.write_snapshot(&snap).unwrap();
    live.ingest(&m.store, 7, 8);
    drop((m, store));
    let (_, models) = open(dir.path());
    let m = only(models, "m");
    assert_eq!(m.snapshot.as_ref().unwrap().snapshot.sequence, 6);
    assert_eq!(m.replay.len(), 2);
    assert_eq!(bits(&restore(&m).to_parts()), bits(&live.acc.to_parts()));
}
