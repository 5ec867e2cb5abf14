//! The backend conformance suite (chat-node's `backend::conformance`) on the distributed
//! implementations, against the real services of `dev/services`.

use std::sync::Arc;

use chat_node::backend::conformance;
use chat_node::backend::postgres::{PgStore, Schema, ShardSpec, migrate};
use chat_node::backend::Stores;
use parley_e2e::Services;

fn services() -> Services {
    Services::load().unwrap_or_else(|e| panic!("{e}"))
}

/// The store over the three real servers: the directory, shard-a (slots 0-2047) and
/// shard-b (slots 2048-4095), migrated.
pub async fn pg_store(services: &Services) -> PgStore {
    let shards = vec![
        ShardSpec { name: "shard-a".into(), slots: vec!["0-2047".parse().unwrap()], url: services.postgres("shard-a").url.clone() },
        ShardSpec { name: "shard-b".into(), slots: vec!["2048-4095".parse().unwrap()], url: services.postgres("shard-b").url.clone() },
    ];
    let store = PgStore::new(&services.postgres("directory").url, &shards, 5).unwrap();
    migrate(store.directory(), Schema::Directory).await.unwrap();
    for (_, pool) in store.shard_pools() {
        migrate(pool, Schema::Shard).await.unwrap();
    }
    store
}

#[tokio::test]
async fn postgres_store_passes_the_store_suite() {
    let services = services();
    let store = pg_store(&services).await;
    // Migrating again is a no-op.
    assert_eq!(migrate(store.directory(), Schema::Directory).await.unwrap(), 0);
    conformance::store_suite(&Stores::from_backend(Arc::new(store))).await;
}
