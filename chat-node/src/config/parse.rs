//! The value parsers of keys whose values have a shape of their own: URLs, secrets, the
//! shard map and the ring members. Each returns a message clap prints after the key's name.

use std::ops::RangeBounds;
use std::time::Duration;

use clap::builder::TypedValueParser;
use url::Url;

use crate::secret::Secret;

/// An `http://` or `https://` URL with a host (`PARLEY_PUBLIC_URL`, `PARLEY_S3_ENDPOINT`,
/// the ring members' endpoints).
pub(super) fn parse_http_url(s: &str) -> Result<Url, String> {
    const EXPECTED: &str = "expected an http:// or https:// URL";
    let url = Url::parse(s).map_err(|e| format!("{EXPECTED} ({e})"))?;
    if matches!(url.scheme(), "http" | "https") && url.has_host() {
        Ok(url)
    } else {
        Err(EXPECTED.into())
    }
}

/// `url` as a base other URLs are built on: its text without a trailing `/` (`url::Url`
/// writes one after a bare host), as `http://host:port` or `https://host/prefix`.
pub fn base_url(url: &Url) -> &str {
    url.as_str().trim_end_matches('/')
}

/// Parses a `PARLEY_SHARDS` value (`name:slots:url;...`).
pub fn parse_shards(value: &str) -> Result<Vec<crate::backend::postgres::ShardSpec>, String> {
    value
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(parse_shard)
        .collect()
}

/// One shard, `name:slot-ranges:postgres-url` (slot ranges `+`-joined).
pub(super) fn parse_shard(s: &str) -> Result<crate::backend::postgres::ShardSpec, String> {
    let mut parts = s.trim().splitn(3, ':');
    let (Some(name), Some(ranges), Some(url)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected name:slot-ranges:postgres-url".into());
    };
    if name.is_empty() || !url.starts_with("postgres") {
        return Err("expected name:slot-ranges:postgres-url".into());
    }
    let slots = ranges
        .split('+')
        .map(|r| {
            r.parse::<parley_crd::SlotRange>()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::backend::postgres::ShardSpec {
        name: name.to_owned(),
        slots,
        url: Secret::new(Url::parse(url).map_err(|e| format!("shard {name}: {e}"))?),
    })
}

pub(super) fn parse_member(s: &str) -> Result<parley_crd::Member, String> {
    let (name, endpoint) = s
        .trim()
        .split_once('=')
        .ok_or("expected name=http://host:port")?;
    let endpoint = base_url(&parse_http_url(endpoint)?).to_owned();
    if name.is_empty() {
        return Err("expected name=http://host:port".into());
    }
    Ok(parley_crd::Member {
        name: name.to_owned(),
        endpoint,
    })
}

/// A URL that may hold credentials (the directory database, Redis). Any URL `url::Url`
/// parses is taken (the driver checks its scheme); the message never repeats the value.
pub(super) fn parse_secret_url(s: &str) -> Result<Secret<Url>, String> {
    Url::parse(s)
        .map(Secret::new)
        .map_err(|e| format!("expected a URL ({e})"))
}

/// A shared secret (`PARLEY_JWT_SECRET`, `PARLEY_CLUSTER_SECRET`): at least 32 bytes.
pub(super) fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.len() >= 32 {
        Ok(Secret::from(s))
    } else {
        Err("the secret must be at least 32 bytes".into())
    }
}

/// A whole number of milliseconds in `range` (the `_MS` keys), as a [`Duration`]; clap's
/// message for a value out of range names the range in milliseconds.
pub(super) fn millis(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_millis)
}

/// A whole number of seconds in `range` (the `_SECS` keys), as a [`Duration`].
pub(super) fn secs(range: impl RangeBounds<u64>) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_secs)
}
