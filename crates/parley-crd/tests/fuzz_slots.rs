//! Fuzz target `slot_ranges` (see `fuzz/harness.rs` for how it runs): ChatShard slot ranges
//! (`SlotRange`'s `FromStr`) and the shard map built from them (`ShardMap::build`).
//!
//! The input is text like `a:0-2047,2048-4095;b:7`: shards separated by `;`, a name before
//! `:`, ranges separated by `,`. Properties: nothing panics; a range that parses is
//! ascending and within `0..4096`, and its `Display` parses back to it; a range with a number
//! of 4096 or more never parses; a map that builds gives every slot to exactly the one shard
//! whose ranges contain it, and a map that fails names a real gap or overlap.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use parley_crd::{SLOT_COUNT, ShardMap, ShardMapError, SlotRange};

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn check_range(s: &str) -> Option<SlotRange> {
    let parsed = s.parse::<SlotRange>();
    let numbers: Vec<u64> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().unwrap_or(u64::MAX))
        .collect();
    if numbers.iter().any(|n| *n >= u64::from(SLOT_COUNT)) {
        assert!(
            parsed.is_err(),
            "{s:?} has a slot outside 0..4096 yet parsed as {parsed:?}"
        );
    }
    let r = parsed.ok()?;
    assert!(
        r.start <= r.end && r.end < SLOT_COUNT,
        "{s:?} parsed as {r:?}"
    );
    assert_eq!(
        r.to_string().parse::<SlotRange>(),
        Ok(r),
        "Display of {r:?}"
    );
    Some(r)
}

fn check_slot_ranges(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let mut shards: Vec<(String, Vec<SlotRange>)> = Vec::new();
    for (i, shard) in text.split(';').enumerate().take(64) {
        let (name, ranges) = shard.split_once(':').unwrap_or(("", shard));
        let ranges: Vec<SlotRange> = ranges.split(',').filter_map(check_range).collect();
        shards.push((format!("{i}-{name}"), ranges));
    }
    let owners = |slot: u16| -> Vec<usize> {
        shards
            .iter()
            .enumerate()
            .filter(|(_, (_, rs))| rs.iter().any(|r| r.contains(slot)))
            .map(|(i, _)| i)
            .collect()
    };
    match ShardMap::build(
        shards
            .iter()
            .enumerate()
            .map(|(i, (_, r))| (i, r.clone()))
            .collect(),
        |i| shards[*i].0.clone(),
    ) {
        Ok(map) => {
            for slot in 0..SLOT_COUNT {
                assert_eq!(
                    vec![*map.shard(slot)],
                    owners(slot),
                    "slot {slot} of {text:?}"
                );
            }
        }
        Err(ShardMapError::Gap { from, to }) => {
            assert!(from <= to && to < SLOT_COUNT, "gap {from}-{to}");
            for slot in from..=to {
                assert!(
                    owners(slot).is_empty(),
                    "slot {slot} is owned, yet a gap of {text:?}"
                );
            }
        }
        Err(ShardMapError::Overlap { from, to, .. }) => {
            assert!(from <= to && to < SLOT_COUNT, "overlap {from}-{to}");
            // Two ranges claim each slot of it (of two shards, or twice of one).
            let claims = |slot: u16| -> usize {
                shards
                    .iter()
                    .flat_map(|(_, rs)| rs)
                    .filter(|r| r.contains(slot))
                    .count()
            };
            for slot in from..=to {
                assert!(claims(slot) > 1, "slot {slot} is no overlap of {text:?}");
            }
        }
        Err(ShardMapError::Invalid(m)) => panic!("build refused {text:?}: {m}"),
    }
}

const PIECES: &[&str] = &[
    "a:",
    "b:",
    "c:",
    ";",
    ",",
    "-",
    " ",
    "0",
    "1",
    "7",
    "2047",
    "2048",
    "4095",
    "4096",
    "65535",
    "65536",
    "99999",
    "+1",
    "-1",
    "0-4095",
    "0-2047",
    "2048-4095",
    "4095-0",
    "00004095",
    "\u{0663}",
    "\u{ff11}",
];

#[test]
fn slot_ranges_corpus() {
    harness::replay(DIR, "slot_ranges", check_slot_ranges);
}

#[test]
fn slot_ranges_fuzz() {
    harness::fuzz(
        DIR,
        "slot_ranges",
        check_slot_ranges,
        harness::text_of(PIECES, 24),
    );
}
