//! Distributed mode's settings: where the services are and who the other nodes are
//! ([`ClusterArgs`], as given), and [`Distributed`], the same checked and complete.

use std::net::SocketAddr;
use std::time::Duration;

use parley_crd::env;

use url::Url;

use super::parse::{
    millis, parse_http_url, parse_member, parse_secret, parse_secret_url, parse_shard,
};
use super::{Command, Config, ConfigError};
use crate::secret::Secret;

/// Distributed mode: where the services are and who the other nodes are. Checked by
/// [`Config::distributed`], which names the first missing key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// PostgreSQL URL of the directory database (with its credentials).
    #[arg(
        long,
        env = env::DIRECTORY_URL,
        value_name = env::DIRECTORY_URL,
        value_parser = parse_secret_url,
        hide_env_values = true
    )]
    pub directory_url: Option<Secret<Url>>,

    /// Message shards, `;`-separated, each `name:slot-ranges:postgres-url`, where slot ranges
    /// are `+`-joined (`a:0-2047:postgres://...;b:2048-4095:postgres://...`). Together they
    /// must cover slots 0-4095 exactly once.
    #[arg(long, env = env::SHARDS, value_name = env::SHARDS, value_delimiter = ';', value_parser = parse_shard, hide_env_values = true)]
    pub shards: Vec<crate::backend::postgres::ShardSpec>,

    /// Connections per database pool.
    #[arg(long, env = env::DB_POOL_SIZE, value_name = env::DB_POOL_SIZE, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,

    /// Redis URL (pub/sub, presence, node liveness), with its password if any.
    #[arg(
        long,
        env = env::REDIS_URL,
        value_name = env::REDIS_URL,
        value_parser = parse_secret_url,
        hide_env_values = true
    )]
    pub redis_url: Option<Secret<Url>>,

    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = env::KAFKA_BOOTSTRAP,
        value_name = env::KAFKA_BOOTSTRAP
    )]
    pub kafka_bootstrap: Option<String>,

    /// Prefix of the topics `<prefix>.messages` and `<prefix>.notifications`.
    #[arg(
        long,
        env = env::KAFKA_TOPIC_PREFIX,
        value_name = env::KAFKA_TOPIC_PREFIX,
        default_value = "parley"
    )]
    pub kafka_topic_prefix: String,

    /// Partitions of the topics `migrate` creates.
    #[arg(long, env = env::KAFKA_PARTITIONS, value_name = env::KAFKA_PARTITIONS, default_value_t = 12,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_partitions: i32,

    /// How long a send waits for Kafka's acknowledgement before it answers `unavailable`,
    /// given in milliseconds.
    #[arg(long = "kafka-delivery-timeout-ms", env = env::KAFKA_DELIVERY_TIMEOUT_MS, value_name = env::KAFKA_DELIVERY_TIMEOUT_MS,
          default_value = "5000", value_parser = millis(1000..=300_000))]
    pub kafka_delivery_timeout: Duration,

    /// S3 endpoint (MinIO and other S3 servers); AWS when absent.
    #[arg(long, env = env::S3_ENDPOINT, value_name = env::S3_ENDPOINT, value_parser = parse_http_url)]
    pub s3_endpoint: Option<Url>,

    /// S3 region.
    #[arg(
        long,
        env = env::S3_REGION,
        value_name = env::S3_REGION,
        default_value = "us-east-1"
    )]
    pub s3_region: String,

    /// The media bucket.
    #[arg(long, env = env::S3_BUCKET, value_name = env::S3_BUCKET)]
    pub s3_bucket: Option<String>,

    /// S3 access key ID.
    #[arg(
        long,
        env = env::S3_ACCESS_KEY_ID,
        value_name = env::S3_ACCESS_KEY_ID,
        hide_env_values = true
    )]
    pub s3_access_key_id: Option<Secret>,

    /// S3 secret access key.
    #[arg(
        long,
        env = env::S3_SECRET_ACCESS_KEY,
        value_name = env::S3_SECRET_ACCESS_KEY,
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<Secret>,

    /// Ring members, `,`-separated `name=internal-url` (`n1=http://10.0.0.1:9180,...`).
    #[arg(long, env = env::NODES, value_name = env::NODES, value_delimiter = ',', value_parser = parse_member)]
    pub nodes: Vec<parley_crd::Member>,

    /// In Kubernetes: the ChatCluster whose status lists the ring members (watched live,
    /// instead of `PARLEY_NODES`).
    #[arg(long, env = env::CLUSTER_NAME, value_name = env::CLUSTER_NAME)]
    pub cluster_name: Option<String>,

    /// Namespace of that ChatCluster.
    #[arg(
        long,
        env = env::NAMESPACE,
        value_name = env::NAMESPACE,
        default_value = "default"
    )]
    pub namespace: String,

    /// Address of the node-to-node API (forwarded sends, channel state).
    #[arg(
        long,
        env = env::INTERNAL_LISTEN,
        value_name = env::INTERNAL_LISTEN
    )]
    pub internal_listen: Option<SocketAddr>,

    /// Secret the nodes share for the node-to-node API, at least 32 bytes.
    #[arg(long, env = env::CLUSTER_SECRET, value_name = env::CLUSTER_SECRET, value_parser = parse_secret, hide_env_values = true)]
    pub cluster_secret: Option<Secret>,

    /// How long a node's lease in Redis lives without renewal, given in milliseconds. A dead
    /// node's channels move to the others after this; it must exceed 5/3 of the Kafka
    /// delivery timeout.
    #[arg(long = "node-lease-ms", env = env::NODE_LEASE_MS, value_name = env::NODE_LEASE_MS,
          default_value = "10000", value_parser = millis(1000..=600_000))]
    pub node_lease: Duration,

    /// Most messages a persister writes in one batch.
    #[arg(long, env = env::PERSISTER_BATCH, value_name = env::PERSISTER_BATCH, default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub persister_batch: u32,

    /// How long a persister waits for a batch to fill, given in milliseconds.
    #[arg(long = "persister-linger-ms", env = env::PERSISTER_LINGER_MS, value_name = env::PERSISTER_LINGER_MS,
          default_value = "20", value_parser = millis(..))]
    pub persister_linger: Duration,
}

/// The distributed settings, all present and checked ([`Config::distributed`]).
#[derive(Debug, Clone)]
pub struct Distributed {
    /// The directory database (`PARLEY_DIRECTORY_URL`).
    pub directory_url: Secret<Url>,
    /// The message shards, covering every slot once (`PARLEY_SHARDS`).
    pub shards: Vec<crate::backend::postgres::ShardSpec>,
    /// Redis: pub/sub, presence and leases (`PARLEY_REDIS_URL`).
    pub redis_url: Secret<Url>,
    /// The Kafka log.
    pub kafka: crate::backend::kafka::KafkaSettings,
    /// The media bucket.
    pub s3: crate::backend::s3::S3Settings,
    /// The ring members configured by hand (`PARLEY_NODES`; empty in Kubernetes).
    pub nodes: Vec<parley_crd::Member>,
    /// Where the node-to-node API listens (`127.0.0.1:0` for `migrate` and `persist`).
    pub internal_listen: SocketAddr,
    /// The node-to-node API's shared secret (empty for `migrate` and `persist`).
    pub cluster_secret: Secret,
    /// Node lease lifetime and the Kafka delivery timeout it must outlast.
    pub leases: crate::cluster::Leases,
    /// Prefix of the Kafka topics.
    pub topic_prefix: String,
    /// Connections per database pool.
    pub pool_size: u32,
    /// How persisters batch their writes.
    pub batching: crate::persister::Batching,
}

fn required<T: Clone>(v: &Option<T>, key: &'static str) -> Result<T, ConfigError> {
    v.clone().ok_or_else(|| ConfigError {
        key: key.to_owned(),
        problem: "required in distributed mode".into(),
    })
}

impl Config {
    /// The distributed settings; the error names the first missing or invalid key, in the
    /// order: databases, Redis, Kafka, S3, the serving node's secrets and ring, leases.
    pub fn distributed(&self) -> Result<Distributed, ConfigError> {
        let c = &self.cluster;
        let directory_url = required(&c.directory_url, env::DIRECTORY_URL)?;
        c.check_shards()?;
        let redis_url = required(&c.redis_url, env::REDIS_URL)?;
        let kafka = crate::backend::kafka::KafkaSettings {
            bootstrap_servers: required(&c.kafka_bootstrap, env::KAFKA_BOOTSTRAP)?,
            delivery_timeout: c.kafka_delivery_timeout,
        };
        let s3 = c.s3()?;
        let (internal_listen, cluster_secret) = self.node_to_node()?;
        let leases = c.leases()?;
        Ok(Distributed {
            leases,
            topic_prefix: c.kafka_topic_prefix.clone(),
            pool_size: c.db_pool_size,
            batching: crate::persister::Batching {
                max_messages: c.persister_batch as usize,
                max_wait: c.persister_linger,
            },
            directory_url,
            shards: c.shards.clone(),
            redis_url,
            kafka,
            s3,
            nodes: c.nodes.clone(),
            internal_listen,
            cluster_secret,
        })
    }

    /// A serving node's address and secret for the node-to-node API, and its place in the
    /// ring; `migrate` and `persist` need none of them.
    fn node_to_node(&self) -> Result<(SocketAddr, Secret), ConfigError> {
        let c = &self.cluster;
        if self.command != Command::Serve {
            let listen = c
                .internal_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            return Ok((listen, c.cluster_secret.clone().unwrap_or_default()));
        }
        required(&self.jwt_secret, env::JWT_SECRET)?;
        let cluster_secret = required(&c.cluster_secret, env::CLUSTER_SECRET)?;
        let listen = required(&c.internal_listen, env::INTERNAL_LISTEN)?;
        if c.cluster_name.is_none() && !c.nodes.iter().any(|m| m.name == self.node_name) {
            return Err(ConfigError {
                key: env::NODES.into(),
                problem: format!(
                    "does not list this node, {}={}",
                    env::NODE_NAME,
                    self.node_name
                ),
            });
        }
        Ok((listen, cluster_secret))
    }
}

impl ClusterArgs {
    /// The shards are given and cover every slot exactly once.
    fn check_shards(&self) -> Result<(), ConfigError> {
        if self.shards.is_empty() {
            return Err(ConfigError {
                key: env::SHARDS.into(),
                problem: "required in distributed mode".into(),
            });
        }
        parley_crd::ShardMap::build(
            self.shards
                .iter()
                .map(|s| (s.name.clone(), s.slots.clone()))
                .collect(),
            Clone::clone,
        )
        .map(drop)
        .map_err(|e| ConfigError {
            key: env::SHARDS.into(),
            problem: e.to_string(),
        })
    }

    fn s3(&self) -> Result<crate::backend::s3::S3Settings, ConfigError> {
        Ok(crate::backend::s3::S3Settings {
            bucket: required(&self.s3_bucket, env::S3_BUCKET)?,
            access_key_id: required(&self.s3_access_key_id, env::S3_ACCESS_KEY_ID)?,
            secret_access_key: required(&self.s3_secret_access_key, env::S3_SECRET_ACCESS_KEY)?,
            path_style: self.s3_endpoint.is_some(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
        })
    }

    /// The node lease must leave a node time to own channels: more than 5/3 of the Kafka
    /// delivery timeout.
    fn leases(&self) -> Result<crate::cluster::Leases, ConfigError> {
        let leases = crate::cluster::Leases {
            lease: self.node_lease,
            delivery_timeout: self.kafka_delivery_timeout,
        };
        if leases.owner_window() <= leases.renew_every() {
            return Err(ConfigError {
                key: env::NODE_LEASE_MS.into(),
                problem: format!(
                    "{} ms leaves no time to own channels with {}={}; use more than {} ms",
                    self.node_lease.as_millis(),
                    env::KAFKA_DELIVERY_TIMEOUT_MS,
                    self.kafka_delivery_timeout.as_millis(),
                    self.kafka_delivery_timeout.as_millis() * 5 / 3
                ),
            });
        }
        Ok(leases)
    }
}
