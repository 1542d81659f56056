//! Several sources feeding one hub (`ingest-kafka … & ingest-http … | validate …`, or a
//! source stage and input files), as one source stage.
//!
//! Every source gets a clone of the same sender: each keeps its own order (its batches
//! arrive in the order it sent them) and its own acknowledgements; the hub closes when
//! the last of them ends. A source that fails stops the others (they stop taking input
//! and pass on what they hold, as on a signal); the hub fails once all have ended, with
//! the first failure and what the others could not keep. The wiring then lets the rest of
//! the chain drain (see [`super`]), so nothing another source acknowledged is dropped.

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::Batch;
use crate::exit::{Error, Result};
use crate::stage::{Ctx, Ended, Kind, Stage};

use super::Link;

/// The sources of one hub. Each counts into its own tally; the hub's link has an unlisted
/// one that counts nothing.
pub struct Merge {
    pub sources: Vec<Link>,
}

impl Stage for Merge {
    fn name(&self) -> &'static str {
        "sources"
    }

    fn kind(&self) -> Kind {
        Kind::Source
    }

    fn acknowledges(&self) -> bool {
        self.sources.iter().any(|l| l.stage.acknowledges())
    }

    fn run(
        self: Box<Self>,
        _input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(async move {
            let names: Vec<&'static str> = self.sources.iter().map(|l| l.stage.name()).collect();
            // Stops the sources, and only them, when one fails (a signal stops them too).
            let stop = ctx.shutdown.child();
            let mut tasks = FuturesUnordered::new();
            for (i, mut link) in self.sources.into_iter().map(Link::counted).enumerate() {
                link.ctx.shutdown = stop.clone();
                let run = link.stage.run(super::closed(), output.clone(), link.ctx);
                let handle = tokio::spawn(run);
                tasks.push(async move { (i, handle.await) });
            }
            drop(output);
            let mut total = Ended::default();
            let mut failed: Option<Error> = None;
            while let Some((i, joined)) = tasks.next().await {
                let ran = Error::joined(names[i], joined).and_then(|r| r);
                match ran {
                    Ok(s) => total.stopped = total.stopped.take().or(s.stopped),
                    Err(e) => {
                        stop.trigger();
                        failed = Some(match failed {
                            None => e,
                            // What a later one lost is said after the first failure.
                            Some(first) => Error {
                                exit: first.exit,
                                source: anyhow::anyhow!("{first}; and {}: {e}", names[i]),
                            },
                        });
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(total),
            }
        })
    }
}
