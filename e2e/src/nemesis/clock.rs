//! Clock faults: one node's wall clock stepped back or forward at run time, as a bad NTP
//! step would, with Debian's libfaketime (`dev/services up` installs it; `dev/services
//! faketime-lib` prints its path).
//!
//! The node is launched with `LD_PRELOAD=libfaketime.so.1` and `FAKETIME_TIMESTAMP_FILE`
//! naming a file that holds the offset (`+0s`, `-30s`, ...); `FAKETIME_NO_CACHE=1` makes
//! libfaketime read the file at every clock read, so a step takes effect at once. Only
//! `CLOCK_REALTIME` is faked by default (`FAKETIME_DONT_FAKE_MONOTONIC=1`): an NTP step
//! moves the wall clock, never `CLOCK_MONOTONIC`, which timers, timeouts and the node's
//! lease bookkeeping read. [`Faketime::fake_monotonic`] fakes both, a harsher and
//! unrealistic fault (timers stall for the length of a backward step).

use std::path::{Path, PathBuf};

use rand::Rng as _;

use super::Nemesis;
use crate::cluster::{Cluster, Launch, Options};

/// The setting that names the offset file; its presence in a node's launch marks the node
/// as launched under libfaketime.
pub const TIMESTAMP_FILE_ENV: &str = "FAKETIME_TIMESTAMP_FILE";

/// How a process is run under libfaketime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Faketime {
    /// The preload library (`libfaketime.so.1`).
    pub lib: PathBuf,
    /// The file libfaketime reads the offset from.
    pub file: PathBuf,
    /// Whether `CLOCK_MONOTONIC` is stepped too (default: no, wall clock only).
    pub fake_monotonic: bool,
}

impl Faketime {
    /// libfaketime with its offset in `file`, which is created holding `+0s` (its
    /// directory too). Errors: libfaketime is not installed, or the file cannot be written.
    pub fn new(file: PathBuf, fake_monotonic: bool) -> anyhow::Result<Self> {
        let faketime = Self {
            lib: library()?,
            file,
            fake_monotonic,
        };
        if let Some(dir) = faketime.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        faketime.step(0)?;
        Ok(faketime)
    }

    /// The launch of a process under this libfaketime (to add to a node's launch).
    pub fn launch(&self) -> Launch {
        let mut env = vec![
            ("LD_PRELOAD".to_owned(), self.lib.display().to_string()),
            (
                TIMESTAMP_FILE_ENV.to_owned(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".to_owned(), "1".to_owned()),
        ];
        if !self.fake_monotonic {
            env.push(("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()));
        }
        Launch {
            env,
            ..Launch::default()
        }
    }

    /// The libfaketime settings found in `launch`, if it has them.
    pub fn from_launch(launch: &Launch) -> Option<Self> {
        let get = |key: &str| {
            launch
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        Some(Self {
            lib: get("LD_PRELOAD")?.into(),
            file: get(TIMESTAMP_FILE_ENV)?.into(),
            fake_monotonic: get("FAKETIME_DONT_FAKE_MONOTONIC").is_none(),
        })
    }

    /// Sets the clock's offset from the real time to `offset_s` seconds, atomically (a
    /// reader never sees a half-written file). Errors: the file cannot be written.
    pub fn step(&self, offset_s: i64) -> std::io::Result<()> {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", offset_spec(offset_s)))?;
        std::fs::rename(&tmp, &self.file)
    }
}

/// libfaketime's relative offset of `secs` seconds: `+30s`, `-30s`, `+0s`.
pub fn offset_spec(secs: i64) -> String {
    format!("{secs:+}s")
}

/// The path of libfaketime.so.1, as `dev/services faketime-lib` prints it. Errors: not
/// installed (`dev/services up` installs it).
pub fn library() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new("bash")
        .arg(super::services::dev_services_script())
        .arg("faketime-lib")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "libfaketime not found: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    anyhow::ensure!(path.exists(), "libfaketime not at {}", path.display());
    Ok(path)
}

/// Adds `faketime`'s settings to `launch` (kept: its wrapper, host and other settings).
pub fn with_faketime(mut launch: Launch, faketime: &Faketime) -> Launch {
    launch.env.extend(faketime.launch().env);
    launch
}

/// Steps the wall clock of node `node` (launched under `faketime`, see
/// [`Faketime::launch`]): each start sets the next offset of `steps_s` (seconds, in turn,
/// wrapping around); each heal sets the offset back to 0.
#[derive(Debug, Clone)]
pub struct ClockStep {
    pub node: usize,
    pub faketime: Faketime,
    /// Offsets in seconds, applied by the starts in turn (e.g. `[-30, 30]`).
    pub steps_s: Vec<i64>,
    next: usize,
}

impl ClockStep {
    /// A nemesis stepping node `node`'s clock by `steps_s` in turn. `steps_s` must not be
    /// empty.
    pub fn new(node: usize, faketime: Faketime, steps_s: Vec<i64>) -> Self {
        assert!(
            !steps_s.is_empty(),
            "a clock step needs at least one offset"
        );
        Self {
            node,
            faketime,
            steps_s,
            next: 0,
        }
    }

    /// The offset the next start sets, in seconds.
    pub fn next_offset_s(&self) -> i64 {
        self.steps_s[self.next % self.steps_s.len()]
    }
}

#[async_trait::async_trait]
impl Nemesis for ClockStep {
    fn name(&self) -> String {
        format!("clock-step n{}", self.node + 1)
    }

    async fn start(&mut self, _cluster: &mut Cluster) -> anyhow::Result<()> {
        let offset = self.next_offset_s();
        self.next += 1;
        self.faketime.step(offset)?;
        Ok(())
    }

    async fn heal(&mut self, _cluster: &mut Cluster) -> anyhow::Result<()> {
        self.faketime.step(0)?;
        Ok(())
    }
}

/// The offset file of node `i` under `dir`.
pub fn offset_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("n{}.faketime", i + 1))
}

/// [`super::Fault::prepare`] of clock steps: every node is launched under libfaketime
/// (wall clock only, offset 0), its offset file in a fresh directory under the system's
/// temporary directory. Without libfaketime the options stay as they are (and `build`
/// then says why the fault cannot run).
pub fn prepare(options: &mut Options) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("parley-faketime-{}-{nanos}", std::process::id()));
    if options.node_launch.len() < options.nodes {
        options.node_launch.resize(options.nodes, Launch::default());
    }
    for (i, launch) in options.node_launch.iter_mut().enumerate() {
        match Faketime::new(offset_file(&dir, i), false) {
            Ok(faketime) => *launch = with_faketime(std::mem::take(launch), &faketime),
            Err(e) => {
                eprintln!("clock-step: nodes run without libfaketime: {e}");
                return;
            }
        }
    }
}

/// A node's wall clock stepped back 30 s, then (next time) forward 30 s; each heal steps
/// it back to the real time.
pub const CLOCK_STEP: super::Fault = super::Fault {
    kind: "clock-step",
    prepare,
    build: |cluster, rng| {
        let faked: Vec<(usize, Faketime)> = (0..cluster.nodes.len())
            .filter_map(|i| Faketime::from_launch(cluster.launch(i)).map(|f| (i, f)))
            .collect();
        anyhow::ensure!(
            !faked.is_empty(),
            "no node runs under libfaketime (install it with dev/services up)"
        );
        let (node, faketime) = faked[rng.random_range(0..faked.len())].clone();
        Ok(Box::new(ClockStep::new(node, faketime, vec![-30, 30])))
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_libfaketime_relative_seconds() {
        assert_eq!(offset_spec(-30), "-30s");
        assert_eq!(offset_spec(30), "+30s");
        assert_eq!(offset_spec(0), "+0s");
    }

    #[test]
    fn a_launch_carries_the_settings_and_gives_them_back() {
        let f = Faketime {
            lib: "/usr/lib/x/faketime/libfaketime.so.1".into(),
            file: "/tmp/n1.faketime".into(),
            fake_monotonic: false,
        };
        let launch = with_faketime(
            Launch {
                wrapper: vec!["ip".into(), "netns".into()],
                ..Launch::default()
            },
            &f,
        );
        assert_eq!(launch.wrapper.len(), 2, "the wrapper is kept");
        assert!(
            launch
                .env
                .contains(&("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()))
        );
        assert_eq!(Faketime::from_launch(&launch), Some(f.clone()));
        let mono = Faketime {
            fake_monotonic: true,
            ..f
        };
        assert_eq!(Faketime::from_launch(&mono.launch()), Some(mono));
        assert_eq!(Faketime::from_launch(&Launch::default()), None);
    }

    #[test]
    fn steps_go_in_turn_and_write_the_offset_file() {
        let dir = std::env::temp_dir().join(format!("parley-clock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = Faketime {
            lib: "libfaketime.so.1".into(),
            file: offset_file(&dir, 0),
            fake_monotonic: false,
        };
        let mut s = ClockStep::new(0, f.clone(), vec![-30, 30]);
        assert_eq!(s.name(), "clock-step n1");
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(s.next_offset_s());
            s.next += 1;
        }
        assert_eq!(seen, [-30, 30, -30]);
        f.step(-30).unwrap();
        assert_eq!(std::fs::read_to_string(&f.file).unwrap(), "-30s\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
