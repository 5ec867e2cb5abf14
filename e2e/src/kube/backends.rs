//! The backends a scenario's pods use, as seen from inside the cluster, and how the real-node
//! test derives them from `dev/services status`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Databases and services as seen from the pods (not from the test's host).
///
/// The JSON file the scenario reads (`--backends`):
/// ```json
/// {"directory_url": "postgres://u:p@198.18.1.1:15432/db",
///  "shard_urls": ["postgres://…/a", "postgres://…/b", "postgres://…/c"],
///  "redis_url": "redis://:p@198.18.1.1:16379/0",
///  "kafka_bootstrap": "198.18.1.1:19094",
///  "kafka_replication_factor": 1,
///  "s3": {"endpoint": "http://198.18.1.1:19000", "bucket": "parley-media",
///         "region": "us-east-1", "access_key_id": "k", "secret_access_key": "s"}}
/// ```
/// `shard_urls` holds three databases: one for each of the sample's two ChatShards and one for
/// the shard the scenario adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backends {
    /// PostgreSQL URL of the directory database.
    pub directory_url: String,
    /// PostgreSQL URLs of the shards: the sample's two, in slot order, and the added one.
    pub shard_urls: Vec<String>,
    /// Redis URL (with its password).
    pub redis_url: String,
    /// Kafka `host:port` list.
    pub kafka_bootstrap: String,
    /// Replication factor of the scenario's Kafka topics (1 for a single broker).
    #[serde(default = "one")]
    pub kafka_replication_factor: i32,
    pub s3: S3Backend,
}

fn one() -> i32 {
    1
}

/// An S3 (MinIO) endpoint and the bucket media go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Backend {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Backends {
    /// Reads and checks a backends file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the backends file {}", path.display()))?;
        let b: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a backends description", path.display()))?;
        b.check()?;
        Ok(b)
    }

    /// Fails unless there are three shard URLs and nothing is empty.
    pub fn check(&self) -> Result<()> {
        if self.shard_urls.len() != 3 {
            bail!(
                "backends: shard_urls must list 3 databases (two shards and the added one), has {}",
                self.shard_urls.len()
            );
        }
        for (what, v) in [
            ("directory_url", &self.directory_url),
            ("redis_url", &self.redis_url),
            ("kafka_bootstrap", &self.kafka_bootstrap),
            ("s3.endpoint", &self.s3.endpoint),
            ("s3.bucket", &self.s3.bucket),
        ] {
            if v.is_empty() {
                bail!("backends: {what} is empty");
            }
        }
        Ok(())
    }
}

/// Replaces the host `from` with `to` in a URL or `host:port` list (`127.0.0.1` → node IP).
pub fn rehost(url: &str, from: &str, to: &str) -> String {
    url.replace(&format!("@{from}:"), &format!("@{to}:"))
        .replace(&format!("//{from}:"), &format!("//{to}:"))
        .split(',')
        .map(|part| match part.strip_prefix(&format!("{from}:")) {
            Some(port) => format!("{to}:{port}"),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The Kafka bootstrap servers pods use, from `dev/services status`'s `kafka` object: a field
/// whose servers are on `node_ip` (the node listener) when there is one, else the loopback
/// ones moved to `node_ip`.
pub fn pod_kafka_bootstrap(kafka: &Value, node_ip: &str) -> Result<String> {
    let fields = kafka
        .as_object()
        .context("dev/services status has no kafka object")?;
    // Prefer an explicit field for pods/nodes, then any value naming the node address.
    for key in [
        "pod_bootstrap_servers",
        "node_bootstrap_servers",
        "bootstrap_servers_node",
    ] {
        if let Some(v) = fields.get(key).and_then(Value::as_str) {
            return Ok(v.to_owned());
        }
    }
    for v in fields.values().filter_map(Value::as_str) {
        if v.starts_with(&format!("{node_ip}:")) {
            return Ok(v.to_owned());
        }
    }
    let plain = fields
        .get("bootstrap_servers")
        .and_then(Value::as_str)
        .context("dev/services status: kafka has no bootstrap_servers")?;
    Ok(rehost(plain, "127.0.0.1", node_ip))
}

/// Backends for pods from `dev/services status` (`services`), with PostgreSQL URLs taken
/// from `databases` (`[directory, shard a, shard b, shard c]`, already as pods see them).
pub fn from_dev_services(
    services: &Value,
    node_ip: &str,
    databases: [String; 4],
) -> Result<Backends> {
    let s = |v: &Value, what: &str| -> Result<String> {
        v.as_str()
            .map(str::to_owned)
            .with_context(|| format!("dev/services status has no {what}"))
    };
    let [directory_url, a, b, c] = databases;
    let s3 = &services["s3"];
    Ok(Backends {
        directory_url,
        shard_urls: vec![a, b, c],
        redis_url: rehost(
            &s(&services["redis"]["url"], "redis.url")?,
            "127.0.0.1",
            node_ip,
        ),
        kafka_bootstrap: pod_kafka_bootstrap(&services["kafka"], node_ip)?,
        kafka_replication_factor: 1,
        s3: S3Backend {
            endpoint: rehost(&s(&s3["endpoint"], "s3.endpoint")?, "127.0.0.1", node_ip),
            bucket: s(&s3["bucket"], "s3.bucket")?,
            region: s(&s3["region"], "s3.region")?,
            access_key_id: s(&s3["access_key_id"], "s3.access_key_id")?,
            secret_access_key: s(&s3["secret_access_key"], "s3.secret_access_key")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rehost_moves_loopback_to_the_node() {
        assert_eq!(
            rehost(
                "postgres://u:p@127.0.0.1:15432/x",
                "127.0.0.1",
                "198.18.1.1"
            ),
            "postgres://u:p@198.18.1.1:15432/x"
        );
        assert_eq!(
            rehost("http://127.0.0.1:19000", "127.0.0.1", "198.18.1.1"),
            "http://198.18.1.1:19000"
        );
        assert_eq!(
            rehost("127.0.0.1:19092,127.0.0.2:1", "127.0.0.1", "198.18.1.1"),
            "198.18.1.1:19092,127.0.0.2:1"
        );
    }

    #[test]
    fn kafka_prefers_a_node_listener() {
        let k = json!({"bootstrap_servers": "127.0.0.1:19092", "node_bootstrap_servers": "198.18.1.1:19094"});
        assert_eq!(
            pod_kafka_bootstrap(&k, "198.18.1.1").unwrap(),
            "198.18.1.1:19094"
        );
        let k = json!({"bootstrap_servers": "127.0.0.1:19092", "listener_for_pods": "198.18.1.1:19095"});
        assert_eq!(
            pod_kafka_bootstrap(&k, "198.18.1.1").unwrap(),
            "198.18.1.1:19095"
        );
        let k = json!({"bootstrap_servers": "127.0.0.1:19092"});
        assert_eq!(
            pod_kafka_bootstrap(&k, "198.18.1.1").unwrap(),
            "198.18.1.1:19092"
        );
    }

    #[test]
    fn backends_from_dev_services() {
        let services = json!({
            "redis": {"url": "redis://:pw@127.0.0.1:16379/0"},
            "kafka": {"bootstrap_servers": "127.0.0.1:19092"},
            "s3": {"endpoint": "http://127.0.0.1:19000", "region": "us-east-1",
                   "access_key_id": "k", "secret_access_key": "s", "bucket": "b"}
        });
        let dbs = ["d", "a", "b", "c"].map(String::from);
        let b = from_dev_services(&services, "198.18.1.1", dbs).unwrap();
        assert_eq!(b.redis_url, "redis://:pw@198.18.1.1:16379/0");
        assert_eq!(b.s3.endpoint, "http://198.18.1.1:19000");
        assert_eq!(b.shard_urls, ["a", "b", "c"]);
        b.check().unwrap();
        let text = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Backends>(&text).unwrap(), b);
    }
}
