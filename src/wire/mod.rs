//! The wiring: runs a chain of stages, each one's output the next one's input through a
//! bounded channel. The shell form of a command is the chain `[reader, stage, writer]`
//! ([`crate::shell`]); `pipeline` runs `[source, stage, …, sink]` the same way.
//!
//! How a chain ends is decided here, once, by the kinds of its stages:
//!
//! - Every stage ends on its own: the chain's stats, in order.
//! - A source fails while running (a corrupt input file, a broker gone): input stops
//!   everywhere (shutdown), the rest of the chain drains and commits what is in flight,
//!   then the run fails with the source's error. Anything another source acknowledged
//!   is kept.
//! - Any other stage fails, or a source fails during shutdown: the run ends at once with
//!   that error (a source that could not write what it had acknowledged fails without
//!   waiting on a stalled writer).
//! - The last stage's output closed (`| head`, a broken pipe): after a sink it is only a
//!   copy, and the sink loads on; after a source, shutdown starts (HTTP answers 503, Kafka
//!   stops fetching) and the source's own end says what it could not write; in a chain of
//!   filters it ends the run quietly (exit 0, the rest unread).
//!
//! - [`relay`]: `pipeline`'s channels, bounded in events and bytes, with `--when-full`.
//! - [`merge`]: several sources feeding one hub.

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use crate::dead_letter::DeadLetters;
use crate::event::Batch;
use crate::exit::{Error, Result};
use crate::stage::{Ctx, Ended, Kind, Stage, Stats};
use crate::tally::Tally;
use crate::tap::{Feed, Point};

pub mod merge;
pub mod relay;

use relay::{Bounds, Fill};
use std::sync::Arc;

/// A stage with the context it runs with.
pub struct Link {
    pub stage: Box<dyn Stage>,
    pub ctx: Ctx,
    /// The tap point of the stage's output ([`crate::tap`]), when an operator endpoint
    /// serves taps: every batch the stage sends is offered to it, with no task added on
    /// the way — by `pipeline`'s relay after it, by the output writer when the output
    /// writer is next, or by the stage itself when it [`Stage::offers_taps`]. A point of
    /// a stage in the middle of a plain [`chain`] (no relays) is not served: the shell
    /// form has none.
    pub tap: Option<Point>,
}

impl Link {
    /// `stage` run with `ctx`, counting into a new tally of its own (listed for
    /// `/metrics`): what the summaries and progress lines then read ([`Link::tally`]).
    pub fn new(stage: Box<dyn Stage>, mut ctx: Ctx) -> Link {
        ctx.tally = Tally::new(stage.name());
        Link {
            stage,
            ctx,
            tap: None,
        }
    }

    /// Gives the link a tally of its own unless it has one.
    fn counted(mut self) -> Link {
        if self.ctx.tally.is_pending() {
            self.ctx.tally = Tally::new(self.stage.name());
        }
        self
    }

    pub fn tally(&self) -> Tally {
        self.ctx.tally.clone()
    }
}

/// Runs `links` as a chain with channels of `capacity` batches between them; returns
/// every stage's stats (its tally's counts and how it ended), in chain order.
pub async fn chain(links: Vec<Link>, capacity: usize) -> Result<Vec<Stats>> {
    run(links, Channels::Batches(capacity)).await
}

/// Runs `links` as a chain with a [`relay`] in front of every stage but the first and the
/// last: channels bounded by `bounds`, filled as `fills` (one per relay) show. Dropped
/// events go to `dead` when it has an output. The last link is the output (stdout): the
/// stage before it writes into a channel of [`OUTPUT_BATCHES`], so a stalled output
/// fills the relay in front of that stage, where `--when-full` applies.
pub async fn chain_bounded(
    links: Vec<Link>,
    bounds: tokio::sync::watch::Receiver<Bounds>,
    fills: Vec<Arc<Fill>>,
    dead: DeadLetters,
) -> Result<Vec<Stats>> {
    assert_eq!(fills.len() + 2, links.len(), "a relay between two stages");
    run(
        links,
        Channels::Bounded {
            bounds,
            fills,
            dead,
        },
    )
    .await
}

/// The input of a source: a channel closed from the start.
fn closed() -> mpsc::Receiver<Batch> {
    mpsc::channel(1).1
}

/// Batches between the last stage and the output: enough to keep the writer busy while
/// the stage works on the next one.
pub const OUTPUT_BATCHES: usize = 2;

enum Channels {
    /// A plain channel of this many batches (the shell form: a reader, a stage, a writer).
    Batches(usize),
    Bounded {
        /// Changed live by `pipeline`'s reload.
        bounds: tokio::sync::watch::Receiver<Bounds>,
        fills: Vec<Arc<Fill>>,
        dead: DeadLetters,
    },
}

async fn run(links: Vec<Link>, channels: Channels) -> Result<Vec<Stats>> {
    let n = links.len();
    assert!(n > 0, "a chain has stages");
    let links: Vec<Link> = links.into_iter().map(Link::counted).collect();
    let kinds: Vec<Kind> = links.iter().map(|l| l.stage.kind()).collect();
    let names: Vec<&'static str> = links.iter().map(|l| l.stage.name()).collect();
    let acknowledges = links[0].stage.acknowledges();
    let shutdown = links[0].ctx.shutdown.clone();
    let tallies: Vec<Tally> = links.iter().map(Link::tally).collect();

    // The first stage's input is closed from the start; the last stage's output goes
    // nowhere (a sink that passes copies on finds it closed, and carries on).
    let mut next_rx = closed();
    let mut tasks = FuturesUnordered::new();
    let mut relays = FuturesUnordered::new();
    // The tap point of the stage before the output writer, which the writer offers to.
    let mut into_writer: Option<Feed> = None;
    for (i, mut link) in links.into_iter().enumerate() {
        if let Some(feed) = into_writer.take() {
            link.ctx.tap = Some(Arc::new(feed));
        }
        let mut tap = link.tap.take().filter(|_| i + 1 < n).map(|p| p.feed());
        if link.stage.offers_taps() {
            link.ctx.tap = tap.take().map(Arc::new);
        } else if i + 2 == n {
            into_writer = tap.take();
        }
        let (tx, rx) = match &channels {
            Channels::Bounded {
                bounds,
                fills,
                dead,
            } if i + 2 < n => {
                // stage i → (one batch) → relay → (one batch) → stage i + 1
                let (tx, relay_rx) = mpsc::channel(1);
                let (relay_tx, rx) = mpsc::channel(1);
                let relay = relay::run(
                    relay_rx,
                    relay_tx,
                    bounds.clone(),
                    fills[i].clone(),
                    dead.clone(),
                    tallies[i + 1].clone(),
                    tap,
                );
                relays.push(tokio::spawn(relay));
                (tx, rx)
            }
            Channels::Bounded { .. } => mpsc::channel(OUTPUT_BATCHES),
            Channels::Batches(capacity) => mpsc::channel(*capacity.max(&1)),
        };
        let input = std::mem::replace(&mut next_rx, rx);
        let run = link.stage.run(input, tx, link.ctx);
        let handle = tokio::spawn(run);
        tasks.push(async move { (i, handle.await) });
    }
    drop(next_rx);

    let mut ended: Vec<Option<Ended>> = vec![None; n];
    // An output error of the last stage after a source: kept until the source has ended.
    let mut closed_output: Option<Error> = None;
    // A source's failure while it ran: kept until the rest of the chain has drained.
    let mut source_failed: Option<Error> = None;
    while let Some((i, joined)) = tasks.next().await {
        let result = Error::joined(names[i], joined).and_then(|r| r);
        match result {
            Ok(e) => ended[i] = Some(e),
            Err(e) if i == n - 1 && n > 1 => {
                let upstream = &kinds[..i];
                if e.is_broken_pipe() && upstream[1..].contains(&Kind::Sink) {
                    // A sink's output is only a copy: it loads all of its input.
                    ended[i] = Some(Ended::default());
                } else if acknowledges {
                    // A server or consumer: stop taking input; it then reports what it
                    // had acknowledged but could not write.
                    shutdown.trigger();
                    closed_output = Some(e);
                    ended[i] = Some(Ended::default());
                } else {
                    return Err(e);
                }
            }
            Err(e) if i == 0 && n > 1 && !shutdown.is_triggered() => {
                // Its output is closed now: the next stages drain what it sent.
                shutdown.trigger();
                source_failed = Some(e);
                ended[i] = Some(Ended::default());
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = closed_output.or(source_failed) {
        return Err(e);
    }
    // Every stage has ended, so every relay has handed on or dropped what it held.
    while let Some(relay) = relays.next().await {
        Error::joined("a channel relay", relay)??;
    }
    Ok(ended
        .into_iter()
        .zip(&tallies)
        .map(|(e, t)| Stats::of(t.get(), t.figures(), e.expect("every stage ended")))
        .collect())
}
