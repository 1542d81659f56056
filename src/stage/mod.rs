//! Stages: async functions over bounded channels of batches.
//!
//! Every stage has the same shape:
//!
//! ```text
//! async fn run(config, input: Receiver<Batch>, output: Sender<Batch>, ctx: Ctx) -> Result<Stats>
//! ```
//!
//! where [`Ctx`] carries the dead-letter output, the shutdown token and the metadata field
//! name. A stage ends when its input closes (after sending everything it still holds), or
//! early when its output closes. The shell binaries put a stage between an NDJSON reader
//! and writer; `pipeline` chains the same functions in one process.
//!
//! - [`ingest_http`]: the HTTP source: POST /events into a bounded hub, with back-pressure.
//! - [`ingest_kafka`]: the Kafka source, with exactly-once offsets shared with persist.
//! - [`validate`]: JSON Schema and quick field rules.
//! - [`enrich`]: set fields, timestamps, ids, lookups and jq transforms.
//! - [`persist`]: the sink: idempotent batched upserts into PostgreSQL or SQLite.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc::{Receiver, Sender};
use tokio_stream::wrappers::ReceiverStream;

use crate::dead_letter::DeadLetters;
use crate::event::{Batch, Event, Reject};
use crate::exit::{Error, Result};
use crate::shutdown::Shutdown;

pub mod enrich;
pub mod ingest_http;
pub mod ingest_kafka;
pub mod persist;
pub mod validate;

/// What every stage is handed besides its config and channels.
#[derive(Clone)]
pub struct Ctx {
    pub dead: DeadLetters,
    pub shutdown: Shutdown,
    /// The reserved metadata field (`--meta-field`).
    pub meta_field: Arc<str>,
}

impl Ctx {
    pub fn new(dead: DeadLetters, shutdown: Shutdown, meta_field: &str) -> Ctx {
        Ctx {
            dead,
            shutdown,
            meta_field: meta_field.into(),
        }
    }
}

/// Counts a stage reports when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events_in: u64,
    pub events_out: u64,
    pub rejected: u64,
}

/// The result of working on one batch: the events to pass on, and the rejected ones.
pub struct Worked {
    pub batch: Batch,
    pub rejects: Vec<(Event, Reject)>,
}

/// Runs `work` over every batch on up to `workers` threads at once and sends the results
/// on in input order, so output with N workers is byte-identical to output with one.
/// Rejects are written to the dead-letter output in input order too.
pub async fn map_ordered<W>(
    stage: &'static str,
    input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: &Ctx,
    workers: usize,
    work: W,
) -> Result<Stats>
where
    W: Fn(Batch) -> Worked + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let mut stats = Stats::default();
    let mut results = ReceiverStream::new(input)
        .map(|batch| {
            let work = work.clone();
            let n = batch.len() as u64;
            async move { (n, tokio::task::spawn_blocking(move || work(batch)).await) }
        })
        .buffered(workers.max(1));
    while let Some((n, res)) = results.next().await {
        let Worked { batch, rejects } =
            res.map_err(|e| Error::from(anyhow::anyhow!("{stage} worker panicked: {e}")))?;
        stats.events_in += n;
        stats.rejected += rejects.len() as u64;
        for (mut event, reject) in rejects {
            ctx.dead
                .write(stage, &batch.source, &mut event, &reject)
                .map_err(|e| Error::from(anyhow::Error::new(e).context("writing dead letters")))?;
        }
        stats.events_out += batch.len() as u64;
        if !batch.is_empty() && output.send(batch).await.is_err() {
            break; // Downstream is gone (say, `| head`): stop quietly.
        }
    }
    Ok(stats)
}

/// The default number of workers: twice the cores this process may use. The reader and
/// writer threads run beside the workers; with one worker per core, `validate` kept about
/// 1.6 of 2 cores busy, with two per core nearly both (15-25 % faster, ~5 MiB more RSS).
pub fn default_workers() -> usize {
    2 * std::thread::available_parallelism().map_or(2, usize::from)
}
