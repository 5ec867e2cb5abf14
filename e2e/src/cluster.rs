//! A cluster of real chat-node processes (distributed mode) and persisters on loopback,
//! over the services of `dev/services`, for multi-node and fault tests. Each cluster gets
//! its own Kafka topics and Redis namespace, so clusters do not see each other.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::Services;

/// How one process of the cluster is launched; the default is a plain child process on
/// 127.0.0.1 with the cluster's settings.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Settings applied last, over the cluster's (for instance `LD_PRELOAD`, or service
    /// URLs as seen from a network namespace).
    pub env: Vec<(String, String)>,
    /// A command prefix, for instance `["ip", "netns", "exec", "parley-ns1"]`; it must
    /// `exec` the program so that the child's pid is the program's.
    pub wrapper: Vec<String>,
    /// The address the process listens on and is reached at (default `127.0.0.1`).
    pub host: Option<String>,
    /// What must live as long as a process may be launched this way (the network
    /// namespaces the wrapper enters, for instance); dropped with the last copy.
    pub keep: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl Launch {
    fn host(&self) -> &str {
        self.host.as_deref().unwrap_or("127.0.0.1")
    }
}

/// One process of the cluster.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    /// Public base URL (`http://host:port`).
    pub url: String,
    public_port: u16,
    internal_port: u16,
    launch: Launch,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(
        name: String,
        launch: Launch,
        internal_port: u16,
        log: PathBuf,
        ports: &mut Ports,
    ) -> Self {
        let public_port = ports.take();
        Self {
            url: format!("http://{}:{public_port}", launch.host()),
            name,
            public_port,
            internal_port,
            launch,
            log,
            child: None,
        }
    }

    /// The internal (ring) endpoint, `http://host:port`.
    fn internal_url(&self) -> String {
        format!("http://{}:{}", self.launch.host(), self.internal_port)
    }

    /// Takes another launch: the URL follows its host, the ports stay.
    fn set_launch(&mut self, launch: Launch) {
        self.url = format!("http://{}:{}", launch.host(), self.public_port);
        self.launch = launch;
    }

    /// The OS process id, while it runs.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `kill -9`, waiting for the exit.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub prefix: String,
    pub nodes: Vec<Proc>,
    pub persisters: Vec<Proc>,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    bin: PathBuf,
    members: String,
}

/// Knobs of a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub persisters: usize,
    pub heartbeat_interval_ms: u64,
    pub extra_env: Vec<(String, String)>,
    /// Take the ring members from a ChatCluster's status (as in Kubernetes) instead of
    /// `PARLEY_NODES`; [`Cluster::start`] then waits until the nodes see `expect_members`.
    pub kube: Option<KubeRing>,
    /// How each node is launched, by node index; a missing entry is [`Launch::default`].
    pub node_launch: Vec<Launch>,
    /// How each persister is launched, by persister index; missing is the default.
    pub persister_launch: Vec<Launch>,
}

/// Where nodes find their ChatCluster.
#[derive(Debug, Clone)]
pub struct KubeRing {
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub cluster_name: String,
    /// How many members the status lists when the nodes start.
    pub expect_members: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 3,
            persisters: 1,
            heartbeat_interval_ms: 15_000,
            extra_env: Vec::new(),
            kube: None,
            node_launch: Vec::new(),
            persister_launch: Vec::new(),
        }
    }
}

/// The chat-node binary: `$PARLEY_CHAT_NODE_BIN`, or the workspace's debug build.
pub fn chat_node_bin() -> PathBuf {
    let bin = std::env::var_os("PARLEY_CHAT_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("debug")
                .join("chat-node")
        });
    assert!(
        bin.exists(),
        "no chat-node binary at {}: run `cargo build -p chat-node` first",
        bin.display()
    );
    bin
}

/// Ports [`free_port`] draws from: below Linux's ephemeral range (`ip_local_port_range`,
/// 32768-60999 by default), where the kernel never puts an outgoing connection, and above
/// dev/services' ports (15432-19094).
const PORTS: std::ops::Range<u16> = 20000..32768;

/// A port of [`PORTS`] free on 127.0.0.1 now, for a process started later. Not one the kernel
/// picks (`bind :0`): those are ephemeral ports, and any outgoing connection (a client of
/// Redis, Kafka or PostgreSQL) could take it before the process binds it, or while a killed
/// node is down (CI once failed so: `Address already in use` at a node's start).
pub fn free_port() -> u16 {
    use rand::Rng as _;
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The ports one cluster's processes were given: [`free_port`] alone may draw the same port
/// twice before either process binds it (CI once failed so: a persister took the port a
/// node was about to bind).
#[derive(Debug, Default)]
struct Ports(std::collections::HashSet<u16>);

impl Ports {
    /// A [`free_port`] not given out before by this set.
    fn take(&mut self) -> u16 {
        loop {
            let port = free_port();
            if self.0.insert(port) {
                return port;
            }
        }
    }
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{}x{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// The settings every process of a cluster gets: distributed mode over `services`, topics
/// and Redis keys under `prefix`, limits raised for tests, then `options.extra_env` (a
/// `PARLEY_X_FILE` there replaces the default `PARLEY_X`) and the ChatCluster to follow.
pub(crate) fn settings(
    services: &Services,
    options: &Options,
    prefix: &str,
) -> Vec<(String, String)> {
    let pg = |role: &str| services.postgres(role).url.clone();
    let mut env: Vec<(String, String)> = vec![
        ("PARLEY_MODE".into(), "distributed".into()),
        ("PARLEY_DIRECTORY_URL".into(), pg("directory")),
        (
            "PARLEY_SHARDS".into(),
            format!(
                "shard-a:0-2047:{};shard-b:2048-4095:{}",
                pg("shard-a"),
                pg("shard-b")
            ),
        ),
        ("PARLEY_REDIS_URL".into(), services.redis.url.clone()),
        (
            "PARLEY_KAFKA_BOOTSTRAP".into(),
            services.kafka.bootstrap_servers.clone(),
        ),
        ("PARLEY_KAFKA_TOPIC_PREFIX".into(), prefix.to_owned()),
        ("PARLEY_KAFKA_PARTITIONS".into(), "6".into()),
        ("PARLEY_KAFKA_DELIVERY_TIMEOUT_MS".into(), "2000".into()),
        ("PARLEY_NODE_LEASE_MS".into(), "4000".into()),
        ("PARLEY_S3_ENDPOINT".into(), services.s3.endpoint.clone()),
        ("PARLEY_S3_REGION".into(), services.s3.region.clone()),
        ("PARLEY_S3_BUCKET".into(), services.s3.bucket.clone()),
        (
            "PARLEY_S3_ACCESS_KEY_ID".into(),
            services.s3.access_key_id.clone(),
        ),
        (
            "PARLEY_S3_SECRET_ACCESS_KEY".into(),
            services.s3.secret_access_key.clone(),
        ),
        (
            "PARLEY_JWT_SECRET".into(),
            format!("jwt-secret-of-{prefix}-0123456789abcdef"),
        ),
        (
            "PARLEY_CLUSTER_SECRET".into(),
            format!("cluster-secret-of-{prefix}-0123456789ab"),
        ),
        (
            "PARLEY_HEARTBEAT_INTERVAL_MS".into(),
            options.heartbeat_interval_ms.to_string(),
        ),
        ("PARLEY_SEND_RATE".into(), "1000".into()),
        ("PARLEY_SEND_BURST".into(), "1000".into()),
        ("PARLEY_WS_FRAME_RATE".into(), "10000".into()),
        ("PARLEY_WS_FRAME_BURST".into(), "10000".into()),
        // Every test client signs in from 127.0.0.1: one address's budget would not do.
        ("PARLEY_AUTH_ADDRESS_PER_MIN".into(), "100000".into()),
        ("PARLEY_AUTH_ADDRESS_BURST".into(), "100000".into()),
        ("RUST_LOG".into(), "warn,chat_node=info".into()),
    ];
    env.extend(options.extra_env.iter().cloned());
    // `PARLEY_X_FILE` in the extra settings replaces the default `PARLEY_X`.
    let from_files: Vec<String> = env
        .iter()
        .filter_map(|(k, _)| k.strip_suffix("_FILE").map(str::to_owned))
        .collect();
    env.retain(|(k, _)| !from_files.contains(k));
    if let Some(k) = &options.kube {
        env.extend([
            ("KUBECONFIG".into(), k.kubeconfig.display().to_string()),
            ("PARLEY_NAMESPACE".into(), k.namespace.clone()),
            ("PARLEY_CLUSTER_NAME".into(), k.cluster_name.clone()),
        ]);
    }
    env
}

impl Cluster {
    /// Migrates, starts the nodes and persisters, and waits until every node is ready and
    /// sees the whole ring.
    pub async fn start(services: &Services, options: Options) -> Cluster {
        let prefix = unique();
        let dir = std::env::temp_dir().join(format!("parley-cluster-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let env = settings(services, &options, &prefix);
        let bin = chat_node_bin();
        let launch = |all: &[Launch], i: usize| all.get(i).cloned().unwrap_or_default();
        let mut ports = Ports::default();
        let nodes: Vec<Proc> = (1..=options.nodes)
            .map(|i| {
                let internal = ports.take();
                Proc::new(
                    format!("n{i}"),
                    launch(&options.node_launch, i - 1),
                    internal,
                    dir.join(format!("n{i}.log")),
                    &mut ports,
                )
            })
            .collect();
        let members = nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.internal_url()))
            .collect::<Vec<_>>()
            .join(",");
        let persisters = (1..=options.persisters)
            .map(|i| {
                Proc::new(
                    format!("p{i}"),
                    launch(&options.persister_launch, i - 1),
                    0,
                    dir.join(format!("p{i}.log")),
                    &mut ports,
                )
            })
            .collect();
        let mut cluster = Cluster {
            prefix,
            nodes,
            persisters,
            dir,
            env,
            bin,
            members: if options.kube.is_some() {
                String::new()
            } else {
                members
            },
        };
        cluster.migrate().await;
        for i in 0..cluster.persisters.len() {
            cluster.spawn_persister(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn_node(i);
        }
        let members = options
            .kube
            .as_ref()
            .map_or(cluster.nodes.len(), |k| k.expect_members);
        cluster.wait_ring(members).await;
        cluster
    }

    /// `chat-node migrate` with the cluster's settings.
    async fn migrate(&self) {
        let out = Command::new(&self.bin)
            .arg("migrate")
            .envs(self.env.clone())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Node `i` as a ring member: its name and internal endpoint.
    pub fn member(&self, i: usize) -> (String, String) {
        let n = &self.nodes[i];
        (n.name.clone(), n.internal_url())
    }

    /// The command of `proc` (its launch's wrapper, then the binary) with the cluster's
    /// settings; the caller adds the launch's own settings last with [`Self::finish`].
    fn command(&self, proc: &Proc) -> Command {
        let mut cmd = match proc.launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&proc.log)
            .unwrap();
        cmd.envs(self.env.clone())
            .env(
                "PARLEY_LISTEN",
                format!("{}:{}", proc.launch.host(), proc.public_port),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        cmd
    }

    fn spawn_node(&mut self, i: usize) {
        let proc = &self.nodes[i];
        let mut cmd = self.command(proc);
        cmd.env("PARLEY_NODE_NAME", &proc.name)
            .env("PARLEY_WORKER_ID", (i + 1).to_string())
            .env(
                "PARLEY_INTERNAL_LISTEN",
                format!("{}:{}", proc.launch.host(), proc.internal_port),
            )
            .env("PARLEY_PUBLIC_URL", &proc.url);
        if !self.members.is_empty() {
            cmd.env("PARLEY_NODES", &self.members);
        }
        cmd.envs(proc.launch.env.clone());
        self.nodes[i].child = Some(cmd.spawn().unwrap());
    }

    fn spawn_persister(&mut self, i: usize) {
        let proc = &self.persisters[i];
        let mut cmd = self.command(proc);
        cmd.arg("persist").envs(proc.launch.env.clone());
        self.persisters[i].child = Some(cmd.spawn().unwrap());
    }

    /// How node `i` is launched now (its wrapper, host and own settings).
    pub fn launch(&self, i: usize) -> &Launch {
        &self.nodes[i].launch
    }

    /// The OS process id of node `i`, while it runs (with a wrapper that `exec`s, the
    /// node's own).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].pid()
    }

    /// The OS process id of persister `i`, while it runs.
    pub fn persister_pid(&self, i: usize) -> Option<u32> {
        self.persisters[i].pid()
    }

    /// Sends signal `sig` (a `kill -s` name: `STOP`, `CONT`, `TERM`, ...) to node `i`.
    /// Errors when the node is not running or `kill` fails.
    pub fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let pid = self
            .pid(i)
            .ok_or_else(|| anyhow::anyhow!("node {} is not running", self.nodes[i].name))?;
        kill(pid, sig)
    }

    /// Sends signal `sig` to persister `i`, like [`Cluster::signal`] to a node.
    pub fn signal_persister(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let pid = self.persister_pid(i).ok_or_else(|| {
            anyhow::anyhow!("persister {} is not running", self.persisters[i].name)
        })?;
        kill(pid, sig)
    }

    /// `kill -9` of persister `i`, waiting for it to exit.
    pub async fn kill_persister(&mut self, i: usize) {
        self.persisters[i].kill().await;
    }

    /// Starts persister `i` again with `launch` (killing it first if it runs).
    pub async fn restart_persister(&mut self, i: usize, launch: Launch) {
        self.persisters[i].kill().await;
        self.persisters[i].set_launch(launch);
        self.spawn_persister(i);
    }

    /// Starts node `i` again with `launch` (killing it with `kill -9` first if it runs; call
    /// [`Self::stop`] before for a graceful stop). The ports stay; a new host changes the
    /// node's URL and its ring endpoint, which only nodes started later see.
    pub async fn relaunch(&mut self, i: usize, launch: Launch) {
        self.nodes[i].kill().await;
        self.nodes[i].set_launch(launch);
        if !self.members.is_empty() {
            self.members = self
                .nodes
                .iter()
                .map(|n| format!("{}={}", n.name, n.internal_url()))
                .collect::<Vec<_>>()
                .join(",");
        }
        self.spawn_node(i);
    }

    /// The index of the node that owns `channel` while every node is in the ring (the
    /// ring hashes member names, as the nodes do).
    pub fn owner_of(&self, channel: parley_protocol::Id) -> usize {
        let ring = parley_crd::Ring::new(
            (0..self.nodes.len())
                .map(|i| {
                    let (name, endpoint) = self.member(i);
                    parley_crd::Member { name, endpoint }
                })
                .collect(),
        );
        let owner = ring.owner(channel.0).expect("a ring with members");
        self.nodes
            .iter()
            .position(|n| n.name == owner.name)
            .expect("the owner is a node")
    }

    /// `base` made unique to this cluster (usernames and group names are global).
    pub fn name(&self, base: &str) -> String {
        format!("{base}{}", &self.prefix[self.prefix.len() - 8..])
    }

    pub fn url(&self, i: usize) -> &str {
        &self.nodes[i].url
    }

    /// The `/readyz` body of node `i`, if it answers.
    pub async fn readyz(&self, i: usize) -> Option<(u16, serde_json::Value)> {
        let res = reqwest::Client::new()
            .get(format!("{}/readyz", self.nodes[i].url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        let header = res
            .headers()
            .get("x-parley-backends")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body: serde_json::Value = res.json().await.ok()?;
        if let Some(h) = header {
            body["backends"] = serde_json::from_str(&h).unwrap_or_default();
        }
        Some((status, body))
    }

    /// Waits until every running node is ready and sees a ring of `members` nodes.
    pub async fn wait_ring(&self, members: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut all = true;
            for (i, n) in self.nodes.iter().enumerate() {
                if n.child.is_none() {
                    continue;
                }
                match self.readyz(i).await {
                    Some((200, body))
                        if body["ring"]["members"]
                            .as_array()
                            .is_some_and(|m| m.len() == members) => {}
                    _ => all = false,
                }
            }
            if all {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ring did not settle on {members} members; logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9` of node `i`.
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].kill().await;
    }

    /// SIGTERM to node `i`, waiting for it to exit.
    pub async fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }

    /// Starts node `i` again with its current launch.
    pub fn restart(&mut self, i: usize) {
        self.spawn_node(i);
    }

    /// The last lines of every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.nodes.iter().chain(&self.persisters) {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out.push_str(&format!(
                "--- {}\n{}\n",
                p.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

/// `kill -s SIG PID`. Errors when `kill` fails.
fn kill(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -s {sig} {pid} failed: {status}");
    Ok(())
}

/// Runs one of the repo's `dev/services` commands (fault tests restart services with it).
pub fn dev_services(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dev")
        .join("services");
    let status = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "dev/services {args:?} failed");
}

/// (id, seq) of every message of `channel` in the shards, by seq, waiting up to `wait` for
/// `expected` of them.
pub async fn stored_messages(
    services: &Services,
    channel: parley_protocol::Id,
    expected: usize,
    wait: Duration,
) -> Vec<(i64, i64)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut rows = Vec::new();
        for shard in ["shard-a", "shard-b"] {
            if let Ok(pool) = sqlx::PgPool::connect(&services.postgres(shard).url).await {
                let r: Vec<(i64, i64)> =
                    sqlx::query_as("SELECT id, seq FROM messages WHERE channel_id = $1")
                        .bind(channel.0 as i64)
                        .fetch_all(&pool)
                        .await
                        .unwrap_or_default();
                rows.extend(r);
                pool.close().await;
            }
        }
        rows.sort_unstable_by_key(|r| r.1);
        if rows.len() >= expected || tokio::time::Instant::now() >= deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asserts that the messages `acked` of `channel` are stored exactly once and that the
/// channel's seqs are 1..=n without gaps or repeats (the cluster's logs in the message).
pub async fn assert_stored_exactly_once(
    services: &Services,
    channel: parley_protocol::Id,
    acked: &std::collections::BTreeSet<parley_protocol::Id>,
    cluster: &Cluster,
) {
    use parley_protocol::Id;
    let rows = stored_messages(services, channel, acked.len(), Duration::from_secs(60)).await;
    let ids: Vec<Id> = rows.iter().map(|r| Id(r.0 as u64)).collect();
    let unique: std::collections::BTreeSet<Id> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a message stored twice\n{}",
        cluster.logs()
    );
    let missing: Vec<&Id> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}\n{}",
        cluster.logs()
    );
    let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "seqs without gaps or repeats"
    );
}
