//! Per-user caps ([`crate::chat::quotas`] enforces them).

use parley_crd::env;

/// Per-user caps (`PARLEY_*`). A cap of 0 turns that cap off.
#[derive(Debug, Clone, clap::Args)]
pub struct UserQuotas {
    /// Groups one user may create per day: a burst of this many, then one more every
    /// 24 h / N. Over it: `rate_limited` (429, `Retry-After`). 0: no cap.
    #[arg(long, env = env::GROUPS_PER_DAY, value_name = env::GROUPS_PER_DAY, default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub groups_per_day: u32,

    /// DMs one user may open per day with users who share no channel with them
    /// (strangers): a burst of this many, then one more every 24 h / N. A DM that exists,
    /// or one with a user who shares a channel, is not counted. Over it: `rate_limited`
    /// (429, `Retry-After`). 0: no cap.
    #[arg(long, env = env::STRANGER_DMS_PER_DAY, value_name = env::STRANGER_DMS_PER_DAY, default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub stranger_dms_per_day: u32,

    /// Uploads one user may announce (`POST /v1/media`) per hour: a burst of this many,
    /// then one more every hour / N. Over it: `rate_limited` (429, `Retry-After`). 0: no cap.
    #[arg(long, env = env::UPLOADS_PER_HOUR, value_name = env::UPLOADS_PER_HOUR, default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub uploads_per_hour: u32,

    /// Bytes one user may announce for upload per hour, in MiB (declared sizes; an upload
    /// can never be larger than declared): all of it at once, refilling evenly over the
    /// hour. Over it: `rate_limited` (429, `Retry-After`); one upload larger than the
    /// whole hourly amount: `too_large`. 0: no cap.
    #[arg(long, env = env::UPLOAD_MIB_PER_HOUR, value_name = env::UPLOAD_MIB_PER_HOUR, default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(0..=4_000_000))]
    pub upload_mib_per_hour: u32,

    /// Most user IDs in one `GET /v1/presence?user_ids=`. More: `bad_request`.
    #[arg(long, env = env::PRESENCE_MAX_IDS, value_name = env::PRESENCE_MAX_IDS, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub presence_max_ids: u32,
}
