//! The consistent-hash ring of chat-nodes: each channel has one owner node, which assigns
//! its Snowflake IDs and seqs. Each member has many points on the ring, so removing one
//! moves only its own channels, spread over the others.

use crate::hash_bytes;

/// Points per member.
const VNODES: u32 = 128;

/// A ring member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub name: String,
    /// Where other nodes reach it (its internal HTTP base URL).
    pub endpoint: String,
}

/// The ring, for one membership (one epoch).
#[derive(Debug, Clone, Default)]
pub struct Ring {
    members: Vec<Member>,
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub fn new(mut members: Vec<Member>) -> Self {
        members.sort();
        members.dedup_by(|a, b| a.name == b.name);
        let mut points = Vec::with_capacity(members.len() * VNODES as usize);
        for (i, m) in members.iter().enumerate() {
            for v in 0..VNODES {
                points.push((hash_bytes(format!("{}#{v}", m.name).as_bytes()), i));
            }
        }
        points.sort_unstable();
        Self { members, points }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member owning `channel_id`, `None` on an empty ring.
    pub fn owner(&self, channel_id: u64) -> Option<&Member> {
        if self.points.is_empty() {
            return None;
        }
        let h = crate::hash_id(channel_id);
        let i = self.points.partition_point(|(p, _)| *p < h);
        let (_, m) = self.points[if i == self.points.len() { 0 } else { i }];
        Some(&self.members[m])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> Member {
        Member {
            name: name.into(),
            endpoint: format!("http://{name}"),
        }
    }

    #[test]
    fn owners_are_stable_balanced_and_move_minimally() {
        let three = Ring::new(vec![m("n1"), m("n2"), m("n3")]);
        let same = Ring::new(vec![m("n3"), m("n1"), m("n2")]);
        let mut counts = std::collections::HashMap::new();
        for id in 0..30_000u64 {
            let owner = three.owner(id * 104_729).unwrap();
            assert_eq!(
                owner,
                same.owner(id * 104_729).unwrap(),
                "order of members does not matter"
            );
            *counts.entry(owner.name.clone()).or_insert(0) += 1;
        }
        assert!(
            counts.values().all(|c| (7_000..13_000).contains(c)),
            "balanced: {counts:?}"
        );

        let two = Ring::new(vec![m("n1"), m("n3")]);
        for id in 0..30_000u64 {
            let before = three.owner(id * 104_729).unwrap();
            let after = two.owner(id * 104_729).unwrap();
            if before.name != "n2" {
                assert_eq!(before, after, "only the removed member's channels move");
            }
        }
        assert!(Ring::new(vec![]).owner(1).is_none());
    }
}
