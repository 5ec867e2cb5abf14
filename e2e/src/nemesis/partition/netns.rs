//! A test network of Linux network namespaces: one namespace per chat-node, each joined by
//! a veth pair to a host bridge, so that a nemesis can cut one node off (iptables `DROP`
//! inside its namespace) from Redis, Kafka or the other nodes.
//!
//! ```text
//!   host (root namespace)                          namespace parley-nem-K-nI
//!   bridge parley-nem-K  198.18.(40+K).1/24  ──  veth parley-nem-KvI ══ eth0  198.18.(40+K).(10+I)/24
//!   nat PREROUTING -i parley-nem-K: gateway:P -> 127.0.0.1:P (dev/services' ports)
//!                                   198.18.1.1:19094 -> 127.0.0.1:19094 (Kafka's NODE listener)
//! ```
//!
//! Every address is in the benchmarking range 198.18.0.0/15: slot `K` (0..[`SLOTS`]) uses
//! 198.18.(40+K).0/24, so the slots together are 198.18.40.0/21, apart from what dev/k8s
//! (198.18.1.0/24, 198.18.64.0/18, 198.19.0.0/16), dev/images (198.18.250.0/24) and kind
//! (198.18.128.0/17, 198.19.128.0/17) use. Names all start with `parley-nem-`, so dev/k8s'
//! guard (which lets 198.18.0.0/15 out through `lo` and `parley+` links only) lets them pass,
//! and dev/k8s' teardown (bridges `parley-node0`, `parley-cni0`, chains `PARLEY-*`) leaves
//! them alone. The host rules are plain rules in `nat PREROUTING` tagged with the comment
//! `parley-nem-K`; the only sysctl is `route_localnet` on our own bridge (gone with it).
//!
//! A slot is taken by creating its bridge (atomic: a second `ip link add` fails); the
//! bridge's alias names the owner (`parley-nem owner=PID:STARTTIME`), so a slot left by a
//! test that died (SIGKILL) is reclaimed by the next one, and `dev/netns down` removes every
//! slot. [`NetnsNetwork`]'s `Drop` removes its own: it kills what still runs in its
//! namespaces, deletes the namespaces, links and rules, and checks that nothing is left.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::Services;
use crate::cluster::{self, Launch, Options};

/// How many networks may exist at once (one per slot).
pub const SLOTS: u8 = 8;
/// The first subnet's third octet: slot `K` is `198.18.(40+K).0/24`.
const THIRD_OCTET: u8 = 40;
/// The prefix of every namespace, link and rule comment of ours.
pub const PREFIX: &str = "parley-nem-";
/// The chain, in each namespace's filter table, that the partitions add their rules to
/// (jumped to first from `INPUT` and `OUTPUT`).
pub const NEMESIS_CHAIN: &str = "PARLEY-NEMESIS";
/// The most nodes one network holds (a link name is at most 15 bytes: `parley-nem-7v99`).
pub const MAX_NODES: usize = 99;

/// One network's names and addresses, by slot number; pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(pub u8);

impl Slot {
    /// The host bridge, `parley-nem-K`; also the comment of the host's iptables rules.
    pub fn bridge(self) -> String {
        format!("{PREFIX}{}", self.0)
    }

    /// The host end of node `i`'s veth pair (`i` from 0), `parley-nem-KvI` with I = i + 1.
    pub fn veth(self, i: usize) -> String {
        format!("{PREFIX}{}v{}", self.0, i + 1)
    }

    /// Node `i`'s namespace (`i` from 0), `parley-nem-K-nI` with I = i + 1.
    pub fn namespace(self, i: usize) -> String {
        format!("{PREFIX}{}-n{}", self.0, i + 1)
    }

    /// The bridge's address: where the nodes reach dev/services (through DNAT).
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, THIRD_OCTET + self.0, 1)
    }

    /// Node `i`'s address (`i` from 0): `198.18.(40+K).(11+i)`.
    pub fn address(self, i: usize) -> Ipv4Addr {
        let host = u8::try_from(11 + i).expect("at most MAX_NODES nodes");
        Ipv4Addr::new(198, 18, THIRD_OCTET + self.0, host)
    }

    /// The bridge's alias while `owner` (`PID:STARTTIME`) holds the slot.
    fn alias(owner: &str) -> String {
        format!("parley-nem owner={owner}")
    }
}

/// A TCP destination that the nodes reach through the host: packets from the bridge to
/// it are DNAT'd to `127.0.0.1` with the same port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// This port of the slot's gateway (dev/services' PostgreSQL, Redis, S3).
    Gateway(u16),
    /// An address outside the slot's subnet, routed to the gateway inside each namespace
    /// (Kafka's listener advertised at `198.18.1.1`); it must be in 198.18.0.0/15.
    Address(SocketAddrV4),
}

impl Forward {
    /// The destination in `slot`.
    pub fn resolve(self, slot: Slot) -> SocketAddrV4 {
        match self {
            Forward::Gateway(port) => SocketAddrV4::new(slot.gateway(), port),
            Forward::Address(a) => a,
        }
    }
}

/// `ip`/`iptables` argument lists that build a network, in order; pure. The first one
/// (creating the bridge) takes the slot. Host rules carry the comment [`Slot::bridge`].
pub fn setup_commands(
    slot: Slot,
    nodes: usize,
    forwards: &[SocketAddrV4],
    owner: &str,
) -> Vec<Vec<String>> {
    let br = slot.bridge();
    let gw = slot.gateway();
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let mut push = |parts: &[&str]| cmds.push(parts.iter().map(|s| (*s).to_owned()).collect());
    push(&["ip", "link", "add", &br, "type", "bridge"]);
    push(&[
        "ip",
        "link",
        "set",
        "dev",
        &br,
        "alias",
        &Slot::alias(owner),
    ]);
    push(&["ip", "addr", "add", &format!("{gw}/24"), "dev", &br]);
    // Packets DNAT'd to 127.0.0.1 after arriving on the bridge are not martians.
    let localnet = format!("net.ipv4.conf.{br}.route_localnet=1");
    push(&["sysctl", "-q", "-w", &localnet]);
    push(&["ip", "link", "set", "dev", &br, "up"]);
    for i in 0..nodes {
        let (ns, veth) = (slot.namespace(i), slot.veth(i));
        push(&["ip", "netns", "add", &ns]);
        push(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        push(&["ip", "link", "set", "dev", &veth, "master", &br, "up"]);
        push(&["ip", "-n", &ns, "link", "set", "dev", "lo", "up"]);
        let addr = format!("{}/24", slot.address(i));
        push(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        push(&["ip", "-n", &ns, "link", "set", "dev", "eth0", "up"]);
        for f in forwards.iter().filter(|f| !same_subnet(slot, *f.ip())) {
            let dst = format!("{}/32", f.ip());
            push(&[
                "ip",
                "-n",
                &ns,
                "route",
                "replace",
                &dst,
                "via",
                &gw.to_string(),
            ]);
        }
        let ipt = ["ip", "netns", "exec", &ns, "iptables", "-w", "10"];
        push(&[&ipt[..], &["-N", NEMESIS_CHAIN]].concat());
        for chain in ["INPUT", "OUTPUT"] {
            push(&[&ipt[..], &["-I", chain, "1", "-j", NEMESIS_CHAIN]].concat());
        }
    }
    cmds.extend(forwards.iter().map(|f| dnat_rule("-I", slot, *f)));
    cmds
}

/// The host's rule for `forward` (`op` is `-I` to add it first, `-D` to delete it).
fn dnat_rule(op: &str, slot: Slot, f: SocketAddrV4) -> Vec<String> {
    let br = slot.bridge();
    let mut rule = vec!["iptables", "-w", "10", "-t", "nat", op, "PREROUTING"];
    if op == "-I" {
        rule.push("1");
    }
    let (dst, port, to) = (
        format!("{}/32", f.ip()),
        f.port().to_string(),
        format!("127.0.0.1:{}", f.port()),
    );
    rule.extend([
        "-i",
        &br,
        "-d",
        &dst,
        "-p",
        "tcp",
        "--dport",
        &port,
        "-m",
        "comment",
        "--comment",
        &br,
        "-j",
        "DNAT",
        "--to-destination",
        &to,
    ]);
    rule.into_iter().map(str::to_owned).collect()
}

fn same_subnet(slot: Slot, a: Ipv4Addr) -> bool {
    a.octets()[..3] == slot.gateway().octets()[..3]
}

/// The `-D` argument lists that delete every rule of `listing` (an `iptables -S` output)
/// whose comment is exactly `tag` (quoted or not); pure.
pub fn rules_to_delete(listing: &str, tag: &str) -> Vec<Vec<String>> {
    let quoted = format!("\"{tag}\"");
    listing
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let tagged = words
                .windows(2)
                .any(|w| w[0] == "--comment" && (w[1] == tag || w[1] == quoted));
            match words.split_first() {
                Some((&"-A", rest)) if tagged => Some(
                    std::iter::once("-D")
                        .chain(rest.iter().copied())
                        .map(|w| w.trim_matches('"').to_owned())
                        .collect(),
                ),
                _ => None,
            }
        })
        .collect()
}

/// The settings of a node in namespace of `slot`: every service URL of the cluster's
/// settings with `127.0.0.1` replaced by the gateway, and Kafka's bootstrap servers by
/// `kafka_node` (its listener advertised at an address the namespaces reach); pure.
pub fn namespace_env(
    base: &[(String, String)],
    slot: Slot,
    kafka_node: &str,
) -> Vec<(String, String)> {
    let gw = slot.gateway().to_string();
    base.iter()
        .filter(|(_, v)| v.contains("127.0.0.1"))
        .map(|(k, v)| {
            let v = if k == "PARLEY_KAFKA_BOOTSTRAP" {
                kafka_node.to_owned()
            } else {
                v.replace("127.0.0.1", &gw)
            };
            (k.clone(), v)
        })
        .collect()
}

/// The TCP ports of `url`-like values (`scheme://user:pw@127.0.0.1:PORT/...`, several
/// separated by `;` or `,`) that are on `127.0.0.1`; pure.
fn loopback_ports(value: &str) -> Vec<u16> {
    value
        .split("127.0.0.1:")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Why network namespaces cannot be used here (not root, no `ip` or `iptables`), or `None`.
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!(
            "network namespaces need root (effective uid {euid})"
        ));
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// A network of namespaces, one per node, that exists as long as this value: `Drop` kills
/// what still runs in the namespaces and removes every namespace, link and host rule the
/// network made (errors are printed, never panicked on).
#[derive(Debug)]
pub struct NetnsNetwork {
    slot: Slot,
    nodes: usize,
    forwards: Vec<SocketAddrV4>,
    env: Vec<(String, String)>,
}

impl NetnsNetwork {
    /// Creates a network for `nodes` chat-nodes over `services` (dev/services on
    /// 127.0.0.1), in the first free slot: [`Self::create_with`] with a forward of every
    /// service port the cluster's settings name and of Kafka's node listener, and those
    /// settings rewritten ([`namespace_env`]). Errors as `create_with` does, and when
    /// Kafka has no listener for other namespaces (`node_bootstrap_servers`).
    pub fn create(services: &Services, nodes: usize) -> anyhow::Result<Self> {
        let kafka_node = services.kafka.node_bootstrap_servers.clone().context(
            "dev/services' Kafka has no listener for other network namespaces \
             (node_bootstrap_servers): run dev/services up",
        )?;
        let base = cluster::settings(services, &Options::default(), "netns");
        let mut forwards: Vec<Forward> = base
            .iter()
            .filter(|(k, _)| k != "PARLEY_KAFKA_BOOTSTRAP")
            .flat_map(|(_, v)| loopback_ports(v))
            .map(Forward::Gateway)
            .collect();
        for server in kafka_node.split(',') {
            let addr: SocketAddrV4 = server
                .trim()
                .parse()
                .with_context(|| format!("Kafka's node listener {server}"))?;
            forwards.push(Forward::Address(addr));
        }
        forwards.sort_unstable_by_key(|f| f.resolve(Slot(0)));
        forwards.dedup();
        Self::create_with(nodes, &forwards, |slot| {
            namespace_env(&base, slot, &kafka_node)
        })
    }

    /// Creates a network for `nodes` processes in the first free slot, with `forwards`,
    /// each node's launch carrying the settings `env(slot)`. Errors when namespaces are
    /// unavailable ([`unavailable`]), a forward's address is outside 198.18.0.0/15, every
    /// slot is taken, or a command fails (what it made is then removed).
    pub fn create_with(
        nodes: usize,
        forwards: &[Forward],
        env: impl Fn(Slot) -> Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        anyhow::ensure!((1..=MAX_NODES).contains(&nodes), "1 to {MAX_NODES} nodes");
        for f in forwards {
            if let Forward::Address(a) = f {
                anyhow::ensure!(
                    matches!(a.ip().octets(), [198, 18 | 19, ..]),
                    "{a} is outside 198.18.0.0/15"
                );
            }
        }
        let owner = owner_of(std::process::id()).context("this process's start time")?;
        for k in 0..SLOTS {
            let slot = Slot(k);
            let resolved: Vec<SocketAddrV4> = forwards.iter().map(|f| f.resolve(slot)).collect();
            let mut cmds = setup_commands(slot, nodes, &resolved, &owner).into_iter();
            let take = cmds.next().expect("the bridge comes first");
            if run(&take).is_err() {
                if !slot_is_stale(slot) {
                    continue;
                }
                teardown(slot);
                if run(&take).is_err() {
                    continue;
                }
            }
            // From here on the slot is ours: Drop removes whatever the rest made.
            let net = NetnsNetwork {
                slot,
                nodes,
                forwards: resolved,
                env: env(slot),
            };
            for cmd in cmds {
                run(&cmd)?;
            }
            return Ok(net);
        }
        bail!(
            "all {SLOTS} network slots ({PREFIX}0..{PREFIX}{}) are taken; `dev/netns down` frees them",
            SLOTS - 1
        )
    }

    /// The slot (names and addresses) of this network.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// How many nodes (namespaces) it has.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The destinations DNAT'd to 127.0.0.1 (same port) for the namespaces.
    pub fn forwards(&self) -> &[SocketAddrV4] {
        &self.forwards
    }

    /// How node `i` is launched: `ip netns exec <its namespace>`, listening on its
    /// address, with the services' URLs as seen from the namespace.
    pub fn launch(&self, i: usize) -> Launch {
        assert!(i < self.nodes, "node {i} of a {}-node network", self.nodes);
        Launch {
            env: self.env.clone(),
            wrapper: ["ip", "netns", "exec", &self.slot.namespace(i)]
                .map(str::to_owned)
                .to_vec(),
            host: Some(self.slot.address(i).to_string()),
            keep: None,
        }
    }

    /// [`Self::launch`] of every node, for [`Options::node_launch`].
    pub fn launches(&self) -> Vec<Launch> {
        (0..self.nodes).map(|i| self.launch(i)).collect()
    }
}

impl Drop for NetnsNetwork {
    fn drop(&mut self) {
        teardown(self.slot);
        let left = leftovers(Some(self.slot));
        if !left.is_empty() {
            eprintln!(
                "netns: {} left after teardown: {left:?}",
                self.slot.bridge()
            );
        }
    }
}

/// The namespace that `launch` runs its process in (its wrapper starts with
/// `ip netns exec NS`).
pub fn namespace_of(launch: &Launch) -> Option<&str> {
    match launch.wrapper.as_slice() {
        [ip, netns, exec, ns, ..] if ip == "ip" && netns == "netns" && exec == "exec" => Some(ns),
        _ => None,
    }
}

/// Runs one argument list; errors with its stderr when it fails.
fn run(cmd: &[String]) -> anyhow::Result<String> {
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .output()
        .with_context(|| format!("cannot run {}", cmd[0]))?;
    anyhow::ensure!(
        out.status.success(),
        "`{}` failed: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sh(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// `PID:STARTTIME` of a live process (the start time, in clock ticks since boot, tells a
/// recycled pid apart).
fn owner_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    // starttime is field 22 of the line, the 20th after the name.
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid}:{start}"))
}

/// Whether `slot`'s bridge names an owner that no longer runs. A bridge that names none
/// yet is being set up by another network (its alias is the next command after the
/// bridge's creation): not stale. One left so by a crash in between stays taken until
/// `dev/netns down`.
fn slot_is_stale(slot: Slot) -> bool {
    let alias = std::fs::read_to_string(format!("/sys/class/net/{}/ifalias", slot.bridge()))
        .unwrap_or_default();
    let Some(owner) = alias.trim().strip_prefix("parley-nem owner=") else {
        return false;
    };
    let pid = owner.split(':').next().and_then(|p| p.parse().ok());
    pid.and_then(owner_of).as_deref() != Some(owner)
}

/// Names (namespaces, links) starting with `prefix` in `ip netns list` / `ip -o link`.
fn names_with_prefix(listing: &str, prefix: &str, links: bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let name = if links {
                // "12: parley-nem-0v1@if2: <...>"
                l.split(": ").nth(1)?.split('@').next()?
            } else {
                l.split_whitespace().next()?
            };
            name.starts_with(prefix).then(|| name.to_owned())
        })
        .collect()
}

/// Removes everything of `slot`: processes in its namespaces (SIGKILL), namespaces, veths,
/// host rules, then the bridge (which frees the slot). Ignores what is already gone.
fn teardown(slot: Slot) {
    let ns_prefix = format!("{}-n", slot.bridge());
    let netns = run(&sh(&["ip", "netns", "list"])).unwrap_or_default();
    for ns in names_with_prefix(&netns, &ns_prefix, false) {
        let pids = run(&sh(&["ip", "netns", "pids", &ns])).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = run(&sh(&["kill", "-KILL", pid]));
        }
        if let Err(e) = run(&sh(&["ip", "netns", "del", &ns])) {
            eprintln!("netns: {e}");
        }
    }
    let links = run(&sh(&["ip", "-o", "link", "show"])).unwrap_or_default();
    for veth in names_with_prefix(&links, &format!("{}v", slot.bridge()), true) {
        let _ = run(&sh(&["ip", "link", "del", &veth]));
    }
    for table in ["nat", "filter"] {
        let listing = run(&sh(&["iptables", "-w", "10", "-t", table, "-S"])).unwrap_or_default();
        for rule in rules_to_delete(&listing, &slot.bridge()) {
            let cmd = [sh(&["iptables", "-w", "10", "-t", table]), rule].concat();
            if let Err(e) = run(&cmd) {
                eprintln!("netns: {e}");
            }
        }
    }
    if names_with_prefix(&links, &slot.bridge(), true).contains(&slot.bridge())
        && let Err(e) = run(&sh(&["ip", "link", "del", &slot.bridge()]))
    {
        eprintln!("netns: {e}");
    }
}

/// What exists of `slot` (every slot with `None`): namespaces, links and host rules, as
/// `kind name` lines; empty when clean.
pub fn leftovers(slot: Option<Slot>) -> Vec<String> {
    let prefix = slot.map_or_else(|| PREFIX.to_owned(), Slot::bridge);
    let mut left = Vec::new();
    let netns = run(&sh(&["ip", "netns", "list"])).unwrap_or_default();
    let links = run(&sh(&["ip", "-o", "link", "show"])).unwrap_or_default();
    // Slot 1's prefix must not match slot 10's names: SLOTS < 10 keeps names apart.
    left.extend(
        names_with_prefix(&netns, &prefix, false)
            .into_iter()
            .map(|n| format!("netns {n}")),
    );
    left.extend(
        names_with_prefix(&links, &prefix, true)
            .into_iter()
            .map(|n| format!("link {n}")),
    );
    for table in ["nat", "filter"] {
        let listing = run(&sh(&["iptables", "-w", "10", "-t", table, "-S"])).unwrap_or_default();
        left.extend(
            listing
                .lines()
                .filter(|l| {
                    l.contains(&format!("--comment {prefix}"))
                        || l.contains(&format!("--comment \"{prefix}"))
                })
                .map(|l| format!("iptables -t {table} {l}")),
        );
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_a_link_name_and_addresses_stay_in_the_benchmarking_range() {
        let last = Slot(SLOTS - 1);
        assert!(
            last.veth(MAX_NODES - 1).len() <= 15,
            "{}",
            last.veth(MAX_NODES - 1)
        );
        assert_eq!(Slot(0).bridge(), "parley-nem-0");
        assert_eq!(Slot(3).veth(0), "parley-nem-3v1");
        assert_eq!(Slot(3).namespace(1), "parley-nem-3-n2");
        assert_eq!(Slot(0).gateway(), Ipv4Addr::new(198, 18, 40, 1));
        assert_eq!(Slot(7).address(2), Ipv4Addr::new(198, 18, 47, 13));
        assert_eq!(last.address(MAX_NODES - 1), Ipv4Addr::new(198, 18, 47, 109));
    }

    #[test]
    fn setup_takes_the_slot_first_and_routes_only_foreign_forwards() {
        let fw = [
            Forward::Gateway(16379).resolve(Slot(1)),
            Forward::Address("198.18.1.1:19094".parse().unwrap()).resolve(Slot(1)),
        ];
        let cmds = setup_commands(Slot(1), 2, &fw, "7:99");
        assert_eq!(cmds[0].join(" "), "ip link add parley-nem-1 type bridge");
        assert_eq!(
            cmds[1].join(" "),
            "ip link set dev parley-nem-1 alias parley-nem owner=7:99"
        );
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        let routes: Vec<&String> = text.iter().filter(|c| c.contains(" route ")).collect();
        assert_eq!(
            routes.len(),
            2,
            "one route per namespace, to 198.18.1.1 only: {routes:?}"
        );
        assert!(routes[0].ends_with("route replace 198.18.1.1/32 via 198.18.41.1"));
        assert!(text.contains(
            &"ip link add parley-nem-1v2 type veth peer name eth0 netns parley-nem-1-n2".to_owned()
        ));
        let dnat: Vec<&String> = text.iter().filter(|c| c.contains("DNAT")).collect();
        assert_eq!(
            dnat[1],
            "iptables -w 10 -t nat -I PREROUTING 1 -i parley-nem-1 -d 198.18.1.1/32 -p tcp \
             --dport 19094 -m comment --comment parley-nem-1 -j DNAT --to-destination 127.0.0.1:19094"
        );
        // Every address we configure is in 198.18.0.0/15.
        for c in &text {
            for word in c.split([' ', '/', ':']) {
                if let Ok(a) = word.parse::<Ipv4Addr>() {
                    let o = a.octets();
                    assert!(
                        o[0] == 127 || (o[0] == 198 && (o[1] == 18 || o[1] == 19)),
                        "{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn deletes_exactly_the_rules_tagged_with_the_slot() {
        let listing = "-P PREROUTING ACCEPT\n\
            -A PREROUTING -d 198.18.40.1/32 -i parley-nem-0 -p tcp -m tcp --dport 15432 -m comment --comment parley-nem-0 -j DNAT --to-destination 127.0.0.1:15432\n\
            -A PREROUTING -i parley+ -j PARLEY-HOSTPORTS\n\
            -A PREROUTING -d 198.18.41.1/32 -i parley-nem-1 -m comment --comment \"parley-nem-1\" -j DNAT --to-destination 127.0.0.1:1\n\
            -A PREROUTING -m comment --comment parley-nem-0x -j ACCEPT\n";
        let del = rules_to_delete(listing, "parley-nem-0");
        assert_eq!(del.len(), 1);
        assert_eq!(del[0][..3], ["-D", "PREROUTING", "-d"]);
        let del = rules_to_delete(listing, "parley-nem-1");
        assert_eq!(del.len(), 1);
        assert!(del[0].contains(&"parley-nem-1".to_owned()));
    }

    #[test]
    fn a_namespaced_node_reaches_the_services_through_the_gateway() {
        let base = [
            ("PARLEY_MODE", "distributed"),
            (
                "PARLEY_SHARDS",
                "a:0-1:postgres://u:p@127.0.0.1:15433/x;b:2-3:postgres://u:p@127.0.0.1:15434/x",
            ),
            ("PARLEY_REDIS_URL", "redis://:p@127.0.0.1:16379/0"),
            ("PARLEY_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let env = namespace_env(&base, Slot(2), "198.18.1.1:19094");
        let get = |k: &str| env.iter().find(|e| e.0 == k).map(|e| e.1.as_str());
        assert_eq!(get("PARLEY_MODE"), None);
        assert_eq!(
            get("PARLEY_SHARDS"),
            Some(
                "a:0-1:postgres://u:p@198.18.42.1:15433/x;b:2-3:postgres://u:p@198.18.42.1:15434/x"
            )
        );
        assert_eq!(get("PARLEY_KAFKA_BOOTSTRAP"), Some("198.18.1.1:19094"));
        assert_eq!(loopback_ports(&base[1].1), [15433, 15434]);
        assert_eq!(loopback_ports("http://127.0.0.1:19000"), [19000]);
    }

    #[test]
    fn a_launch_names_its_namespace() {
        let launch = Launch {
            wrapper: sh(&["ip", "netns", "exec", "parley-nem-0-n1"]),
            ..Launch::default()
        };
        assert_eq!(namespace_of(&launch), Some("parley-nem-0-n1"));
        assert_eq!(namespace_of(&Launch::default()), None);
        let listing =
            "1: lo: <LOOPBACK>\n7: parley-nem-0v1@if2: <BROADCAST>\n8: parley-nem-0: <X>\n";
        assert_eq!(
            names_with_prefix(listing, "parley-nem-0v", true),
            ["parley-nem-0v1"]
        );
        assert_eq!(
            names_with_prefix("parley-nem-0-n1 (id: 3)\nother\n", PREFIX, false),
            ["parley-nem-0-n1"]
        );
    }
}
