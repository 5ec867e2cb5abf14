//! Per-user budgets of the WebSocket endpoint (resume replays, typing events): token
//! buckets that may go into debt.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parley_protocol::Id;

/// A per-user token bucket's shape: `per_sec` tokens a second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub per_sec: f64,
    pub burst: f64,
}

/// Token buckets by user that may go into debt (a charge larger than what is left).
#[derive(Debug, Default)]
pub(super) struct Buckets {
    /// Tokens and when they were counted.
    users: HashMap<Id, (f64, Instant)>,
}

impl Buckets {
    /// Refills `user`'s bucket to `now` and returns its tokens.
    fn refill(&mut self, user: Id, b: Budget, now: Instant) -> &mut (f64, Instant) {
        if self.users.len() > 100_000 {
            // Full buckets carry no state.
            self.users.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * b.per_sec < b.burst
            });
        }
        let entry = self.users.entry(user).or_insert((b.burst, now));
        let elapsed = now.saturating_duration_since(entry.1).as_secs_f64();
        entry.0 = (entry.0 + elapsed * b.per_sec).min(b.burst);
        entry.1 = now;
        entry
    }

    /// `Ok` while at least one token is left; else how long until one is.
    pub(super) fn check(&mut self, user: Id, b: Budget, now: Instant) -> Result<(), Duration> {
        let (tokens, _) = *self.refill(user, b, now);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - tokens) / b.per_sec.max(1e-9),
            ))
        }
    }

    pub(super) fn charge(&mut self, user: Id, cost: f64, b: Budget, now: Instant) {
        self.refill(user, b, now).0 -= cost;
    }
}

/// The per-user budgets the WebSocket endpoint keeps (`PARLEY_WS_*`).
#[derive(Debug, Default)]
pub(super) struct Budgets {
    pub(super) resume: Buckets,
    pub(super) typing: Buckets,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refill_and_may_go_into_debt() {
        let mut b = Buckets::default();
        let budget = Budget {
            per_sec: 2.0,
            burst: 10.0,
        };
        let t0 = Instant::now();
        assert!(b.check(Id(1), budget, t0).is_ok());
        b.charge(Id(1), 14.0, budget, t0);
        // 4 in debt: 5 tokens short of one, 2.5 s at 2/s.
        let wait = b.check(Id(1), budget, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 2.5).abs() < 0.01, "{wait:?}");
        assert!(b.check(Id(2), budget, t0).is_ok(), "per user");
        assert!(
            b.check(Id(1), budget, t0 + Duration::from_millis(2600))
                .is_ok()
        );
        // Never above the burst.
        let later = t0 + Duration::from_secs(3600);
        b.charge(Id(1), 10.0, budget, later);
        assert!(b.check(Id(1), budget, later).is_err());
    }
}
