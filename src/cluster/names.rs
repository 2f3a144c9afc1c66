//! Every name the cluster uses on NATS, in one place: streams, subjects, KV buckets and
//! keys, object names. Model names are `[a-z0-9][a-z0-9_-]{0,63}`, so they are valid in
//! every one of these.

/// Names derived from the deployment prefix.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix` (e.g. `spca`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// KV bucket of model records (key: model name) and the generation counter.
    pub fn models_bucket(&self) -> String {
        format!("{}_models", self.prefix)
    }

    /// KV bucket of leases, checkpoint pointers and view pointers.
    pub fn state_bucket(&self) -> String {
        format!("{}_state", self.prefix)
    }

    /// Object store of checkpoints and published fits.
    pub fn blob_bucket(&self) -> String {
        format!("{}_blobs", self.prefix)
    }

    /// The stream of one model generation: every partition's batches.
    pub fn stream(&self, model: &str, generation: u64) -> String {
        format!("{}_{model}_{generation}", self.prefix.to_uppercase())
    }

    /// Subjects of one model generation (`<prefix>.<model>.<gen>.*`).
    pub fn stream_subjects(&self, model: &str, generation: u64) -> String {
        format!("{}.{model}.{generation}.*", self.prefix)
    }

    /// Subject of partition `k`.
    pub fn partition_subject(&self, model: &str, generation: u64, k: u32) -> String {
        format!("{}.{model}.{generation}.p{k}", self.prefix)
    }
}

/// Key of the generation counter in the models bucket (never a model name: those start
/// with `[a-z0-9]`).
pub const GENERATION_KEY: &str = "_generation";

/// Lease of partition `k`'s fold.
pub fn fold_lease_key(model: &str, generation: u64, k: u32) -> String {
    format!("lease.{model}.{generation}.fold{k}")
}

/// Lease of a model's trainer.
pub fn train_lease_key(model: &str, generation: u64) -> String {
    format!("lease.{model}.{generation}.train")
}

/// Checkpoint pointer of partition `k` (the commit point of its checkpoints).
pub fn checkpoint_key(model: &str, generation: u64, k: u32) -> String {
    format!("ckpt.{model}.{generation}.{k}")
}

/// Filter matching every checkpoint pointer of one model generation.
pub fn checkpoint_filter(model: &str, generation: u64) -> String {
    format!("ckpt.{model}.{generation}.*")
}

/// Pointer to a model generation's published view (the latest fit).
pub fn view_key(model: &str, generation: u64) -> String {
    format!("view.{model}.{generation}")
}

/// Object holding one checkpoint, unique per writer and attempt.
pub fn checkpoint_object(model: &str, generation: u64, k: u32, seq: u64, nonce: &str) -> String {
    format!("ckpt/{model}/{generation}/{k}/{seq}-{nonce}")
}

/// Object holding one published view.
pub fn view_object(model: &str, generation: u64, nonce: &str) -> String {
    format!("view/{model}/{generation}/{nonce}")
}

/// Splits a state-bucket key into (kind, model, generation, rest).
pub fn parse_state_key(key: &str) -> Option<(&str, &str, u64, Option<&str>)> {
    let mut it = key.splitn(4, '.');
    let kind = it.next()?;
    let model = it.next()?;
    let generation = it.next()?.parse().ok()?;
    Some((kind, model, generation, it.next()))
}

/// A random 128-bit id in hex (message ids, batch ids, object nonces).
pub fn random_id() -> String {
    use rand::Rng;
    let v: u128 = rand::thread_rng().gen();
    format!("{v:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_parser() {
        let k = checkpoint_key("mnist-2", 17, 3);
        assert_eq!(
            parse_state_key(&k),
            Some(("ckpt", "mnist-2", 17, Some("3")))
        );
        let k = view_key("a_b", 5);
        assert_eq!(parse_state_key(&k), Some(("view", "a_b", 5, None)));
        assert_eq!(parse_state_key("view.x.notanumber"), None);
        let n = Names::new("spca");
        assert_eq!(n.stream("m", 3), "SPCA_m_3");
        assert_eq!(n.partition_subject("m", 3, 2), "spca.m.3.p2");
    }
}
