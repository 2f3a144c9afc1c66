//! Settings: every knob of the service, from flags and environment variables (flags win),
//! with defaults in code, validated once before anything binds.
//!
//! Owns parsing and validation only; it never opens sockets or files.

pub mod cluster;
pub mod connections;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default request body limit in bytes (64 MiB): a 256×784 JSON batch is about 4 MB, and
/// axum's own default of 2 MB would reject it (docs/DESIGN.md §9).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Default number of batches between two snapshots of a model.
pub const DEFAULT_SNAPSHOT_EVERY_BATCHES: u64 = 1000;
/// Default longest time between two snapshots of a changed model, in seconds.
pub const DEFAULT_SNAPSHOT_INTERVAL_SECS: u64 = 60;

/// When an accepted batch is forced to disk before the 200 is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum SyncPolicy {
    /// fsync (`fdatasync`) the log before acknowledging; concurrent producers share one
    /// fsync (group commit). Survives power loss.
    #[default]
    Always,
    /// Write the log but never fsync: survives `kill -9` (the page cache outlives the
    /// process) but not power loss. For benchmarks and throwaway data.
    Never,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of the service. Precedence: flag > environment variable > default.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "STREAMPCA_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Directory for durable state (created at start-up).
    #[arg(long, env = "STREAMPCA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "STREAMPCA_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// When accepted batches are fsynced: `always` (before the 200, the default) or
    /// `never`.
    #[arg(long, env = "STREAMPCA_SYNC", value_enum, default_value_t = SyncPolicy::Always)]
    pub sync: SyncPolicy,
    /// Snapshot a model once this many batches arrived since its last snapshot.
    #[arg(long, env = "STREAMPCA_SNAPSHOT_EVERY_BATCHES", default_value_t = DEFAULT_SNAPSHOT_EVERY_BATCHES)]
    pub snapshot_every_batches: u64,
    /// Snapshot a model that changed at least this often, in seconds.
    #[arg(long, env = "STREAMPCA_SNAPSHOT_INTERVAL_SECS", default_value_t = DEFAULT_SNAPSHOT_INTERVAL_SECS)]
    pub snapshot_interval_secs: u64,
    /// Log format.
    #[arg(long, env = "STREAMPCA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `streampca=debug`).
    #[arg(long, env = "STREAMPCA_LOG", default_value = "info")]
    pub log: String,
    /// Interval over which subspace drift is measured, in seconds (the
    /// `streampca_model_subspace_drift_radians` gauge).
    #[arg(long, env = "STREAMPCA_DRIFT_INTERVAL_SECS", default_value_t = 300.0)]
    pub drift_interval_secs: f64,
    /// Serve models whose recovery found acknowledged data missing (a log that does not
    /// start where the newest snapshot ends, a missing or damaged log), with what is
    /// left. Without it such models are held back: they answer 503
    /// `model_unavailable`, `/readyz` names them and
    /// `streampca_model_recovery_held` is 1, until this flag is given or they are
    /// deleted.
    #[arg(long, env = "STREAMPCA_ACCEPT_DATA_LOSS", default_value_t = false)]
    pub accept_data_loss: bool,
    /// API keys (off unless a key is set).
    #[command(flatten)]
    pub auth: AuthSettings,
    /// Request limits and overload protection.
    #[command(flatten)]
    pub limits: Limits,
    /// Connection limits and timeouts.
    #[command(flatten)]
    pub connections: connections::ConnectionSettings,
    /// Cluster mode (`--nats`); embedded when absent.
    #[command(flatten)]
    pub cluster: Box<cluster::ClusterArgs>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            body_limit: DEFAULT_BODY_LIMIT,
            sync: SyncPolicy::Always,
            snapshot_every_batches: DEFAULT_SNAPSHOT_EVERY_BATCHES,
            snapshot_interval_secs: DEFAULT_SNAPSHOT_INTERVAL_SECS,
            log_format: LogFormat::Text,
            log: "info".into(),
            drift_interval_secs: 300.0,
            accept_data_loss: false,
            auth: AuthSettings::default(),
            limits: Limits::default(),
            connections: connections::ConnectionSettings::default(),
            cluster: Box::default(),
        }
    }
}

impl Settings {
    /// Checks the settings before anything binds.
    ///
    /// # Errors
    /// A message naming the first setting out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.body_limit < 1024 {
            return Err(format!(
                "body_limit must be at least 1024 bytes, got {}",
                self.body_limit
            ));
        }
        if !(self.drift_interval_secs.is_finite() && self.drift_interval_secs > 0.0) {
            return Err(format!(
                "drift_interval_secs must be a positive number of seconds, got {}",
                self.drift_interval_secs
            ));
        }
        if self.snapshot_every_batches == 0 {
            return Err("snapshot_every_batches must be at least 1".into());
        }
        if self.snapshot_interval_secs == 0 {
            return Err("snapshot_interval_secs must be at least 1".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        self.connections.validate()?;
        self.auth.keys()?;
        self.limits.validate()
    }
}

/// A secret (an API key): its `Debug` never shows the value, so keys stay out of logs
/// and panic messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's value; call only to compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(\"[redacted]\")")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// API keys. With neither key set, every route is open (local use). `*_FILE` variants
/// name a file holding the key (e.g. a mounted Kubernetes secret); surrounding
/// whitespace is trimmed. Environment values are hidden from `--help`.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthSettings {
    /// Write key: create, ingest, delete, snapshots, and everything the read key allows.
    #[arg(long, env = "STREAMPCA_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// File holding the write key.
    #[arg(long, env = "STREAMPCA_API_KEY_FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// Read key: list, status, components, project.
    #[arg(long, env = "STREAMPCA_READ_API_KEY", hide_env_values = true)]
    pub read_api_key: Option<Secret>,
    /// File holding the read key.
    #[arg(
        long,
        env = "STREAMPCA_READ_API_KEY_FILE",
        conflicts_with = "read_api_key"
    )]
    pub read_api_key_file: Option<PathBuf>,
    /// Require the read key for `GET /metrics` too (open by default, for scrapers).
    #[arg(long, env = "STREAMPCA_METRICS_AUTH", default_value_t = false)]
    pub metrics_auth: bool,
    /// Accept keys shorter than 16 bytes (for local use and tests only).
    #[arg(long, env = "STREAMPCA_ALLOW_SHORT_API_KEYS", default_value_t = false)]
    pub allow_short_api_keys: bool,
}

/// Shortest API key accepted without `--allow-short-api-keys`, in bytes.
pub const MIN_API_KEY_BYTES: usize = 16;

/// Why `key` can never work as a bearer token, or is too short; `None` if it is fine.
/// A header value must be visible ASCII, so a key with any other byte (accents, other
/// scripts, control characters, inner spaces) could never be presented and every
/// request would get 401. The message never includes the key.
fn key_problem(name: &str, key: &str, allow_short: bool) -> Option<String> {
    if let Some((i, c)) = key.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        let what = if c == ' ' {
            "a space".to_owned()
        } else if c.is_ascii() {
            format!("the control character U+{:04X}", u32::from(c))
        } else {
            format!("the non-ASCII character U+{:04X}", u32::from(c))
        };
        return Some(format!(
            "{name} contains {what} at byte {i}: keys must be visible ASCII \
             (bytes 0x21-0x7E), because HTTP headers cannot carry anything else"
        ));
    }
    if !allow_short && key.len() < MIN_API_KEY_BYTES {
        return Some(format!(
            "{name} is {} bytes long; use at least {MIN_API_KEY_BYTES} \
             (or --allow-short-api-keys for local use)",
            key.len()
        ));
    }
    None
}

/// The keys in force, after reading any `*_FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// The write key.
    pub write: Option<Secret>,
    /// The read key.
    pub read: Option<Secret>,
}

impl AuthSettings {
    /// Resolves the keys, reading key files. Refused: empty keys (an empty key would
    /// let an empty `Bearer` header in), keys with anything but visible ASCII (no
    /// request could ever present them), and keys shorter than [`MIN_API_KEY_BYTES`]
    /// unless `allow_short_api_keys`.
    ///
    /// # Errors
    /// A message naming the unreadable file or the unusable key (never the key itself).
    pub fn keys(&self) -> Result<Keys, String> {
        let allow_short = self.allow_short_api_keys;
        let one = |name: &str,
                   value: Option<&Secret>,
                   file: Option<&PathBuf>|
         -> Result<Option<Secret>, String> {
            let key = match (value, file) {
                (Some(v), _) => Some(v.expose().trim().to_owned()),
                (None, Some(path)) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("reading {name} file {}: {e}", path.display()))?
                        .trim()
                        .to_owned(),
                ),
                (None, None) => None,
            };
            match key {
                Some(k) if k.is_empty() => Err(format!("{name} is empty")),
                Some(k) => match key_problem(name, &k, allow_short) {
                    Some(problem) => Err(problem),
                    None => Ok(Some(Secret(k))),
                },
                None => Ok(None),
            }
        };
        Ok(Keys {
            write: one("api_key", self.api_key.as_ref(), self.api_key_file.as_ref())?,
            read: one(
                "read_api_key",
                self.read_api_key.as_ref(),
                self.read_api_key_file.as_ref(),
            )?,
        })
    }
}

/// Default largest number of rows in one ingest batch.
pub const DEFAULT_MAX_BATCH_ROWS: usize = 100_000;
/// Default largest input (or target) dimension of a model: a 4096² float64 scatter is
/// 128 MiB (the registry's hard cap, 16 384, would be 2 GiB).
pub const DEFAULT_MAX_DIM: usize = 4096;
/// Default budget for the scatter matrices of all models together (1 GiB).
pub const DEFAULT_MAX_STATE_BYTES: u64 = 1 << 30;
/// Default largest number of components of a model.
pub const DEFAULT_MAX_COMPONENTS: usize = 1024;
/// Default largest number of models.
pub const DEFAULT_MAX_MODELS: usize = 1000;
/// Default largest number of rows in one projection request.
pub const DEFAULT_MAX_QUERY_ROWS: usize = 10_000;
/// Default number of ingest batches in flight per model before 503.
pub const DEFAULT_INGEST_QUEUE: usize = 64;
/// Default number of requests in flight across the service before 503.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// Default request timeout, in seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default smallest average rate of a request body after the grace period, in bytes
/// per second (128 kbit/s).
pub const DEFAULT_BODY_MIN_RATE: u64 = 16 * 1024;
/// Default time a request body may take before the minimum rate applies, in seconds.
pub const DEFAULT_BODY_GRACE_SECS: u64 = 2;
/// Default largest number of threads running blocking work (body parsing, batch apply
/// and fsync wait, projections, snapshots).
pub const DEFAULT_BLOCKING_THREADS: usize = 64;

/// Limits on what one request or client may ask for. Each has a safe default; a
/// request over a limit gets a 4xx naming the limit and its value, and overload gets
/// 503 with `Retry-After`.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest number of rows in one ingest batch.
    #[arg(long, env = "STREAMPCA_MAX_BATCH_ROWS", default_value_t = DEFAULT_MAX_BATCH_ROWS)]
    pub max_batch_rows: usize,
    /// Largest input (and target) dimension of a model (at most 16384: the accumulator
    /// holds an n×n float64 scatter, 128 MiB at 4096 and 2 GiB at 16384).
    #[arg(long, env = "STREAMPCA_MAX_DIM", default_value_t = DEFAULT_MAX_DIM)]
    pub max_dim: usize,
    /// Largest number of components of a model.
    #[arg(long, env = "STREAMPCA_MAX_COMPONENTS", default_value_t = DEFAULT_MAX_COMPONENTS)]
    pub max_components: usize,
    /// Largest number of models.
    #[arg(long, env = "STREAMPCA_MAX_MODELS", default_value_t = DEFAULT_MAX_MODELS)]
    pub max_models: usize,
    /// Budget in bytes for all models' scatter matrices together (8·(dim+target_dim)²
    /// each); a model that would exceed it is refused with 409 `too_many_models`.
    #[arg(long, env = "STREAMPCA_MAX_STATE_BYTES", default_value_t = DEFAULT_MAX_STATE_BYTES)]
    pub max_state_bytes: u64,
    /// Largest number of rows in one projection request.
    #[arg(long, env = "STREAMPCA_MAX_QUERY_ROWS", default_value_t = DEFAULT_MAX_QUERY_ROWS)]
    pub max_query_rows: usize,
    /// Ingest batches in flight per model (parsing or waiting to apply); beyond it,
    /// 503 with `Retry-After`.
    #[arg(long, env = "STREAMPCA_INGEST_QUEUE", default_value_t = DEFAULT_INGEST_QUEUE)]
    pub ingest_queue: usize,
    /// Requests in flight across the service; beyond it, 503 with `Retry-After`.
    /// With `body_limit` this bounds the memory held by request bodies.
    #[arg(long, env = "STREAMPCA_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Request timeout in seconds; a request still running then gets 503.
    #[arg(long, env = "STREAMPCA_REQUEST_TIMEOUT", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS)]
    pub request_timeout: u64,
    /// Smallest average rate of a request body, in bytes per second, once
    /// `body_grace_secs` have passed: a body that falls behind gets 408 `body_timeout`
    /// and frees its in-flight slot (a trickling client cannot hold one for the whole
    /// request timeout).
    #[arg(long, env = "STREAMPCA_BODY_MIN_RATE", default_value_t = DEFAULT_BODY_MIN_RATE)]
    pub body_min_rate: u64,
    /// Seconds a request body may take before `body_min_rate` applies.
    #[arg(long, env = "STREAMPCA_BODY_GRACE_SECS", default_value_t = DEFAULT_BODY_GRACE_SECS)]
    pub body_grace_secs: u64,
    /// Threads for blocking work (parsing, applying and logging batches, projections);
    /// more such work waits for a free thread. Each thread keeps its own stack and the
    /// linear-algebra kernels' per-thread workspace, so this bounds that memory.
    #[arg(long, env = "STREAMPCA_BLOCKING_THREADS", default_value_t = DEFAULT_BLOCKING_THREADS)]
    pub blocking_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_rows: DEFAULT_MAX_BATCH_ROWS,
            max_dim: DEFAULT_MAX_DIM,
            max_components: DEFAULT_MAX_COMPONENTS,
            max_models: DEFAULT_MAX_MODELS,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_query_rows: DEFAULT_MAX_QUERY_ROWS,
            ingest_queue: DEFAULT_INGEST_QUEUE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT_SECS,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            body_grace_secs: DEFAULT_BODY_GRACE_SECS,
            blocking_threads: DEFAULT_BLOCKING_THREADS,
        }
    }
}

impl Limits {
    /// Checks every limit is positive and `max_dim`/`max_components` stay within what
    /// the registry can hold.
    ///
    /// # Errors
    /// A message naming the first limit out of range.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_batch_rows", self.max_batch_rows),
            ("max_dim", self.max_dim),
            ("max_components", self.max_components),
            ("max_models", self.max_models),
            ("max_query_rows", self.max_query_rows),
            ("ingest_queue", self.ingest_queue),
            ("max_in_flight", self.max_in_flight),
            ("blocking_threads", self.blocking_threads),
            (
                "body_min_rate",
                usize::try_from(self.body_min_rate).unwrap_or(usize::MAX),
            ),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_state_bytes == 0 {
            return Err("max_state_bytes must be at least 1".into());
        }
        if self.request_timeout == 0 {
            return Err("request_timeout must be at least 1 second".into());
        }
        if self.max_dim > crate::model::config::MAX_DIM {
            return Err(format!(
                "max_dim must be at most {}, got {}",
                crate::model::config::MAX_DIM,
                self.max_dim
            ));
        }
        if self.max_components > crate::model::config::MAX_COMPONENTS {
            return Err(format!(
                "max_components must be at most {}, got {}",
                crate::model::config::MAX_COMPONENTS,
                self.max_components
            ));
        }
        Ok(())
    }
}

impl Limits {
    /// The limits the model registry applies to creations and imports.
    pub fn models(&self) -> crate::model::ModelLimits {
        crate::model::ModelLimits {
            max_dim: self.max_dim,
            max_components: self.max_components,
            max_models: self.max_models,
            max_state_bytes: self.max_state_bytes,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    #[test]
    fn the_bare_binary_and_serve_parse_the_same_flags() {
        let bare = Cli::parse_from(["streampca", "--listen", "0.0.0.0:9000"]).into_settings();
        let serve =
            Cli::parse_from(["streampca", "serve", "--listen", "0.0.0.0:9000"]).into_settings();
        assert_eq!(bare.listen, serve.listen);
        assert_eq!(bare.body_limit, DEFAULT_BODY_LIMIT);
    }

    #[test]
    fn client_subcommands_parse_beside_serve() {
        let cli = Cli::parse_from(["streampca", "models", "list", "--url", "http://h:1"]);
        assert!(matches!(cli.command, Some(Command::Client(_))));
        let cli = Cli::parse_from(["streampca", "ingest", "m", "a.csv", "b.npy"]);
        assert!(matches!(cli.command, Some(Command::Client(_))));
    }

    #[test]
    fn a_tiny_body_limit_is_rejected() {
        let s = Settings {
            body_limit: 10,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn blocking_threads_default_to_a_bounded_pool_and_zero_is_rejected() {
        let s = Cli::parse_from(["streampca", "serve"]).into_settings();
        assert_eq!(s.limits.blocking_threads, DEFAULT_BLOCKING_THREADS);
        assert!(s.validate().is_ok());
        let s = Cli::parse_from(["streampca", "--blocking-threads", "8"]).into_settings();
        assert_eq!(s.limits.blocking_threads, 8);
        // tokio panics on a pool of zero threads; the settings refuse it first.
        let s = Cli::parse_from(["streampca", "--blocking-threads", "0"]).into_settings();
        let err = s.validate().expect_err("zero blocking threads");
        assert!(err.contains("blocking_threads"), "{err}");
    }

    #[test]
    fn keys_never_appear_in_debug_output() {
        let s = Cli::parse_from([
            "streampca",
            "--api-key",
            "write-secret-123",
            "--read-api-key",
            "read-secret-4567",
        ])
        .into_settings();
        let dbg = format!("{s:?} {:?}", s.auth.keys());
        assert!(!dbg.contains("write-secret-123"), "{dbg}");
        assert!(!dbg.contains("read-secret-4567"), "{dbg}");
    }

    #[test]
    fn key_files_are_read_and_trimmed_and_empty_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "from-file-0123456789\n").unwrap();
        let auth = AuthSettings {
            api_key_file: Some(path.clone()),
            ..AuthSettings::default()
        };
        assert_eq!(
            auth.keys().unwrap().write,
            Some(Secret::from("from-file-0123456789"))
        );
        std::fs::write(&path, "  \n").unwrap();
        assert!(auth.keys().is_err());
    }

    fn write_key(key: &str, allow_short: bool) -> Result<Keys, String> {
        AuthSettings {
            api_key: Some(Secret::from(key)),
            allow_short_api_keys: allow_short,
            ..AuthSettings::default()
        }
        .keys()
    }

    #[test]
    fn keys_that_no_header_can_carry_are_refused_naming_the_character_not_the_key() {
        let err = write_key("clé-secrète-0123456789", false).unwrap_err();
        assert!(err.contains("api_key") && err.contains("U+00E9"), "{err}");
        assert!(
            err.contains("byte 2") && err.contains("visible ASCII"),
            "{err}"
        );
        assert!(!err.contains("secr"), "the key leaked: {err}");
        let err = write_key("tab\tinside-0123456789", false).unwrap_err();
        assert!(err.contains("control character U+0009"), "{err}");
        let err = write_key("space inside-0123456789", false).unwrap_err();
        assert!(err.contains("a space at byte 5"), "{err}");
        // Even with short keys allowed.
        assert!(write_key("clé", true).is_err());
    }

    #[test]
    fn keys_shorter_than_16_bytes_need_the_flag() {
        let err = write_key("fifteen-bytes-k", false).unwrap_err();
        assert!(
            err.contains("15 bytes") && err.contains("--allow-short-api-keys"),
            "{err}"
        );
        assert!(write_key("sixteen-bytes-ky", false).is_ok());
        assert!(write_key("k1", true).is_ok());
        let cli = Cli::parse_from([
            "streampca",
            "--read-api-key",
            "short",
            "--allow-short-api-keys",
        ]);
        assert!(cli.into_settings().validate().is_ok());
        let cli = Cli::parse_from(["streampca", "--read-api-key", "short"]);
        let err = cli.into_settings().validate().unwrap_err();
        assert!(err.contains("read_api_key is 5 bytes"), "{err}");
    }

    #[test]
    fn connection_settings_have_defaults_and_refuse_zero() {
        let s = Cli::parse_from(["streampca"]).into_settings();
        assert_eq!(s.connections.max_connections, 768);
        assert_eq!(s.connections.header_read_timeout_secs, 10);
        assert_eq!(s.connections.idle_timeout_secs, 10);
        assert_eq!(s.connections.shutdown_grace_secs, 10);
        for flag in [
            "--max-connections",
            "--header-read-timeout-secs",
            "--idle-timeout-secs",
        ] {
            let s = Cli::parse_from(["streampca", flag, "0"]).into_settings();
            let err = s.validate().unwrap_err();
            assert!(err.contains(&flag[2..].replace('-', "_")), "{flag}: {err}");
        }
        let s = Cli::parse_from(["streampca", "--shutdown-grace-secs", "0"]).into_settings();
        assert!(s.validate().is_ok());
    }
}
