//! Slots and the shard map: `slot = hash(channel_id) mod 4096`; each shard owns slot ranges,
//! and together the ranges must cover 0..4096 exactly once.

use crate::{SLOT_COUNT, hash_id};

/// The slot of a channel.
pub fn slot_of(channel_id: u64) -> u16 {
    (hash_id(channel_id) % u64::from(SLOT_COUNT)) as u16
}

/// An inclusive range of slots, written `0-2047` (or `7` for one slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
}

impl SlotRange {
    pub fn contains(self, slot: u16) -> bool {
        (self.start..=self.end).contains(&slot)
    }
}

impl std::fmt::Display for SlotRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl std::str::FromStr for SlotRange {
    type Err = ShardMapError;

    fn from_str(s: &str) -> Result<Self, ShardMapError> {
        let bad = || ShardMapError::Invalid(format!("`{s}` is not a slot range like 0-2047"));
        let (a, b) = match s.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let start: u16 = a.parse().map_err(|_| bad())?;
        let end: u16 = b.parse().map_err(|_| bad())?;
        if start > end || end >= SLOT_COUNT {
            return Err(ShardMapError::Invalid(format!(
                "slot range `{s}` must be ascending and within 0-{}",
                SLOT_COUNT - 1
            )));
        }
        Ok(SlotRange { start, end })
    }
}

/// Why a set of slot assignments is not a shard map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardMapError {
    /// Slots no shard owns.
    Gap {
        from: u16,
        to: u16,
    },
    /// Slots two shards claim.
    Overlap {
        from: u16,
        to: u16,
        first: String,
        second: String,
    },
    Invalid(String),
}

impl std::fmt::Display for ShardMapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardMapError::Gap { from, to } => write!(f, "slots {from}-{to} belong to no shard"),
            ShardMapError::Overlap {
                from,
                to,
                first,
                second,
            } => {
                write!(
                    f,
                    "slots {from}-{to} are claimed by both {first} and {second}"
                )
            }
            ShardMapError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ShardMapError {}

/// Which shard owns each slot.
#[derive(Debug, Clone)]
pub struct ShardMap<T> {
    owner: Vec<u16>,
    shards: Vec<T>,
}

impl<T> ShardMap<T> {
    /// Builds the map from each shard's ranges; `name` names a shard in error messages.
    pub fn build(
        shards: Vec<(T, Vec<SlotRange>)>,
        name: impl Fn(&T) -> String,
    ) -> Result<Self, ShardMapError> {
        const NONE: u16 = u16::MAX;
        if shards.len() >= usize::from(NONE) {
            return Err(ShardMapError::Invalid("too many shards".into()));
        }
        let mut owner = vec![NONE; usize::from(SLOT_COUNT)];
        for (i, (shard, ranges)) in shards.iter().enumerate() {
            for r in ranges {
                for slot in r.start..=r.end {
                    let prev = owner[usize::from(slot)];
                    if prev != NONE {
                        // Report the whole overlapping stretch.
                        let mut to = slot;
                        while to < r.end && owner[usize::from(to) + 1] == prev {
                            to += 1;
                        }
                        return Err(ShardMapError::Overlap {
                            from: slot,
                            to,
                            first: name(&shards[usize::from(prev)].0),
                            second: name(shard),
                        });
                    }
                    owner[usize::from(slot)] = i as u16;
                }
            }
        }
        if let Some(from) = owner.iter().position(|o| *o == NONE) {
            let to = owner[from..]
                .iter()
                .position(|o| *o != NONE)
                .map_or(SLOT_COUNT - 1, |n| (from + n - 1) as u16);
            return Err(ShardMapError::Gap {
                from: from as u16,
                to,
            });
        }
        Ok(Self {
            owner,
            shards: shards.into_iter().map(|(s, _)| s).collect(),
        })
    }

    /// The shard owning `slot`.
    pub fn shard(&self, slot: u16) -> &T {
        &self.shards[usize::from(self.owner[usize::from(slot % SLOT_COUNT)])]
    }

    /// The shard holding `channel_id`'s messages.
    pub fn shard_of(&self, channel_id: u64) -> &T {
        self.shard(slot_of(channel_id))
    }

    /// Index of the shard holding `channel_id` (into [`ShardMap::shards`]).
    pub fn index_of(&self, channel_id: u64) -> usize {
        usize::from(self.owner[usize::from(slot_of(channel_id))])
    }

    pub fn shards(&self) -> &[T] {
        &self.shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> SlotRange {
        s.parse().unwrap()
    }

    #[test]
    fn parses_ranges() {
        assert_eq!(
            r("0-2047"),
            SlotRange {
                start: 0,
                end: 2047
            }
        );
        assert_eq!(r(" 7 "), SlotRange { start: 7, end: 7 });
        assert_eq!(r("7").to_string(), "7");
        for bad in ["", "a-b", "10-5", "0-4096", "-1"] {
            assert!(bad.parse::<SlotRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_full_cover_routes_every_slot() {
        let map = ShardMap::build(
            vec![
                ("a", vec![r("0-2047")]),
                ("b", vec![r("2048-4000"), r("4001-4095")]),
            ],
            |s| s.to_string(),
        )
        .unwrap();
        assert_eq!(*map.shard(0), "a");
        assert_eq!(*map.shard(2047), "a");
        assert_eq!(*map.shard(2048), "b");
        assert_eq!(*map.shard(4095), "b");
        let mut counts = [0usize; 2];
        for id in 0..100_000u64 {
            counts[map.index_of(id * 7919)] += 1;
        }
        assert!(
            counts.iter().all(|c| *c > 45_000),
            "channels spread evenly: {counts:?}"
        );
    }

    #[test]
    fn gaps_and_overlaps_are_named() {
        let err = ShardMap::build(
            vec![("a", vec![r("0-2047")]), ("b", vec![r("2050-4095")])],
            |s| s.to_string(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ShardMapError::Gap {
                from: 2048,
                to: 2049
            }
        );
        assert_eq!(err.to_string(), "slots 2048-2049 belong to no shard");
        let err = ShardMap::build(
            vec![("a", vec![r("0-2100")]), ("b", vec![r("2048-4095")])],
            |s| s.to_string(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "slots 2048-2100 are claimed by both a and b"
        );
        let err = ShardMap::build(vec![("a", vec![r("0-4094")])], |s| s.to_string()).unwrap_err();
        assert_eq!(
            err,
            ShardMapError::Gap {
                from: 4095,
                to: 4095
            }
        );
    }
}
