//! The runner: a cluster, the workload, a nemesis on a schedule (a scenario) or faults
//! drawn at random (the soak), then the checker's report. The history and stored files lie
//! in the cluster's directory and are kept (their paths are printed and returned).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::{Load, Setup, Workload, finish, setup};
use crate::Services;
use crate::cluster::{Cluster, Options};
use crate::history::{
    CheckOptions, F, HistoryWriter, Op, OpType, Phase, Process, Report, check, read_history,
};
use crate::nemesis::{Fault, Nemesis, Schedule, kind_of};

/// One fault scenario: a cluster, its load, one nemesis on a schedule.
pub struct Scenario {
    pub cluster: Options,
    pub workload: Workload,
    pub nemesis: Box<dyn Nemesis>,
    pub schedule: Schedule,
    /// Load after the last heal, before the load stops (then [`Workload::settle`]).
    pub tail: Duration,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("cluster", &self.cluster)
            .field("workload", &self.workload)
            .field("nemesis", &self.nemesis.name())
            .field("schedule", &self.schedule)
            .field("tail", &self.tail)
            .finish()
    }
}

/// What a run left: the checker's report and the files it read.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    /// Sends acknowledged whose invoke came after the last heal (after the start when no
    /// fault ran): the cluster recovered, so the run's validity is not vacuous.
    pub recovered: u64,
    /// The history (JSON lines of operations).
    pub history: PathBuf,
    /// The stored rows (JSON lines).
    pub stored: PathBuf,
    /// The cluster's directory (node logs, and the two files).
    pub dir: PathBuf,
}

/// The fewest sends that must be acknowledged after the last heal for a run to count
/// ([`Outcome::is_valid`]): a run whose cluster never recovered proves nothing.
pub const MIN_RECOVERED: u64 = 5;

impl Outcome {
    /// Whether the run passes: no anomaly, and at least [`MIN_RECOVERED`] sends
    /// acknowledged after the last heal.
    pub fn is_valid(&self) -> bool {
        self.report.is_valid() && self.recovered >= MIN_RECOVERED
    }
}

/// Sends acknowledged whose invoke comes after the last `nemesis` heal in `ops`.
pub fn recovered(ops: &[Op]) -> u64 {
    let healed = ops
        .iter()
        .filter(|o| o.f == F::Nemesis && o.value["phase"] == "heal")
        .map(|o| o.index)
        .max();
    let mut invoked: std::collections::HashMap<Process, u64> = std::collections::HashMap::new();
    let mut n = 0;
    for o in ops.iter().filter(|o| o.f == F::Send) {
        match o.kind {
            OpType::Invoke => {
                invoked.insert(o.process, o.index);
            }
            OpType::Ok if invoked.get(&o.process).copied() > healed => n += 1,
            _ => {}
        }
    }
    n
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.report)?;
        writeln!(
            f,
            "acknowledged after the last heal: {} (at least {MIN_RECOVERED}: {})",
            self.recovered,
            if self.recovered >= MIN_RECOVERED {
                "recovered"
            } else {
                "NOT RECOVERED"
            }
        )?;
        writeln!(f, "history: {}", self.history.display())?;
        write!(f, "stored:  {}", self.stored.display())
    }
}

/// A run in progress: the cluster with its load on.
struct Run {
    cluster: Cluster,
    history: HistoryWriter,
    setup: Setup,
    load: Load,
    heartbeat: Duration,
    paths: (PathBuf, PathBuf),
}

impl Run {
    async fn begin(
        services: &Services,
        options: Options,
        workload: &Workload,
    ) -> anyhow::Result<Run> {
        let heartbeat = Duration::from_millis(options.heartbeat_interval_ms);
        let cluster = Cluster::start(services, options).await;
        let paths = (
            cluster.dir.join("history.jsonl"),
            cluster.dir.join("stored.jsonl"),
        );
        eprintln!(
            "history: {}\nstored:  {}",
            paths.0.display(),
            paths.1.display()
        );
        let history = HistoryWriter::create(&paths.0).context("creating the history")?;
        let setup = setup(&cluster, workload, &history).await?;
        let load = Load::start(&setup, workload, &history);
        Ok(Run {
            cluster,
            history,
            setup,
            load,
            heartbeat,
            paths,
        })
    }

    /// Starts (or heals) `nemesis`, logging it first (start) or after (heal).
    async fn fault(&mut self, nemesis: &mut dyn Nemesis, phase: Phase) -> anyhow::Result<()> {
        let name = nemesis.name();
        let kind = kind_of(&name);
        let target = name
            .strip_prefix(kind)
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match phase {
            Phase::Start => {
                self.history.nemesis(kind, phase, target);
                nemesis.start(&mut self.cluster).await
            }
            Phase::Heal => {
                let healed = nemesis.heal(&mut self.cluster).await;
                self.history.nemesis(kind, phase, target);
                healed
            }
        }
        .with_context(|| format!("{name}: {phase:?}"))
    }

    /// Stops the load, checks presence, reads the shards, checks the history.
    async fn end(self, services: &Services) -> anyhow::Result<Outcome> {
        let finished = self.load.stop().await?;
        let rows = finish(
            services,
            &self.setup,
            finished,
            &self.history,
            self.heartbeat,
            &self.paths.1,
        )
        .await?;
        self.history.finish().context("writing the history")?;
        let ops = read_history(&self.paths.0)?;
        let report = check(&ops, &rows, CheckOptions::default())
            .map_err(|e| anyhow::anyhow!("the history is malformed: {e:?}"))?;
        Ok(Outcome {
            report,
            recovered: recovered(&ops),
            history: self.paths.0,
            stored: self.paths.1,
            dir: self.cluster.dir.clone(),
        })
    }
}

/// Runs `scenario`: the cluster, the workload, the nemesis `repeat` times on its schedule,
/// `tail` more load, the settle and catch-up, the presence check, the stored rows and the
/// checker. Errors: the cluster, setup, a fault or the files failed (not anomalies: those
/// are in the report).
pub async fn run_scenario(services: &Services, scenario: Scenario) -> anyhow::Result<Outcome> {
    let Scenario {
        cluster,
        workload,
        mut nemesis,
        schedule,
        tail,
    } = scenario;
    let mut run = Run::begin(services, cluster, &workload).await?;
    for _ in 0..schedule.repeat {
        tokio::time::sleep(schedule.start_after).await;
        run.fault(nemesis.as_mut(), Phase::Start).await?;
        tokio::time::sleep(schedule.heal_after).await;
        run.fault(nemesis.as_mut(), Phase::Heal).await?;
    }
    tokio::time::sleep(tail).await;
    run.end(services).await
}

/// A soak: one cluster, the workload for `duration`, faults drawn from `faults` one at a
/// time (a quiet time drawn from `gap`, then the fault, held for a time drawn from `hold`,
/// then healed), at least `tail` of load after the last heal, then the checker.
#[derive(Debug, Clone)]
pub struct Soak {
    pub cluster: Options,
    pub workload: Workload,
    pub duration: Duration,
    pub faults: Vec<&'static Fault>,
    /// Seeds the draws (and the workload's, through [`Workload::seed`]).
    pub seed: u64,
    pub hold: (Duration, Duration),
    pub gap: (Duration, Duration),
    /// Load after the last heal: no fault starts unless its gap, its hold and the tail fit
    /// before the end, and the run goes on past the end if a slow heal ate into the tail
    /// (else a fault healed at the very end leaves too little time to show recovery).
    pub tail: Duration,
}

/// Runs `soak`. Every fault kind's [`Fault::prepare`] applies to the cluster first; a kind
/// whose nemesis cannot be built here (a missing tool) is reported on stderr and left out.
/// Errors: as [`run_scenario`].
pub async fn run_soak(services: &Services, soak: Soak) -> anyhow::Result<Outcome> {
    let mut options = soak.cluster.clone();
    for f in &soak.faults {
        (f.prepare)(&mut options);
    }
    let mut faults = soak.faults.clone();
    let mut rng = StdRng::seed_from_u64(soak.seed);
    let mut run = Run::begin(services, options, &soak.workload).await?;
    let end = tokio::time::Instant::now() + soak.duration;
    let draw = |rng: &mut StdRng, (lo, hi): (Duration, Duration)| {
        lo + (hi.saturating_sub(lo)).mul_f64(rng.random::<f64>())
    };
    while !faults.is_empty() {
        let (gap, hold) = (draw(&mut rng, soak.gap), draw(&mut rng, soak.hold));
        if tokio::time::Instant::now() + gap + hold + soak.tail > end {
            break;
        }
        tokio::time::sleep(gap).await;
        let i = rng.random_range(0..faults.len());
        let mut nemesis = match (faults[i].build)(&run.cluster, &mut rng) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("fault {} left out: {e:#}", faults[i].kind);
                faults.remove(i);
                continue;
            }
        };
        run.fault(nemesis.as_mut(), Phase::Start).await?;
        tokio::time::sleep(hold).await;
        run.fault(nemesis.as_mut(), Phase::Heal).await?;
    }
    let rest = end.saturating_duration_since(tokio::time::Instant::now());
    tokio::time::sleep(rest.max(soak.tail)).await;
    run.end(services).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(index: u64, process: Process, kind: OpType, f: F, value: serde_json::Value) -> Op {
        Op {
            index,
            time_ms: index,
            process,
            kind,
            f,
            node: None,
            value,
        }
    }

    #[test]
    fn only_sends_invoked_after_the_last_heal_count_as_recovered() {
        let c = Process::Client;
        let heal = |i| {
            op(
                i,
                Process::Nemesis,
                OpType::Info,
                F::Nemesis,
                json!({"fault": "pause", "phase": "heal"}),
            )
        };
        let start = op(
            1,
            Process::Nemesis,
            OpType::Info,
            F::Nemesis,
            json!({"fault": "pause", "phase": "start"}),
        );
        let ops = vec![
            op(0, c(0), OpType::Invoke, F::Send, json!({})),
            start,
            heal(2),
            // Invoked before the last heal, acknowledged after it: not counted.
            op(3, c(0), OpType::Ok, F::Send, json!({})),
            op(4, c(1), OpType::Invoke, F::Send, json!({})),
            op(5, c(1), OpType::Ok, F::Send, json!({})),
            op(6, c(1), OpType::Invoke, F::Send, json!({})),
            op(7, c(1), OpType::Info, F::Send, json!({})),
        ];
        assert_eq!(recovered(&ops), 1);
        assert_eq!(recovered(&ops[..1]), 0, "no ok at all");
        let mut more = ops;
        more.push(heal(8));
        assert_eq!(recovered(&more), 0, "a later heal resets the count");
    }
}
