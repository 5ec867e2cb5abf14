//! Phase 4, publishing the shard map: the `<name>-shards` Secret holds the newest valid map
//! (`pending`, which the migration Job reads) and the map in force (`shards`, which nodes and
//! persisters read). `shards` takes the newest map only once the migration Job of exactly
//! that map succeeded, so no node reaches a database before its schema exists.
//!
//! A map is `name:slots:url;...` (slots joined by `+`), in shard-name order, of the shards
//! whose URL Secret exists.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use parley_crd::resources::ShardStatus;

use super::secrets::ReferencedSecrets;
use crate::controller::target::Target;
use crate::error::Result;
use crate::resources::names::{PENDING_SHARDS_KEY, SHARDS_KEY};
use crate::resources::{self as r, Component};
use crate::status::job_succeeded;

/// What phase 4 published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The hash naming the migration Job of the newest map ([`migration_hash`]).
    pub migration_hash: String,
    /// Whether that Job has succeeded: then the newest map is in force, and the workloads
    /// may start or change.
    pub migrated: bool,
}

/// The map value (`name:slots:url;...`) of `shards` with the URLs found.
pub fn map_value(shards: &[ShardStatus], urls: &BTreeMap<String, String>) -> String {
    shards
        .iter()
        .filter_map(|s| {
            let url = urls.get(&s.name)?;
            Some(format!("{}:{}:{url}", s.name, s.slots.join("+")))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// 8 hex digits over what a migration depends on: the image, the shards and their slots,
/// the topic prefix, and the URLs (a shard or directory moved to a new database is
/// migrated again).
pub fn migration_hash(
    t: &Target<'_>,
    shards: &[ShardStatus],
    map: &str,
    directory_url: Option<&str>,
) -> String {
    let shard_list: Vec<String> = shards
        .iter()
        .map(|s| format!("{}={}", s.name, s.slots.join("+")))
        .collect();
    hash(&[
        &t.cluster.spec.image,
        &shard_list.join(","),
        &r::topic_prefix(t.cluster),
        map,
        directory_url.unwrap_or_default(),
    ])
}

/// A short hash of `parts`, told apart by a separator.
pub fn hash(parts: &[&str]) -> String {
    let joined = parts.join("\n");
    format!("{:08x}", parley_crd::hash_bytes(joined.as_bytes()) as u32)
}

/// Phase 4: reads the newest map's migration Job and, unless it succeeded, the map in force;
/// applies the `<name>-shards` Secret.
pub async fn publish(
    t: &Target<'_>,
    shards: &[ShardStatus],
    secrets: &ReferencedSecrets,
) -> Result<Publication> {
    let newest = map_value(shards, &secrets.shard_urls);
    let migration_hash = migration_hash(t, shards, &newest, secrets.directory_url.as_deref());
    let migrated = t
        .get::<Job>(&t.names.migration(&migration_hash))
        .await?
        .is_some_and(|j| job_succeeded(&j));
    let in_force = if migrated {
        newest.clone()
    } else {
        t.get::<Secret>(&t.names.shards_secret())
            .await?
            .and_then(|s| s.data?.remove(SHARDS_KEY))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default()
    };
    let secret = Secret {
        metadata: r::meta(t.cluster, t.names.shards_secret(), Component::Secret),
        string_data: Some(BTreeMap::from([
            (SHARDS_KEY.to_owned(), in_force),
            (PENDING_SHARDS_KEY.to_owned(), newest),
        ])),
        ..Default::default()
    };
    t.apply(&secret).await?;
    Ok(Publication {
        migration_hash,
        migrated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_tell_inputs_apart() {
        assert_eq!(hash(&["a", "b"]), hash(&["a", "b"]));
        assert_ne!(hash(&["a", "b"]), hash(&["a", "c"]));
        assert_ne!(hash(&["ab", ""]), hash(&["a", "b"]), "parts are separated");
        assert_eq!(hash(&["x"]).len(), 8);
    }

    #[test]
    fn the_map_lists_the_shards_with_a_url() {
        let shard = |name: &str, slots: &[&str]| ShardStatus {
            name: name.into(),
            slots: slots.iter().map(|s| (*s).to_owned()).collect(),
            ready: false,
        };
        let shards = [shard("a", &["0-99", "200-4095"]), shard("b", &["100-199"])];
        let urls = BTreeMap::from([("a".to_owned(), "postgres://a".to_owned())]);
        assert_eq!(map_value(&shards, &urls), "a:0-99+200-4095:postgres://a");
        let urls = BTreeMap::from([
            ("a".to_owned(), "postgres://a".to_owned()),
            ("b".to_owned(), "postgres://b".to_owned()),
        ]);
        assert_eq!(
            map_value(&shards, &urls),
            "a:0-99+200-4095:postgres://a;b:100-199:postgres://b"
        );
    }
}
