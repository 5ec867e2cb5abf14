//! The properties of the `slot_ranges` fuzz target: ChatShard slot ranges
//! (`SlotRange`'s `FromStr`) and the shard map built from them (`ShardMap::build`).
//!
//! The input is text like `a:0-2047,2048-4095;b:7`: shards separated by `;`, a name before
//! `:`, ranges separated by `,`. Properties: nothing panics; a range that parses is
//! ascending and within `0..4096`, and its `Display` parses back to it; a range with a number
//! of 4096 or more never parses; a map that builds gives every slot to exactly the one shard
//! whose ranges contain it, and a map that fails names a real gap or overlap.

//! Included (`#[path]`) by `crates/parley-crd/tests/fuzz_slots.rs` (the stable harness) and by
//! `fuzz/fuzz_targets/` (cargo fuzz).

use parley_crd::{SLOT_COUNT, ShardMap, ShardMapError, SlotRange};

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

pub(crate) fn check_slot_ranges(input: &[u8]) {
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
