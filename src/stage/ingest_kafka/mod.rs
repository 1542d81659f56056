//! `ingest-kafka`: Kafka messages in, NDJSON events out, with their coordinates in the
//! metadata field.
//!
//! One thread polls a librdkafka consumer and copies the messages into batches; a second
//! one checks the payloads, adds the metadata field and sends the batches of events on,
//! in order. The reader side of back-pressure is the bounded channels (and librdkafka's
//! prefetch queue, kept small).
//!
//! Offsets, default mode: every batch carries one [`Ack`] that fires once all its lines
//! have been written (or dropped as dead letters by a later stage in the same process).
//! It stores the next offset of each partition the batch read; batches leave in order,
//! so what is stored is a contiguous watermark. Stored offsets are committed by
//! librdkafka every few seconds, on rebalance and at shutdown. That is "delivered to the
//! pipe".
//!
//! Exactly-once mode (`--offsets-from DATABASE_URL`): the offsets table that `persist`
//! writes in the same transaction as the rows is the source of truth. On every partition
//! assignment (inside the rebalance callback) each partition's row gets its `epoch`
//! incremented, and the partition starts at the stored `next_offset`; every event is
//! stamped with that epoch, so `persist` commits only while the epoch still matches
//! (an old owner is fenced).
//!
//! Files, one concern each: `args` (flags), `config`, `callbacks` (librdkafka's
//! rebalance, log and error callbacks), `consume` (the polling thread), `render` (the
//! rendering thread), `committed` (Kafka's committed offsets, asked patiently). The
//! exactly-once claims are [`crate::postgres::Claims`], shared with ingest-file.

use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::Batch;
use crate::exit::{Error, Result};
use crate::stage::{Ctx, Ended, Kind, Stage};

mod args;
mod callbacks;
mod committed;
mod config;
mod consume;
mod render;

pub use args::{Args, Format, Start};
pub use config::Config;

use consume::consume;

/// The source: consumes until shutdown, `--exit-at-end` or `--max-messages`.
pub async fn run(config: Config, output: Sender<Batch>, ctx: Ctx) -> Result<()> {
    let consumed = tokio::task::spawn_blocking(move || consume(config, output, ctx)).await;
    Error::joined("consumer", consumed)?
}

impl Stage for Config {
    fn name(&self) -> &'static str {
        "ingest-kafka"
    }

    fn kind(&self) -> Kind {
        Kind::Source
    }

    fn acknowledges(&self) -> bool {
        true
    }

    fn run(
        self: Box<Self>,
        _input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(async move {
            run(*self, output, ctx).await?;
            Ok(Ended::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::args::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("-10"), Ok(Start::FromEnd(10)));
        assert_eq!(parse_start("42"), Ok(Start::At(42)));
        assert_eq!(
            parse_start("@1700000000000"),
            Ok(Start::Time(1_700_000_000_000))
        );
        assert!(parse_start("soon").is_err());
    }
}
