//! The storage layer end to end, on real files in temporary directories with real
//! fsyncs: models created, replaced and deleted across restarts, recovery from snapshot
//! and partition logs reproducing the live accumulators bit for bit, fallback past a
//! corrupt snapshot, the leftovers of crashes in the middle of a write, and the models
//! recovery must hold back because acknowledged data is missing.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use rand::{rngs::StdRng, Rng, SeedableRng};
use streampca::model::{ModelConfig, ModelName};
use streampca::pca::{
    Accumulator, AccumulatorParts, Batch, BatchData, OptimizerKind, Shape, TrainerState,
};
use streampca::persistence::{
    EncodedRecord, Error, HeldModel, ModelFiles, PartitionLog, PartitionState, Position,
    RecoveredModel, Snapshot, Stamp, Store, SyncMode,
};

const DIM: usize = 5;
const K: usize = 2;

fn config(name: &str) -> ModelConfig {
    ModelConfig {
        name: ModelName::new(name).unwrap(),
        dim: DIM,
        components: 2,
        target_dim: None,
        half_life: Some(500.0),
        optimizer: OptimizerKind::Subspace,
        tolerance: 1e-6,
        partitions: K,
        standardize: false,
        alpha: 0.01,
    }
}

fn batch(seq: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(seq);
    let rows = 1 + (seq % 4) as usize;
    let x: Vec<f32> = (0..rows * DIM)
        .map(|_| rng.gen_range(-1.0f32..1.0) + 100.0)
        .collect();
    Batch::new(Shape::inputs(DIM), BatchData::F32 { x, y: None }).unwrap()
}

/// The live model as the service keeps it: per partition an accumulator and a
/// position, and the model's sequence and row clock. Batch `seq` goes to partition
/// `seq % K`.
struct Live {
    accs: Vec<Accumulator>,
    positions: Vec<Position>,
    sequence: u64,
    clock: u64,
}

impl Live {
    fn new(c: &ModelConfig) -> Self {
        Self {
            accs: (0..K)
                .map(|_| Accumulator::new(c.dim, c.target_dim, c.half_life).unwrap())
                .collect(),
            positions: vec![Position::default(); K],
            sequence: 0,
            clock: 0,
        }
    }

    /// Logs then folds batches `from..=to`, as the ingest path does.
    fn ingest(&mut self, files: &ModelFiles, from: u64, to: u64) {
        let logs = files.logs();
        for seq in from..=to {
            let b = batch(seq);
            let k = (seq % K as u64) as usize;
            self.sequence = seq;
            self.clock += b.rows() as u64;
            let stamp = Stamp {
                sequence: seq,
                local: self.positions[k].local + 1,
                clock: self.clock,
            };
            let mut e = EncodedRecord::new(&b).unwrap();
            let t = logs[k].write(&mut e, stamp).unwrap();
            logs[k].wait(t).unwrap();
            self.accs[k].fold(&b, stamp.clock, &mut Vec::new()).unwrap();
            self.positions[k] = Position {
                sequence: seq,
                local: stamp.local,
                batches: self.positions[k].batches + 1,
            };
        }
    }

    fn snapshot(&self, c: &ModelConfig) -> Snapshot {
        Snapshot {
            config: c.clone(),
            partitions: self
                .accs
                .iter()
                .zip(&self.positions)
                .map(|(a, p)| PartitionState {
                    position: *p,
                    accumulator: a.to_parts(),
                })
                .collect(),
            trainer: TrainerState {
                total_steps: self.sequence,
                ..TrainerState::default()
            },
        }
    }
}

/// Rebuilds the partitions the way the service does at start-up.
fn restore(m: &RecoveredModel) -> Vec<Accumulator> {
    let c = m.files.config();
    let mut accs = match &m.snapshot {
        Some((_, accs)) => accs.clone(),
        None => (0..K)
            .map(|_| Accumulator::new(c.dim, c.target_dim, c.half_life).unwrap())
            .collect(),
    };
    for (k, records) in m.replay.iter().enumerate() {
        for r in records {
            accs[k]
                .fold(&r.batch, r.stamp.clock, &mut Vec::new())
                .unwrap();
        }
    }
    accs
}

fn bits(p: &AccumulatorParts) -> Vec<u64> {
    let mut v = vec![p.count.to_bits(), p.tr_syy.to_bits(), p.clock];
    v.extend(p.mean_x.iter().map(|x| x.to_bits()));
    v.extend(p.sxx.iter().map(|x| x.to_bits()));
    v
}

fn same(a: &[Accumulator], b: &[Accumulator]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(bits(&x.to_parts()), bits(&y.to_parts()));
    }
}

fn open(dir: &Path) -> (Store, Vec<RecoveredModel>, Vec<HeldModel>) {
    Store::open(dir, SyncMode::Always, false).unwrap()
}

fn only(models: Vec<RecoveredModel>, name: &str) -> RecoveredModel {
    models
        .into_iter()
        .find(|m| m.files.config().name.as_str() == name)
        .unwrap()
}

fn replayed(m: &RecoveredModel) -> Vec<u64> {
    let mut s: Vec<u64> = m
        .replay
        .iter()
        .flatten()
        .map(|r| r.stamp.sequence)
        .collect();
    s.sort_unstable();
    s
}

#[test]
fn created_models_survive_a_restart_and_deleted_ones_stay_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, models, held) = open(dir.path());
    assert!(models.is_empty() && held.is_empty());
    drop(store.create(&config("alpha")).unwrap());
    drop(store.create(&config("beta")).unwrap());
    drop(store);

    let (store, models, held) = open(dir.path());
    let names: Vec<_> = models
        .iter()
        .map(|m| m.files.config().name.to_string())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(held.is_empty());
    assert_eq!(models[0].files.config(), &config("alpha"));
    assert!(models
        .iter()
        .all(|m| m.snapshot.is_none() && m.replay.iter().all(Vec::is_empty)));
    for k in 0..K {
        assert!(dir
            .path()
            .join(format!("models/alpha/partition-{k}.log"))
            .exists());
    }
    drop(models);
    store.delete("alpha").unwrap();
    drop(store);

    let (store, models, _) = open(dir.path());
    assert_eq!(models.len(), 1);
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("models")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no tombstone left behind");
    assert!(matches!(
        store.create(&config("beta")),
        Err(Error::ModelExists { .. })
    ));
    assert!(matches!(
        store.delete("nobody"),
        Err(Error::ModelNotFound { .. })
    ));
    assert!(matches!(
        store.delete("../etc"),
        Err(Error::ModelNotFound { .. })
    ));
}

#[test]
fn recovery_returns_each_partitions_records_after_the_snapshot_and_reproduces_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _, _) = open(dir.path());
    let files = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&files, 1, 6);
    let written = files.write_snapshot(&live.snapshot(&c)).unwrap();
    assert_eq!(
        written.records_dropped, 0,
        "one snapshot: the logs are kept whole"
    );
    live.ingest(&files, 7, 12);
    drop((files, store));

    let (_, models, held) = open(dir.path());
    assert!(held.is_empty(), "{held:?}");
    let m = only(models, "m");

    let (snap, _) = m.snapshot.as_ref().unwrap();
    assert_eq!(snap.sequence(), 6);
    assert_eq!(
        snap.positions(),
        [
            Position {
                sequence: 6,
                local: 3,
                batches: 3
            },
            Position {
                sequence: 5,
                local: 3,
                batches: 3
            }
        ]
    );
    assert_eq!(replayed(&m), (7..=12).collect::<Vec<_>>());
    assert!(m.torn_tails.is_empty() && m.accepted_losses.is_empty());
    same(&restore(&m), &live.accs);
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_and_each_log_still_covers_every_batch_since() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _, _) = open(dir.path());
    let files = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&files, 1, 4);
    files.write_snapshot(&live.snapshot(&c)).unwrap();
    live.ingest(&files, 5, 8);
    let second = files.write_snapshot(&live.snapshot(&c)).unwrap();
    assert_eq!(
        second.records_dropped, 4,
        "logs cut through the older snapshot (4)"
    );
    live.ingest(&files, 9, 12);
    let third = files.write_snapshot(&live.snapshot(&c)).unwrap();
    assert_eq!(third.pruned.len(), 1, "only two snapshots kept");
    assert_eq!(third.records_dropped, 4, "logs cut through 8, not 12");
    live.ingest(&files, 13, 14);
    drop((files, store));
    let newest = dir
        .path()
        .join("models/m/snapshot-00000000000000000012.bin");
    let mut bytes = fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&newest, &bytes).unwrap();

    let (_, models, held) = open(dir.path());
    assert!(held.is_empty(), "{held:?}");
    let m = only(models, "m");

    assert_eq!(m.snapshot.as_ref().unwrap().0.sequence(), 8);
    assert!(!newest.exists(), "no longer counts as a snapshot");
    let aside = dir
        .path()
        .join("models/m/snapshot-00000000000000000012.bin.corrupt");
    assert_eq!(m.quarantined, std::slice::from_ref(&aside));
    assert_eq!(
        fs::read(&aside).unwrap(),
        bytes,
        "kept byte for byte for an operator"
    );
    assert_eq!(replayed(&m), (9..=14).collect::<Vec<_>>());
    same(&restore(&m), &live.accs);
}

#[test]
fn a_crash_in_the_middle_of_a_snapshot_write_leaves_the_previous_snapshot_in_charge() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _, _) = open(dir.path());
    let files = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&files, 1, 5);
    files.write_snapshot(&live.snapshot(&c)).unwrap();
    live.ingest(&files, 6, 9);
    let full = streampca::persistence::snapshot::encode(&live.snapshot(&c)).unwrap();
    let tmp = dir
        .path()
        .join("models/m/.snapshot-00000000000000000009.bin.4242.0.tmp");
    fs::write(&tmp, &full[..full.len() / 3]).unwrap();
    drop((files, store));

    let (_, models, _) = open(dir.path());
    let m = only(models, "m");

    assert_eq!(m.snapshot.as_ref().unwrap().0.sequence(), 5);
    assert_eq!(replayed(&m), (6..=9).collect::<Vec<_>>());
    same(&restore(&m), &live.accs);
    assert!(!tmp.exists(), "the interrupted write is cleaned up at open");
}

#[test]
fn a_torn_tail_in_one_partition_log_is_cut_off_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _, _) = open(dir.path());
    let files = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&files, 1, 6);
    let log = dir.path().join("models/m/partition-1.log");
    let whole = fs::metadata(&log).unwrap().len();
    // A crash while appending batch 7 to partition 1: half its bytes reached the disk.
    let mut crashed = Live {
        accs: live.accs.clone(),
        positions: live.positions.clone(),
        sequence: 6,
        clock: live.clock,
    };
    crashed.ingest(&files, 7, 7);
    drop((files, store));
    let full = fs::metadata(&log).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(whole + (full - whole) / 2)
        .unwrap();

    let (store, models, held) = open(dir.path());
    assert!(held.is_empty());
    let m = only(models, "m");

    assert_eq!(m.torn_tails.len(), 1);
    assert_eq!(m.torn_tails[0].offset, whole);
    assert!(m.torn_tails[0].saved_to.exists());
    assert_eq!(replayed(&m), (1..=6).collect::<Vec<_>>());
    same(&restore(&m), &live.accs);
    // Batch 7 was never acknowledged; the producer retries it and it sticks.
    live.ingest(&m.files, 7, 7);
    drop((m, store));
    let (_, models, _) = open(dir.path());
    assert_eq!(replayed(&only(models, "m")), (1..=7).collect::<Vec<_>>());
}

#[test]
fn a_log_that_lost_records_holds_the_model_back_unless_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _, _) = open(dir.path());
    let files = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&files, 1, 4);
    files.write_snapshot(&live.snapshot(&c)).unwrap();
    live.ingest(&files, 5, 8);
    files.write_snapshot(&live.snapshot(&c)).unwrap();
    live.ingest(&files, 9, 10);
    drop((files, store));
    // Both snapshots deleted: each log now starts after the older snapshot (local 3),
    // with nothing to cover local 1 and 2.
    for seq in [4, 8] {
        fs::remove_file(dir.path().join(format!("models/m/snapshot-{seq:020}.bin"))).unwrap();
    }

    let (_, models, held) = open(dir.path());

    assert!(models.is_empty());
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].name, "m");
    assert!(
        held[0].reason.contains("batches 1 to 2"),
        "{}",
        held[0].reason
    );

    let (_, models, held) = Store::open(dir.path(), SyncMode::Always, true).unwrap();
    assert!(held.is_empty());
    let m = only(models, "m");
    assert_eq!(m.accepted_losses.len(), K, "{:?}", m.accepted_losses);
    assert_eq!(replayed(&m), (5..=10).collect::<Vec<_>>());
}

#[test]
fn an_empty_or_missing_partition_log_holds_the_model_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = open(dir.path());
    let a = store.create(&config("a")).unwrap();
    let b = store.create(&config("b")).unwrap();
    Live::new(&config("a")).ingest(&a, 1, 20);
    Live::new(&config("b")).ingest(&b, 1, 20);
    drop((a, b, store));
    fs::write(dir.path().join("models/a/partition-0.log"), b"").unwrap();
    fs::remove_file(dir.path().join("models/b/partition-1.log")).unwrap();

    let (_, models, held) = open(dir.path());

    assert!(models.is_empty());
    let reasons: Vec<_> = held
        .iter()
        .map(|h| (h.name.as_str(), h.reason.as_str()))
        .collect();
    assert!(
        reasons[0].1.contains("shorter than a log header"),
        "{reasons:?}"
    );
    assert!(reasons[1].1.contains("missing"), "{reasons:?}");
    // Nothing was changed: the next start finds the same.
    let (_, _, again) = open(dir.path());
    assert_eq!(again, held);
}

#[test]
fn an_install_replaces_a_model_whole_and_an_interrupted_one_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _, _) = open(dir.path());
    let files = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&files, 1, 6);
    drop(files);
    let mut other = Live::new(&c);
    let scratch = store.create(&config("scratch")).unwrap();
    other.ingest(&scratch, 1, 3);
    let snap = other.snapshot(&c);

    let installed = store.install(&snap).unwrap();
    other.ingest(&installed, 4, 5);
    drop((installed, scratch, store));

    let (store, models, _) = open(dir.path());
    let m = only(models, "m");
    assert_eq!(
        replayed(&m),
        [4, 5],
        "the logs start after the installed snapshot"
    );
    same(&restore(&m), &other.accs);
    drop((m, store));

    // A crash between the two renames of an install: the old model is aside, the new
    // one never arrived. The next start puts the old one back.
    let models_dir = dir.path().join("models");
    fs::rename(models_dir.join("m"), models_dir.join(".m.replaced-1-2-3")).unwrap();
    fs::create_dir(models_dir.join(".m.creating-1-2-4")).unwrap();
    let (_, models, _) = open(dir.path());
    let m = only(models, "m");
    same(&restore(&m), &other.accs);
    let hidden: Vec<_> = fs::read_dir(&models_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn leftovers_of_interrupted_creates_and_deletes_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = open(dir.path());
    drop(store.create(&config("kept")).unwrap());
    drop(store);
    let models_dir = dir.path().join("models");
    fs::create_dir(models_dir.join(".ghost.creating-1-2-3")).unwrap();
    fs::write(models_dir.join(".ghost.creating-1-2-3/model.json"), "{}").unwrap();
    fs::rename(
        models_dir.join("kept"),
        models_dir.join(".kept.deleted-1-2-3"),
    )
    .unwrap();

    let (store, models, _) = open(dir.path());

    assert!(models.is_empty(), "a model mid-delete stays deleted");
    assert_eq!(fs::read_dir(&models_dir).unwrap().count(), 0);
    drop(store.create(&config("kept")).unwrap());
}

#[test]
fn a_snapshot_for_another_config_or_going_backwards_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _, _) = open(dir.path());
    let files = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&files, 1, 4);
    files.write_snapshot(&live.snapshot(&c)).unwrap();

    let mut other = live.snapshot(&c);
    other.config.tolerance = 1e-3;
    let mut older = live.snapshot(&c);
    for p in &mut older.partitions {
        p.position.sequence = 2;
    }

    assert!(matches!(
        files.write_snapshot(&other),
        Err(Error::InvalidSnapshot(_))
    ));
    assert!(matches!(
        files.write_snapshot(&older),
        Err(Error::InvalidSnapshot(_))
    ));
}

#[test]
fn a_damaged_model_json_holds_the_model_back_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = open(dir.path());
    drop(store.create(&config("m")).unwrap());
    drop(store.create(&config("n")).unwrap());
    drop(store);
    let path = dir.path().join("models/m/model.json");
    fs::write(&path, "{\"format\": 1, \"config\": {\"name\": \"m\"").unwrap();

    let (_, models, held) = open(dir.path());

    assert_eq!(models.len(), 1, "the other model is served");
    assert!(held[0].reason.contains("model.json"), "{}", held[0].reason);
}

#[test]
fn storage_handles_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Store>();
    send_sync::<ModelFiles>();
    send_sync::<Arc<dyn PartitionLog>>();
    send_sync::<Error>();
}

#[test]
fn a_crash_in_the_middle_of_a_log_rewrite_leaves_the_old_log_in_charge() {
    let dir = tempfile::tempdir().unwrap();
    let c = config("m");
    let (store, _, _) = open(dir.path());
    let files = store.create(&c).unwrap();
    let mut live = Live::new(&c);
    live.ingest(&files, 1, 6);
    let snap = live.snapshot(&c);
    drop((files, store));
    let tmp = dir.path().join("models/m/.partition-0.log.4242.7.tmp");
    fs::write(&tmp, b"SPCAWAL\0\x02\0\0\0garbage").unwrap();

    let (store, models, _) = open(dir.path());
    let m = only(models, "m");

    assert!(
        !tmp.exists(),
        "the interrupted rewrite is cleaned up at open"
    );
    assert_eq!(replayed(&m), (1..=6).collect::<Vec<_>>());
    same(&restore(&m), &live.accs);
    m.files.write_snapshot(&snap).unwrap();
    live.ingest(&m.files, 7, 8);
    drop((m, store));
    let (_, models, _) = open(dir.path());
    let m = only(models, "m");
    assert_eq!(m.snapshot.as_ref().unwrap().0.sequence(), 6);
    assert_eq!(replayed(&m), [7, 8]);
    same(&restore(&m), &live.accs);
}
