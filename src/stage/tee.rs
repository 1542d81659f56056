//! `tee FILE…` as a stage of `pipeline`: writes a copy of the stream at that point to
//! each FILE (what the shell's `tee` would have seen there) and passes every event on.
//!
//! As coreutils' `tee`: the files are truncated when the run starts, or appended to with
//! `-a`. In a shell pipe, use the system's `tee`; this one exists so that "debugging by
//! inserting tee" works inside `pipeline` too.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::Parser;
use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::Batch;
use crate::exit::{Error, Exit, Result};
use crate::stage::{Ctx, Kind, Stage, Stats};

/// Copy the stream at this point of a pipeline to files, and pass it on unchanged.
#[derive(Parser, Clone, Debug)]
#[command(name = "tee")]
pub struct Args {
    /// Files to write the copy to.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Append to the files instead of truncating them.
    #[arg(short, long)]
    pub append: bool,
}

/// The plain config of a `tee` stage.
#[derive(Clone, Debug)]
pub struct Config {
    pub files: Vec<PathBuf>,
    pub append: bool,
}

impl Config {
    pub fn from_args(args: &Args) -> Config {
        Config {
            files: args.files.clone(),
            append: args.append,
        }
    }
}

/// Buffer of each copy. Batches are flushed whole, so a reader of FILE sees whole lines.
const COPY_BUFFER: usize = 256 * 1024;

impl Stage for Config {
    fn name(&self) -> &'static str {
        "tee"
    }

    fn kind(&self) -> Kind {
        Kind::Filter
    }

    fn run(
        self: Box<Self>,
        input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Stats>> {
        Box::pin(async move {
            let config = *self;
            tokio::task::spawn_blocking(move || copy(config, input, output, ctx))
                .await
                .map_err(|e| Error::from(anyhow::anyhow!("tee panicked: {e}")))?
        })
    }
}

fn open(config: &Config) -> Result<Vec<(PathBuf, BufWriter<File>)>> {
    config
        .files
        .iter()
        .map(|path| {
            let mut o = OpenOptions::new();
            o.create(true);
            if config.append {
                o.append(true);
            } else {
                o.write(true).truncate(true);
            }
            let f = o.open(path).map_err(|e| {
                Error::new(Exit::IoErr, anyhow::anyhow!("tee: {}: {e}", path.display()))
            })?;
            Ok((path.clone(), BufWriter::with_capacity(COPY_BUFFER, f)))
        })
        .collect()
}

fn copy(
    config: Config,
    mut input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: Ctx,
) -> Result<Stats> {
    let mut files = open(&config)?;
    let mut stats = Stats::default();
    while let Some(batch) = input.blocking_recv() {
        let n = batch.len() as u64;
        stats.events_in += n;
        for (path, out) in &mut files {
            let written = batch
                .events
                .iter()
                .try_for_each(|e| {
                    out.write_all(e.bytes())?;
                    out.write_all(b"\n")
                })
                .and_then(|()| out.flush());
            if let Err(e) = written {
                // What was not passed on is not handled: its sources must not count it.
                crate::event::lose_queued(&mut input, batch.events);
                return Err(Error::new(
                    Exit::IoErr,
                    anyhow::anyhow!("tee: writing {}: {e}", path.display()),
                ));
            }
        }
        stats.events_out += n;
        ctx.progress.inc(n);
        if output.blocking_send(batch).is_err() {
            break; // Downstream is gone.
        }
    }
    Ok(stats)
}
