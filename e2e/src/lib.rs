//! Harness for tests that need the real services (PostgreSQL, Redis, Kafka, S3) that
//! `dev/services up` starts on loopback.
//!
//! `dev/services up` writes one JSON object describing every service (addresses and
//! credentials) to `.state/services/services.json`; `dev/services status` prints the same
//! object. Tests load it with [`Services::load`]. A missing file is an error, never a skip:
//! a test that needs a service fails when the service is not there.
#![forbid(unsafe_code)]

pub mod bench;
pub mod client;
pub mod cluster;
pub mod history;
pub mod kube;
pub mod nemesis;
pub mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable that overrides where the services file is read from.
pub const SERVICES_FILE_ENV: &str = "PARLEY_SERVICES_FILE";

/// Every service `dev/services` runs, as `dev/services status` prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct Services {
    pub state_dir: PathBuf,
    /// PostgreSQL servers by role: `directory`, `shard-a`, `shard-b`.
    pub postgres: BTreeMap<String, Postgres>,
    pub redis: Redis,
    pub kafka: Kafka,
    pub s3: S3,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Postgres {
    /// `postgres://user:password@host:port/database`
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Redis {
    /// `redis://:password@host:port/0`
    pub url: String,
    pub host: String,
    pub port: u16,
    pub password: String,
    /// The `notify-keyspace-events` setting the server runs with.
    pub notify_keyspace_events: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Kafka {
    pub bootstrap_servers: String,
    /// The listener for processes in other network namespaces (dev/k8s' real node, the
    /// partition tests' namespaces): `198.18.1.1:19094`, DNAT'd to 127.0.0.1 on the host.
    #[serde(default)]
    pub node_bootstrap_servers: Option<String>,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct S3 {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub bucket: String,
}

/// Why the services description could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}; start the services with `dev/services up`")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid services description: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl Services {
    /// Loads the description from `$PARLEY_SERVICES_FILE`, or from the workspace's
    /// `.state/services/services.json`.
    pub fn load() -> Result<Self, LoadError> {
        let path = std::env::var_os(SERVICES_FILE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(default_services_file);
        Self::load_from(&path)
    }

    /// Loads the description from `path`.
    pub fn load_from(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LoadError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The PostgreSQL server with the given role, or a panic naming the roles there are.
    pub fn postgres(&self, role: &str) -> &Postgres {
        self.postgres.get(role).unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server `{role}`; have {:?}",
                self.postgres.keys().collect::<Vec<_>>()
            )
        })
    }
}

/// The services description, or a panic that says how to start them (for tests).
pub fn services() -> Services {
    Services::load().unwrap_or_else(|e| panic!("{e}"))
}

/// `<workspace>/.state/services/services.json`.
pub fn default_services_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".state")
        .join("services")
        .join("services.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_document() {
        let json = r#"{
          "state_dir": "/x/.state/services",
          "postgres": {
            "directory": {"url": "postgres://parley:pw@127.0.0.1:15432/parley",
                          "host": "127.0.0.1", "port": 15432, "user": "parley",
                          "password": "pw", "database": "parley", "running": true}
          },
          "redis": {"url": "redis://:pw@127.0.0.1:16379/0", "host": "127.0.0.1",
                    "port": 16379, "password": "pw", "notify_keyspace_events": "KEx"},
          "kafka": {"bootstrap_servers": "127.0.0.1:19092", "version": "4.1.1"},
          "s3": {"endpoint": "http://127.0.0.1:19000", "region": "us-east-1",
                 "access_key_id": "k", "secret_access_key": "s", "bucket": "b"}
        }"#;
        let services: Services = serde_json::from_str(json).unwrap();
        assert_eq!(services.postgres("directory").port, 15432);
        assert_eq!(services.kafka.bootstrap_servers, "127.0.0.1:19092");
    }

    #[test]
    fn missing_file_says_how_to_start_the_services() {
        let err = Services::load_from(Path::new("/nonexistent/services.json")).unwrap_err();
        assert!(err.to_string().contains("dev/services up"), "{err}");
    }
}
