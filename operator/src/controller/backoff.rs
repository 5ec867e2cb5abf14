//! Exponential back-off of failing reconciles, per object.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

/// Exponential back-off of failing reconciles, per object: 5 s after the first failure,
/// doubling up to 5 minutes; a success starts it afresh.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The wait after the first failure.
    pub const FIRST: Duration = Duration::from_secs(5);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key`; how long to wait before trying again.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock();
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// Records a success of `key`.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock();
        failures.remove(key);
    }
}

/// The wait after `failures` failures in a row (at least one).
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    Backoff::FIRST
        .saturating_mul(1 << doublings)
        .min(Backoff::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_a_success_resets_it() {
        let b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed("a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.failed("b").as_secs(), 5, "per object");
        b.succeeded("a");
        assert_eq!(b.failed("a").as_secs(), 5);
        for _ in 0..100 {
            b.failed("c");
        }
        assert_eq!(b.failed("c"), Backoff::MAX, "no overflow");
    }
}
