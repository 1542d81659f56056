//! The wiring: runs a chain of stages, each one's output the next one's input through a
//! bounded channel. The shell form of a command is the chain `[reader, stage, writer]`
//! ([`crate::shell`]); `pipeline` runs `[source, stage, …, sink]` the same way.
//!
//! How a chain ends is decided here, once, by the kinds of its stages:
//!
//! - Every stage ends on its own: the chain's stats, in order.
//! - A stage fails: the run ends at once with that error (a source that could not write
//!   what it had acknowledged fails without waiting on a stalled writer).
//! - The last stage's output closed (`| head`, a broken pipe): after a sink it is only a
//!   copy, and the sink loads on; after a source, shutdown starts (HTTP answers 503, Kafka
//!   stops fetching) and the source's own end says what it could not write; in a chain of
//!   filters it ends the run quietly (exit 0, the rest unread).

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use crate::exit::{Error, Result};
use crate::stage::{Ctx, Kind, Stage, Stats};

/// A stage with the context it runs with.
pub struct Link {
    pub stage: Box<dyn Stage>,
    pub ctx: Ctx,
}

/// Runs `links` as a chain with channels of `capacity` batches between them; returns
/// every stage's stats, in chain order.
pub async fn chain(links: Vec<Link>, capacity: usize) -> Result<Vec<Stats>> {
    let n = links.len();
    assert!(n > 0, "a chain has stages");
    let kinds: Vec<Kind> = links.iter().map(|l| l.stage.kind()).collect();
    let names: Vec<&'static str> = links.iter().map(|l| l.stage.name()).collect();
    let acknowledges = links[0].stage.acknowledges();
    let shutdown = links[0].ctx.shutdown.clone();

    // The first stage's input is closed from the start; the last stage's output goes
    // nowhere (a sink that passes copies on finds it closed, and carries on).
    let (first_tx, mut next_rx) = mpsc::channel(1);
    drop(first_tx);
    let mut tasks = FuturesUnordered::new();
    for (i, link) in links.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let input = std::mem::replace(&mut next_rx, rx);
        let run = link.stage.run(input, tx, link.ctx);
        let handle = tokio::spawn(run);
        tasks.push(async move { (i, handle.await) });
    }
    drop(next_rx);

    let mut stats: Vec<Option<Stats>> = vec![None; n];
    // An output error of the last stage after a source: kept until the source has ended.
    let mut closed_output: Option<Error> = None;
    while let Some((i, joined)) = tasks.next().await {
        let result = joined
            .map_err(|e| Error::from(anyhow::anyhow!("{} panicked: {e}", names[i])))
            .and_then(|r| r);
        match result {
            Ok(s) => stats[i] = Some(s),
            Err(e) if i == n - 1 && n > 1 => {
                let upstream = &kinds[..i];
                if e.is_broken_pipe() && upstream[1..].contains(&Kind::Sink) {
                    // A sink's output is only a copy: it loads all of its input.
                    stats[i] = Some(Stats::default());
                } else if acknowledges {
                    // A server or consumer: stop taking input; it then reports what it
                    // had acknowledged but could not write.
                    shutdown.trigger();
                    closed_output = Some(e);
                    stats[i] = Some(Stats::default());
                } else {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = closed_output {
        return Err(e);
    }
    Ok(stats
        .into_iter()
        .map(|s| s.expect("every stage ended"))
        .collect())
}
