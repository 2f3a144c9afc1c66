//! Start-up: every model the store recovered is rebuilt — its newest snapshot, then each
//! partition's log records after that snapshot's position, in order — and served from
//! the registry; every model the store held back is listed as held.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::pca::{Accumulator, Trainer, TrainerState};
use crate::persistence::{HeldModel, Position, RecoveredModel};

use super::model::{Model, Published};
use super::registry::Registry;

/// Rebuilds one recovered model and serves it. Torn tails are logged and counted in
/// `streampca_wal_torn_records_total` (the discarded bytes were saved aside by the
/// store); losses the operator accepted are logged as errors.
///
/// # Errors
/// A model that cannot be rebuilt (its accumulators refuse the logged batches: a bug);
/// it is then held back rather than served.
pub fn restore(
    registry: &Registry,
    metrics: &Arc<Metrics>,
    r: RecoveredModel,
) -> Result<(), HeldModel> {
    let RecoveredModel {
        files,
        snapshot,
        replay,
        quarantined,
        torn_tails,
        accepted_losses,
        migrated,
    } = r;
    let config = files.config().clone();
    let name = config.name.to_string();
    let dir = files.dir().to_owned();
    let held = |reason: String| HeldModel {
        name: name.clone(),
        dir: dir.clone(),
        reason,
    };
    let params = config.validate().map_err(|e| held(e.to_string()))?;
    let snapshot_sequence = snapshot.as_ref().map(|(s, _)| s.sequence());
    let (mut accs, mut positions, trainer_state) = match snapshot {
        Some((s, accs)) => {
            let positions = s.positions();
            (accs, positions, s.trainer)
        }
        None => {
            let accs = (0..config.partitions)
                .map(|_| Accumulator::new(config.dim, config.target_dim, config.half_life))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| held(e.to_string()))?;
            (
                accs,
                vec![Position::default(); config.partitions],
                TrainerState::default(),
            )
        }
    };
    let mut replayed = 0usize;
    let mut scratch = Vec::new();
    for (k, records) in replay.iter().enumerate() {
        for rec in records {
            let pos = &mut positions[k];
            match accs[k].fold(&rec.batch, rec.stamp.clock, &mut scratch) {
                Ok(()) => pos.batches += 1,
                Err(e) => tracing::error!(model = %name, partition = k,
                    sequence = rec.stamp.sequence, error = %e,
                    "skipping a logged batch the accumulator refuses"),
            }
            pos.sequence = rec.stamp.sequence;
            pos.local = rec.stamp.local;
            replayed += 1;
        }
    }
    for t in &torn_tails {
        tracing::warn!(model = %name, offset = t.offset, discarded_bytes = t.discarded,
            reason = %t.reason, saved_to = %t.saved_to.display(),
            "a log had a torn or corrupt tail; recovered up to the last whole record");
        metrics.wal_torn_record(&name);
    }
    for q in &quarantined {
        tracing::warn!(model = %name, path = %q.display(), "a corrupt snapshot was moved aside");
    }
    for loss in &accepted_losses {
        tracing::error!(model = %name, problem = %loss, "serving with data loss accepted by the operator");
    }
    let trainer = Trainer::with_state(params.clone(), trainer_state.clone());
    let published = Published {
        total_steps: trainer.total_steps(),
        trainer: trainer_state,
        ..Published::default()
    };
    let model = Arc::new(Model::new(
        config,
        params,
        accs,
        positions,
        published,
        metrics.clone(),
        files,
    ));
    model.mark_snapshotted(snapshot_sequence);
    let sequence = model.counters().sequence;
    registry
        .restore(model, trainer)
        .map_err(|e| held(e.to_string()))?;
    tracing::info!(model = %name, sequence, replayed, migrated, "model recovered");
    Ok(())
}
