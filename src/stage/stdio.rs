//! The NDJSON reader (files, stdin) and writer (stdout) as stages, so that the shell
//! form of a command is the chain `[Reader, stage, Writer]`.

use std::io::Write;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::Batch;
use crate::exit::Result;
use crate::ndjson::{self, Input, ReadEnd};
use crate::stage::{Ctx, Ended, Kind, Stage, Stopped};

/// Reads NDJSON inputs one after the other (see [`ndjson::read`] for shutdown).
pub struct Reader {
    pub inputs: Vec<Input>,
    pub max_line_bytes: u64,
    /// How long a pipe is read on after the first signal (`--shutdown-timeout`).
    pub drain_timeout: Duration,
}

impl Stage for Reader {
    fn name(&self) -> &'static str {
        "reader"
    }

    fn kind(&self) -> Kind {
        Kind::Source
    }

    fn offers_taps(&self) -> bool {
        true
    }

    fn run(
        self: Box<Self>,
        _input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(async move {
            let end = ndjson::read(
                self.inputs,
                self.max_line_bytes,
                output,
                ctx.shutdown,
                self.drain_timeout,
                &ctx.tally,
                ctx.tap,
            )
            .await?;
            Ok(Ended {
                stopped: match end {
                    ReadEnd::Complete => None,
                    ReadEnd::Stopped { source, line } => Some(Stopped { source, line }),
                },
            })
        })
    }
}

/// Writes every event's bytes and a newline to `out` (stdout), counting into its tally;
/// events are dropped (their acknowledgements fire) once written.
pub struct Writer<W> {
    pub out: W,
}

impl<W: Write + Send + 'static> Stage for Writer<W> {
    fn name(&self) -> &'static str {
        "writer"
    }

    fn kind(&self) -> Kind {
        Kind::Sink
    }

    fn run(
        self: Box<Self>,
        input: Receiver<Batch>,
        _output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(async move {
            ndjson::write(input, self.out, ctx.tally, ctx.tap).await?;
            Ok(Ended::default())
        })
    }
}
