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

#[path = "../../../fuzz/checks/slots.rs"]
mod checks;

use checks::check_slot_ranges;

const DIR: &str = env!("CARGO_MANIFEST_DIR");

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
