//! Counting without locks: a log-linear latency histogram of atomics (about 0.8 % relative
//! precision, microseconds), the driver's clock, and the server's resources read from
//! `/proc/<pid>` (resident memory, CPU time).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Values below this many microseconds get a bucket each.
const LINEAR: u64 = 256;
/// Buckets per power of two above [`LINEAR`] (7 bits of mantissa).
const SUB: u64 = 128;
/// Powers of two covered above [`LINEAR`]: up to 2^48 µs.
const OCTAVES: u64 = 40;

/// A latency histogram in microseconds, shared by every connection task (atomic adds, no
/// lock). Exact below 256 µs, within 1/128 above.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..LINEAR + OCTAVES * SUB)
                .map(|_| AtomicU64::new(0))
                .collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let octave = u64::from(63 - us.leading_zeros()); // >= 8
    let mantissa = (us >> (octave - 7)) & (SUB - 1);
    let b = LINEAR + (octave - 8) * SUB + mantissa;
    b.min(LINEAR + OCTAVES * SUB - 1) as usize
}

/// The middle of bucket `b`, in microseconds.
fn value_of(b: usize) -> f64 {
    let b = b as u64;
    if b < LINEAR {
        return b as f64;
    }
    let octave = (b - LINEAR) / SUB + 8;
    let mantissa = (b - LINEAR) % SUB;
    let low = (SUB + mantissa) << (octave - 7);
    low as f64 + (1u64 << (octave - 7)) as f64 / 2.0
}

impl Histogram {
    /// Records one latency of `us` microseconds.
    pub fn record(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Forgets everything (between the steps of a sweep, when nothing records).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
        self.count.store(0, Relaxed);
        self.max.store(0, Relaxed);
    }

    /// The nearest-rank quantile `p` (0.0 ..= 1.0) in milliseconds; the exact maximum for
    /// 1.0; 0 when empty.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        if p >= 1.0 {
            return self.max.load(Relaxed) as f64 / 1000.0;
        }
        let rank = ((p * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, c) in self.buckets.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                return value_of(b) / 1000.0;
            }
        }
        self.max.load(Relaxed) as f64 / 1000.0
    }

    /// `[[p, ms], ...]` at p = 0.01, 0.02, ... 0.99, then 0.995, 0.999, 0.9995, 0.9999 and
    /// 1 (the maximum): enough for a CDF plot.
    pub fn cdf(&self) -> Vec<[f64; 2]> {
        let mut ps: Vec<f64> = (1..100).map(|i| f64::from(i) / 100.0).collect();
        ps.extend([0.995, 0.999, 0.9995, 0.9999, 1.0]);
        ps.into_iter().map(|p| [p, self.quantile_ms(p)]).collect()
    }
}

/// The driver's clock: nanoseconds since it started (the payload's timestamp).
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since [`Clock::start`].
    pub fn now_ns(self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The server process whose resources are read: its pid and the kernel's clock ticks per
/// second (`getconf CLK_TCK`, the unit of `/proc/<pid>/stat`'s CPU times).
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pub pid: u32,
    ticks_per_s: u64,
}

/// Resident memory in KiB: `VmRSS` (all) and `RssAnon` (the heap and stacks, what the
/// process allocated itself) of `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub anon_kib: u64,
}

impl Server {
    /// `pid`, with `CLK_TCK` asked of `getconf` once (100 when that fails, Linux's value).
    pub fn new(pid: u32) -> Self {
        let ticks_per_s = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100);
        Self { pid, ticks_per_s }
    }

    /// Its resident memory now; zeros when the process is gone.
    pub fn memory(self) -> Memory {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| crate::bench::status_kib(&status, name).unwrap_or(0);
        Memory {
            rss_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
        }
    }

    /// CPU seconds it has spent so far, user plus system (`utime + stime` of
    /// `/proc/<pid>/stat`, fields 14 and 15, over `CLK_TCK`); 0 when it is gone.
    pub fn cpu_s(self) -> f64 {
        let (user_s, system_s) = self.cpu_split_s();
        user_s + system_s
    }

    /// Its CPU seconds in user and in kernel mode and its write system calls so far; zeros
    /// when it is gone (or, for the calls, when `/proc/<pid>/io` cannot be read).
    pub fn usage(self) -> Usage {
        let (user_s, system_s) = self.cpu_split_s();
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid)).unwrap_or_default();
        Usage {
            user_s,
            system_s,
            write_syscalls: write_syscalls(&io),
        }
    }

    /// CPU seconds in user and in kernel mode so far (0, 0 when it is gone).
    fn cpu_split_s(self) -> (f64, f64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let (user, system) = cpu_ticks(&stat);
        let tick = self.ticks_per_s as f64;
        (user as f64 / tick, system as f64 / tick)
    }
}

/// What a process used, from `/proc/<pid>/stat` (`utime`, `stime`) and `/proc/<pid>/io`
/// (`syscw`: its `write`-family system calls, `writev` and `sendto` included; see proc(5)).
/// Subtract two readings for what a window used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU seconds in user mode.
    pub user_s: f64,
    /// CPU seconds in the kernel (on loopback this includes much of the receiver's TCP
    /// work, done in the sender's system call).
    pub system_s: f64,
    /// Write system calls.
    pub write_syscalls: u64,
}

impl Usage {
    /// User plus kernel CPU seconds.
    pub fn cpu_s(self) -> f64 {
        self.user_s + self.system_s
    }

    /// "K % of it in the kernel, W write calls per `what`" for `count` of them.
    pub fn describe(self, count: u64, what: &str) -> String {
        format!(
            "{:.0} % of it in the kernel, {:.2} write calls per {what}",
            100.0 * self.system_s / self.cpu_s().max(1e-9),
            self.write_syscalls as f64 / count.max(1) as f64
        )
    }
}

impl std::ops::Sub for Usage {
    type Output = Usage;

    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            user_s: self.user_s - earlier.user_s,
            system_s: self.system_s - earlier.system_s,
            write_syscalls: self.write_syscalls.saturating_sub(earlier.write_syscalls),
        }
    }
}

/// `utime` and `stime` of a `/proc/<pid>/stat` line (the fields after the command's closing
/// parenthesis, which may itself hold spaces), in ticks.
fn cpu_ticks(stat: &str) -> (u64, u64) {
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (0, 0);
    };
    // After ")": state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (n(11), n(12))
}

/// `syscw` of a `/proc/<pid>/io` text; 0 when absent.
fn write_syscalls(io: &str) -> u64 {
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The soft open-files limit of this process (`/proc/self/limits`), if it can be read.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let h = Histogram::default();
        for us in 1..=100 {
            h.record(us);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_ms(0.5), 0.050);
        assert_eq!(h.quantile_ms(0.99), 0.099);
        assert_eq!(h.quantile_ms(1.0), 0.100);
        h.reset();
        assert_eq!(h.quantile_ms(0.5), 0.0);
    }

    #[test]
    fn large_values_keep_their_precision() {
        for us in [256, 1000, 12_345, 999_999, 40_000_000] {
            let h = Histogram::default();
            h.record(us);
            let got = h.quantile_ms(0.5) * 1000.0;
            assert!(
                (got - us as f64).abs() / us as f64 <= 1.0 / 128.0,
                "{us}: {got}"
            );
        }
        let h = Histogram::default();
        h.record(u64::MAX / 2);
        assert!(h.quantile_ms(0.5) > 0.0);
        assert_eq!(h.cdf().len(), 104);
    }

    #[test]
    fn cpu_ticks_are_utime_and_stime() {
        let stat = "1234 (chat node) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 70 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), (250, 70));
        assert_eq!(cpu_ticks(""), (0, 0));
    }

    #[test]
    fn write_syscalls_are_syscw() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 42\nread_bytes: 0\n";
        assert_eq!(write_syscalls(io), 42);
        assert_eq!(write_syscalls(""), 0);
    }
}
