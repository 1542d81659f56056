//! Stages: the one contract every source, filter and sink is run by.
//!
//! A stage is built from a plain config (never from clap's `Args`: that step happens in
//! [`crate::commands`]), then run by the wiring ([`crate::wire`]) as
//!
//! ```text
//! Stage::run(self, input: Receiver<Batch>, output: Sender<Batch>, ctx: Ctx) -> Result<Ended>
//! ```
//!
//! [`Ctx`] carries the dead-letter output, the shutdown token, the metadata field name,
//! the progress line and the stage's [`Tally`], which it counts into: what it received,
//! passed on and rejected (the wiring reads it, for summaries, progress and `/metrics`). A filter or sink ends when its input closes (after sending everything
//! it still holds), or early when its output closes. A source is handed an input that is
//! already closed, and ends on shutdown or when it has nothing more to send. A stage knows
//! no graph: the shell form of a command is the chain `[reader, stage, writer]`, and
//! `pipeline` chains `[source, stage, …, sink]` with the same wiring.
//!
//! - [`stdio`]: the NDJSON reader (files, stdin) and writer (stdout) as stages.
//! - [`ingest_file`]: the file source: files read once, or followed as they grow and rotate.
//! - [`ingest_http`]: the HTTP source: POST /events into a bounded hub, with back-pressure.
//! - [`ingest_kafka`]: the Kafka source, with exactly-once offsets shared with persist.
//! - [`validate`]: JSON Schema and quick field rules.
//! - [`enrich`]: set fields, timestamps, ids, lookups and jq transforms.
//! - [`persist`]: the sink: idempotent batched upserts into PostgreSQL or SQLite.
//! - [`tee`]: a copy of the stream at one point of a `pipeline`, to files.
//! - [`workers`]: how filters run their work on several batches at once, in order.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::sync::watch;

use crate::dead_letter::DeadLetters;
use crate::event::Batch;
use crate::exit::Result;
use crate::progress::{InputSize, Progress};
use crate::shutdown::Shutdown;
use crate::tally::{Counted, Figure, Tally};

pub mod enrich;
pub mod ingest_file;
pub mod ingest_http;
pub mod ingest_kafka;
pub mod persist;
pub mod stdio;
pub mod tee;
pub mod validate;
pub mod workers;

/// The contract every stage fulfils.
pub trait Stage: Send + 'static {
    /// The command it is (`validate`), for dead letters, logs and the summary.
    fn name(&self) -> &'static str;

    /// Where it sits in a chain; the wiring treats a closed output differently for each.
    fn kind(&self) -> Kind;

    /// Whether this source acknowledges what it takes in (to clients, to a broker). When
    /// the end of its chain closes, such a source is told to stop (shutdown) and then
    /// says what it had acknowledged but could not pass on, rather than being abandoned.
    fn acknowledges(&self) -> bool {
        false
    }

    /// Whether the stage offers the batches it sends to [`Ctx::tap`] itself (the NDJSON
    /// reader), rather than through a task the wiring puts after it.
    fn offers_taps(&self) -> bool {
        false
    }

    /// A source's input size, when it can say (`ingest-file` reading files to their end):
    /// the shell form's progress line then shows a bar with %, bytes and ETA.
    fn input_size(&self) -> Option<InputSize> {
        None
    }

    /// Runs the stage to its end. Sources get a closed `input`.
    fn run(
        self: Box<Self>,
        input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>>;
}

/// Where a stage sits in a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Makes events (a server, a consumer, the NDJSON reader); first in a chain.
    Source,
    /// Takes events in and passes events on (validate, enrich).
    Filter,
    /// Stores events (persist, the NDJSON writer); what it passes on, if anything, is
    /// only a copy of what it stored.
    Sink,
}

/// What every stage is handed besides its config and channels.
#[derive(Clone)]
pub struct Ctx {
    pub dead: DeadLetters,
    pub shutdown: Shutdown,
    /// What this stage counts into: made by the wiring ([`crate::wire::Link::new`], or
    /// when the chain starts), one per stage.
    pub tally: Tally,
    /// The reserved metadata field (`--meta-field`).
    pub meta_field: Arc<str>,
    /// The progress line this stage counts into (hidden unless this stage is the one
    /// whose counts the user watches).
    pub progress: Progress,
    /// A worker count that may change while the stage runs (`pipeline`'s reload): the
    /// workers of a filter, the connections of persist; `None`: the stage's own setting
    /// holds.
    pub workers: Option<watch::Receiver<usize>>,
    /// A worker's panic does not end the run (`pipeline`): its batch is tried again event
    /// by event, and the event that panics becomes a dead letter of kind `panic`. Costs a
    /// shallow copy of every batch. The single commands end with exit 70 instead.
    pub isolate_panics: bool,
    /// The stage's output is bounded in bytes (`pipeline`'s channels): each batch is
    /// measured by the worker that made it, while its events are in that core's cache.
    pub measure_batches: bool,
    /// A later stage in this process looks inside the events (`pipeline`, with validate,
    /// enrich or persist after this stage): a stage that rewrites an event's text indexes
    /// the new text as it writes it, so that no stage scans it again. Otherwise (the next
    /// reader is a pipe) the index would be work for nobody.
    pub keep_index: bool,
    /// A tap point this stage offers batches to itself, so that no task stands between it
    /// and its neighbour: the output writer offers what it receives (the output of the
    /// stage before); a stage that [`Stage::offers_taps`] what it sends.
    pub tap: Option<Arc<crate::tap::Feed>>,
}

impl Ctx {
    pub fn new(dead: DeadLetters, shutdown: Shutdown, meta_field: &str) -> Ctx {
        Ctx {
            dead,
            shutdown,
            tally: Tally::pending(),
            meta_field: meta_field.into(),
            progress: Progress::hidden(),
            workers: None,
            isolate_panics: false,
            measure_batches: false,
            keep_index: false,
            tap: None,
        }
    }

    /// The same context, counting into `progress`.
    pub fn with_progress(&self, progress: Progress) -> Ctx {
        Ctx {
            progress,
            ..self.clone()
        }
    }
}

/// How a stage ended, besides what it counted (its [`Tally`] holds that).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// A source stopped by shutdown before the end of its input: where (the NDJSON
    /// reader of files and pipes; servers and consumers run until told to stop).
    pub stopped: Option<Stopped>,
}

/// What one stage of a chain did, as the wiring returns it when the chain has ended:
/// its tally's counts and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events received (a source: consumed).
    pub events_in: u64,
    /// Events passed on (for a sink: stored).
    pub events_out: u64,
    pub rejected: u64,
    /// Events `--when-full drop-*` dropped in front of this stage.
    pub dropped: u64,
    /// The stage's own figures ([`crate::tally::Figure`]) at the end.
    pub figures: Vec<(&'static Figure, u64)>,
    pub stopped: Option<Stopped>,
}

impl Stats {
    pub fn of(counted: Counted, figures: Vec<(&'static Figure, u64)>, ended: Ended) -> Stats {
        Stats {
            events_in: counted.received,
            events_out: counted.sent,
            rejected: counted.rejected,
            dropped: counted.dropped,
            figures,
            stopped: ended.stopped,
        }
    }
}

/// Where a source stopped reading: everything up to `line` of `source` was handed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub source: Arc<str>,
    pub line: u64,
}
