//! Network partitions: one node cut off from Redis, from Kafka, or from the other nodes,
//! by iptables `DROP` rules in that node's network namespace (both directions); heal =
//! delete those rules. The nodes must run in a [`NetnsNetwork`] (their launches from
//! [`NetnsNetwork::launches`]); clients, the test and the other services still reach the
//! node. Established connections stay open and silent, as behind a real partition: a
//! sender sees timeouts, not resets.
//!
//! Each nemesis finds what to cut from the cluster itself: the node's namespace from its
//! launch's wrapper (`ip netns exec NS`), Redis's and Kafka's addresses from the launch's
//! settings (`PARLEY_REDIS_URL`, `PARLEY_KAFKA_BOOTSTRAP`), the peers' from their launches'
//! hosts. The rules go into the namespace's [`netns::NEMESIS_CHAIN`], commented with the
//! nemesis's name, so partitions of different kinds can overlap and heal one by one.

pub mod netns;

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context as _, bail};

use rand::Rng as _;

use super::{Fault, Nemesis};
use crate::cluster::{Cluster, Launch, Options};
pub use netns::NetnsNetwork;

/// What a partition cuts a node off from: an address (every protocol), or one TCP port of
/// an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Host(Ipv4Addr),
    Endpoint(SocketAddrV4),
}

/// The iptables arguments (after `iptables -w 10`) that add (`op` = `-A`) or delete
/// (`-D`) the `DROP` rules of nemesis `name` against `targets`, both directions; pure.
pub fn drop_rules(op: &str, name: &str, targets: &[Target]) -> Vec<Vec<String>> {
    let mut rules = Vec::new();
    for t in targets {
        let (addr, port) = match t {
            Target::Host(a) => (*a, None),
            Target::Endpoint(s) => (*s.ip(), Some(s.port())),
        };
        for (dir, port_dir) in [("-d", "--dport"), ("-s", "--sport")] {
            let mut r = vec![op.to_owned(), netns::NEMESIS_CHAIN.to_owned()];
            r.extend([dir.to_owned(), format!("{addr}/32")]);
            if let Some(p) = port {
                r.extend(["-p", "tcp", port_dir].map(str::to_owned));
                r.push(p.to_string());
            }
            r.extend(["-m", "comment", "--comment", name, "-j", "DROP"].map(str::to_owned));
            rules.push(r);
        }
    }
    rules
}

/// The addresses of a setting's value: `scheme://user:pw@HOST:PORT/...` or a comma list of
/// `HOST:PORT`; pure. Errors on a host that is not an IPv4 address.
pub fn endpoints(value: &str) -> anyhow::Result<Vec<SocketAddrV4>> {
    if value.contains("://") {
        let url = reqwest::Url::parse(value).with_context(|| format!("not a URL: {value}"))?;
        let host: Ipv4Addr = url
            .host_str()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("not an IPv4 host: {value}"))?;
        let port = url
            .port_or_known_default()
            .with_context(|| format!("no port: {value}"))?;
        return Ok(vec![SocketAddrV4::new(host, port)]);
    }
    value
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("not an IPv4 address and port: {s}"))
        })
        .collect()
}

/// The namespace of node `i` of `cluster`, or an error saying how to get one.
fn namespace(cluster: &Cluster, i: usize) -> anyhow::Result<String> {
    netns::namespace_of(cluster.launch(i))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "n{} is not in a network namespace: launch the nodes with NetnsNetwork::launches",
                i + 1
            )
        })
}

/// The value of setting `key` in node `i`'s launch.
fn setting<'a>(cluster: &'a Cluster, i: usize, key: &str) -> anyhow::Result<&'a str> {
    cluster
        .launch(i)
        .env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .with_context(|| format!("n{}'s launch has no {key}", i + 1))
}

/// Runs `ip netns exec NS iptables -w 10 RULE` for each rule.
async fn apply(ns: &str, rules: &[Vec<String>]) -> anyhow::Result<()> {
    for rule in rules {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", ns, "iptables", "-w", "10"])
            .args(rule)
            .output()
            .await
            .context("cannot run ip netns exec")?;
        if !out.status.success() {
            bail!(
                "iptables {} in {ns} failed: {}",
                rule.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Adds (`-A`) or deletes (`-D`) the rules of `name` in node `node`'s namespace.
async fn cut(
    cluster: &Cluster,
    node: usize,
    op: &str,
    name: &str,
    targets: &[Target],
) -> anyhow::Result<()> {
    let ns = namespace(cluster, node)?;
    anyhow::ensure!(!targets.is_empty(), "{name}: nothing to cut off");
    apply(&ns, &drop_rules(op, name, targets)).await
}

/// Node `node` (index into `cluster.nodes`) cut off from Redis: its TCP port at the address
/// the node uses (`PARLEY_REDIS_URL`). Name `partition-redis nI`.
#[derive(Debug, Clone, Copy)]
pub struct PartitionFromRedis {
    pub node: usize,
}

impl PartitionFromRedis {
    fn targets(self, cluster: &Cluster) -> anyhow::Result<Vec<Target>> {
        let url = setting(cluster, self.node, "PARLEY_REDIS_URL")?;
        Ok(endpoints(url)?.into_iter().map(Target::Endpoint).collect())
    }
}

#[async_trait::async_trait]
impl Nemesis for PartitionFromRedis {
    fn name(&self) -> String {
        format!("partition-redis n{}", self.node + 1)
    }

    async fn start(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let t = self.targets(cluster)?;
        cut(cluster, self.node, "-A", &self.name(), &t).await
    }

    async fn heal(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let t = self.targets(cluster)?;
        cut(cluster, self.node, "-D", &self.name(), &t).await
    }
}

/// Node `node` cut off from Kafka: every bootstrap server in its `PARLEY_KAFKA_BOOTSTRAP`
/// (dev/services' one broker advertises that same address). Name `partition-kafka nI`.
#[derive(Debug, Clone, Copy)]
pub struct PartitionFromKafka {
    pub node: usize,
}

impl PartitionFromKafka {
    fn targets(self, cluster: &Cluster) -> anyhow::Result<Vec<Target>> {
        let servers = setting(cluster, self.node, "PARLEY_KAFKA_BOOTSTRAP")?;
        Ok(endpoints(servers)?
            .into_iter()
            .map(Target::Endpoint)
            .collect())
    }
}

#[async_trait::async_trait]
impl Nemesis for PartitionFromKafka {
    fn name(&self) -> String {
        format!("partition-kafka n{}", self.node + 1)
    }

    async fn start(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let t = self.targets(cluster)?;
        cut(cluster, self.node, "-A", &self.name(), &t).await
    }

    async fn heal(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let t = self.targets(cluster)?;
        cut(cluster, self.node, "-D", &self.name(), &t).await
    }
}

/// Node `node` cut off from every other node (their addresses, all protocols: the
/// internal API both ways); Redis, Kafka, the shards and the clients still reach it.
/// Name `partition-peers nI`.
#[derive(Debug, Clone, Copy)]
pub struct PartitionFromPeers {
    pub node: usize,
}

impl PartitionFromPeers {
    fn targets(self, cluster: &Cluster) -> anyhow::Result<Vec<Target>> {
        (0..cluster.nodes.len())
            .filter(|&j| j != self.node)
            .map(|j| {
                let host = cluster.launch(j).host.as_deref().unwrap_or("127.0.0.1");
                let addr: Ipv4Addr = host
                    .parse()
                    .with_context(|| format!("n{}'s host {host}", j + 1))?;
                anyhow::ensure!(
                    !addr.is_loopback(),
                    "n{} is on loopback: launch every node with NetnsNetwork::launches",
                    j + 1
                );
                Ok(Target::Host(addr))
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Nemesis for PartitionFromPeers {
    fn name(&self) -> String {
        format!("partition-peers n{}", self.node + 1)
    }

    async fn start(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let t = self.targets(cluster)?;
        cut(cluster, self.node, "-A", &self.name(), &t).await
    }

    async fn heal(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let t = self.targets(cluster)?;
        cut(cluster, self.node, "-D", &self.name(), &t).await
    }
}

/// [`Fault::prepare`] of the partitions: every node is launched in a namespace of a new
/// [`NetnsNetwork`] (kept alive by the launches, [`Launch::keep`]), other settings of
/// their launches kept. Done once however many partition kinds call it. Where namespaces
/// are unavailable the options stay as they are (and `build` then says why).
pub fn prepare(options: &mut Options) {
    if options.node_launch.len() < options.nodes {
        options.node_launch.resize(options.nodes, Launch::default());
    }
    if options
        .node_launch
        .iter()
        .all(|l| netns::namespace_of(l).is_some())
    {
        return;
    }
    let net = match crate::Services::load()
        .map_err(anyhow::Error::from)
        .and_then(|services| NetnsNetwork::create(&services, options.nodes))
    {
        Ok(net) => std::sync::Arc::new(net),
        Err(e) => {
            eprintln!("partition: nodes run outside network namespaces: {e:#}");
            return;
        }
    };
    for (i, launch) in options.node_launch.iter_mut().enumerate() {
        let ns = net.launch(i);
        launch.env.extend(ns.env);
        launch.wrapper = [ns.wrapper, std::mem::take(&mut launch.wrapper)].concat();
        launch.host = ns.host;
        launch.keep = Some(net.clone());
    }
}

/// A random node of `cluster`, once every node runs in a namespace.
fn namespaced_node(cluster: &Cluster, rng: &mut dyn rand::RngCore) -> anyhow::Result<usize> {
    for i in 0..cluster.nodes.len() {
        namespace(cluster, i)?;
    }
    Ok(rng.random_range(0..cluster.nodes.len()))
}

/// [`PartitionFromRedis`] of a random node.
pub const PARTITION_REDIS: Fault = Fault {
    kind: "partition-redis",
    prepare,
    build: |cluster, rng| {
        let node = namespaced_node(cluster, rng)?;
        Ok(Box::new(PartitionFromRedis { node }))
    },
};

/// [`PartitionFromKafka`] of a random node.
pub const PARTITION_KAFKA: Fault = Fault {
    kind: "partition-kafka",
    prepare,
    build: |cluster, rng| {
        let node = namespaced_node(cluster, rng)?;
        Ok(Box::new(PartitionFromKafka { node }))
    },
};

/// [`PartitionFromPeers`] of a random node.
pub const PARTITION_PEERS: Fault = Fault {
    kind: "partition-peers",
    prepare,
    build: |cluster, rng| {
        let node = namespaced_node(cluster, rng)?;
        Ok(Box::new(PartitionFromPeers { node }))
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_drops_both_directions_and_heals_the_same_rules() {
        let kafka = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), 19094);
        let peer = Ipv4Addr::new(198, 18, 40, 12);
        let add = drop_rules("-A", "partition-kafka n1", &[Target::Endpoint(kafka)]);
        assert_eq!(
            add.iter().map(|r| r.join(" ")).collect::<Vec<_>>(),
            [
                "-A PARLEY-NEMESIS -d 198.18.1.1/32 -p tcp --dport 19094 -m comment --comment partition-kafka n1 -j DROP",
                "-A PARLEY-NEMESIS -s 198.18.1.1/32 -p tcp --sport 19094 -m comment --comment partition-kafka n1 -j DROP",
            ]
        );
        let del = drop_rules("-D", "partition-peers n1", &[Target::Host(peer)]);
        assert_eq!(del.len(), 2);
        assert_eq!(
            del[1][..4],
            ["-D", "PARLEY-NEMESIS", "-s", "198.18.40.12/32"]
        );
        assert!(!del[1].contains(&"-p".to_owned()));
    }

    #[test]
    fn endpoints_come_from_urls_and_server_lists() {
        let a = |s: &str| s.parse::<SocketAddrV4>().unwrap();
        assert_eq!(
            endpoints("redis://:pw@198.18.40.1:16379/0").unwrap(),
            [a("198.18.40.1:16379")]
        );
        assert_eq!(
            endpoints("198.18.1.1:19094, 198.18.1.2:19094").unwrap(),
            [a("198.18.1.1:19094"), a("198.18.1.2:19094")]
        );
        assert!(endpoints("redis://redis.local:6379").is_err());
    }

    /// Whether a TCP connection from namespace `ns` to `to` opens within 2 s.
    fn connects(ns: &str, to: SocketAddrV4) -> bool {
        let open = format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port());
        std::process::Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "2", "bash", "-c", &open])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The host's routes and sysctls that mention `slot`.
    fn host_traces(slot: netns::Slot) -> Vec<String> {
        let subnet = format!("198.18.{}.", slot.gateway().octets()[2]);
        let routes = std::process::Command::new("ip")
            .args(["route", "show", "table", "all"])
            .output()
            .unwrap();
        let mut traces: Vec<String> = String::from_utf8_lossy(&routes.stdout)
            .lines()
            .filter(|l| l.contains(&subnet))
            .map(str::to_owned)
            .collect();
        if std::path::Path::new(&format!("/proc/sys/net/ipv4/conf/{}", slot.bridge())).exists() {
            traces.push(format!("sysctl net.ipv4.conf.{}", slot.bridge()));
        }
        traces.extend(netns::leftovers(Some(slot)));
        traces
    }

    #[tokio::test]
    async fn a_network_forwards_partitions_heals_and_leaves_nothing_behind() {
        if let Some(why) = netns::unavailable() {
            eprintln!("skipping: {why}");
            return;
        }
        // Two "services" on loopback: one at the gateway, one at an address routed to it.
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        let kafka = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), pb);
        let forwards = [netns::Forward::Gateway(pa), netns::Forward::Address(kafka)];
        let net = NetnsNetwork::create_with(2, &forwards, |_| Vec::new()).unwrap();
        let slot = net.slot();
        let (n1, n2) = (slot.namespace(0), slot.namespace(1));
        let service = SocketAddrV4::new(slot.gateway(), pa);
        assert!(
            connects(&n1, service),
            "n1 reaches the service at the gateway"
        );
        assert!(connects(&n1, kafka), "n1 reaches the routed address");

        let cut_off = drop_rules("-A", "partition-test n1", &[Target::Endpoint(service)]);
        apply(&n1, &cut_off).await.unwrap();
        assert!(!connects(&n1, service), "partitioned n1 does not");
        assert!(connects(&n1, kafka), "the other destination stays open");
        assert!(connects(&n2, service), "n2 is not partitioned");
        let heal = drop_rules("-D", "partition-test n1", &[Target::Endpoint(service)]);
        apply(&n1, &heal).await.unwrap();
        assert!(connects(&n1, service), "healed n1 reaches it again");

        // A process still running in a namespace is killed by the teardown.
        let mut sleeper = std::process::Command::new("ip")
            .args(["netns", "exec", &n2, "sleep", "600"])
            .spawn()
            .unwrap();
        assert!(!host_traces(slot).is_empty());
        drop(net);
        assert_eq!(host_traces(slot), Vec::<String>::new(), "left behind");
        assert!(
            sleeper.wait().unwrap().code().is_none(),
            "killed by a signal"
        );
    }

    #[test]
    fn a_panic_leaves_nothing_behind() {
        if let Some(why) = netns::unavailable() {
            eprintln!("skipping: {why}");
            return;
        }
        let panicked = std::thread::spawn(|| {
            let net = NetnsNetwork::create_with(3, &[netns::Forward::Gateway(1)], |_| Vec::new())
                .unwrap();
            std::panic::panic_any(net.slot());
        })
        .join()
        .unwrap_err();
        let slot = *panicked.downcast::<netns::Slot>().unwrap();
        assert_eq!(host_traces(slot), Vec::<String>::new(), "left behind");
    }
}
