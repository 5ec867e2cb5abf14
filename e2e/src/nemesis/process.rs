//! Faults of a node's process: a pause (SIGSTOP, healed by SIGCONT), as a long GC, a full
//! disk or a stalled VM would; and `kill -9` (healed by starting the node again).

use std::time::Duration;

use rand::Rng as _;

use super::{Fault, Nemesis, no_preparation};
use crate::cluster::Cluster;

/// SIGSTOP of node `node` (an index into `cluster.nodes`); heal = SIGCONT. The node keeps
/// its sockets and, woken, carries on with whatever it was doing.
#[derive(Debug, Clone, Copy)]
pub struct Pause {
    pub node: usize,
}

#[async_trait::async_trait]
impl Nemesis for Pause {
    fn name(&self) -> String {
        format!("pause n{}", self.node + 1)
    }

    async fn start(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        cluster.signal(self.node, "STOP")
    }

    async fn heal(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        cluster.signal(self.node, "CONT")
    }
}

/// `kill -9` of node `node`; heal = start it again and wait (up to 60 s) until it is ready.
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub node: usize,
}

#[async_trait::async_trait]
impl Nemesis for Kill {
    fn name(&self) -> String {
        format!("kill n{}", self.node + 1)
    }

    async fn start(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        anyhow::ensure!(
            cluster.pid(self.node).is_some(),
            "node n{} is not running",
            self.node + 1
        );
        cluster.kill(self.node).await;
        Ok(())
    }

    async fn heal(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        cluster.restart(self.node);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !matches!(cluster.readyz(self.node).await, Some((200, _))) {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "n{} was not ready 60 s after its restart; logs in {}",
                self.node + 1,
                cluster.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

/// [`Pause`] of a random node.
pub const PAUSE: Fault = Fault {
    kind: "pause",
    prepare: no_preparation,
    build: |cluster, rng| {
        Ok(Box::new(Pause {
            node: rng.random_range(0..cluster.nodes.len()),
        }))
    },
};

/// [`Kill`] of a random node.
pub const KILL: Fault = Fault {
    kind: "kill",
    prepare: no_preparation,
    build: |cluster, rng| {
        Ok(Box::new(Kill {
            node: rng.random_range(0..cluster.nodes.len()),
        }))
    },
};
