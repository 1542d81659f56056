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
use crate::stage::workers::{self, Failed, Worked};
use crate::stage::{Ctx, Ended, Kind, Stage};

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
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(async move {
            let config = *self;
            let opened = tokio::task::spawn_blocking(move || open(&config)).await;
            let files = Error::joined("tee", opened)??;
            workers::map_sequential("tee", input, output, &ctx, files, |files, batch| {
                Box::pin(copy(files, batch))
            })
            .await
        })
    }
}

/// The copies: each file with its path, for messages.
type Files = Vec<(PathBuf, BufWriter<File>)>;

fn open(config: &Config) -> Result<Files> {
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

/// Writes `batch` to every file, on the blocking pool (a full disk or a slow NFS mount
/// must not hold a runtime thread), and passes it on whole.
async fn copy(files: &mut Files, batch: Batch) -> std::result::Result<Worked, Failed> {
    let mut held = std::mem::take(files);
    let copied = tokio::task::spawn_blocking(move || {
        let written = write_all(&mut held, &batch);
        (held, batch, written)
    })
    .await;
    let (held, batch, written) = Error::joined("tee", copied).map_err(|error| Failed {
        error,
        held: Vec::new(),
    })?;
    *files = held;
    match written {
        Ok(()) => Ok(Worked {
            batch,
            rejects: Vec::new(),
        }),
        Err(error) => Err(Failed {
            error,
            held: batch.events,
        }),
    }
}

fn write_all(files: &mut Files, batch: &Batch) -> Result<()> {
    for (path, out) in files {
        batch
            .events
            .iter()
            .try_for_each(|e| {
                out.write_all(e.bytes())?;
                out.write_all(b"\n")
            })
            .and_then(|()| out.flush())
            .map_err(|e| {
                Error::new(
                    Exit::IoErr,
                    anyhow::anyhow!("tee: writing {}: {e}", path.display()),
                )
            })?;
    }
    Ok(())
}
