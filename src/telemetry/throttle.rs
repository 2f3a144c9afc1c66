//! Keeping a failing disk (or a flood of bad connections) from flooding the log:
//!
//! - [`LogThrottle`]: a per-key rate limiter for repeated error lines. The first
//!   `burst` lines of a key in each `window` are logged; the rest are counted, and the
//!   next line that is logged carries how many were suppressed since the previous one.
//!   [`LogThrottle::flush`] hands back the counts of keys that went quiet, so a periodic
//!   task can log them too.
//! - [`Backoff`]: exponential backoff with a cap for retrying a failed operation (e.g. a
//!   snapshot write): `base`, `2·base`, `4·base`, … up to `cap`, reset by a success.
//!
//! Both take the current time as an argument (`*_at(now)`), so tests drive them with a
//! controllable clock; the plain methods use [`Instant::now`].
//!
//! # Use
//!
//! ```
//! use std::time::Duration;
//! use streampca::telemetry::throttle::{Backoff, LogThrottle};
//!
//! // One throttle per kind of line, shared (it is `Sync`), e.g. in a `static LazyLock`.
//! let throttle = LogThrottle::new(Duration::from_secs(10), 5);
//! let model = "m";
//! if let Some(suppressed) = throttle.check(&format!("wal_append/{model}")) {
//!     tracing::error!(model, suppressed, "write-ahead log append failed");
//! }
//!
//! // One backoff per retried thing (e.g. per model's snapshot), owned by its scheduler.
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
//! if backoff.ready() {
//!     let wrote: Result<(), std::io::Error> = Ok(()); // the attempt
//!     match wrote {
//!         Ok(()) => backoff.succeeded(),
//!         Err(_) => { let _next_try_in = backoff.failed(); }
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Largest number of distinct keys a [`LogThrottle`] tracks; beyond it the key whose
/// window started longest ago is forgotten (its pending count is lost, never memory).
pub const DEFAULT_MAX_KEYS: usize = 4096;

/// Per-key state: the current window and what happened in it.
#[derive(Debug, Clone, Copy)]
struct KeyState {
    /// Start of the current window.
    window_start: Instant,
    /// Lines logged in the current window.
    emitted: u32,
    /// Lines suppressed since the last logged one.
    suppressed: u64,
}

/// A per-key rate limiter for log lines: at most `burst` lines per key per `window`;
/// the others are counted and reported with the next logged line of that key.
#[derive(Debug)]
pub struct LogThrottle {
    window: Duration,
    burst: u32,
    max_keys: usize,
    keys: Mutex<HashMap<String, KeyState>>,
}

impl LogThrottle {
    /// At most `burst` (at least 1) lines per key per `window`, tracking at most
    /// [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(window: Duration, burst: u32) -> Self {
        Self::with_max_keys(window, burst, DEFAULT_MAX_KEYS)
    }

    /// As [`Self::new`], tracking at most `max_keys` (at least 1) keys.
    pub fn with_max_keys(window: Duration, burst: u32, max_keys: usize) -> Self {
        Self {
            window,
            burst: burst.max(1),
            max_keys: max_keys.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line for `key` should be logged now: `Some(n)` to log it, with `n` the
    /// lines of this key suppressed since the last logged one (log `n` with the line);
    /// `None` to drop it (it is counted).
    pub fn check(&self, key: &str) -> Option<u64> {
        self.check_at(key, Instant::now())
    }

    /// [`Self::check`] at time `now`.
    pub fn check_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if !keys.contains_key(key) && keys.len() >= self.max_keys {
            let oldest = keys
                .iter()
                .min_by_key(|(_, s)| s.window_start)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                keys.remove(&k);
            }
        }
        let state = keys.entry(key.to_owned()).or_insert(KeyState {
            window_start: now,
            emitted: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(state.window_start) >= self.window {
            state.window_start = now;
            state.emitted = 0;
        }
        if state.emitted < self.burst {
            state.emitted += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }

    /// Keys whose window has ended with lines still suppressed, with their counts
    /// (reset to zero), so a periodic task can log "N more lines like this". Keys idle
    /// for a whole window with nothing pending are forgotten.
    pub fn flush(&self) -> Vec<(String, u64)> {
        self.flush_at(Instant::now())
    }

    /// [`Self::flush`] at time `now`.
    pub fn flush_at(&self, now: Instant) -> Vec<(String, u64)> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        keys.retain(|k, s| {
            if now.saturating_duration_since(s.window_start) < self.window {
                return true;
            }
            if s.suppressed > 0 {
                out.push((k.clone(), std::mem::take(&mut s.suppressed)));
            }
            false
        });
        out.sort();
        out
    }
}

/// Exponential backoff with a cap: after the i-th consecutive failure (i ≥ 1) the next
/// attempt waits `min(base · 2^(i−1), cap)`; a success resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    next_at: Option<Instant>,
}

impl Backoff {
    /// Waits `base` after the first failure, doubling up to `cap` (`cap ≥ base`).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            failures: 0,
            next_at: None,
        }
    }

    /// Whether an attempt may be made now (no failure pending, or its wait is over).
    pub fn ready(&self) -> bool {
        self.ready_at(Instant::now())
    }

    /// [`Self::ready`] at time `now`.
    pub fn ready_at(&self, now: Instant) -> bool {
        self.next_at.is_none_or(|t| now >= t)
    }

    /// Records a failed attempt made at `now`; returns how long to wait before the next.
    pub fn failed(&mut self) -> Duration {
        self.failed_at(Instant::now())
    }

    /// [`Self::failed`] at time `now`.
    pub fn failed_at(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self.delay();
        self.next_at = Some(now + delay);
        delay
    }

    /// Records a success: the next failure waits `base` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.next_at = None;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait after the current number of failures (zero before any).
    pub fn delay(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        // 2^(failures−1) saturates long before u32 overflows matter: cap it at 2^31.
        let factor = 1u32 << (self.failures - 1).min(31);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_is_logged_then_lines_are_counted_and_reported_with_the_next_window() {
        let t = LogThrottle::new(10 * S, 3);
        let t0 = Instant::now();
        // 3 lines logged, 97 suppressed within the first window.
        let logged: Vec<_> = (0..100)
            .filter_map(|i| t.check_at("disk", t0 + Duration::from_millis(i * 50)))
            .collect();
        assert_eq!(logged, vec![0, 0, 0]);
        // The first line of the next window carries the 97.
        assert_eq!(t.check_at("disk", t0 + 10 * S), Some(97));
        assert_eq!(t.check_at("disk", t0 + 10 * S), Some(0));
        assert_eq!(t.check_at("disk", t0 + 10 * S), Some(0));
        assert_eq!(t.check_at("disk", t0 + 11 * S), None);
    }

    #[test]
    fn keys_are_limited_independently() {
        let t = LogThrottle::new(10 * S, 1);
        let t0 = Instant::now();
        assert_eq!(t.check_at("a", t0), Some(0));
        assert_eq!(t.check_at("a", t0), None);
        assert_eq!(t.check_at("b", t0), Some(0));
        assert_eq!(t.check_at("b", t0 + S), None);
        assert_eq!(t.check_at("a", t0 + 10 * S), Some(1));
        assert_eq!(t.check_at("b", t0 + 10 * S), Some(1));
    }

    #[test]
    fn a_flood_at_the_issue_rate_logs_a_bounded_number_of_lines() {
        // The issue saw 4 539 append errors in 25 s; with 5 lines per 10 s per key the
        // log gets 15 lines and the counts add up to every error.
        let t = LogThrottle::new(10 * S, 5);
        let t0 = Instant::now();
        let step = Duration::from_secs_f64(25.0 / 4539.0);
        let mut lines = 0;
        let mut reported = 0;
        for i in 0..4539u32 {
            if let Some(n) = t.check_at("wal_append/m", t0 + step * i) {
                lines += 1;
                reported += n;
            }
        }
        let pending: u64 = t.flush_at(t0 + 40 * S).iter().map(|(_, n)| n).sum();
        assert_eq!(lines, 15);
        assert_eq!(lines + reported + pending, 4539);
    }

    #[test]
    fn flush_reports_keys_that_went_quiet_and_forgets_idle_ones() {
        let t = LogThrottle::new(10 * S, 1);
        let t0 = Instant::now();
        t.check_at("a", t0);
        t.check_at("a", t0);
        t.check_at("a", t0);
        t.check_at("b", t0);
        assert!(t.flush_at(t0 + 9 * S).is_empty(), "window not over yet");
        assert_eq!(t.flush_at(t0 + 10 * S), vec![("a".to_owned(), 2)]);
        assert!(t.flush_at(t0 + 20 * S).is_empty());
        // Both were forgotten: a new line starts a new window with nothing pending.
        assert_eq!(t.check_at("a", t0 + 21 * S), Some(0));
    }

    #[test]
    fn the_number_of_keys_is_bounded() {
        let t = LogThrottle::with_max_keys(10 * S, 1, 2);
        let t0 = Instant::now();
        t.check_at("a", t0);
        t.check_at("b", t0 + S);
        t.check_at("c", t0 + 2 * S); // evicts "a", the oldest window
        assert_eq!(t.keys.lock().unwrap().len(), 2);
        assert_eq!(t.check_at("a", t0 + 3 * S), Some(0), "a starts afresh");
    }

    #[test]
    fn backoff_doubles_from_base_up_to_the_cap_and_resets_on_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(b.ready_at(t0));
        let delays: Vec<u64> = (0..12)
            .map(|_| b.failed_at(t0).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            vec![100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]
        );
        assert_eq!(b.failures(), 12);
        b.succeeded();
        assert_eq!(b.failed_at(t0), Duration::from_millis(100));
    }

    #[test]
    fn backoff_is_not_ready_until_the_wait_is_over() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(30));
        let t0 = Instant::now();
        b.failed_at(t0);
        assert!(!b.ready_at(t0 + Duration::from_millis(1999)));
        assert!(b.ready_at(t0 + 2 * S));
        b.failed_at(t0 + 2 * S);
        assert!(!b.ready_at(t0 + 5 * S));
        assert!(b.ready_at(t0 + 6 * S));
    }

    #[test]
    fn backoff_with_a_100_ms_tick_retries_a_full_disk_a_bounded_number_of_times() {
        // The issue: a 100 ms snapshot tick retried a failing snapshot 249 times in 25 s.
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let t0 = Instant::now();
        let attempts = (0..250u32)
            .map(|i| t0 + Duration::from_millis(100) * i)
            .filter(|&now| {
                let go = b.ready_at(now);
                if go {
                    b.failed_at(now);
                }
                go
            })
            .count();
        // Attempts at 0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 12.7 s (next would be 25.5 s).
        assert_eq!(attempts, 8);
    }

    #[test]
    fn a_huge_number_of_failures_saturates_at_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..100 {
            b.failed_at(Instant::now());
        }
        assert_eq!(b.delay(), Duration::from_secs(300));
    }
}
