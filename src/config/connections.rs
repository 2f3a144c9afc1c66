//! Connection-level settings: how many connections are served at once and how long a
//! connection may take to send a request head, stay idle, or take to stop. Enforced by
//! [`crate::http::server`].

use std::time::Duration;

use clap::Args;

/// Default largest number of open client connections: three quarters of the common
/// 1024-descriptor limit, leaving the rest to the models' logs and other files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 768;
/// Default time a connection has to send a complete request head, in seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default time a kept-alive connection may wait between requests (or a client may
/// leave a response unread), in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 10;
/// Default time in-flight requests get to finish once shutdown begins, in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;

/// Connection limits and timeouts. Each bounds what a client can hold without sending
/// a request: a slow or silent client is closed after `header_read_timeout_secs`, an
/// idle one after `idle_timeout_secs`, and connections beyond `max_connections` are
/// answered 503 and closed.
#[derive(Debug, Clone, Args)]
pub struct ConnectionSettings {
    /// Largest number of open client connections; more are answered 503 and closed.
    /// Capped at start-up to 3/4 of the open-file limit (`ulimit -n`), which is first
    /// raised towards its hard limit if it is too low.
    #[arg(long, env = "STREAMPCA_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a connection has to send a complete request head, counted from its
    /// accept (or from its first byte, between kept-alive requests); then it is closed.
    #[arg(long, env = "STREAMPCA_HEADER_READ_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECS)]
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request, and a client may
    /// leave a response unread without progress; then the connection is closed.
    #[arg(long, env = "STREAMPCA_IDLE_TIMEOUT_SECS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout_secs: u64,
    /// Seconds in-flight requests get to finish once shutdown begins; connections still
    /// open then are closed. Connections with no request in flight close at once.
    #[arg(long, env = "STREAMPCA_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }
}

impl ConnectionSettings {
    /// The header-read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Checks every setting is at least 1 (the grace may be 0: close at once).
    ///
    /// # Errors
    /// A message naming the first setting out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.header_read_timeout_secs == 0 {
            return Err("header_read_timeout_secs must be at least 1 second".into());
        }
        if self.idle_timeout_secs == 0 {
            return Err("idle_timeout_secs must be at least 1 second".into());
        }
        Ok(())
    }
}
