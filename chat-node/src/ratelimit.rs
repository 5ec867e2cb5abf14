//! Rate limits: [`KeyedLimiter`] (GCRA from the `governor` crate, for limits keyed by
//! client address or user whose keys come and go), and [`RateLimiter`], token buckets for
//! the send and frame rates.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How often a [`KeyedLimiter`] drops keys back at their fresh state.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A [`KeyedLimiter`] with more keys than this is swept at once, whenever it was last swept.
const SWEEP_ABOVE_KEYS: usize = 100_000;

/// Why a [`KeyedLimiter`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The key's allowance is spent; it has room again after this wait.
    Wait(Duration),
    /// More was asked at once than the whole burst: it never fits.
    Never,
}

/// One GCRA quota per key (`governor`'s keyed limiter), whose memory follows recent
/// activity: keys back at their fresh state carry no information and are dropped once a
/// minute, and at once when more than 100,000 are held.
#[derive(Debug)]
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    swept: Mutex<Instant>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Takes `cells` (0 takes nothing) from `key`'s allowance.
    pub fn check(&self, key: &K, cells: u32) -> Result<(), Over> {
        self.sweep();
        let Some(n) = NonZeroU32::new(cells) else {
            return Ok(());
        };
        match self.limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Over::Wait(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(Over::Never),
        }
    }

    /// Keys held now.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    fn sweep(&self) {
        let Some(mut swept) = self.swept.try_lock() else {
            return;
        };
        if swept.elapsed() >= SWEEP_EVERY || self.limiter.len() > SWEEP_ABOVE_KEYS {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            *swept = Instant::now();
        }
    }
}

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
