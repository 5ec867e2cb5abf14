//! What one process has seen of each channel: the highest seq and its id, from which it
//! finds the gaps to fill through history. Pure: no I/O.

use std::collections::BTreeMap;

use parley_protocol::Id;

/// The highest (seq, id) seen per channel. A channel without an entry has no baseline: the
/// process does not know from where it should have everything (it just joined again).
#[derive(Debug, Clone, Default)]
pub struct Channels {
    seen: BTreeMap<Id, (u64, Id)>,
}

impl Channels {
    /// Sets the baseline of `channel` to "nothing yet, everything from seq 1": for a
    /// channel joined before its first message.
    pub fn from_start(&mut self, channel: Id) {
        self.seen.insert(channel, (0, Id(0)));
    }

    /// [`Self::from_start`] unless `channel` has a baseline already.
    pub fn from_start_if_unknown(&mut self, channel: Id) {
        self.seen.entry(channel).or_insert((0, Id(0)));
    }

    /// Forgets `channel` (at a join or leave): no gap is filled until a message sets a new
    /// baseline.
    pub fn forget(&mut self, channel: Id) {
        self.seen.remove(&channel);
    }

    /// A message was received. Returns the id after which messages were skipped (seq
    /// jumped past the next one) for a history fill up to this message; a message at or
    /// below the highest seq leaves the state as it is.
    pub fn observe(&mut self, channel: Id, id: Id, seq: u64) -> Option<Id> {
        match self.seen.get_mut(&channel) {
            None => {
                self.seen.insert(channel, (seq, id));
                None
            }
            Some(last) if seq > last.0 => {
                let gap = (seq > last.0 + 1).then_some(last.1);
                *last = (seq, id);
                gap
            }
            Some(_) => None,
        }
    }

    /// Channels whose `last_seq` (from `ready`) is past what was seen, with the id to fill
    /// after; channels without a baseline are left out.
    pub fn behind(&self, cursors: &[(Id, u64)]) -> Vec<(Id, Id)> {
        cursors
            .iter()
            .filter_map(|(c, last_seq)| {
                let (seq, id) = self.seen.get(c)?;
                (last_seq > seq).then_some((*c, *id))
            })
            .collect()
    }

    /// Every channel with a baseline and the id to catch up after.
    pub fn baselines(&self) -> Vec<(Id, Id)> {
        self.seen.iter().map(|(c, (_, id))| (*c, *id)).collect()
    }

    /// The highest id seen in any channel (for `resume_after`).
    pub fn highest(&self) -> Option<Id> {
        self.seen.values().map(|v| v.1).filter(|id| id.0 > 0).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Id = Id(7);

    #[test]
    fn a_skipped_seq_asks_for_a_fill_after_the_last_id() {
        let mut ch = Channels::default();
        ch.from_start(C);
        assert_eq!(ch.observe(C, Id(10), 1), None);
        assert_eq!(ch.observe(C, Id(11), 2), None);
        assert_eq!(ch.observe(C, Id(15), 5), Some(Id(11)));
        // Late or repeated messages change nothing.
        assert_eq!(ch.observe(C, Id(12), 3), None);
        assert_eq!(ch.observe(C, Id(15), 5), None);
        assert_eq!(ch.highest(), Some(Id(15)));
    }

    #[test]
    fn from_start_fills_from_the_first_message() {
        let mut ch = Channels::default();
        ch.from_start(C);
        assert_eq!(ch.observe(C, Id(30), 3), Some(Id(0)));
        assert_eq!(ch.highest(), Some(Id(30)));
    }

    #[test]
    fn a_forgotten_channel_takes_its_next_message_as_the_baseline() {
        let mut ch = Channels::default();
        ch.from_start(C);
        ch.observe(C, Id(10), 1);
        ch.forget(C);
        assert_eq!(ch.behind(&[(C, 9)]), []);
        assert_eq!(ch.observe(C, Id(40), 9), None);
        assert_eq!(ch.behind(&[(C, 9), (Id(8), 3)]), []);
        assert_eq!(ch.behind(&[(C, 11)]), [(C, Id(40))]);
        assert_eq!(ch.baselines(), [(C, Id(40))]);
    }
}
