//! Faults of the shared services `dev/services` runs: Redis or the Kafka broker stopped for
//! the fault's length (healed by starting it again, the restart of today's fault tests),
//! and PostgreSQL shards crashed with `pg_ctl stop -m immediate` (no shutdown checkpoint;
//! healed by starting them, which runs crash recovery).
//!
//! The services are shared by every test on the machine: a scenario that uses these holds
//! its test file's serialising lock, and a nemesis dropped while its fault is on (a panic
//! mid-scenario) starts the service again, so no run leaves a service down.

use std::path::{Path, PathBuf};

use rand::Rng as _;

use super::{Fault, Nemesis, no_preparation};
use crate::cluster::Cluster;

/// The PostgreSQL shards of a test cluster, as `dev/services` names their roles.
pub const SHARDS: [&str; 2] = ["shard-a", "shard-b"];

/// Which service goes down, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outage {
    /// `dev/services down redis`; heal: `up redis`.
    RestartRedis,
    /// `dev/services down kafka` (a clean broker shutdown); heal: `up kafka`.
    RestartKafka,
    /// `dev/services crash pg-<shard>...` (`pg_ctl stop -m immediate`, every shard of
    /// `shards` at once); heal: `up pg-<shard>...`. Each is a role of [`SHARDS`].
    CrashShard { shards: Vec<String> },
}

impl Outage {
    /// The fault's kind (the first word of its nemesis's name).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RestartRedis => "restart-redis",
            Self::RestartKafka => "restart-kafka",
            Self::CrashShard { .. } => "crash-shard",
        }
    }

    /// The `dev/services` services it acts on: `redis`, `kafka` or `pg-<shard>`s.
    pub fn services(&self) -> Vec<String> {
        match self {
            Self::RestartRedis => vec!["redis".into()],
            Self::RestartKafka => vec!["kafka".into()],
            Self::CrashShard { shards } => shards.iter().map(|s| format!("pg-{s}")).collect(),
        }
    }

    /// The `dev/services` arguments that start the fault.
    pub fn start_args(&self) -> Vec<String> {
        let verb = match self {
            Self::RestartRedis | Self::RestartKafka => "down",
            Self::CrashShard { .. } => "crash",
        };
        [vec![verb.to_owned()], self.services()].concat()
    }

    /// The `dev/services` arguments that heal it (they return once the services answer).
    pub fn heal_args(&self) -> Vec<String> {
        [vec!["up".to_owned()], self.services()].concat()
    }
}

/// A nemesis that takes one service down ([`Outage`]) and brings it back.
#[derive(Debug)]
pub struct ServiceOutage {
    outage: Outage,
    /// Whether the fault is on (started, not healed).
    down: bool,
}

impl ServiceOutage {
    /// A nemesis for `outage`.
    pub fn new(outage: Outage) -> Self {
        Self {
            outage,
            down: false,
        }
    }
}

#[async_trait::async_trait]
impl Nemesis for ServiceOutage {
    fn name(&self) -> String {
        format!(
            "{} {}",
            self.outage.kind(),
            self.outage.services().join(" ")
        )
    }

    async fn start(&mut self, _cluster: &mut Cluster) -> anyhow::Result<()> {
        self.down = true;
        run_dev_services(&self.outage.start_args()).await
    }

    async fn heal(&mut self, _cluster: &mut Cluster) -> anyhow::Result<()> {
        run_dev_services(&self.outage.heal_args()).await?;
        self.down = false;
        Ok(())
    }
}

impl Drop for ServiceOutage {
    fn drop(&mut self) {
        if self.down {
            restore_now(&self.outage.services());
        }
    }
}

/// The repository's `dev/services` script.
pub fn dev_services_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dev")
        .join("services")
}

/// Runs `dev/services ARGS` as a child process without blocking the runtime (a Kafka start
/// takes seconds, and the workload runs meanwhile). Errors: the script could not run, or
/// it failed (with the last lines it printed).
pub async fn run_dev_services<S: AsRef<str>>(args: &[S]) -> anyhow::Result<()> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = tokio::process::Command::new("bash")
        .arg(dev_services_script())
        .args(&args)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "dev/services {} failed ({}): {}",
        args.join(" "),
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr), 10)
    );
    Ok(())
}

/// `dev/services up SERVICE...`, blocking: for a nemesis dropped with its fault on. A
/// failure is printed (a drop cannot return it).
pub fn restore_now(services: &[String]) {
    let status = std::process::Command::new("bash")
        .arg(dev_services_script())
        .arg("up")
        .args(services)
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("nemesis: dev/services up {services:?} failed while healing on drop: {status:?}");
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Redis stopped, then started again.
pub const RESTART_REDIS: Fault = Fault {
    kind: "restart-redis",
    prepare: no_preparation,
    build: |_, _| Ok(Box::new(ServiceOutage::new(Outage::RestartRedis))),
};

/// The Kafka broker stopped, then started again.
pub const RESTART_KAFKA: Fault = Fault {
    kind: "restart-kafka",
    prepare: no_preparation,
    build: |_, _| Ok(Box::new(ServiceOutage::new(Outage::RestartKafka))),
};

/// A random shard crashed (`pg_ctl stop -m immediate`), then started again.
pub const CRASH_SHARD: Fault = Fault {
    kind: "crash-shard",
    prepare: no_preparation,
    build: |_, rng| {
        let shard = SHARDS[rng.random_range(0..SHARDS.len())].to_owned();
        Ok(Box::new(ServiceOutage::new(Outage::CrashShard {
            shards: vec![shard],
        })))
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_name_their_service_and_commands() {
        let crash = Outage::CrashShard {
            shards: vec!["shard-a".into(), "shard-b".into()],
        };
        assert_eq!(crash.start_args(), ["crash", "pg-shard-a", "pg-shard-b"]);
        assert_eq!(crash.heal_args(), ["up", "pg-shard-a", "pg-shard-b"]);
        assert_eq!(
            ServiceOutage::new(crash).name(),
            "crash-shard pg-shard-a pg-shard-b"
        );
        assert_eq!(Outage::RestartKafka.start_args(), ["down", "kafka"]);
        assert_eq!(Outage::RestartRedis.heal_args(), ["up", "redis"]);
        for (outage, fault) in [
            (Outage::RestartRedis, RESTART_REDIS),
            (Outage::RestartKafka, RESTART_KAFKA),
        ] {
            assert_eq!(outage.kind(), fault.kind);
        }
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
