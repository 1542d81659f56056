//! `tap`: the events passing a point of a running chain, streamed to an operator over
//! `GET /tap?after=STAGE&limit=N&sample=P` (NDJSON) on `--metrics-listen`: "debugging by
//! inserting `tee`" on a pipeline that is already running.
//!
//! A point is the output of one stage (`after=validate`: what validate passes on; in the
//! shell form `after=reader` is the input). The wiring offers every batch leaving a tapped
//! stage to its point ([`Point::offer`]); with nobody listening that is one atomic load.
//! A listener takes each event with probability `sample` until it has `limit` of them.
//!
//! Bounded: a listener has a queue of [`QUEUE_CHUNKS`] chunks (one per batch, at most a
//! batch's lines each). The pipeline never waits for it: when the queue is full the
//! listener is cut off (its response ends, the cut is logged and counted in
//! `ndpipe_tap_cut_total`), and it can connect again. When the stage's output ends, so do
//! the responses.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::event::Batch;

/// How many chunks a listener may have waiting: with one chunk per batch of at most a
/// reader's 256 KiB, a listener that stops reading holds at most about 4 MiB before it is
/// cut off, and a reader keeping up with the network never comes near it.
pub const QUEUE_CHUNKS: usize = 16;

/// The points of one chain, by the name of the stage whose output each one is.
#[derive(Clone, Default)]
pub struct Taps(Arc<Vec<(String, Point)>>);

impl Taps {
    /// A point after each of `stages`; a name seen before gets `-2`, `-3`… so that
    /// `pipeline 'validate | validate'` has two points.
    pub fn new<'a>(stages: impl IntoIterator<Item = &'a str>) -> Taps {
        let mut points: Vec<(String, Point)> = Vec::new();
        for name in stages {
            let seen = points
                .iter()
                .filter(|(n, _)| n == name || n.starts_with(&format!("{name}-")))
                .count();
            let name = match seen {
                0 => name.to_owned(),
                n => format!("{name}-{}", n + 1),
            };
            points.push((name, Point::default()));
        }
        Taps(Arc::new(points))
    }

    /// The points in chain order.
    pub fn points(&self) -> impl Iterator<Item = &(String, Point)> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Point> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// Whether a tap response is still being served to a client reading along: the end of
    /// a run lets those finish.
    pub fn busy(&self) -> bool {
        self.0.iter().any(|(_, p)| p.busy())
    }

    /// The names, for an answer to a request naming none or an unknown one.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// One tap point; clones are the same point.
#[derive(Clone, Default)]
pub struct Point(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// How many listeners there are: read on every batch, so that a point nobody listens
    /// to costs one load.
    listening: AtomicUsize,
    listeners: Mutex<Vec<Listener>>,
    /// Every response body handed out, while it lives.
    bodies: Mutex<Vec<std::sync::Weak<Alive>>>,
}

struct Listener {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    /// Shared with its response body: set when it is cut off.
    alive: Arc<Alive>,
    sample: f64,
    /// Events still to send: none left ends the response.
    left: u64,
    who: String,
}

/// A listener's side: the chunks to stream as the response body.
pub struct Stream {
    chunks: tokio_stream::wrappers::ReceiverStream<Result<Bytes, Infallible>>,
    _alive: Arc<Alive>,
}

impl futures::Stream for Stream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.chunks).poll_next(cx)
    }
}

/// Whether a response body is still being served (the [`Stream`] lives) to a client that
/// was not cut off: the end of a run waits for those ([`Taps::busy`]), not for a client
/// that stopped reading.
#[derive(Default)]
struct Alive {
    cut: AtomicBool,
}

impl Point {
    /// Adds a listener taking each event with probability `sample` (0 < sample ≤ 1), until
    /// `limit` events have been sent (none: until it disconnects).
    pub fn listen(&self, sample: f64, limit: Option<u64>, who: String) -> Stream {
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let alive = Arc::new(Alive::default());
        self.0
            .bodies
            .lock()
            .expect("not poisoned")
            .push(Arc::downgrade(&alive));
        let mut listeners = self.0.listeners.lock().expect("not poisoned");
        listeners.push(Listener {
            tx,
            alive: alive.clone(),
            sample,
            left: limit.unwrap_or(u64::MAX),
            who,
        });
        self.0.listening.store(listeners.len(), Ordering::Release);
        Stream {
            chunks: tokio_stream::wrappers::ReceiverStream::new(rx),
            _alive: alive,
        }
    }

    /// Whether a response body of this point is still served to a client not cut off.
    fn busy(&self) -> bool {
        let mut bodies = self.0.bodies.lock().expect("not poisoned");
        bodies.retain(|b| b.strong_count() > 0);
        bodies
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .any(|a| !a.cut.load(Ordering::Relaxed))
    }

    /// The stage's side of the point: offers batches, and ends every listener's response
    /// when dropped (the stage's output has ended).
    pub fn feed(&self) -> Feed {
        Feed(self.clone())
    }

    fn close(&self) {
        let mut listeners = self.0.listeners.lock().expect("not poisoned");
        listeners.clear();
        self.0.listening.store(0, Ordering::Release);
    }

    fn offer(&self, batch: &Batch) {
        if self.0.listening.load(Ordering::Acquire) == 0 || batch.is_empty() {
            return;
        }
        let mut listeners = self.0.listeners.lock().expect("not poisoned");
        listeners.retain_mut(|l| {
            let mut chunk = Vec::new();
            for event in &batch.events {
                if l.left == 0 {
                    break;
                }
                if l.sample >= 1.0 || fastrand::f64() < l.sample {
                    chunk.extend_from_slice(event.bytes());
                    chunk.push(b'\n');
                    l.left -= 1;
                }
            }
            if !chunk.is_empty() {
                match l.tx.try_send(Ok(Bytes::from(chunk))) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(
                            "tap: {} reads slower than the pipeline runs: cut off",
                            l.who
                        );
                        metrics::counter!("ndpipe_tap_cut_total").increment(1);
                        l.alive.cut.store(true, Ordering::Relaxed);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            l.left > 0 && !l.tx.is_closed()
        });
        self.0.listening.store(listeners.len(), Ordering::Release);
    }
}

/// What the wiring holds for a tapped stage's output.
pub struct Feed(Point);

impl Feed {
    /// Hands (copies of) `batch`'s events to the listeners. Never waits: a listener whose
    /// queue is full is cut off, one that has gone or has its `limit` is removed.
    pub fn offer(&self, batch: &Batch) {
        self.0.offer(batch);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use tokio_stream::StreamExt;

    fn batch(n: u64) -> Batch {
        let events = (0..n)
            .map(|i| Event::from_json_text(format!("{{\"n\":{i}}}"), i + 1))
            .collect();
        Batch::new("t".into(), events)
    }

    async fn lines(stream: Stream) -> Vec<String> {
        let chunks: Vec<_> = stream.collect().await;
        let all: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        String::from_utf8(all)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn names_are_told_apart() {
        let taps = Taps::new(["reader", "validate", "validate", "enrich"]);
        assert_eq!(taps.names(), ["reader", "validate", "validate-2", "enrich"]);
    }

    #[tokio::test]
    async fn a_limit_ends_the_stream_and_a_full_queue_cuts_off() {
        let point = Point::default();
        let feed = point.feed();
        let limited = point.listen(1.0, Some(5), "a".into());
        let slow = point.listen(1.0, None, "b".into());
        feed.offer(&batch(3));
        feed.offer(&batch(3));
        assert_eq!(
            lines(limited).await,
            [
                "{\"n\":0}",
                "{\"n\":1}",
                "{\"n\":2}",
                "{\"n\":0}",
                "{\"n\":1}"
            ]
        );
        for _ in 0..QUEUE_CHUNKS {
            feed.offer(&batch(1));
        }
        // 2 + QUEUE_CHUNKS chunks offered to a queue of QUEUE_CHUNKS: cut off.
        assert_eq!(point.0.listening.load(Ordering::Relaxed), 0);
        assert_eq!(lines(slow).await.len(), 6 + QUEUE_CHUNKS - 2);
    }

    #[tokio::test]
    async fn sampling_takes_about_its_share() {
        let point = Point::default();
        let stream = point.listen(0.1, None, "c".into());
        let feed = point.feed();
        for _ in 0..10 {
            feed.offer(&batch(1000));
        }
        drop(feed);
        let n = lines(stream).await.len();
        assert!((800..1200).contains(&n), "{n} of 10000 at 0.1");
    }
}
