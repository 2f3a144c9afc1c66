//! Settings: every knob of the service, from flags and environment variables (flags win),
//! with defaults in code, validated once before anything binds.
//!
//! Owns parsing and validation only; it never opens sockets or files.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default request body limit in bytes (64 MiB): a 256×784 JSON batch is about 4 MB, and
/// axum's own default of 2 MB would reject it (DESIGN.md §8).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Default number of batches between two snapshots of a model.
pub const DEFAULT_SNAPSHOT_EVERY_BATCHES: u64 = 1000;
/// Default longest time between two snapshots of a changed model, in seconds.
pub const DEFAULT_SNAPSHOT_INTERVAL_SECS: u64 = 60;

/// The command line: `streampca [serve] [OPTIONS]`. The bare binary serves.
#[derive(Debug, Parser)]
#[command(
    name = "streampca",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; omitted means `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for the bare binary (same as `serve`'s).
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve(Settings),
    /// The command-line client (`models`, `ingest`, `components`, `project`, `demo`),
    /// which talks to a running server; see [`crate::cli`].
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
}

impl Cli {
    /// The settings to serve with, whichever form the command line took.
    pub fn into_settings(self) -> Settings {
        match self.command {
            Some(Command::Serve(s)) => s,
            Some(Command::Client(_)) | None => self.settings,
        }
    }
}

/// When an accepted batch is forced to disk before the 200 is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Sync {
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
    #[arg(long, env = "STREAMPCA_SYNC", value_enum, default_value_t = Sync::Always)]
    pub sync: Sync,
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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            body_limit: DEFAULT_BODY_LIMIT,
            sync: Sync::Always,
            snapshot_every_batches: DEFAULT_SNAPSHOT_EVERY_BATCHES,
            snapshot_interval_secs: DEFAULT_SNAPSHOT_INTERVAL_SECS,
            log_format: LogFormat::Text,
            log: "info".into(),
            drift_interval_secs: 300.0,
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
