//! A persister killed between its database commit and its offset commit, without any hook
//! in chat-node: the shards are crashed so that the persister holds a batch in its insert
//! retry, the Kafka broker is stopped, the shards come back (the insert commits, and the
//! offset commit now fails: the persister logs "committing the log position failed"), and
//! the persister is killed with -9. The heal starts Kafka and the persister again; from
//! its last committed position it replays the batch the store already holds, which the
//! store's idempotent insert must absorb (the checker's `duplicated` would say otherwise).
//!
//! Each step waits for the persister's own log line that proves the previous one took, so
//! the kill lands in that window every time (not by timing luck).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::services::{SHARDS, restore_now, run_dev_services};
use super::{Fault, Nemesis, no_preparation};
use crate::cluster::{Cluster, Launch};

/// What the persister logs when an insert failed and it will retry the batch.
pub const INSERT_RETRY: &str = "persisting failed, retrying";
/// What it logs when the insert committed but the log position could not be committed.
pub const COMMIT_RETRY: &str = "committing the log position failed, retrying";

/// How long each step waits for the persister's log line.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which services the nemesis holds down, for its heal and its drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Nothing,
    ShardsAndMaybeKafka,
    Kafka,
}

/// Kills persister `persister` (an index into `cluster.persisters`) after its insert
/// committed and before its offset commit; heal = Kafka and the persister started again.
#[derive(Debug)]
pub struct PersisterCrash {
    pub persister: usize,
    held: Held,
}

impl PersisterCrash {
    /// A nemesis for persister `persister`.
    pub fn new(persister: usize) -> Self {
        Self {
            persister,
            held: Held::Nothing,
        }
    }
}

/// The services `dev/services` calls the shards.
fn shard_services() -> Vec<String> {
    SHARDS.iter().map(|s| format!("pg-{s}")).collect()
}

/// The log file of persister `i` (the cluster writes `<dir>/<name>.log`).
fn log_of(cluster: &Cluster, i: usize) -> PathBuf {
    cluster
        .dir
        .join(format!("{}.log", cluster.persisters[i].name))
}

/// The length of `log` now (0 when it does not exist yet).
fn mark(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// Whether `text` holds `needle` from byte `from` on.
pub fn logged_since(text: &[u8], from: u64, needle: &str) -> bool {
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
    text[from..]
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Waits up to `within` until `log` holds `needle` past byte `from`. Errors on timeout,
/// saying `why` the line was expected.
async fn wait_logged(
    log: &Path,
    from: u64,
    needle: &str,
    within: Duration,
    why: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = tokio::fs::read(log).await.unwrap_or_default();
        if logged_since(&text, from, needle) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no \"{needle}\" in {} within {within:?}: {why}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl PersisterCrash {
    /// The steps of [`Nemesis::start`]; `self.held` follows what is down.
    async fn kill_between_commits(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let log = log_of(cluster, self.persister);
        let shards = shard_services();
        // 1. Crash the shards: the persister's next batch fails and is retried.
        let from = mark(&log);
        self.held = Held::ShardsAndMaybeKafka;
        run_dev_services(&[&["crash".to_owned()], &shards[..]].concat()).await?;
        wait_logged(
            &log,
            from,
            INSERT_RETRY,
            STEP_TIMEOUT,
            "the persister held no batch while the shards were down (is the workload sending?)",
        )
        .await?;
        // 2. Stop Kafka, 3. bring the shards back: the insert commits, the offset commit fails.
        let from = mark(&log);
        run_dev_services(&["down", "kafka"]).await?;
        run_dev_services(&[&["up".to_owned()], &shards[..]].concat()).await?;
        self.held = Held::Kafka;
        wait_logged(
            &log,
            from,
            COMMIT_RETRY,
            STEP_TIMEOUT,
            "the insert should have committed and the offset commit failed",
        )
        .await?;
        // 4. Kill it there.
        cluster.kill_persister(self.persister).await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Nemesis for PersisterCrash {
    fn name(&self) -> String {
        format!("persister-crash p{}", self.persister + 1)
    }

    async fn start(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        anyhow::ensure!(
            cluster.persister_pid(self.persister).is_some(),
            "persister p{} is not running",
            self.persister + 1
        );
        self.kill_between_commits(cluster).await
    }

    async fn heal(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        if self.held == Held::ShardsAndMaybeKafka {
            run_dev_services(&[&["up".to_owned()], &shard_services()[..]].concat()).await?;
        }
        run_dev_services(&["up", "kafka"]).await?;
        self.held = Held::Nothing;
        // The persisters of a test cluster run with the default launch.
        cluster
            .restart_persister(self.persister, Launch::default())
            .await;
        Ok(())
    }
}

impl Drop for PersisterCrash {
    fn drop(&mut self) {
        match self.held {
            Held::Nothing => {}
            Held::ShardsAndMaybeKafka => {
                let mut all = shard_services();
                all.push("kafka".into());
                restore_now(&all);
            }
            Held::Kafka => restore_now(&["kafka".into()]),
        }
    }
}

/// The first persister killed between its two commits.
pub const PERSISTER_CRASH: Fault = Fault {
    kind: "persister-crash",
    prepare: no_preparation,
    build: |_, _| Ok(Box::new(PersisterCrash::new(0))),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_line_only_past_the_mark() {
        let log = b"x persisting failed, retrying in 100ms\ny committing the log position failed, retrying in 1s\n";
        assert!(logged_since(log, 0, INSERT_RETRY));
        assert!(!logged_since(log, 20, INSERT_RETRY));
        assert!(logged_since(log, 20, COMMIT_RETRY));
        assert!(!logged_since(log, 10_000, COMMIT_RETRY));
        assert_eq!(PersisterCrash::new(0).name(), "persister-crash p1");
    }
}
