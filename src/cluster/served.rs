//! What every node serves: its copies of the views, checkpoint pointers and lease
//! holders, kept current from a watch of the state bucket.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;

use super::checkpoint::CheckpointPointer;
use super::lease::LeaseValue;
use super::names::parse_state_key;
use super::node::{read, write, Inner, ServedView};
use super::store::get_object;
use super::view::{self, ViewPointer};

/// Keeps this node's copies of views, checkpoint pointers and lease holders current.
pub(crate) async fn watch_state(inner: Arc<Inner>) {
    loop {
        if let Ok(mut w) = inner.conn.state.watch_with_history(">").await {
            while let Some(Ok(e)) = w.next().await {
                let Some((kind, model, g, rest)) = parse_state_key(&e.key) else {
                    continue;
                };
                let put = e.operation == Operation::Put;
                match kind {
                    "view" if put => {
                        let Ok(p) = serde_json::from_slice::<ViewPointer>(&e.value) else {
                            continue;
                        };
                        let key = (model.to_owned(), g);
                        let newer = read(&inner.views)
                            .get(&key)
                            .is_none_or(|v| v.revision < e.revision);
                        if !newer {
                            continue;
                        }
                        let components = match get_object(
                            &inner.conn.blobs,
                            &p.object,
                            Duration::from_secs(5),
                        )
                        .await
                        {
                            Ok(bytes) => match view::decode(&bytes) {
                                Ok((c, _)) => c.map(Arc::new),
                                Err(err) => {
                                    tracing::warn!(model, error = %err, "unreadable view");
                                    continue;
                                }
                            },
                            Err(err) => {
                                tracing::debug!(model, error = %err, "view object not readable (superseded?)");
                                continue;
                            }
                        };
                        write(&inner.views).insert(
                            key,
                            Arc::new(ServedView {
                                pointer: p,
                                components,
                                revision: e.revision,
                            }),
                        );
                    }
                    "view" => {
                        write(&inner.views).remove(&(model.to_owned(), g));
                    }
                    "ckpt" => {
                        let Some(k) = rest.and_then(|r| r.parse::<u32>().ok()) else {
                            continue;
                        };
                        let key = (model.to_owned(), g, k);
                        match serde_json::from_slice::<CheckpointPointer>(&e.value) {
                            Ok(p) if put => {
                                inner.metrics.set_checkpoint_time(
                                    model,
                                    &k.to_string(),
                                    p.written_ms as f64 / 1000.0,
                                );
                                write(&inner.checkpoints).insert(key, p);
                            }
                            _ => {
                                write(&inner.checkpoints).remove(&key);
                            }
                        }
                    }
                    "lease" => match serde_json::from_slice::<LeaseValue>(&e.value) {
                        Ok(l) if put => {
                            write(&inner.leases).insert(e.key.clone(), l);
                        }
                        _ => {
                            write(&inner.leases).remove(&e.key);
                        }
                    },
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
