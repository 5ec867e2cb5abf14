//! Token buckets: a sustained rate with a burst.

use std::collections::HashMap;

/// One bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last_ms: i64,
}

/// Buckets by key (user ID), all with the same rate and burst.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    buckets: HashMap<K, Bucket>,
}

impl<K: std::hash::Hash + Eq + Copy> RateLimiter<K> {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key` at `now_ms`; `false` when the bucket is empty.
    pub fn allow(&mut self, key: K, now_ms: i64) -> bool {
        if self.buckets.len() > 100_000 {
            // Drop buckets that have refilled completely: they carry no state.
            let (per_sec, burst) = (self.per_sec, self.burst);
            self.buckets
                .retain(|_, b| b.tokens + (now_ms - b.last_ms) as f64 / 1000.0 * per_sec < burst);
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last_ms: now_ms,
        });
        let elapsed = (now_ms - b.last_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.last_ms = now_ms.max(b.last_ms);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let mut r = RateLimiter::new(20, 40);
        let allowed = (0..100).filter(|_| r.allow(1u64, 0)).count();
        assert_eq!(allowed, 40, "the burst");
        assert!(!r.allow(1, 0));
        assert!(r.allow(2, 0), "other keys have their own bucket");
        // One second refills 20.
        let allowed = (0..100).filter(|_| r.allow(1, 1000)).count();
        assert_eq!(allowed, 20);
        // Never more than the burst, however long the pause.
        let allowed = (0..100).filter(|_| r.allow(1, 1_000_000)).count();
        assert_eq!(allowed, 40);
    }
}
