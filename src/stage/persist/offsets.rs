//! Source offsets: which positions are safe to record as consumed.
//!
//! Events from a source that can resume carry a [`Position`] in the metadata field (see
//! [`crate::position`]: Kafka's coordinates, or the generic form), with `epoch` in
//! exactly-once mode and `split` when `enrich --jq` made several events of one input.
//! `persist` writes `next_offset = O + 1` for a stream partition, in the same transaction
//! as the rows, only when
//!
//! - every event it has received with an offset ≤ O is committed (or dead-lettered), and
//! - for O itself, it holds every event derived from that message (the split count), or it
//!   has received a later offset of the partition (stages keep per-partition order, so
//!   nothing of O can still come: the rest was dropped on the way).
//!
//! With `--connections N` batches commit out of order, so each transaction records the
//! watermark as it will stand once *that* transaction and all earlier committed ones are in;
//! the table keeps the greatest value written. After the input ends a last transaction
//! records what is left.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use crate::position::{Position, StreamKey};

/// A row of the offsets table to write: `next_offset` for a partition, checked against
/// `epoch` when the events carried one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub part: Arc<StreamKey>,
    pub next_offset: i64,
    pub epoch: Option<i64>,
}

#[derive(Debug, Default)]
struct Slot {
    received: u32,
    done: u32,
    expected: u32,
}

#[derive(Debug, Default)]
struct Part {
    pending: BTreeMap<i64, Slot>,
    /// The greatest offset received.
    max_seen: i64,
    /// The greatest `next_offset` committed.
    committed: i64,
    epoch: Option<i64>,
}

/// Received and committed events per partition.
#[derive(Debug, Default)]
pub struct Tracker {
    parts: HashMap<Arc<StreamKey>, Part>,
    /// Partitions whose owner has moved on: epoch below this is fenced.
    fenced: HashMap<Arc<StreamKey>, i64>,
}

impl Tracker {
    /// Registers an event as received (in input order).
    pub fn receive(&mut self, pos: &Position) {
        let part = self.parts.entry(pos.key.clone()).or_insert_with(|| Part {
            max_seen: i64::MIN,
            committed: i64::MIN,
            ..Part::default()
        });
        part.max_seen = part.max_seen.max(pos.offset);
        if pos.epoch.is_some() {
            part.epoch = part.epoch.max(pos.epoch);
        }
        let slot = part.pending.entry(pos.offset).or_default();
        slot.received += 1;
        slot.expected = slot.expected.max(pos.count.max(1));
    }

    /// Marks an event handled outside a transaction (dead-lettered before loading).
    pub fn handled(&mut self, pos: &Position) {
        if let Some(slot) = self
            .parts
            .get_mut(&pos.key)
            .and_then(|p| p.pending.get_mut(&pos.offset))
        {
            slot.done += 1;
        }
    }

    /// True when events of this partition and epoch must be dropped: a newer owner exists.
    pub fn is_fenced(&self, pos: &Position) -> bool {
        match (self.fenced.get(&pos.key), pos.epoch) {
            (Some(&min), Some(e)) => e < min,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Records that the owner of `part` moved on to `epoch` or later.
    pub fn fence(&mut self, part: &Arc<StreamKey>, epoch: i64) {
        let e = self.fenced.entry(part.clone()).or_insert(epoch);
        *e = (*e).max(epoch);
        self.parts.remove(part);
    }

    /// The offsets rows a transaction holding `batch` (whose events are counted as done)
    /// may write: every partition whose watermark would move past what is committed.
    pub fn plan(&self, batch: &[&Position]) -> Vec<Commit> {
        let mut extra: HashMap<(&Arc<StreamKey>, i64), u32> = HashMap::new();
        for pos in batch {
            *extra.entry((&pos.key, pos.offset)).or_default() += 1;
        }
        let mut commits: Vec<Commit> = self
            .parts
            .iter()
            .filter_map(|(key, part)| {
                let mut next = None;
                for (&offset, slot) in &part.pending {
                    let done = slot.done + extra.get(&(key, offset)).copied().unwrap_or(0);
                    let all_here = slot.received >= slot.expected || part.max_seen > offset;
                    if done < slot.received || !all_here {
                        break;
                    }
                    next = Some(offset + 1);
                }
                let next = next.filter(|&n| n > part.committed)?;
                Some(Commit {
                    part: key.clone(),
                    next_offset: next,
                    epoch: part.epoch,
                })
            })
            .collect();
        commits.sort_by(|a, b| a.part.cmp(&b.part));
        commits
    }

    /// Records a committed transaction: its events are done and its offsets written.
    pub fn committed(&mut self, batch: &[&Position], commits: &[Commit]) {
        for pos in batch {
            self.handled(pos);
        }
        for c in commits {
            if let Some(part) = self.parts.get_mut(&c.part) {
                part.committed = part.committed.max(c.next_offset);
                let keep = part.pending.split_off(&part.committed);
                part.pending = keep;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(part: &Arc<StreamKey>, offset: i64, count: u32) -> Position {
        Position {
            key: part.clone(),
            offset,
            epoch: None,
            count,
        }
    }

    fn key() -> Arc<StreamKey> {
        Arc::new(StreamKey {
            scope: "g".into(),
            stream: "t".into(),
            partition: 0,
        })
    }

    #[test]
    fn watermark_waits_for_earlier_offsets() {
        let k = key();
        let mut t = Tracker::default();
        let (a, b, c) = (pos(&k, 10, 1), pos(&k, 11, 1), pos(&k, 12, 1));
        for p in [&a, &b, &c] {
            t.receive(p);
        }
        // A transaction holding 11 and 12 alone may not move past 10.
        assert!(t.plan(&[&b, &c]).is_empty());
        let plan = t.plan(&[&a]);
        assert_eq!(plan[0].next_offset, 11);
        t.committed(&[&a], &plan);
        // Now 11 and 12 together reach 13.
        assert_eq!(t.plan(&[&b, &c])[0].next_offset, 13);
    }

    #[test]
    fn split_message_needs_all_parts_or_a_later_offset() {
        let k = key();
        let mut t = Tracker::default();
        let first = pos(&k, 5, 3);
        t.receive(&first);
        t.receive(&first);
        // Two of three parts: offset 5 is not complete.
        assert!(t.plan(&[&first, &first]).is_empty());
        // The third part came... no: a later offset arrived, so the third was dropped.
        let later = pos(&k, 6, 1);
        t.receive(&later);
        assert_eq!(t.plan(&[&first, &first])[0].next_offset, 6);
        assert_eq!(t.plan(&[&first, &first, &later])[0].next_offset, 7);
    }

    #[test]
    fn dead_letters_count_as_handled_and_fencing_drops() {
        let k = key();
        let mut t = Tracker::default();
        let a = pos(&k, 1, 1);
        let b = pos(&k, 2, 1);
        t.receive(&a);
        t.receive(&b);
        t.handled(&a);
        assert_eq!(t.plan(&[&b])[0].next_offset, 3);
        let mut e = pos(&k, 3, 1);
        e.epoch = Some(4);
        t.fence(&k, 5);
        assert!(t.is_fenced(&e));
        e.epoch = Some(5);
        assert!(!t.is_fenced(&e));
    }
}
