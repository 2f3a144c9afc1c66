//! Logging set-up: one global tracing subscriber, text or JSON. Called once by `main`.
//! [`throttle`] keeps repeated error lines and retries from flooding the log.

pub mod throttle;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` uses `EnvFilter` syntax; `RUST_LOG`, when
/// set, takes precedence. Does nothing if a subscriber is already installed.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
