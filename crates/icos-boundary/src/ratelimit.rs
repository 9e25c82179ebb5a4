//! Keyed token-bucket rate limits (per client IP, per subnet).
//!
//! Each key has a bucket of `rate` tokens (at least 1) that refills at
//! `rate` tokens per second; a request takes one token or is refused. Memory
//! is bounded: past `max_keys` keys, the buckets that are full again (idle
//! keys) are forgotten; if that is not enough, all are.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Default bound on the number of keys tracked.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A rate limiter with one bucket per key.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter of `per_second` requests per second per key, with a burst
    /// of the same size.
    pub fn new(per_second: u32, max_keys: usize) -> Self {
        let rate = f64::from(per_second.max(1));
        KeyedLimiter {
            rate,
            burst: rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` now; false means refused.
    pub fn check(&self, key: &K) -> bool {
        self.check_at(key, Instant::now())
    }

    /// Takes a token for `key` at `now`; false means refused.
    pub fn check_at(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| refilled(b, rate, burst, now) < burst);
            if buckets.len() >= self.max_keys {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = refilled(bucket, self.rate, self.burst, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The number of keys tracked.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refilled(b: &Bucket, rate: f64, burst: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
    (b.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_steady_rate_per_key() {
        let l = KeyedLimiter::new(5, 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.check_at(&"a", t0));
        }
        assert!(!l.check_at(&"a", t0), "burst spent");
        assert!(l.check_at(&"b", t0), "other keys are independent");
        // One token back every 200 ms.
        assert!(!l.check_at(&"a", t0 + Duration::from_millis(100)));
        assert!(l.check_at(&"a", t0 + Duration::from_millis(210)));
        assert!(!l.check_at(&"a", t0 + Duration::from_millis(220)));
        // Never more than the burst after a long pause.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(l.check_at(&"a", later));
        }
        assert!(!l.check_at(&"a", later));
    }

    #[test]
    fn keys_are_bounded() {
        let l = KeyedLimiter::new(1, 3);
        let t0 = Instant::now();
        for k in 0..3 {
            assert!(l.check_at(&k, t0));
        }
        assert_eq!(l.len(), 3);
        // All three are still empty: nothing idle, so all are forgotten.
        assert!(l.check_at(&3, t0));
        assert_eq!(l.len(), 1);
        // Later, idle keys are dropped first.
        let t1 = t0 + Duration::from_secs(5);
        assert!(l.check_at(&4, t0));
        assert!(l.check_at(&5, t0));
        assert!(l.check_at(&6, t1));
        assert!(l.len() <= 3);
        assert!(!l.is_empty());
    }
}
