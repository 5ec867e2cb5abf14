//! Caps per user on what costs the node (and other users) something lasting: groups
//! created, DMs opened with strangers, uploads, and how many users one presence query may
//! name. Each is a setting ([`UserQuotas`]).
//!
//! The per-period caps are GCRA limiters (the `governor` crate), one state per user: a
//! burst of the whole allowance, refilling evenly over the period (so "50 per day" is 50 at
//! once, then one more every 28.8 minutes). Over a cap the answer is `rate_limited` (429)
//! with `Retry-After`, the whole seconds until the request would pass. Each node keeps its
//! own limiters (like the send rate): with N nodes behind a balancer a user reaches at most
//! N times a cap, and a restart forgets them. Users whose state is back to fresh are dropped
//! every minute, so the memory follows recent activity.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use parley_protocol::Id;

use crate::config::UserQuotas;
use crate::error::ApiError;
use crate::ratelimit::{KeyedLimiter, Over};

const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);
/// Upload bytes are counted in KiB (governor counts in `u32` cells).
const KIB: u64 = 1024;

/// One per-user cap over a period.
#[derive(Debug)]
struct Cap {
    limiter: KeyedLimiter<Id>,
    /// What is counted, for messages: "groups created per day".
    what: &'static str,
    allowance: u32,
}

impl Cap {
    /// `allowance` per `period`; `None` (no cap) when `allowance` is 0.
    fn new(allowance: u32, period: Duration, what: &'static str) -> Option<Self> {
        let burst = NonZeroU32::new(allowance)?;
        // The period / allowance is at least 1 ns for any allowance the settings allow.
        let quota = Quota::with_period(period / allowance)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        Some(Self {
            limiter: KeyedLimiter::new(quota),
            what,
            allowance,
        })
    }

    /// Takes `cells` from `user`'s allowance, or says when they would fit.
    fn take(&self, user: Id, cells: u32) -> Result<(), ApiError> {
        match self.limiter.check(&user, cells) {
            Ok(()) => Ok(()),
            Err(Over::Wait(wait)) => Err(ApiError::rate_limited(format!(
                "over the limit of {} {}; try again later",
                self.allowance, self.what
            ))
            .retry_after(wait)),
            Err(Over::Never) => Err(ApiError::too_large(format!(
                "larger than the whole limit of {} {}",
                self.allowance, self.what
            ))),
        }
    }
}

/// The per-user caps of one node ([`UserQuotas`]); a cap set to 0 is absent.
#[derive(Debug)]
pub struct Quotas {
    groups: Option<Cap>,
    stranger_dms: Option<Cap>,
    uploads: Option<Cap>,
    upload_kib: Option<Cap>,
}

impl Quotas {
    pub fn new(q: &UserQuotas) -> Self {
        Self {
            groups: Cap::new(q.groups_per_day, DAY, "groups created per day"),
            stranger_dms: Cap::new(
                q.stranger_dms_per_day,
                DAY,
                "DMs opened per day with users who share no channel with you",
            ),
            uploads: Cap::new(q.uploads_per_hour, HOUR, "uploads per hour"),
            upload_kib: Cap::new(
                q.upload_mib_per_hour.saturating_mul(1024),
                HOUR,
                "KiB of uploads per hour",
            ),
        }
    }

    /// Counts a group `user` creates.
    pub fn group(&self, user: Id) -> Result<(), ApiError> {
        self.groups.as_ref().map_or(Ok(()), |c| c.take(user, 1))
    }

    /// Counts a DM `user` opens with a stranger.
    pub fn stranger_dm(&self, user: Id) -> Result<(), ApiError> {
        self.stranger_dms
            .as_ref()
            .map_or(Ok(()), |c| c.take(user, 1))
    }

    /// Counts an upload of `size` bytes `user` announces: the bytes first (an upload larger
    /// than the whole hourly amount is `too_large`), then the count, so a refusal for bytes
    /// costs no upload.
    pub fn upload(&self, user: Id, size: u64) -> Result<(), ApiError> {
        if let Some(c) = &self.upload_kib {
            let kib = u32::try_from(size.div_ceil(KIB)).unwrap_or(u32::MAX);
            c.take(user, kib)?;
        }
        self.uploads.as_ref().map_or(Ok(()), |c| c.take(user, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_protocol::ErrorCode;

    fn quotas(groups: u32, dms: u32, uploads: u32, mib: u32) -> Quotas {
        Quotas::new(&UserQuotas {
            groups_per_day: groups,
            stranger_dms_per_day: dms,
            uploads_per_hour: uploads,
            upload_mib_per_hour: mib,
            presence_max_ids: 10,
        })
    }

    #[test]
    fn caps_per_user_with_a_wait() {
        let q = quotas(2, 1, 3, 1);
        let (a, b) = (Id(1), Id(2));
        assert!(q.group(a).is_ok() && q.group(a).is_ok());
        let r = q.group(a).unwrap_err();
        assert_eq!(r.code, ErrorCode::RateLimited);
        let wait = r.retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(11 * 3600) && wait <= Duration::from_secs(12 * 3600),
            "one more every 12 h: {wait:?}"
        );
        assert!(q.group(b).is_ok(), "each user has their own allowance");
        assert!(q.stranger_dm(a).is_ok());
        assert_eq!(q.stranger_dm(a).unwrap_err().code, ErrorCode::RateLimited);
    }

    #[test]
    fn uploads_count_bytes_then_uploads() {
        let q = quotas(1, 1, 2, 1);
        let a = Id(1);
        let r = q.upload(a, 1024 * 1024 + 1).unwrap_err();
        assert_eq!(r.code, ErrorCode::TooLarge);
        assert_eq!(r.retry_after, None);
        assert!(q.upload(a, 600 * 1024).is_ok());
        let r = q.upload(a, 600 * 1024).unwrap_err();
        assert_eq!(r.code, ErrorCode::RateLimited, "over the bytes");
        assert!(q.upload(a, 1).is_ok(), "the refusal cost no upload");
        assert_eq!(
            q.upload(a, 1).unwrap_err().code,
            ErrorCode::RateLimited,
            "over the count"
        );
    }

    #[test]
    fn zero_turns_a_cap_off() {
        let q = quotas(0, 0, 0, 0);
        for _ in 0..1000 {
            assert!(q.group(Id(1)).is_ok());
            assert!(q.stranger_dm(Id(1)).is_ok());
            assert!(q.upload(Id(1), u64::MAX).is_ok());
        }
    }
}
