//! Rate-limited logging for paths that clients or replicas can trigger.
//!
//! Each call site of [`warn_limited!`](crate::warn_limited) emits at most one
//! line per second; the lines it dropped meanwhile are counted in the next
//! one's `suppressed` field. Anything an HTTP client, a replica or the
//! routing-table file can cause is logged through it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The minimum gap between two lines of one call site, in milliseconds.
const INTERVAL_MS: u64 = 1000;

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The state of one rate-limited call site.
#[derive(Debug)]
pub struct LogLimiter {
    /// Milliseconds since process start of the last emitted line, plus one
    /// (0 means never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// A call site that has not logged yet.
    pub const fn new() -> Self {
        LogLimiter {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to emit now; if so, how many lines were dropped since the
    /// last one.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(process_start().elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        self.allow_at(now)
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < INTERVAL_MS {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!`, at most once a second per call site.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMITER: $crate::log::LogLimiter = $crate::log::LogLimiter::new();
        if let Some(suppressed) = LIMITER.allow() {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_once_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new();
        assert_eq!(l.allow_at(1), Some(0));
        assert_eq!(l.allow_at(2), None);
        assert_eq!(l.allow_at(999), None);
        assert_eq!(l.allow_at(1001), Some(2));
        assert_eq!(l.allow_at(1500), None);
        assert_eq!(l.allow_at(5000), Some(1));
    }
}
