//! The channel between two stages of `pipeline`: bounded in events *and* bytes, with a
//! policy for when it is full, and gauges of how full it is.
//!
//! A tokio channel bounds batches, not events or bytes, and has one policy (wait). So a
//! relay task sits between the two stages: it takes batches from the stage before (over a
//! one-batch channel), queues them while the queue is under both bounds, and hands them to
//! the stage after (over another one-batch channel). When the queue is full:
//!
//! - `block`: the relay stops taking batches, the one-batch channel fills, the stage before
//!   waits, and so on up to the source (Kafka stops fetching, HTTP answers 503, files stop
//!   being read);
//! - `drop-newest`: events arriving into a full queue are dropped;
//! - `drop-oldest`: the oldest queued events are dropped to make room (the seed's ring).
//!
//! A dropped event is handled: it is counted (in the tally of the stage the channel feeds,
//! `component_discarded_events_total`), kept
//! as a dead letter of kind `dropped` when there is a dead-letter output, and then
//! released, so its source may acknowledge it. A batch may take the queue past its bounds
//! by at most itself (one reader batch, about 256 KiB).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::{Receiver, Sender};
use tokio::sync::watch;

use crate::dead_letter::DeadLetters;
use crate::event::{Batch, Event, Reject};
use crate::exit::Result;
use crate::tally::Tally;
use crate::tap::Feed;

/// What a full channel does with new events (`--when-full`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: back-pressure all the way to the source.
    #[default]
    Block,
    /// Drop the oldest queued events to make room for new ones.
    DropOldest,
    /// Drop new events while the channel is full.
    DropNewest,
}

impl WhenFull {
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropOldest => "drop-oldest",
            WhenFull::DropNewest => "drop-newest",
        }
    }
}

/// The bounds and policy of every channel of a pipeline.
#[derive(Clone, Debug)]
pub struct Bounds {
    pub events: usize,
    pub bytes: u64,
    pub when_full: WhenFull,
}

/// How full one channel is, for `/metrics` and the progress lines.
#[derive(Debug, Default)]
pub struct Fill {
    pub events: AtomicU64,
    pub bytes: AtomicU64,
}

/// Runs the relay in front of the stage `tally` counts for until the stage before closes its output (then
/// the queue is handed on and the relay ends) or the stage after is gone.
pub async fn run(
    mut rx: Receiver<Batch>,
    tx: Sender<Batch>,
    mut limits: watch::Receiver<Bounds>,
    fill: Arc<Fill>,
    dead: DeadLetters,
    // The tally of the stage this channel feeds (`into`, by name): drops count there.
    tally: Tally,
    // The tap point of the stage before, if taps are served.
    mut tap: Option<Feed>,
) -> Result<()> {
    let into = tally.component();
    let labels = [("component", into)];
    let depth = metrics::gauge!("buffer_events", &labels);
    let size = metrics::gauge!("buffer_byte_size", &labels);
    let max_events = metrics::gauge!("buffer_max_event_size", &labels);
    let max_bytes = metrics::gauge!("buffer_max_byte_size", &labels);

    let mut queue = Queue::default();
    let mut open = true;
    // Whether the bounds may still change (their sender is alive).
    let mut live = true;
    loop {
        // The bounds as they are now: a reload may raise or lower them at any time.
        let bounds = limits.borrow_and_update().clone();
        max_events.set(bounds.events as f64);
        max_bytes.set(bounds.bytes as f64);
        let room = queue.events < bounds.events && queue.bytes < bounds.bytes;
        let take = open && (room || bounds.when_full != WhenFull::Block);
        tokio::select! {
            biased;
            permit = tx.reserve(), if !queue.batches.is_empty() => {
                let Ok(permit) = permit else { return Ok(()) }; // The stage after is gone.
                permit.send(queue.pop().expect("not empty"));
            }
            batch = rx.recv(), if take => match batch {
                Some(batch) => {
                    if let Some(tap) = &tap {
                        tap.offer(&batch);
                    }
                    let dropped = queue.push(batch, &bounds);
                    if !dropped.is_empty() {
                        let n = dropped.iter().map(Batch::len).sum::<usize>() as u64;
                        tally.dropped(n);
                        keep_dropped(dropped, &bounds, into, &dead)?;
                    }
                }
                None => {
                    open = false;
                    tap = None; // its listeners' responses end
                }
            },
            changed = limits.changed(), if live && (open || !queue.batches.is_empty()) => {
                live = changed.is_ok();
            }
            else => return Ok(()), // Closed and handed on.
        }
        fill.events.store(queue.events as u64, Ordering::Relaxed);
        fill.bytes.store(queue.bytes, Ordering::Relaxed);
        depth.set(queue.events as f64);
        size.set(queue.bytes as f64);
    }
}

/// Writes dropped events as dead letters when there is an output for them. Without one
/// they are only counted: dropping is a policy the user chose, not a reject.
fn keep_dropped(
    dropped: Vec<Batch>,
    bounds: &Bounds,
    into: &'static str,
    dead: &DeadLetters,
) -> Result<()> {
    if !dead.has_output() {
        return Ok(());
    }
    let reject = Reject::new(
        "dropped",
        format!(
            "the channel into {into} was full ({} events or {} bytes): dropped by --when-full {}",
            bounds.events,
            bounds.bytes,
            bounds.when_full.as_str()
        ),
    );
    for batch in dropped {
        let source = batch.source.clone();
        for mut event in batch.events {
            dead.keep("pipeline", &source, &mut event, &reject)?;
        }
    }
    Ok(())
}

/// Batches with their sizes in bytes, measured once: walking a batch's events from this
/// thread is not free (they were made on another core).
#[derive(Default)]
struct Queue {
    batches: VecDeque<(Batch, u64)>,
    events: usize,
    bytes: u64,
}

impl Queue {
    fn pop(&mut self) -> Option<Batch> {
        let (b, size) = self.batches.pop_front()?;
        self.events -= b.len();
        self.bytes -= size;
        Some(b)
    }

    /// Queues `batch` as the policy says; returns the events dropped.
    fn push(&mut self, mut batch: Batch, bounds: &Bounds) -> Vec<Batch> {
        let len_in = batch.len();
        let full = |q: &Queue| q.events >= bounds.events || q.bytes >= bounds.bytes;
        let mut dropped = Vec::new();
        match bounds.when_full {
            WhenFull::Block => {}
            WhenFull::DropNewest => {
                // Keep what fits; the rest of the batch is dropped.
                let mut keep = 0;
                let (mut events, mut bytes) = (self.events, self.bytes);
                for e in &batch.events {
                    if events >= bounds.events || bytes >= bounds.bytes {
                        break;
                    }
                    events += 1;
                    bytes += e.held_bytes();
                    keep += 1;
                }
                if keep < batch.len() {
                    let rest = batch.events.split_off(keep);
                    dropped.push(Batch::new(batch.source.clone(), rest));
                }
            }
            WhenFull::DropOldest => {}
        }
        if !batch.is_empty() {
            // Measured by the sender, when it did; taken, so a later change of the batch
            // is measured afresh.
            let size = match batch.bytes.take() {
                Some(n) if batch.len() == len_in => n,
                _ => batch.size(),
            };
            self.events += batch.len();
            self.bytes += size;
            self.batches.push_back((batch, size));
        }
        if bounds.when_full == WhenFull::DropOldest {
            // Drop from the front until under both bounds again.
            while full(self) {
                let Some((front, front_size)) = self.batches.front_mut() else {
                    break;
                };
                // As many of its oldest events as it takes (all of them if that is not enough).
                let (mut events, mut bytes, mut n) = (self.events, self.bytes, 0);
                while n < front.len() && (events >= bounds.events || bytes >= bounds.bytes) {
                    events -= 1;
                    bytes -= front.events[n].held_bytes();
                    n += 1;
                }
                let gone: Vec<_> = front.events.drain(..n).collect();
                let source = front.source.clone();
                let gone_size = gone.iter().map(Event::held_bytes).sum::<u64>();
                *front_size -= gone_size;
                self.events -= gone.len();
                self.bytes -= gone_size;
                if front.is_empty() {
                    self.batches.pop_front();
                }
                dropped.push(Batch::new(source, gone));
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ids: std::ops::Range<u32>) -> Batch {
        let events = ids
            .map(|i| Event::from_line(format!("{{\"i\":{i}}}").into_bytes(), i as u64))
            .collect();
        Batch::new("t".into(), events)
    }

    fn ids(batches: &[Batch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| b.events.iter())
            .map(|e| String::from_utf8_lossy(e.bytes()).into_owned())
            .collect()
    }

    fn bounds(when_full: WhenFull) -> Bounds {
        Bounds {
            events: 4,
            bytes: 1 << 20,
            when_full,
        }
    }

    #[test]
    fn drop_newest_keeps_what_fits() {
        let mut q = Queue::default();
        let b = bounds(WhenFull::DropNewest);
        assert!(q.push(batch(0..3), &b).is_empty());
        let dropped = q.push(batch(3..6), &b);
        assert_eq!(ids(&dropped), ["{\"i\":4}", "{\"i\":5}"]);
        assert_eq!(q.events, 4);
        assert_eq!(ids(&q.push(batch(6..7), &b)), ["{\"i\":6}"]);
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let mut q = Queue::default();
        let b = bounds(WhenFull::DropOldest);
        assert!(q.push(batch(0..3), &b).is_empty());
        let dropped = q.push(batch(3..6), &b);
        assert_eq!(ids(&dropped), ["{\"i\":0}", "{\"i\":1}", "{\"i\":2}"]);
        let kept: Vec<Batch> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(ids(&kept), ["{\"i\":3}", "{\"i\":4}", "{\"i\":5}"]);
        assert_eq!((q.events, q.bytes), (0, 0));
    }

    #[test]
    fn block_queues_past_the_bound_by_one_batch_at_most() {
        let mut q = Queue::default();
        let b = bounds(WhenFull::Block);
        assert!(q.push(batch(0..3), &b).is_empty());
        assert!(q.push(batch(3..6), &b).is_empty());
        assert_eq!(q.events, 6);
    }
}
