//! What `/v1/auth/*` may cost a node, whoever calls it.
//!
//! - **Password hashes** (argon2id, 19 MiB and tens of ms of one core each): at most
//!   `PARLEY_AUTH_HASH_CONCURRENCY` run at once, each in one of as many memory buffers that
//!   are allocated once and reused (freed 19 MiB blocks would stay in glibc's heap: its
//!   dynamic mmap threshold rises past them after the first free). A request that finds
//!   every slot busy waits up to `PARLEY_AUTH_HASH_WAIT_MS`, in a queue of at most
//!   `PARLEY_AUTH_HASH_QUEUE`; past either it is answered `unavailable` (503, `Retry-After`).
//!   A login of an unknown user hashes against a dummy hash through the same slots, so it
//!   costs what a wrong password costs.
//! - **Rates** (GCRA, the `governor` crate): every `/v1/auth/*` request counts against its
//!   client address ([`crate::http::extract::ClientAddr`]), every login also against its
//!   username (compared in the form usernames are unique in); over either: `rate_limited`
//!   (429, `Retry-After`). Keys whose state is back to fresh are dropped every minute, so
//!   the limiters' memory follows recent activity only.

use parking_lot::Mutex;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::Quota;
use parley_protocol::ErrorCode;
use sha2::Digest as _;

use crate::auth::Block;
use crate::config::AuthLimits;
use crate::error::ApiError;
use crate::ratelimit::{KeyedLimiter, Over};

#[derive(Debug)]
struct Slots {
    permits: Arc<tokio::sync::Semaphore>,
    /// Free buffers; a slot takes one (or makes its first) and puts it back, so there are
    /// never more than there are permits.
    memory: Mutex<Vec<Vec<Block>>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    done: AtomicUsize,
}

impl Slots {
    /// Runs `work` in a free buffer; the permit is held (and released) by the caller.
    fn run<T>(&self, work: impl FnOnce(&mut Vec<Block>) -> T) -> T {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let mut memory = self
            .memory
            .lock()
            .pop()
            .unwrap_or_else(crate::auth::hash_memory);
        let out = work(&mut memory);
        self.memory.lock().push(memory);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        out
    }
}

/// Counts a waiting request for as long as it lives (a client that goes away stops waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One keyed sign-in limit and what it counts, for messages.
#[derive(Debug)]
struct Keyed<K: std::hash::Hash + Eq + Clone> {
    limiter: KeyedLimiter<K>,
    what: &'static str,
}

impl<K: std::hash::Hash + Eq + Clone> Keyed<K> {
    fn new(per_min: u32, burst: u32, what: &'static str) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
        let quota = Quota::per_minute(nz(per_min)).allow_burst(nz(burst));
        Self {
            limiter: KeyedLimiter::new(quota),
            what,
        }
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
        self.limiter.check(key, 1).map_err(|over| {
            let e = ApiError::rate_limited(format!(
                "too many sign-in attempts {}; try again later",
                self.what
            ));
            match over {
                Over::Wait(wait) => e.retry_after(wait),
                Over::Never => e,
            }
        })
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.limiter.keys()
    }
}

/// The username key of the per-username limit: a digest of the username's
/// [`crate::text::name_key`] (the form usernames are unique in), so any spelling of one
/// account shares its budget and a key costs 16 bytes however long the name sent was.
fn username_key(username: &str) -> [u8; 16] {
    let digest = sha2::Sha256::digest(crate::text::name_key(username).as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Password hashing slots and the rate limits of `/v1/auth/*`.
#[derive(Debug)]
pub struct AuthGate {
    slots: Arc<Slots>,
    waiting: AtomicUsize,
    queue: usize,
    wait: Duration,
    by_address: Keyed<IpAddr>,
    by_username: Keyed<[u8; 16]>,
}

impl AuthGate {
    pub fn new(limits: &AuthLimits) -> Self {
        let concurrency = limits.auth_hash_concurrency.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n as usize,
        );
        Self {
            slots: Arc::new(Slots {
                permits: Arc::new(tokio::sync::Semaphore::new(concurrency)),
                memory: Mutex::new(Vec::with_capacity(concurrency)),
                in_flight: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
            }),
            waiting: AtomicUsize::new(0),
            queue: limits.auth_hash_queue as usize,
            wait: limits.auth_hash_wait,
            by_address: Keyed::new(
                limits.auth_address_per_min,
                limits.auth_address_burst,
                "from this address",
            ),
            by_username: Keyed::new(
                limits.auth_username_per_min,
                limits.auth_username_burst,
                "for this username",
            ),
        }
    }

    /// Counts one `/v1/auth/*` request of `addr`; `rate_limited` over the address's rate.
    pub fn check_address(&self, addr: IpAddr) -> Result<(), ApiError> {
        self.by_address.check(&addr)
    }

    /// Counts one login for `username`; `rate_limited` over the username's rate.
    pub fn check_username(&self, username: &str) -> Result<(), ApiError> {
        self.by_username.check(&username_key(username))
    }

    fn shed(&self) -> ApiError {
        ApiError::unavailable("the node is busy checking passwords; try again in a moment")
            .retry_after(self.wait.max(Duration::from_secs(1)))
    }

    /// Runs `work` (a password hash, given a reused memory buffer) in a hash slot, on a
    /// blocking thread. Waits for a slot up to the configured time, behind at most the
    /// configured number of others; otherwise `unavailable` with `Retry-After`. The slot is
    /// held until `work` ends even if the caller goes away meanwhile.
    pub async fn hash<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permits = self.slots.permits.clone();
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(self.shed());
                }
                let _waiting = Waiting(&self.waiting);
                match tokio::time::timeout(self.wait, permits.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(self.shed()),
                }
            }
        };
        let slots = self.slots.clone();
        tokio::task::spawn_blocking(move || {
            let out = slots.run(work);
            drop(permit);
            out
        })
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "internal error"))
    }

    /// Runs `work` in a slot on this thread, for the one hash made at start (the dummy
    /// hash), when every slot is free; waits for one otherwise.
    pub fn hash_now<T>(&self, work: impl FnOnce(&mut Vec<Block>) -> T) -> T {
        let permit = loop {
            match self.slots.permits.try_acquire() {
                Ok(p) => break p,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let out = self.slots.run(work);
        drop(permit);
        out
    }

    /// The most hashes that ran at once.
    pub fn peak_hashes(&self) -> usize {
        self.slots.peak.load(Ordering::SeqCst)
    }

    /// Hashes computed so far.
    pub fn hashes_done(&self) -> usize {
        self.slots.done.load(Ordering::SeqCst)
    }

    /// Hash memory buffers allocated so far (at most the number of slots).
    pub fn hash_buffers(&self) -> usize {
        self.slots.memory.lock().len() + self.slots.in_flight.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse as _;

    fn limits() -> AuthLimits {
        AuthLimits {
            auth_hash_concurrency: Some(2),
            auth_hash_queue: 1,
            auth_hash_wait: Duration::from_millis(60_000),
            auth_address_per_min: 1,
            auth_address_burst: 2,
            auth_username_per_min: 1,
            auth_username_burst: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_in_bounded_slots_with_reused_memory() {
        let gate = Arc::new(AuthGate::new(&limits()));
        // Two slots, one waiting place: of 6 hashes started together, 3 are admitted (2
        // run, 1 waits) and 3 are shed at once.
        let (release, hold) = tokio::sync::watch::channel(false);
        let working = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let gate = gate.clone();
                let mut hold = hold.clone();
                let working = working.clone();
                tokio::spawn(async move {
                    gate.hash(move |memory| {
                        let len = memory.len();
                        working.fetch_add(1, Ordering::SeqCst);
                        // Hold the slot until released, so the others find it busy.
                        while !*hold.borrow_and_update() {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        len
                    })
                    .await
                })
            })
            .collect();
        // Wait (bounded) until two hashes hold their buffers, one request waits and the other
        // three were shed: only then is every request's fate decided. (A slot counts as in
        // flight before it has its buffer: released then, the first could hand its buffer
        // to the second.)
        let settled = || {
            (
                working.load(Ordering::SeqCst),
                gate.waiting.load(Ordering::SeqCst),
                tasks.iter().filter(|t| t.is_finished()).count(),
            )
        };
        for _ in 0..6000 {
            if settled() == (2, 1, 3) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            settled(),
            (2, 1, 3),
            "(hashing, waiting, shed) before the release"
        );
        let _ = release.send(true);
        let mut ok = 0;
        let mut shed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(len) => {
                    assert_eq!(len, crate::auth::HASH_BLOCKS);
                    ok += 1;
                }
                Err(r) => {
                    assert_eq!(r.code, ErrorCode::Unavailable);
                    assert!(r.retry_after.is_some());
                    shed += 1;
                }
            }
        }
        assert_eq!((ok, shed), (3, 3));
        assert_eq!(gate.peak_hashes(), 2);
        assert_eq!(gate.hashes_done(), 3);
        // Three hashes, two buffers: the third reused one.
        assert_eq!(gate.hash_buffers(), 2);
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_real_hash_and_its_check_go_through_the_slots() {
        let gate = AuthGate::new(&limits());
        let h = gate.hash_now(|m| crate::auth::hash_password_in("pw-12345", m));
        let ok = gate
            .hash(move |m| crate::auth::verify_password_in("pw-12345", &h, m))
            .await
            .unwrap();
        assert!(ok);
        assert_eq!(gate.hashes_done(), 2);
        assert_eq!(gate.hash_buffers(), 1);
    }

    #[test]
    fn rates_per_address_and_per_username() {
        let gate = AuthGate::new(&limits());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(gate.check_address(a).is_ok());
        assert!(gate.check_address(a).is_ok());
        let r = gate.check_address(a).unwrap_err();
        assert_eq!(r.code, ErrorCode::RateLimited);
        let wait = r.retry_after.unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(
            gate.check_address(b).is_ok(),
            "each address has its own budget"
        );

        assert!(gate.check_username("Victim").is_ok());
        assert!(
            gate.check_username("victim").is_err(),
            "one account, one budget"
        );
        assert!(gate.check_username(&"x".repeat(60_000)).is_ok());
        assert_eq!(gate.by_username.keys(), 2, "keys are fixed-size digests");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let r = ApiError::rate_limited("slow down").retry_after(Duration::from_millis(1200));
        let res = r.into_response();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "2");
    }
}
