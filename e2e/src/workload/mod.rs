//! The workload driver of the fault scenarios: several client processes (each one user on
//! one WebSocket at a time) send, join and leave groups, drop and resume their sockets, and
//! log every operation to a history ([`crate::history`]) for the checker.
//!
//! A run: [`setup`] registers one user per process and creates the groups (group 0, the
//! hot one, gets most sends and every process stays in it; the churners join and leave the
//! others, the stayers are members of every group throughout). [`Load::start`] spawns the
//! processes; they send at [`Workload::rate_per_process`] until [`Load::stop`], then read
//! the tail for [`Workload::settle`], catch up through REST history, and hand their
//! sockets back for the final presence check ([`finish`]). [`stored_rows`] reads what the
//! shards hold. Memory is bounded: per process a few counters per channel and at most
//! [`MAX_RETRIES`] sends waiting for a retry.

mod client;
mod finish;
mod rest;
pub mod scenario;
mod tracker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parley_protocol::Id;
use serde_json::json;

use crate::Services;
use crate::client::Api;
use crate::cluster::Cluster;
use crate::history::{F, HistoryWriter, StoredRow};

pub use finish::{presence_check, stored_rows};
pub use tracker::Channels;

/// Sends waiting for a retry, per process; past it the oldest is given up (it stays `info`).
pub const MAX_RETRIES: usize = 16;

/// The knobs of a workload. The defaults suit a scenario of tens of seconds on 2 cores:
/// 8 processes at 4 sends/s each (32/s), 3 groups, 2 churners.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Client processes (users); process `p` starts on node `p % nodes`.
    pub processes: usize,
    /// Groups; group 0 is the hot one (every process stays in it).
    pub groups: usize,
    /// The last `churners` processes join and leave groups 1.. during the run; the others
    /// stay members of every group throughout.
    pub churners: usize,
    /// Operations per second of one process (sends, mostly).
    pub rate_per_process: f64,
    /// Share of sends that go to the hot group.
    pub hot_share: f64,
    /// Chance per operation that a process closes its socket and resumes.
    pub drop_chance: f64,
    /// Chance per operation that a churner joins or leaves a group.
    pub churn_chance: f64,
    /// How long a process waits for a reply (send, connect, REST) before `info`
    /// `timeout`.
    pub timeout: Duration,
    /// Attempts of one send (same `client_msg_id`) whose outcome stays unknown.
    pub send_attempts: u32,
    /// How long a send waits before its retry.
    pub retry_after: Duration,
    /// After the load stops: how long processes keep reading before their catch-up.
    pub settle: Duration,
    /// Create the hot group so that this node (an index) owns it, for the faults that
    /// target the owner of the busiest channel.
    pub hot_owner: Option<usize>,
    /// Seeds each process's random choices (`seed + process`).
    pub seed: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            processes: 8,
            groups: 3,
            churners: 2,
            rate_per_process: 4.0,
            hot_share: 0.6,
            drop_chance: 0.01,
            churn_chance: 0.1,
            timeout: Duration::from_secs(5),
            send_attempts: 3,
            retry_after: Duration::from_secs(1),
            settle: Duration::from_secs(6),
            hot_owner: None,
            seed: 1,
        }
    }
}

/// A node as the processes reach it.
#[derive(Debug, Clone)]
pub struct Node {
    /// `n1`, ...
    pub name: String,
    /// Public base URL.
    pub url: String,
}

/// What [`setup`] made: one user per process, the groups (hot first), the nodes.
#[derive(Debug, Clone)]
pub struct Setup {
    pub users: Vec<Api>,
    pub groups: Vec<Id>,
    pub nodes: Vec<Node>,
}

impl Setup {
    /// Whether process `p` is a churner.
    pub fn is_churner(&self, workload: &Workload, p: usize) -> bool {
        p + workload.churners >= self.users.len()
    }
}

/// Registers one user per process (logging each one's `user` operation first), creates
/// the groups and logs every process joining them: every group for stayers, the hot group
/// for churners. Errors: a registration, creation or join failed.
pub async fn setup(
    cluster: &Cluster,
    workload: &Workload,
    history: &HistoryWriter,
) -> anyhow::Result<Setup> {
    anyhow::ensure!(workload.processes > workload.churners && workload.groups > 0);
    let nodes: Vec<Node> = cluster
        .nodes
        .iter()
        .map(|n| Node {
            name: n.name.clone(),
            url: n.url.clone(),
        })
        .collect();
    let mut users = Vec::new();
    for p in 0..workload.processes {
        let api = Api::register(&nodes[p % nodes.len()].url, &cluster.name(&format!("w{p}"))).await;
        history.user(p as u32, api.id());
        users.push(api);
    }
    let groups = create_groups(cluster, workload, &users[0]).await?;
    let setup = Setup {
        users,
        groups,
        nodes,
    };
    let rest = rest::Rest::new(workload.timeout);
    for (p, api) in setup.users.iter().enumerate() {
        let joins = if setup.is_churner(workload, p) {
            &setup.groups[..1]
        } else {
            &setup.groups[..]
        };
        for &g in joins {
            let node = &setup.nodes[p % setup.nodes.len()];
            let pending = history.invoke(
                p as u32,
                F::Join,
                Some(&node.name),
                json!({"channel": g.to_string()}),
            );
            let path = format!("/v1/channels/{g}/join");
            match rest.post(&api.on(&node.url), &path).await {
                Ok(_) => drop(pending.ok(json!(null))),
                Err(e) => {
                    pending.info(json!({"error": e.code()}));
                    anyhow::bail!("process {p} could not join {g}: {e}");
                }
            }
        }
    }
    Ok(setup)
}

/// The groups, hot first; with [`Workload::hot_owner`] the hot group is created again
/// (under another name) until that node owns it.
async fn create_groups(
    cluster: &Cluster,
    workload: &Workload,
    creator: &Api,
) -> anyhow::Result<Vec<Id>> {
    let mut groups = Vec::new();
    if let Some(owner) = workload.hot_owner {
        for attempt in 0..30 {
            let g = creator
                .create_group(&cluster.name(&format!("hot{attempt}")))
                .await;
            if cluster.owner_of(g) == owner {
                groups.push(g);
                break;
            }
        }
        groups
            .first()
            .context("no group owned by the chosen node in 30 tries")?;
    }
    while groups.len() < workload.groups {
        let g = creator
            .create_group(&cluster.name(&format!("g{}", groups.len())))
            .await;
        groups.push(g);
    }
    Ok(groups)
}

/// The running processes.
#[derive(Debug)]
pub struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<client::Client>>,
}

/// The processes after the load: each with its socket (if it has one) for the final
/// presence check.
#[derive(Debug)]
pub struct Finished {
    pub(crate) clients: Vec<client::Client>,
}

impl Load {
    /// Spawns every process of `setup`.
    pub fn start(setup: &Setup, workload: &Workload, history: &HistoryWriter) -> Load {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(client::Ctx {
            history: history.clone(),
            nodes: setup.nodes.clone(),
            groups: setup.groups.clone(),
            workload: workload.clone(),
            rest: rest::Rest::new(workload.timeout),
        });
        let tasks = (0..setup.users.len())
            .map(|p| {
                let c = client::Client::new(
                    ctx.clone(),
                    p as u32,
                    setup.users[p].clone(),
                    setup.is_churner(workload, p),
                );
                tokio::spawn(c.run(stopped.clone()))
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the load and waits for every process to settle and catch up. Errors: a
    /// process panicked.
    pub async fn stop(self) -> anyhow::Result<Finished> {
        let _ = self.stop.send(true);
        let mut clients = Vec::new();
        for t in self.tasks {
            clients.push(t.await.context("a workload process panicked")?);
        }
        Ok(Finished { clients })
    }
}

/// Ends a run after the load: the presence check (logged), then every socket closed, then
/// the stored rows of the run's groups written to `stored` (JSON lines). Returns the rows.
pub async fn finish(
    services: &Services,
    setup: &Setup,
    finished: Finished,
    history: &HistoryWriter,
    heartbeat: Duration,
    stored: &std::path::Path,
) -> anyhow::Result<Vec<StoredRow>> {
    presence_check(setup, &finished, history, heartbeat).await;
    for c in finished.clients {
        c.close().await;
    }
    let rows = stored_rows(services, &setup.groups).await?;
    crate::history::write_stored(stored, &rows)
        .with_context(|| format!("writing {}", stored.display()))?;
    Ok(rows)
}
