//! Snowflake IDs: 41 bits of milliseconds since the cluster epoch, 10 bits of worker ID,
//! 12 bits of sequence.
//!
//! IDs from one generator strictly increase, and [`Snowflake::next_after`] makes one above a
//! given floor too (a channel's last message ID, so that per channel ID order is seq order
//! whatever the clocks of the channel's successive owners; docs/reliability.md).
//!
//! **Borrowing.** An ID's timestamp is the clock's millisecond, unless that would not be
//! above the generator's last ID or the floor: then the generator *borrows* from the future,
//! going on at its last millisecond with the next sequence number (the next millisecond once
//! the 4096 are used), or at the floor's millisecond + 1. So a clock that steps back, a floor
//! from a node whose clock is ahead, or more than 4096 IDs in a millisecond never stop the
//! flow of IDs; the lead shrinks as the clock advances (by a millisecond per millisecond,
//! while fewer than 4096 IDs a millisecond are made). The lead is bounded
//! (`max_lead`, `PARLEY_MAX_ID_LEAD_MS`): an ID further ahead of the clock is waited for up
//! to `max_clock_wait` and then refused with [`SnowflakeError::ClockBehind`].
//!
//! What borrowing costs: IDs up to `max_lead` ahead of real time (a message's time is its
//! `created_at`; time ranges made with [`min_id_at`] see such an ID that much later). And
//! uniqueness across a restart: a generator starts with no memory, so a node that restarts
//! while its last IDs are still ahead of its clock can make one of them again (same
//! millisecond, same sequence number). Per channel that cannot happen (the owner's floor is
//! the channel's highest stored ID, loaded at each take-over, and a take-over follows every
//! restart); across channels or kinds of ID it needs the restart to come within the lead
//! left (after a clock fault, at most `max_lead`) and an ID made in that very millisecond
//! with that sequence number. Without borrowing, the same restart after a forward clock step
//! repeats IDs just the same.
//!
//! The decision logic ([`Snowflake::try_next_after`]) is pure and tested with a fake clock.

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
        "the next ID would be {lead_ms} ms ahead of this node's clock (the clock stepped back, \
         or a channel's last ID came from a clock ahead of it), more than the {max_lead_ms} ms \
         allowed; refusing to issue IDs until the clock catches up"
    )]
    ClockBehind { lead_ms: i64, max_lead_ms: u64 },
    #[error("the clock is outside the 69 years the cluster epoch allows")]
    OutOfRange,
}

/// What [`Snowflake::try_next_after`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Id(Id),
    /// The ID would be `lead_ms` ahead of the clock, beyond the bound: try again after `ms`
    /// milliseconds (when the clock will have caught up to the bound).
    Wait {
        ms: u64,
        lead_ms: i64,
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
    max_lead_ms: i64,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// The timestamp (milliseconds since the cluster epoch) of `id`.
fn timestamp_of(id: Id) -> i64 {
    (id.0 >> (WORKER_BITS + SEQUENCE_BITS)) as i64
}

impl Snowflake {
    /// A generator for `worker_id` (below 1024) on `clock`: IDs run at most `max_lead` ahead
    /// of the clock (borrowing, see the module docs); one further ahead is waited for up to
    /// `max_clock_wait`, then refused.
    pub fn new(
        epoch_ms: i64,
        worker_id: u16,
        max_clock_wait: Duration,
        max_lead: Duration,
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
            max_lead_ms: i64::try_from(max_lead.as_millis()).unwrap_or(MAX_TIMESTAMP),
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

    fn compose(&self, ms: i64, sequence: u16) -> Id {
        Id(((ms as u64) << (WORKER_BITS + SEQUENCE_BITS))
            | (u64::from(self.worker_id) << SEQUENCE_BITS)
            | u64::from(sequence))
    }

    /// One attempt at an ID above every ID this generator made: [`Snowflake::try_next_after`]
    /// with no floor.
    pub fn try_next(&self) -> Next {
        self.try_next_after(Id(0))
    }

    /// One attempt at an ID above `floor` and above every ID this generator made: the
    /// clock's millisecond when that is above both, else borrowed (module docs); or how long
    /// to wait when the ID would be more than the bound ahead of the clock.
    pub fn try_next_after(&self, floor: Id) -> Next {
        let now = self.clock.now_ms() - self.epoch_ms;
        if !(0..=MAX_TIMESTAMP).contains(&now) {
            return Next::OutOfRange;
        }
        let mut state = self.state.lock();
        let (mut ms, mut sequence) = if now > state.last_ms {
            (now, 0)
        } else if state.sequence < MAX_SEQUENCE {
            (state.last_ms, state.sequence + 1)
        } else {
            (state.last_ms + 1, 0)
        };
        if self.compose(ms, sequence) <= floor {
            (ms, sequence) = (timestamp_of(floor) + 1, 0);
        }
        if ms > MAX_TIMESTAMP {
            return Next::OutOfRange;
        }
        let lead = ms - now;
        if lead > self.max_lead_ms {
            return Next::Wait {
                ms: (lead - self.max_lead_ms) as u64,
                lead_ms: lead,
            };
        }
        state.last_ms = ms;
        state.sequence = sequence;
        Next::Id(self.compose(ms, sequence))
    }

    /// The next ID: [`Snowflake::next_after`] with no floor.
    pub async fn next_id(&self) -> Result<Id, SnowflakeError> {
        self.next_after(Id(0)).await
    }

    /// An ID above `floor` and above every ID this generator made. Errors:
    /// [`SnowflakeError::ClockBehind`] when it would be more than the bound ahead of the
    /// clock and the clock does not catch up within `max_clock_wait` (refused at once when
    /// it cannot); [`SnowflakeError::OutOfRange`].
    pub async fn next_after(&self, floor: Id) -> Result<Id, SnowflakeError> {
        let mut waited = 0u64;
        loop {
            match self.try_next_after(floor) {
                Next::Id(id) => return Ok(id),
                Next::OutOfRange => return Err(SnowflakeError::OutOfRange),
                Next::Wait { ms, lead_ms } => {
                    if waited + ms > self.max_clock_wait.as_millis() as u64 {
                        return Err(SnowflakeError::ClockBehind {
                            lead_ms,
                            max_lead_ms: self.max_lead_ms as u64,
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

    /// Bounds of the test generators: waits up to 100 ms, leads up to 1 s.
    const WAIT: Duration = Duration::from_millis(100);
    const LEAD_MS: i64 = 1000;

    fn generator(worker: u16, start: i64) -> (Snowflake, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock(AtomicI64::new(DEFAULT_EPOCH_MS + start)));
        let sf = Snowflake::new(
            DEFAULT_EPOCH_MS,
            worker,
            WAIT,
            Duration::from_millis(LEAD_MS as u64),
            clock.clone(),
        );
        (sf, clock)
    }

    fn id(sf: &Snowflake, floor: Id) -> Id {
        match sf.try_next_after(floor) {
            Next::Id(id) => id,
            other => panic!("no ID: {other:?}"),
        }
    }

    /// (ms since the cluster epoch, worker, sequence).
    fn parts(id: Id) -> (i64, u16, u16) {
        let (ms, worker, seq) = decompose(id, DEFAULT_EPOCH_MS);
        (ms - DEFAULT_EPOCH_MS, worker, seq)
    }

    #[test]
    fn layout_is_time_worker_sequence() {
        let (sf, _) = generator(5, 1234);
        let a = id(&sf, Id(0));
        let b = id(&sf, Id(0));
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
    fn sequence_overflow_borrows_the_next_millisecond() {
        let (sf, clock) = generator(1, 10);
        for _ in 0..4096 {
            id(&sf, Id(0));
        }
        assert_eq!(parts(id(&sf, Id(0))), (11, 1, 0), "borrowed, no wait");
        clock.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(parts(id(&sf, Id(0))), (11, 1, 1), "the clock caught up");
        clock.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(parts(id(&sf, Id(0))), (12, 1, 0), "back on the clock");
    }

    #[test]
    fn sequence_overflow_waits_when_no_lead_is_allowed() {
        let clock = Arc::new(FakeClock(AtomicI64::new(DEFAULT_EPOCH_MS + 10)));
        let sf = Snowflake::new(DEFAULT_EPOCH_MS, 1, WAIT, Duration::ZERO, clock.clone());
        for _ in 0..4096 {
            id(&sf, Id(0));
        }
        assert_eq!(sf.try_next(), Next::Wait { ms: 1, lead_ms: 1 });
        clock.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(parts(id(&sf, Id(0))), (11, 1, 0));
    }

    #[test]
    fn clock_stepping_back_keeps_issuing_increasing_ids() {
        let (sf, clock) = generator(1, 1000);
        let before = id(&sf, Id(0));
        clock.0.fetch_sub(300, Ordering::SeqCst);
        let mut last = before;
        for _ in 0..5000 {
            let next = id(&sf, Id(0));
            assert!(next > last);
            last = next;
        }
        // Borrowed: 1000 and 1001 (4096 a millisecond), 300 ms ahead of the clock.
        assert_eq!(parts(last), (1001, 1, 5000 - 4096));
        clock.0.fetch_add(1000, Ordering::SeqCst);
        let caught_up = id(&sf, Id(0));
        assert_eq!(parts(caught_up), (1700, 1, 0), "back on the clock");
    }

    #[tokio::test(start_paused = true)]
    async fn clock_far_behind_is_refused_with_a_clear_error() {
        let (sf, clock) = generator(1, 100_000);
        sf.next_id().await.unwrap();
        clock.0.fetch_sub(10_000, Ordering::SeqCst);
        let err = sf.next_id().await.unwrap_err();
        assert_eq!(
            err,
            SnowflakeError::ClockBehind {
                lead_ms: 10_000,
                max_lead_ms: 1000
            }
        );
        assert!(err.to_string().contains("stepped back"), "{err}");
        // Once the clock is within the bound again, IDs flow (borrowed).
        clock.0.fetch_add(9_000, Ordering::SeqCst);
        let id = sf.next_id().await.unwrap();
        assert_eq!(parts(id), (100_000, 1, 1));
    }

    #[test]
    fn lead_just_past_the_bound_is_waited_for() {
        let (sf, clock) = generator(1, 5000);
        id(&sf, Id(0));
        clock.0.fetch_sub(LEAD_MS + 30, Ordering::SeqCst);
        assert_eq!(
            sf.try_next(),
            Next::Wait {
                ms: 30,
                lead_ms: LEAD_MS + 30
            }
        );
    }

    #[test]
    fn a_floor_ahead_of_the_clock_is_exceeded_and_ids_keep_increasing() {
        let (other, _) = generator(9, 1500);
        let (sf, clock) = generator(1, 1000);
        // A channel's last ID from a node whose clock is 500 ms ahead.
        let floor = id(&other, Id(0));
        let first = id(&sf, floor);
        assert!(first > floor);
        assert_eq!(parts(first), (1501, 1, 0));
        // Every later ID of the generator is above it, with or without the floor.
        let second = id(&sf, Id(0));
        assert_eq!(parts(second), (1501, 1, 1));
        let third = id(&sf, floor);
        assert!(third > second);
        // The clock passes the lead: back on the clock.
        clock.0.fetch_add(600, Ordering::SeqCst);
        assert_eq!(parts(id(&sf, floor)), (1600, 1, 0));
    }

    #[test]
    fn a_floor_below_the_generator_changes_nothing() {
        let (sf, clock) = generator(1, 1000);
        let a = id(&sf, Id(0));
        clock.0.fetch_add(5, Ordering::SeqCst);
        let b = id(&sf, a);
        assert_eq!(parts(b), (1005, 1, 0));
        // A floor in the same millisecond from a higher worker: the next millisecond.
        let (other, _) = generator(9, 1005);
        let floor = id(&other, Id(0));
        assert_eq!(parts(id(&sf, floor)), (1006, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_floor_beyond_the_bound_is_refused_at_once() {
        let (other, _) = generator(9, 100_000);
        let (sf, _) = generator(1, 10_000);
        let floor = id(&other, Id(0));
        let started = tokio::time::Instant::now();
        let err = sf.next_after(floor).await.unwrap_err();
        assert_eq!(
            err,
            SnowflakeError::ClockBehind {
                lead_ms: 90_001,
                max_lead_ms: 1000
            }
        );
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no wait that cannot help"
        );
        // Nothing was used up: IDs without that floor are on the clock.
        assert_eq!(parts(sf.next_id().await.unwrap()), (10_000, 1, 0));
    }

    #[test]
    fn unique_and_increasing_under_concurrency() {
        let sf = Arc::new(Snowflake::new(
            DEFAULT_EPOCH_MS,
            7,
            Duration::from_secs(1),
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
