//! Connecting to NATS: connection options, the server version check, and the buckets
//! every node shares (model catalog, state, blobs), created if absent.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream::StorageType};
use async_nats::{Client, ConnectOptions};

use super::error::ClusterError;
use super::names::Names;
use super::settings::ClusterSettings;

/// Oldest nats-server accepted: pinned consumers and per-message TTLs arrived in 2.11.
pub const MIN_SERVER: (u64, u64) = (2, 11);
/// Oldest nats-server whose streams take atomic batch publish (batches over
/// `max_payload`).
pub const ATOMIC_BATCH_SERVER: (u64, u64) = (2, 12);

/// An open connection and the shared buckets.
#[derive(Clone)]
pub struct Connection {
    /// The core client.
    pub client: Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// Model records.
    pub models: kv::Store,
    /// Leases, checkpoint pointers, view pointers.
    pub state: kv::Store,
    /// Checkpoints and views.
    pub blobs: object_store::ObjectStore,
    /// Replicas of every stream and bucket.
    pub replicas: usize,
    /// The server's `max_payload`, bytes.
    pub max_payload: usize,
    /// The version the server reported.
    pub server_version: String,
    /// Whether the server takes atomic batches (2.12+).
    pub atomic_batches: bool,
    /// Names under the deployment prefix.
    pub names: Names,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server_version", &self.server_version)
            .field("replicas", &self.replicas)
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

/// Parses `major.minor[.patch][-suffix]`.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.trim().trim_start_matches('v');
    let core = core.split(['-', '+']).next()?;
    let mut it = core.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().map_or(Some(0), |p| p.parse().ok())?;
    Some((major, minor, patch))
}

/// Refuses a server older than [`MIN_SERVER`], naming the version found.
///
/// # Errors
/// [`ClusterError::ServerTooOld`].
pub fn check_version(v: &str) -> Result<(), ClusterError> {
    match parse_version(v) {
        Some((major, minor, _)) if (major, minor) >= MIN_SERVER => Ok(()),
        _ => Err(ClusterError::ServerTooOld {
            found: v.to_owned(),
        }),
    }
}

fn setup(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Setup(format!("{what}: {e}"))
}

/// Connects, checks the server version and opens (creating if absent) the shared
/// buckets.
///
/// # Errors
/// [`ClusterError::ServerTooOld`], or [`ClusterError::Setup`] naming what failed.
pub async fn connect(s: &ClusterSettings) -> Result<Connection, ClusterError> {
    s.validate().map_err(ClusterError::Setup)?;
    let mut opts = ConnectOptions::new()
        .name(format!("streampca-{}", s.node_id))
        .request_timeout(Some(s.request_timeout))
        .connection_timeout(Duration::from_secs(5))
        .require_tls(s.require_tls);
    if let Some(path) = &s.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| setup(&format!("reading credentials {}", path.display()), e))?;
    }
    if let Some(token) = &s.token {
        opts = opts.token(token.clone());
    }
    if let Some(ca) = &s.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &s.tls_client_cert {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let client = opts
        .connect(s.urls.clone())
        .await
        .map_err(|e| setup(&format!("connecting to {}", s.urls.join(",")), e))?;
    let info = client.server_info();
    check_version(&info.version)?;
    let atomic_batches =
        parse_version(&info.version).is_some_and(|(a, b, _)| (a, b) >= ATOMIC_BATCH_SERVER);
    let mut js = jetstream::new(client.clone());
    js.set_timeout(s.request_timeout);
    let replicas = match s.replicas {
        Some(r) => r,
        // The INFO's connect_urls lists the client URL of every server in the cluster.
        None if info.connect_urls.len() >= 3 => 3,
        None => 1,
    };
    let names = Names::new(&s.prefix);
    let models = open_kv(&js, &names.models_bucket(), replicas).await?;
    let state = open_kv(&js, &names.state_bucket(), replicas).await?;
    let blobs = open_objects(&js, &names.blob_bucket(), replicas).await?;
    Ok(Connection {
        client,
        js,
        models,
        state,
        blobs,
        replicas,
        max_payload: info.max_payload,
        server_version: info.version.clone(),
        atomic_batches,
        names,
    })
}

/// Retries a setup step while the cluster elects its meta leader (a fresh cluster
/// answers "JetStream not enabled" or times out for a few seconds).
async fn with_setup_retries<T, F, Fut, E>(what: &str, mut f: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(setup(what, e)),
        }
    }
}

async fn open_kv(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    with_setup_retries(&format!("opening KV bucket {bucket}"), || async {
        if let Ok(s) = js.get_key_value(bucket).await {
            return Ok(s);
        }
        js.create_key_value(kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            num_replicas: replicas,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
    })
    .await
}

async fn open_objects(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, ClusterError> {
    with_setup_retries(&format!("opening object store {bucket}"), || async {
        if let Ok(s) = js.get_object_store(bucket).await {
            return Ok(s);
        }
        js.create_object_store(object_store::Config {
            bucket: bucket.to_owned(),
            num_replicas: replicas,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn versions_older_than_2_11_are_refused_by_name() {
        assert!(check_version("2.15.1").is_ok());
        assert!(check_version("2.11.0").is_ok());
        assert!(check_version("3.0.0-beta.1").is_ok());
        let e = check_version("2.9.10").unwrap_err();
        assert!(e.to_string().contains("2.9.10"), "{e}");
        assert!(e.to_string().contains("2.11"), "{e}");
        assert!(check_version("2.10.99").is_err());
        assert!(check_version("garbage").is_err());
        assert_eq!(parse_version("v2.12.0-RC.1"), Some((2, 12, 0)));
    }
}
