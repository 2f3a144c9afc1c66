//! Ingest's write path: a checked batch becomes one stream message (or, when larger
//! than NATS' `max_payload`, an atomic batch of chunks), published to its partition's
//! subject with a message id for deduplication, and acknowledged only once JetStream
//! has stored it. While a stream has no leader (an election) publishes fail; they are
//! retried with the same message id until `publish_retry` runs out, then the caller
//! answers 503 with `Retry-After`.

use std::time::Duration;

use async_nats::header::{
    HeaderMap, NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_MESSAGE_ID,
};
use async_nats::{Client, Request, RequestErrorKind};
use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

use super::catalog::ModelRecord;
use super::connect::Connection;
use super::error::ClusterError;
use super::names::random_id;
use super::wire;

/// Bytes left in every message for headers (message id, batch id and sequence).
const HEADER_ROOM: usize = 1024;
/// Most chunks in one atomic batch (the server's default limit is 1000 messages).
pub const MAX_CHUNKS: usize = 1000;
/// Longest accepted `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 128;

/// What an acknowledged publish returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReceipt {
    /// Partition the batch went to.
    pub partition: u32,
    /// Stream sequence of the batch's (last) message; `None` for a duplicate of an
    /// atomic batch, whose original sequence the server does not return.
    pub sequence: Option<u64>,
    /// True when the server had already stored a batch with this message id.
    pub duplicate: bool,
    /// Messages the batch took (1, or its chunks).
    pub messages: usize,
    /// Attempts retried.
    pub retries: u64,
}

/// Checks a client's `Idempotency-Key`: 1-128 visible ASCII characters.
///
/// # Errors
/// [`ClusterError::InvalidParameter`] naming the header.
pub fn check_key(key: &str) -> Result<(), ClusterError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClusterError::InvalidParameter {
            name: "Idempotency-Key",
            reason: format!("must be 1-{MAX_KEY_LEN} visible ASCII characters"),
        });
    }
    Ok(())
}

/// The message id for a batch: the client's key, or a fresh random one.
pub fn message_id(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("k:{k}"),
        None => format!("s:{}", random_id()),
    }
}

/// The partition a message id maps to (stable across nodes and versions).
pub fn partition_of(msg_id: &str, partitions: u32) -> u32 {
    crc32fast::hash(msg_id.as_bytes()) % partitions.max(1)
}

/// Largest encoded batch the cluster accepts with this connection's `max_payload`.
pub fn max_batch_bytes(conn: &Connection) -> usize {
    let per = conn.max_payload.saturating_sub(HEADER_ROOM);
    if conn.atomic_batches {
        per.saturating_sub(wire::CHUNK_HEADER) * MAX_CHUNKS
    } else {
        per
    }
}

#[derive(Debug, Deserialize)]
struct AckBody {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<ApiErr>,
}

#[derive(Debug, Deserialize)]
struct ApiErr {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

/// How one attempt ended.
#[derive(Debug)]
enum Attempt {
    Stored { seq: Option<u64>, duplicate: bool },
    Retry(String),
    Fail(ClusterError),
}

/// The server's "atomic publish batch contains duplicate message id".
const ERR_BATCH_DUPLICATE: u32 = 10201;

fn classify_reply(payload: &[u8], expect_ack: bool) -> Attempt {
    if payload.is_empty() {
        return if expect_ack {
            Attempt::Retry("empty acknowledgement".into())
        } else {
            Attempt::Stored {
                seq: None,
                duplicate: false,
            }
        };
    }
    let body: AckBody = match serde_json::from_slice(payload) {
        Ok(b) => b,
        Err(e) => return Attempt::Retry(format!("unreadable acknowledgement: {e}")),
    };
    match body.error {
        None => Attempt::Stored {
            seq: body.seq,
            duplicate: body.duplicate,
        },
        Some(e) if e.err_code == ERR_BATCH_DUPLICATE => Attempt::Stored {
            seq: None,
            duplicate: true,
        },
        Some(e) if e.code == 503 || e.code == 408 || e.code == 500 => Attempt::Retry(e.description),
        Some(e) if e.description.contains("maximum") => Attempt::Fail(ClusterError::Unavailable {
            reason: format!(
                "the model's stream is full ({}); folding and trimming will free it",
                e.description
            ),
            retry_after: Duration::from_secs(5),
        }),
        Some(e) => Attempt::Fail(ClusterError::unavailable(format!(
            "JetStream refused the batch: {} (error {})",
            e.description, e.err_code
        ))),
    }
}

/// Sends one message (or chunk) and waits for the server's reply. Batch headers are
/// set when `batch` is `Some((id, 1-based sequence, commit))`.
///
/// # Errors
/// Never: every outcome is an [`Attempt`] (as a `Result` for the caller's `?`-free match).
async fn send(
    client: &Client,
    subject: &str,
    payload: Bytes,
    msg_id: Option<&str>,
    batch: Option<(&str, usize, bool)>,
    timeout: Duration,
) -> Attempt {
    let mut h = HeaderMap::new();
    if let Some(id) = msg_id {
        h.insert(NATS_MESSAGE_ID, id);
    }
    let expect_ack = match batch {
        Some((id, seq, commit)) => {
            h.insert(NATS_BATCH_ID, id);
            h.insert(NATS_BATCH_SEQUENCE, seq.to_string().as_str());
            if commit {
                h.insert(NATS_BATCH_COMMIT, "1");
            }
            commit
        }
        None => true,
    };
    let req = Request::new()
        .payload(payload)
        .headers(h)
        .timeout(Some(timeout));
    match client.send_request(subject.to_owned(), req).await {
        Ok(m) => classify_reply(&m.payload, expect_ack),
        Err(e) => match e.kind() {
            RequestErrorKind::NoResponders => {
                Attempt::Retry("no stream leader (no responders)".into())
            }
            RequestErrorKind::TimedOut => Attempt::Retry("publish timed out".into()),
            _ => Attempt::Retry(e.to_string()),
        },
    }
}

/// Publishes a chunked batch's first `upto` chunks and stops without committing: what
/// a node that dies between chunks leaves behind. For tests of that failure.
pub async fn publish_partial(
    client: &Client,
    subject: &str,
    chunks: &[Vec<u8>],
    msg_id: &str,
    upto: usize,
    timeout: Duration,
) -> Result<(), ClusterError> {
    let batch_id = random_id();
    for (i, c) in chunks
        .iter()
        .take(upto.min(chunks.len().saturating_sub(1)))
        .enumerate()
    {
        let id = (i == 0).then_some(msg_id);
        if let Attempt::Retry(e) | Attempt::Fail(ClusterError::Unavailable { reason: e, .. }) =
            send(
                client,
                subject,
                Bytes::from(c.clone()),
                id,
                Some((&batch_id, i + 1, false)),
                timeout,
            )
            .await
        {
            return Err(ClusterError::unavailable(e));
        }
    }
    Ok(())
}

/// Publishes an encoded batch (see [`wire::encode`]) to its partition with message id
/// `msg_id`, retrying for up to `retry_for`.
///
/// # Errors
/// [`ClusterError::TooLarge`] over [`max_batch_bytes`]; [`ClusterError::Unavailable`]
/// when no attempt succeeded in time (the caller answers 503 with `Retry-After`).
pub async fn publish(
    conn: &Connection,
    record: &ModelRecord,
    encoded: Vec<u8>,
    msg_id: &str,
    retry_for: Duration,
    timeout: Duration,
    chunk_pause: Duration,
) -> Result<PublishReceipt, ClusterError> {
    let limit = max_batch_bytes(conn);
    if encoded.len() > limit {
        return Err(ClusterError::TooLarge {
            bytes: encoded.len(),
            limit,
        });
    }
    let partition = partition_of(msg_id, record.partitions());
    let subject =
        conn.names
            .partition_subject(record.config.name.as_str(), record.generation, partition);
    let max_message = conn.max_payload.saturating_sub(HEADER_ROOM);
    let single = encoded.len() <= max_message;
    let messages: Vec<Bytes> = if single {
        vec![Bytes::from(encoded)]
    } else {
        let mut id = [0u8; 16];
        id.copy_from_slice(&random_id().as_bytes()[..16]);
        wire::chunks(&encoded, id, max_message)
            .into_iter()
            .map(Bytes::from)
            .collect()
    };
    let deadline = Instant::now() + retry_for;
    let mut retries = 0u64;
    let mut backoff = Duration::from_millis(50);
    loop {
        let outcome = if single {
            send(
                &conn.client,
                &subject,
                messages[0].clone(),
                Some(msg_id),
                None,
                timeout,
            )
            .await
        } else {
            let batch_id = random_id();
            let mut last = Attempt::Retry("no chunk sent".into());
            for (i, m) in messages.iter().enumerate() {
                let commit = i + 1 == messages.len();
                if i > 0 && !chunk_pause.is_zero() {
                    tokio::time::sleep(chunk_pause).await;
                }
                let id = (i == 0).then_some(msg_id);
                last = send(
                    &conn.client,
                    &subject,
                    m.clone(),
                    id,
                    Some((&batch_id, i + 1, commit)),
                    timeout,
                )
                .await;
                if !matches!(last, Attempt::Stored { .. }) {
                    break;
                }
            }
            last
        };
        match outcome {
            Attempt::Stored { seq, duplicate } => {
                return Ok(PublishReceipt {
                    partition,
                    sequence: seq,
                    duplicate,
                    messages: messages.len(),
                    retries,
                })
            }
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry(why) => {
                if Instant::now() + backoff >= deadline {
                    return Err(ClusterError::Unavailable {
                        reason: format!("the batch could not be stored in {retry_for:?}: {why}"),
                        retry_after: Duration::from_secs(2),
                    });
                }
                tracing::debug!(model = %record.config.name, error = %why, "publish failed; retrying with the same message id");
                retries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(1000));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified() {
        assert!(matches!(
            classify_reply(br#"{"stream":"S","seq":7}"#, true),
            Attempt::Stored {
                seq: Some(7),
                duplicate: false
            }
        ));
        assert!(matches!(
            classify_reply(br#"{"stream":"S","seq":7,"duplicate": true}"#, true),
            Attempt::Stored {
                seq: Some(7),
                duplicate: true
            }
        ));
        assert!(matches!(
            classify_reply(
                br#"{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"},"stream":"T","seq":0}"#,
                true
            ),
            Attempt::Stored { seq: None, duplicate: true }
        ));
        assert!(matches!(
            classify_reply(br#"{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#, true),
            Attempt::Retry(_)
        ));
        assert!(matches!(classify_reply(b"", false), Attempt::Stored { .. }));
        assert!(matches!(classify_reply(b"", true), Attempt::Retry(_)));
    }

    #[test]
    fn keys_are_checked_and_partitions_are_stable() {
        assert!(check_key("abc-123").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("has space").is_err());
        assert!(check_key(&"x".repeat(129)).is_err());
        // crc32("k:abc") is fixed, so every node and version picks the same partition.
        assert_eq!(partition_of("k:abc", 4), crc32fast::hash(b"k:abc") % 4);
        assert_ne!(message_id(None), message_id(None));
    }
}
