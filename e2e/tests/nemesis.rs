//! Fault scenarios under load, judged by the history checker: a workload of several
//! clients on a 3-node cluster, one nemesis on a schedule, then the checker's report over
//! the history and the rows the shards stored (see `parley_e2e::workload`). Each scenario
//! takes tens of seconds; the report is printed, and the history and stored files stay in
//! the cluster's directory (their paths are printed too).
//!
//! These tests restart or stop shared services and processes, so they run one at a time.

use std::time::Duration;

use parley_e2e::cluster::Options;
use parley_e2e::nemesis::partition::{
    self, NetnsNetwork, PartitionFromKafka, PartitionFromPeers, PartitionFromRedis,
};
use parley_e2e::nemesis::process::{Kill, Pause};
use parley_e2e::nemesis::{Nemesis, Schedule};
use parley_e2e::services;
use parley_e2e::workload::Workload;
use parley_e2e::workload::scenario::{Outcome, Scenario, run_scenario};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's `PARLEY_NODE_LEASE_MS` (see `parley_e2e::cluster`).
const LEASE: Duration = Duration::from_millis(4000);

/// The default cluster with a 2 s heartbeat (the presence check's bound is 5 of them),
/// the default workload with its hot group owned by node `owner`.
fn scenario(owner: usize, nemesis: Box<dyn Nemesis>, schedule: Schedule) -> Scenario {
    Scenario {
        cluster: Options {
            heartbeat_interval_ms: 2000,
            ..Options::default()
        },
        workload: Workload {
            hot_owner: Some(owner),
            ..Workload::default()
        },
        nemesis,
        schedule,
        tail: Duration::from_secs(4),
    }
}

async fn run(s: Scenario) -> Outcome {
    let outcome = run_scenario(&services(), s)
        .await
        .expect("the scenario ran");
    println!("{outcome}");
    outcome
}

/// SIGSTOP of the owner of the busiest channel for longer than its lease, twice: the
/// other nodes take its channels over meanwhile, and when it wakes (SIGCONT) it must not
/// append with a seq the new owner already gave out (the fencing case).
/// Before fencing it found repeated seqs (docs/reliability.md, what the checker found
/// before fencing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_of_a_channel_owner_longer_than_its_lease() {
    let _serial = SERIAL.lock().await;
    let outcome = run(scenario(
        0,
        Box::new(Pause { node: 0 }),
        Schedule {
            start_after: Duration::from_secs(5),
            heal_after: LEASE + Duration::from_secs(2),
            repeat: 2,
        },
    ))
    .await;
    assert!(outcome.is_valid(), "{outcome}");
}

/// `kill -9` of the owner of the busiest channel during sends, started again after 6 s:
/// no acknowledged message is lost or doubled, seqs stay gapless, members get everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node() {
    let _serial = SERIAL.lock().await;
    let outcome = run(scenario(
        1,
        Box::new(Kill { node: 1 }),
        Schedule {
            start_after: Duration::from_secs(5),
            heal_after: Duration::from_secs(6),
            repeat: 2,
        },
    ))
    .await;
    assert!(outcome.is_valid(), "{outcome}");
}

// --- Partitions: every node in a network namespace of its own (parley_e2e::nemesis::
// partition), one node cut off by iptables DROP in its namespace, healed by deleting the
// rules. Where namespaces are unavailable (not root) these skip, saying why.

/// [`scenario`] with every node launched in a namespace of a new network, which the caller
/// keeps until the run ends (dropping it removes the namespaces, links and rules); `None`,
/// printed, where namespaces are unavailable.
fn in_namespaces(
    owner: usize,
    nemesis: Box<dyn Nemesis>,
    schedule: Schedule,
) -> Option<(NetnsNetwork, Scenario)> {
    if let Some(why) = partition::netns::unavailable() {
        eprintln!("skipping: {why}");
        return None;
    }
    let mut s = scenario(owner, nemesis, schedule);
    let net = NetnsNetwork::create(&services(), s.cluster.nodes).expect("the network");
    s.cluster.node_launch = net.launches();
    Some((net, s))
}

/// The owner of the busiest channel cut off from Redis for longer than its lease, twice:
/// it can renew neither its lease nor presence, the others take its channels over, while
/// it still reaches Kafka and the shards (the split-brain case fencing must cover).
/// Before fencing it found repeated seqs: n1 never saw the ring change and, owner again
/// after the heal, reused seqs the interim owner gave out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_of_a_channel_owner_from_redis() {
    let _serial = SERIAL.lock().await;
    let schedule = Schedule {
        start_after: Duration::from_secs(5),
        heal_after: LEASE + Duration::from_secs(2),
        repeat: 2,
    };
    let Some((_net, s)) = in_namespaces(0, Box::new(PartitionFromRedis { node: 0 }), schedule)
    else {
        return;
    };
    let outcome = run(s).await;
    assert!(outcome.is_valid(), "{outcome}");
}

/// The owner of the busiest channel cut off from Kafka for 6 s, twice: its appends time
/// out (`unavailable`, outcome unknown) and nothing it acknowledged may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_of_a_channel_owner_from_kafka() {
    let _serial = SERIAL.lock().await;
    let schedule = Schedule {
        start_after: Duration::from_secs(5),
        heal_after: Duration::from_secs(6),
        repeat: 2,
    };
    let Some((_net, s)) = in_namespaces(0, Box::new(PartitionFromKafka { node: 0 }), schedule)
    else {
        return;
    };
    let outcome = run(s).await;
    assert!(outcome.is_valid(), "{outcome}");
}

/// The owner of the busiest channel cut off from the other nodes (Redis, Kafka and the
/// clients still reach it) for longer than a lease, twice: sends forwarded to it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_of_a_channel_owner_from_its_peers() {
    let _serial = SERIAL.lock().await;
    let schedule = Schedule {
        start_after: Duration::from_secs(5),
        heal_after: LEASE + Duration::from_secs(2),
        repeat: 2,
    };
    let Some((_net, s)) = in_namespaces(0, Box::new(PartitionFromPeers { node: 0 }), schedule)
    else {
        return;
    };
    let outcome = run(s).await;
    assert!(outcome.is_valid(), "{outcome}");
}

// --- Services, clocks and the persister (parley_e2e::nemesis::{services, clock,
// persister}): shared services stopped or crashed through dev/services (under SERIAL, and
// started again by the nemesis's drop if a run fails half-way), one node's clock stepped
// with libfaketime, the persister killed between its two commits.

use parley_e2e::nemesis::clock::{self, ClockStep, Faketime};
use parley_e2e::nemesis::persister::PersisterCrash;
use parley_e2e::nemesis::services::{Outage, SHARDS, ServiceOutage};

/// One outage of 6 s, 5 s into the load.
const OUTAGE: Schedule = Schedule {
    start_after: Duration::from_secs(5),
    heal_after: Duration::from_secs(6),
    repeat: 1,
};

/// Redis stopped for 6 s and started empty (no leases, presence or subscriptions): sends
/// are refused meanwhile, and each node must rebuild its lease, presence and
/// subscriptions, and take its channels over again. Before fencing, the nodes saw partial
/// rings for a moment after the restart and two of them sequenced one channel (repeated
/// seqs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_redis() {
    let _serial = SERIAL.lock().await;
    let outcome = run(scenario(
        0,
        Box::new(ServiceOutage::new(Outage::RestartRedis)),
        OUTAGE,
    ))
    .await;
    assert!(outcome.is_valid(), "{outcome}");
}

/// The Kafka broker stopped for 6 s: appends answer `unavailable` (outcome unknown), and
/// after the restart every acknowledged message is persisted. Before the fix the
/// persister retried its offset commit with a stale group membership (UnknownMemberId)
/// for ever and persisted nothing more (lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_kafka() {
    let _serial = SERIAL.lock().await;
    let mut s = scenario(
        0,
        Box::new(ServiceOutage::new(Outage::RestartKafka)),
        OUTAGE,
    );
    s.tail = Duration::from_secs(25);
    let outcome = run(s).await;
    assert!(outcome.is_valid(), "{outcome}");
}

/// Both shards crashed with `pg_ctl stop -m immediate` for 6 s: the persister retries its
/// batch, sends are still acknowledged (Kafka holds them), nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_the_shards() {
    let _serial = SERIAL.lock().await;
    let shards = SHARDS.iter().map(|s| (*s).to_owned()).collect();
    let outcome = run(scenario(
        0,
        Box::new(ServiceOutage::new(Outage::CrashShard { shards })),
        OUTAGE,
    ))
    .await;
    assert!(outcome.is_valid(), "{outcome}");
}

/// The [`scenario`] of clock steps on the owner of the busiest channel (node 0), launched
/// under libfaketime: its clock goes back `step_s` for 6 s, then forward `step_s` for 6 s.
/// While it is behind its last ID, the owner borrows IDs ahead of its clock (bounded by
/// `PARLEY_MAX_ID_LEAD_MS`), and every new owner's IDs go above the channel's last one.
fn clock_steps(fake_monotonic: bool, step_s: i64) -> Scenario {
    let dir = std::env::temp_dir().join(format!(
        "parley-clock-{}-{}",
        std::process::id(),
        u8::from(fake_monotonic)
    ));
    let faketime = Faketime::new(clock::offset_file(&dir, 0), fake_monotonic)
        .expect("libfaketime (dev/services up installs it)");
    let mut s = scenario(
        0,
        Box::new(ClockStep::new(0, faketime.clone(), vec![-step_s, step_s])),
        Schedule {
            start_after: Duration::from_secs(4),
            heal_after: Duration::from_secs(6),
            repeat: 2,
        },
    );
    s.cluster.node_launch = vec![faketime.launch()];
    s
}

/// The wall clock (only) of the busiest channel's owner stepped back and forward 30 s, as
/// a bad NTP step would: IDs stay unique and in seq order, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_of_a_channel_owner() {
    let _serial = SERIAL.lock().await;
    let outcome = run(clock_steps(false, 30)).await;
    assert!(outcome.is_valid(), "{outcome}");
}

/// The same with `CLOCK_MONOTONIC` stepped too, by twice the lease (no kernel steps it
/// back; a harsher fault than any real one). Stepped back, the owner's lease lapses while
/// it believes it holds it, and it keeps sequencing beside the new owner (the pause case by
/// another road): fencing refuses its sends, and the channel's next owners' IDs go above
/// its IDs from the future.
///
/// Every step back (the first start, the last heal) also leaves the owner unable to wait:
/// tokio's timer wheel never goes back, so until the clock has caught up with it again
/// (the step's length) every timer shorter than the step fires at once, and each Redis
/// command times out as soon as it is sent. The tail waits that out, then two leases more,
/// so the run must still recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monotonic_and_wall_clock_steps_of_a_channel_owner() {
    let _serial = SERIAL.lock().await;
    let step = 2 * LEASE;
    let mut s = clock_steps(true, i64::try_from(step.as_secs()).unwrap_or(8));
    s.tail = step + 2 * LEASE;
    let outcome = run(s).await;
    assert!(outcome.is_valid(), "{outcome}");
}

/// The persister killed with -9 after its batch's insert committed and before its offset
/// commit (shards crashed, Kafka stopped, shards back: it logs the failed offset commit,
/// then dies); started again with Kafka, it replays the batch and the store keeps one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persister_killed_between_its_two_commits() {
    let _serial = SERIAL.lock().await;
    let mut s = scenario(
        0,
        Box::new(PersisterCrash::new(0)),
        Schedule {
            start_after: Duration::from_secs(5),
            heal_after: Duration::from_secs(2),
            repeat: 1,
        },
    );
    // The killed member leaves the group when its session (10 s) ends.
    s.tail = Duration::from_secs(20);
    let outcome = run(s).await;
    assert!(outcome.is_valid(), "{outcome}");
}
