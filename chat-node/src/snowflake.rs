//! Snowflake IDs: 41 bits of milliseconds since the cluster epoch, 10 bits of worker ID,
//! 12 bits of sequence.
//!
//! IDs from one generator strictly increase. When the 4096 IDs of a millisecond are used up
//! the generator waits for the next millisecond; when the clock steps back it waits for the
//! clock to catch up, up to a bound, and then refuses with [`SnowflakeError::ClockBehind`].
//! The decision logic ([`Snowflake::try_next`]) is pure and tested with a fake clock.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::Id;

pub const WORKER_BITS: u32 = 10;
pub const SEQUENCE_BITS: u32 = 12;
pub const TIMESTAMP_BITS: u32 = 41;
pub const MAX_WORKER_ID: u16 = (1 << WORKER_BITS) - 1;
const MAX_SEQUENCE: u16 = (1 << SEQUENCE_BITS) - 1;
const MAX_TIMESTAMP: i64 = (1 << TIMESTAMP_BITS) - 1;

/// 2024-01-01T00:00:00Z, the default cluster epoch.
pub const DEFAULT_EPOCH_MS: i64 = 1_704_067_200_000;

/// A source of wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        parley_protocol::Timestamp::now().unix_millis()
    }
}

/// Why no ID could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnowflakeError {
    #[error(
        "the clock stepped back {behind_ms} ms and did not catch up within {waited_ms} ms; \
         refusing to issue IDs until it does"
    )]
    ClockBehind { behind_ms: i64, waited_ms: u64 },
    #[error("the clock is outside the 69 years the cluster epoch allows")]
    OutOfRange,
}

/// What [`Snowflake::try_next`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Id(Id),
    /// Try again after this many milliseconds (sequence exhausted, or clock behind).
    Wait {
        ms: u64,
        behind_ms: i64,
    },
    OutOfRange,
}

#[derive(Debug)]
struct State {
    last_ms: i64,
    sequence: u16,
}

/// A Snowflake generator for one worker ID.
#[derive(Debug)]
pub struct Snowflake {
    epoch_ms: i64,
    worker_id: u16,
    max_clock_wait: Duration,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl Snowflake {
    /// `worker_id` must be below 1024.
    pub fn new(
        epoch_ms: i64,
        worker_id: u16,
        max_clock_wait: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        assert!(
            worker_id <= MAX_WORKER_ID,
            "worker id {worker_id} exceeds 10 bits"
        );
        Self {
            epoch_ms,
            worker_id,
            max_clock_wait,
            clock,
            state: Mutex::new(State {
                last_ms: -1,
                sequence: 0,
            }),
        }
    }

    pub fn worker_id(&self) -> u16 {
        self.worker_id
    }

    /// One attempt: an ID, or how long to wait.
    pub fn try_next(&self) -> Next {
        let now = self.clock.now_ms() - self.epoch_ms;
        if !(0..=MAX_TIMESTAMP).contains(&now) {
            return Next::OutOfRange;
        }
        let mut state = self.state.lock();
        if now < state.last_ms {
            let behind = state.last_ms - now;
            return Next::Wait {
                ms: behind as u64,
                behind_ms: behind,
            };
        }
        if now == state.last_ms {
            if state.sequence == MAX_SEQUENCE {
                return Next::Wait {
                    ms: 1,
                    behind_ms: 0,
                };
            }
            state.sequence += 1;
        } else {
            state.last_ms = now;
            state.sequence = 0;
        }
        Next::Id(Id(((now as u64) << (WORKER_BITS + SEQUENCE_BITS))
            | (u64::from(self.worker_id) << SEQUENCE_BITS)
            | u64::from(state.sequence)))
    }

    /// The next ID, waiting for the clock where needed (up to the configured bound when it
    /// stepped back).
    pub async fn next_id(&self) -> Result<Id, SnowflakeError> {
        let mut waited = 0u64;
        loop {
            match self.try_next() {
                Next::Id(id) => return Ok(id),
                Next::OutOfRange => return Err(SnowflakeError::OutOfRange),
                Next::Wait { ms, behind_ms } => {
                    if behind_ms > 0 && waited + ms > self.max_clock_wait.as_millis() as u64 {
                        return Err(SnowflakeError::ClockBehind {
                            behind_ms,
                            waited_ms: waited,
                        });
                    }
                    let ms = ms.clamp(1, 50);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    waited += ms;
                }
            }
        }
    }
}

/// The parts of an ID, for debugging and tests.
pub fn decompose(id: Id, epoch_ms: i64) -> (i64, u16, u16) {
    let raw = id.0;
    let ms = (raw >> (WORKER_BITS + SEQUENCE_BITS)) as i64 + epoch_ms;
    let worker = ((raw >> SEQUENCE_BITS) & u64::from(MAX_WORKER_ID)) as u16;
    let seq = (raw & u64::from(MAX_SEQUENCE)) as u16;
    (ms, worker, seq)
}

/// The smallest ID that can have been made at or after `unix_ms` (for time-range queries).
pub fn min_id_at(unix_ms: i64, epoch_ms: i64) -> Id {
    let ms = (unix_ms - epoch_ms).clamp(0, MAX_TIMESTAMP) as u64;
    Id(ms << (WORKER_BITS + SEQUENCE_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[derive(Debug)]
    struct FakeClock(AtomicI64);

    impl Clock for FakeClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn generator(worker: u16, start: i64) -> (Snowflake, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock(AtomicI64::new(DEFAULT_EPOCH_MS + start)));
        let sf = Snowflake::new(
            DEFAULT_EPOCH_MS,
            worker,
            Duration::from_millis(100),
            clock.clone(),
        );
        (sf, clock)
    }

    #[test]
    fn layout_is_time_worker_sequence() {
        let (sf, _) = generator(5, 1234);
        let Next::Id(a) = sf.try_next() else { panic!() };
        let Next::Id(b) = sf.try_next() else { panic!() };
        assert_eq!(
            decompose(a, DEFAULT_EPOCH_MS),
            (DEFAULT_EPOCH_MS + 1234, 5, 0)
        );
        assert_eq!(
            decompose(b, DEFAULT_EPOCH_MS),
            (DEFAULT_EPOCH_MS + 1234, 5, 1)
        );
        assert!(b > a);
    }

    #[test]
    fn sequence_overflow_waits_for_the_next_millisecond() {
        let (sf, clock) = generator(1, 10);
        for _ in 0..4096 {
            assert!(matches!(sf.try_next(), Next::Id(_)));
        }
        assert_eq!(
            sf.try_next(),
            Next::Wait {
                ms: 1,
                behind_ms: 0
            }
        );
        clock.0.fetch_add(1, Ordering::SeqCst);
        let Next::Id(id) = sf.try_next() else {
            panic!()
        };
        assert_eq!(
            decompose(id, DEFAULT_EPOCH_MS),
            (DEFAULT_EPOCH_MS + 11, 1, 0)
        );
    }

    #[test]
    fn clock_stepping_back_waits_and_never_repeats() {
        let (sf, clock) = generator(1, 1000);
        let Next::Id(before) = sf.try_next() else {
            panic!()
        };
        clock.0.fetch_sub(30, Ordering::SeqCst);
        assert_eq!(
            sf.try_next(),
            Next::Wait {
                ms: 30,
                behind_ms: 30
            }
        );
        clock.0.fetch_add(30, Ordering::SeqCst);
        let Next::Id(after) = sf.try_next() else {
            panic!()
        };
        assert!(after > before);
    }

    #[tokio::test(start_paused = true)]
    async fn clock_far_behind_is_refused_with_a_clear_error() {
        let (sf, clock) = generator(1, 100_000);
        sf.next_id().await.unwrap();
        clock.0.fetch_sub(10_000, Ordering::SeqCst);
        let err = sf.next_id().await.unwrap_err();
        assert!(
            matches!(
                err,
                SnowflakeError::ClockBehind {
                    behind_ms: 10_000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("stepped back"));
        // Once the clock catches up, IDs flow again.
        clock.0.fetch_add(10_001, Ordering::SeqCst);
        sf.next_id().await.unwrap();
    }

    #[test]
    fn unique_and_increasing_under_concurrency() {
        let sf = Arc::new(Snowflake::new(
            DEFAULT_EPOCH_MS,
            7,
            Duration::from_secs(1),
            Arc::new(SystemClock),
        ));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sf = sf.clone();
                std::thread::spawn(move || {
                    let mut ids = Vec::with_capacity(20_000);
                    while ids.len() < 20_000 {
                        match sf.try_next() {
                            Next::Id(id) => ids.push(id),
                            Next::Wait { .. } => std::thread::yield_now(),
                            Next::OutOfRange => panic!("out of range"),
                        }
                    }
                    ids
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in threads {
            let ids = t.join().unwrap();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "not increasing within a thread"
            );
            all.extend(ids);
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "duplicate IDs");
    }
}
