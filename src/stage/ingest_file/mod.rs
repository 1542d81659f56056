//! `ingest-file`: NDJSON files in, events out, each with where it came from (path, file
//! identity, byte offset, line) in the metadata field; with `--follow`, files that keep
//! growing, keep arriving and get rotated.
//!
//! One thread reads ([`run`]): it lists the globs, opens what they match (refusing
//! anything but regular files, without blocking on a FIFO), identifies each file
//! ([`identity`]: device, inode and the first bytes' fingerprint), decides where it
//! starts ([`store`]), and reads the new bytes of every file into batches of lines
//! ([`tail`], [`render`]). Following, it waits for the kernel's change events or the
//! `--poll` interval ([`watch`]), lists the globs again when names change, and notices
//! rotation (a file renamed: read to its end, let go after `--rotate-wait`), truncation
//! (read again from 0, as a new file), deletion, and files too short to identify yet.
//!
//! Positions, three ways ([`store`]): none (every run starts by `--from`); a checkpoint
//! file ([`checkpoint`]: advanced once lines are written, or in `pipeline` once the last
//! stage handled them); or persist's offsets table ([`crate::postgres::Claims`]): every
//! event carries its position, persist commits each file's next offset in the rows'
//! transaction, and each file is claimed with a new epoch, as Kafka partitions are.
//!
//! Files, one concern each: `args` (flags), `config`, `discover` (globs), `identity`,
//! `tail` (one file's lines and offsets), `render` (lines into events), `checkpoint`,
//! `store`, `watch`, `run` (the loop).

use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::Batch;
use crate::exit::{Error, Result};
use crate::progress::InputSize;
use crate::stage::{Ctx, Ended, Kind, Stage};
use crate::tally::{Figure, FigureKind};

mod args;
mod checkpoint;
mod config;
mod discover;
mod identity;
mod render;
mod run;
mod store;
mod tail;
mod watch;

pub use args::{Args, From, Order};
pub use config::{Config, Positions};

/// Files being read now.
pub static FILES_OPEN: Figure = Figure {
    series: "ndpipe_files_open",
    label: None,
    kind: FigureKind::Gauge,
    summary: None,
};

/// Files opened and identified since the start.
pub static FILES: Figure = Figure {
    series: "ndpipe_files_opened_total",
    label: None,
    kind: FigureKind::Counter,
    summary: Some("files"),
};

/// Files renamed while being read (rotation).
pub static ROTATIONS: Figure = Figure {
    series: "ndpipe_file_rotations_total",
    label: None,
    kind: FigureKind::Counter,
    summary: Some("rotations"),
};

/// Files found shorter than what was read of them, or rewritten from the start.
pub static TRUNCATIONS: Figure = Figure {
    series: "ndpipe_file_truncations_total",
    label: None,
    kind: FigureKind::Counter,
    summary: Some("truncations"),
};

/// Files or directories that could not be read (each counted once; exit 74 at the end).
pub static UNREADABLE: Figure = Figure {
    series: "ndpipe_file_unreadable_total",
    label: None,
    kind: FigureKind::Counter,
    summary: Some("unreadable"),
};

/// The source: reads until the end of its files, or (`--follow`) until shutdown or
/// `--exit-when-idle`.
pub async fn run(config: Config, output: Sender<Batch>, ctx: Ctx) -> Result<Ended> {
    let consumed = config.consumed.clone();
    let ran =
        tokio::task::spawn_blocking(move || run::read_files(config, output, ctx, consumed)).await;
    Error::joined("file reader", ran)?
}

impl Config {
    /// The bytes to read, for a progress bar over them: the files matched now, when not
    /// following (a follow run has no end to measure against).
    pub fn input_size(&self) -> Option<InputSize> {
        if self.follow {
            return None;
        }
        let listing = self.globs.list(self.order);
        Some(InputSize {
            total: Some(listing.found.iter().map(|f| f.size).sum()),
            consumed: vec![self.consumed.clone()],
        })
    }
}

impl Stage for Config {
    fn name(&self) -> &'static str {
        "ingest-file"
    }

    fn kind(&self) -> Kind {
        Kind::Source
    }

    fn input_size(&self) -> Option<InputSize> {
        Config::input_size(self)
    }

    fn run(
        self: Box<Self>,
        _input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(run(*self, output, ctx))
    }
}
