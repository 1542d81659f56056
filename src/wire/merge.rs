//! Several sources feeding one hub (`ingest-kafka … & ingest-http … | validate …`, or a
//! source stage and input files), as one source stage.
//!
//! Every source gets a clone of the same sender: each keeps its own order (its batches
//! arrive in the order it sent them) and its own acknowledgements; the hub closes when
//! the last of them ends. A source that fails ends the run, as any stage's failure does.

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::Batch;
use crate::exit::{Error, Result};
use crate::stage::{Ctx, Kind, Stage, Stats};

use super::Link;

/// The sources of one hub; its stats are their sums.
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
        _ctx: Ctx,
    ) -> BoxFuture<'static, Result<Stats>> {
        Box::pin(async move {
            let names: Vec<&'static str> = self.sources.iter().map(|l| l.stage.name()).collect();
            let mut tasks = FuturesUnordered::new();
            for (i, link) in self.sources.into_iter().enumerate() {
                let run = link.stage.run(super::closed(), output.clone(), link.ctx);
                let handle = tokio::spawn(run);
                tasks.push(async move { (i, handle.await) });
            }
            drop(output);
            let mut total = Stats::default();
            while let Some((i, joined)) = tasks.next().await {
                let s = joined
                    .map_err(|e| Error::from(anyhow::anyhow!("{} panicked: {e}", names[i])))??;
                total.events_in += s.events_in;
                total.events_out += s.events_out;
                total.rejected += s.rejected;
                total.stopped = total.stopped.take().or(s.stopped);
            }
            Ok(total)
        })
    }
}
