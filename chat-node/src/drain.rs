//! Draining a stopping node: it stops taking clients, gives its channels up (distributed
//! mode), then closes its WebSockets spread over a window, each with `reconnect`
//! {after_ms} and close 4010, so that a rollout never sends every client back at once.
//!
//! ```text
//!  SIGTERM ─► begin(): /readyz 503, WebSocket upgrades refused with 503 `unavailable`
//!             (one upgraded just before gets reconnect + 4010 at once)
//!          ─► give the ring up (distributed): last append done, lease deleted, others told
//!          ─► schedule(n, window): socket k closed at a jittered point of slot k
//!          ─► wait for the sockets to end (window + slack), then the hard shutdown (1001)
//! ```

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom as _;
use tokio::sync::oneshot;

use crate::hub::ConnId;

/// The largest `after_ms` a client is told to wait before it reconnects.
pub const RECONNECT_JITTER_MS: u64 = 1000;
/// How long after the last scheduled close the sessions get to finish their close handshake.
pub const CLOSE_SLACK: Duration = Duration::from_secs(3);

/// When, after the start of the spread, socket `k` of `n` is told to go: a uniformly random
/// point of the `k`-th of `n` equal slots of `window` (stratified jitter). Sorted, every
/// delay is below `window` (or 0 when the window is 0), and no slot of `window / n` holds
/// more than two closes, so the reconnect rate never exceeds about `2 n / window`.
pub fn schedule<R: Rng + ?Sized>(n: usize, window: Duration, rng: &mut R) -> Vec<Duration> {
    if n == 0 {
        return Vec::new();
    }
    let slot = window.as_nanos() / n as u128;
    (0..n as u128)
        .map(|k| {
            let jitter = if slot == 0 {
                0
            } else {
                rng.random_range(0..slot)
            };
            Duration::from_nanos((k * slot + jitter) as u64)
        })
        .collect()
}

/// The `after_ms` of one `reconnect`: uniform in `0..=RECONNECT_JITTER_MS`.
pub fn after_ms<R: Rng + ?Sized>(rng: &mut R) -> u64 {
    rng.random_range(0..=RECONNECT_JITTER_MS)
}

/// A session's part in the drain.
#[derive(Debug)]
pub enum Enrolled {
    /// Live: `go` resolves with `after_ms` when the node wants this socket closed.
    Live {
        go: oneshot::Receiver<u64>,
        guard: SessionGuard,
    },
    /// The node is already draining: send `reconnect` with this `after_ms` and close now.
    Draining(u64),
}

/// Counts a session as open until dropped.
#[derive(Debug)]
pub struct SessionGuard {
    drain: std::sync::Arc<Drain>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.drain.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Inner {
    draining: bool,
    waiting: HashMap<ConnId, oneshot::Sender<u64>>,
}

/// The node's drain state: whether it is draining, and the sessions still to close.
#[derive(Debug, Default)]
pub struct Drain {
    inner: Mutex<Inner>,
    open: AtomicUsize,
}

impl Drain {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Whether the node is draining (`/readyz` answers 503 from the first moment, and
    /// `GET /v1/ws` refuses to upgrade).
    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// Sessions (WebSockets) still open.
    pub fn open_sessions(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Enrols a new session: told when to go, or at once that the node is draining.
    pub fn enrol(self: &std::sync::Arc<Self>, conn: ConnId) -> Enrolled {
        let mut inner = self.lock();
        if inner.draining {
            return Enrolled::Draining(after_ms(&mut rand::rng()));
        }
        let (tx, rx) = oneshot::channel();
        inner.waiting.insert(conn, tx);
        self.open.fetch_add(1, Ordering::Relaxed);
        Enrolled::Live {
            go: rx,
            guard: SessionGuard {
                drain: self.clone(),
            },
        }
    }

    /// Forgets a session that ended by itself.
    pub fn leave(&self, conn: ConnId) {
        self.lock().waiting.remove(&conn);
    }

    /// Starts draining; returns the sessions to close, in random order. Idempotent: a
    /// second call returns none.
    pub fn begin(&self) -> Vec<oneshot::Sender<u64>> {
        let mut inner = self.lock();
        inner.draining = true;
        let mut out: Vec<oneshot::Sender<u64>> = inner.waiting.drain().map(|(_, tx)| tx).collect();
        out.shuffle(&mut rand::rng());
        out
    }

    /// Tells `sessions` to go over `window` (see [`schedule`]), then waits up to
    /// [`CLOSE_SLACK`] for every session to end. Returns how many were told.
    pub async fn spread(&self, sessions: Vec<oneshot::Sender<u64>>, window: Duration) -> usize {
        let n = sessions.len();
        let delays = schedule(n, window, &mut rand::rng());
        let start = tokio::time::Instant::now();
        tracing::info!(
            sockets = n,
            window_ms = window.as_millis() as u64,
            "draining: closing the WebSockets with reconnect + 4010"
        );
        for (tx, delay) in sessions.into_iter().zip(delays) {
            tokio::time::sleep_until(start + delay).await;
            // A session that ended meanwhile dropped its receiver: nothing to do.
            let _ = tx.send(after_ms(&mut rand::rng()));
        }
        let deadline = tokio::time::Instant::now() + CLOSE_SLACK;
        while self.open_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn the_schedule_spreads_every_socket_over_the_window() {
        let window = Duration::from_secs(10);
        for seed in 0..50 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for n in [1usize, 2, 7, 100, 1000] {
                let d = schedule(n, window, &mut rng);
                assert_eq!(d.len(), n);
                assert!(d.windows(2).all(|w| w[0] <= w[1]), "in order");
                assert!(d.iter().all(|x| *x < window), "inside the window");
                // Socket k is in slot k: never more than two in any slot-long span.
                let slot = window / n as u32;
                for (k, x) in d.iter().enumerate() {
                    assert!(*x >= slot * k as u32 && *x < slot * (k as u32 + 1));
                }
                if n >= 100 {
                    // Spread: the first is near the start and the last near the end.
                    assert!(d[0] < window / 10 && d[n - 1] > window * 9 / 10);
                    // Per second: never more than 2n/window.
                    let mut per_second = [0usize; 10];
                    for x in &d {
                        per_second[x.as_secs() as usize] += 1;
                    }
                    let most = *per_second.iter().max().unwrap();
                    assert!(most <= n / 10 + 1, "{per_second:?}");
                }
            }
        }
    }

    #[test]
    fn a_zero_window_closes_everything_at_once_and_none_is_nothing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!(schedule(0, Duration::from_secs(1), &mut rng).is_empty());
        assert_eq!(
            schedule(3, Duration::ZERO, &mut rng),
            [Duration::ZERO, Duration::ZERO, Duration::ZERO]
        );
    }

    #[test]
    fn after_ms_stays_within_its_jitter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let all: Vec<u64> = (0..10_000).map(|_| after_ms(&mut rng)).collect();
        assert!(all.iter().all(|a| *a <= RECONNECT_JITTER_MS));
        assert!(
            all.iter().any(|a| *a < RECONNECT_JITTER_MS / 10),
            "spread low"
        );
        assert!(
            all.iter().any(|a| *a > RECONNECT_JITTER_MS * 9 / 10),
            "spread high"
        );
    }

    #[tokio::test]
    async fn sessions_enrolled_after_the_start_are_told_at_once() {
        let drain = std::sync::Arc::new(Drain::default());
        let Enrolled::Live { go, guard } = drain.enrol(1) else {
            panic!("not draining yet");
        };
        assert_eq!(drain.open_sessions(), 1);
        assert!(!drain.is_draining());
        let told = drain.begin();
        assert!(drain.is_draining());
        assert_eq!(told.len(), 1);
        assert!(matches!(drain.enrol(2), Enrolled::Draining(ms) if ms <= RECONNECT_JITTER_MS));
        assert!(drain.begin().is_empty(), "begin is idempotent");
        let spreading = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.spread(told, Duration::from_millis(50)).await })
        };
        let after = go.await.unwrap();
        assert!(after <= RECONNECT_JITTER_MS);
        drop(guard);
        assert_eq!(spreading.await.unwrap(), 1);
        assert_eq!(drain.open_sessions(), 0);
    }
}
