//! The harness of the fuzz targets (`crates/*/tests/fuzz_*.rs`, `chat-node/tests/fuzz_*.rs`),
//! included by each with `#[path]`: coverage-blind fuzzing on stable Rust with proptest.
//!
//! A target is a `check(&[u8])` that panics when a property fails. Each target
//! - replays its corpus, `fuzz/corpus/<target>/*` (one input per file, committed), every run;
//! - then runs generated inputs: mutations of the corpus seeds (byte flips, inserts,
//!   deletes, splices of two seeds), the target's own generator of well-formed-looking
//!   inputs, and plain random bytes. `PARLEY_FUZZ_CASES` cases (default 256, so
//!   `cargo test` stays fast) or, with `PARLEY_FUZZ_SECS=N`, batches for N seconds
//!   (`dev/fuzz` runs each target this way).
//!
//! A failure is shrunk by proptest to a small input, written to
//! `target/fuzz-failures/<target>-<hash>`, and the test fails naming that file: copy it
//! into the corpus once the bug is fixed, so it is replayed from then on.

#![allow(dead_code)]

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// The repository root (the directory holding `fuzz/`), from a crate's manifest dir.
pub(crate) fn root(manifest_dir: &str) -> PathBuf {
    let mut dir = Path::new(manifest_dir).to_path_buf();
    while !dir.join("fuzz").join("corpus").is_dir() {
        assert!(dir.pop(), "no fuzz/corpus above {manifest_dir}");
    }
    dir
}

/// The seeds of `target`, sorted by file name.
pub(crate) fn corpus(manifest_dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root(manifest_dir).join("fuzz").join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Runs `check` on every seed of `target`; fails naming each seed that panicked.
pub(crate) fn replay(manifest_dir: &str, target: &str, check: fn(&[u8])) {
    let mut failed = Vec::new();
    let seeds = corpus(manifest_dir, target);
    for (name, input) in &seeds {
        if std::panic::catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            failed.push(name.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: seeds that fail: {failed:?} (of {})",
        seeds.len()
    );
}

/// One edit of a mutation: `(kind, position, byte)`.
type Edit = (u8, u16, u8);

fn mutate(seeds: &[Vec<u8>], first: usize, second: usize, edits: &[Edit]) -> Vec<u8> {
    let mut out = seeds[first % seeds.len()].clone();
    for &(kind, at, byte) in edits {
        let at = usize::from(at);
        match kind % 5 {
            0 if !out.is_empty() => {
                let i = at % out.len();
                out[i] ^= byte.max(1);
            }
            1 => out.insert(at % (out.len() + 1), byte),
            2 if !out.is_empty() => {
                out.remove(at % out.len());
            }
            3 => {
                // Splice: the head of this input, the tail of another seed.
                let other = &seeds[second % seeds.len()];
                let cut = at % (out.len() + 1);
                let from = usize::from(byte) % (other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                // Repeat a stretch (long runs: many spaces, deep nesting).
                if !out.is_empty() {
                    let i = at % out.len();
                    let piece = out[i..(i + 8).min(out.len())].to_vec();
                    for _ in 0..usize::from(byte % 32) {
                        out.splice(i..i, piece.iter().copied());
                    }
                }
            }
        }
    }
    out
}

/// The inputs of a run: corpus mutations, `generated`, and random bytes.
fn inputs(seeds: Vec<Vec<u8>>, generated: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let n = seeds.len();
    let mutated = (
        0..n,
        0..n,
        proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u8>()), 0..8),
    )
        .prop_map(move |(a, b, edits)| mutate(&seeds, a, b, &edits));
    prop_oneof![
        4 => mutated,
        4 => generated,
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
    .boxed()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Fuzzes `check` with the corpus of `target` and `generated` (see the module docs).
pub(crate) fn fuzz(
    manifest_dir: &str,
    target: &str,
    check: fn(&[u8]),
    generated: BoxedStrategy<Vec<u8>>,
) {
    let seeds: Vec<Vec<u8>> = corpus(manifest_dir, target)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let strategy = inputs(seeds, generated);
    let secs = env_u64("PARLEY_FUZZ_SECS");
    let cases = env_u64("PARLEY_FUZZ_CASES").unwrap_or(256).max(1) as u32;
    let deadline = secs.map(|s| Instant::now() + Duration::from_secs(s));
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 4096,
            ..Config::default()
        });
        let result = runner.run(&strategy, |input| {
            std::panic::catch_unwind(AssertUnwindSafe(|| check(&input))).map_err(|p| {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                TestCaseError::fail(why)
            })
        });
        total += u64::from(cases);
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => {
                let dir = root(manifest_dir).join("target").join("fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                let file = dir.join(format!("{target}-{hash:016x}"));
                std::fs::write(&file, &input).unwrap();
                panic!(
                    "{target}: {why}\n  input ({} bytes): {:?}\n  saved to {}",
                    input.len(),
                    String::from_utf8_lossy(&input),
                    file.display()
                );
            }
            Err(TestError::Abort(why)) => panic!("{target}: aborted: {why}"),
        }
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    eprintln!(
        "fuzz {target}: {total} generated inputs in {:.1} s, no failure",
        started.elapsed().as_secs_f64()
    );
}

/// A generator of strings made of `pieces` (chosen with repetition) and random characters.
pub(crate) fn text_of(pieces: &'static [&'static str], max: usize) -> BoxedStrategy<Vec<u8>> {
    let piece = prop_oneof![
        3 => proptest::sample::select(pieces).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..max)
        .prop_map(|p| p.concat().into_bytes())
        .boxed()
}
