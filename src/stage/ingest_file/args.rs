//! ingest-file's flags (clap) and the examples its `--help` ends with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::cli::{parse_duration, Common};
use crate::postgres::Table;

pub(super) const EXAMPLES: &str = "\
Examples:
  A backfill of a directory tree, oldest file first:
    ingest-file 'logs/**/*.ndjson' \\
      | validate --require id --dead-letter dl.ndjson \\
      | persist --create-table

  Follow logs as they grow and rotate; a restart resumes
  from the checkpoint file:
    ingest-file --follow --positions positions.json \\
      'logs/*.ndjson' > followed.ndjson

  Exactly once into PostgreSQL, positions committed with
  the rows:
    export DATABASE_URL=postgres://app@db.internal/orders
    ingest-file --follow --positions-from \"$DATABASE_URL\" \\
      --positions-name orders-loader 'logs/*.ndjson' \\
      | validate --require id --dead-letter dl.ndjson \\
      | persist --table orders --create-table";

/// Read NDJSON files, and with --follow keep reading them as they grow, rotate and
/// arrive, and write their lines to stdout as NDJSON events.
///
/// Each line keeps its bytes and gains the metadata field {"source":"file", path,
/// file_id, offset (of the line's first byte), line}. PATH may be a glob (`*`, `?`,
/// `[…]`, `**` for any depth; quote it); files may be plain, gzip or zstd (told by their
/// first bytes). Lines that are not JSON objects are dead letters with their path and line.
/// A file is known by its device, inode and a fingerprint of its first bytes, so a new
/// file that reuses a deleted one's inode is read from its start, and a renamed
/// (rotated) file is not read again. With --positions or --positions-from, a restart
/// resumes where the last run's written (or committed) lines end.
#[derive(Parser, Clone, Debug)]
#[command(name = "ingest-file", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Files or globs to read; repeatable.
    #[arg(value_name = "PATH_OR_GLOB", required = true)]
    pub paths: Vec<String>,

    /// Keep running: read lines appended to the files, files that appear and match, and
    /// the end of rotated files; notice truncation and deletion. Without it: read every
    /// match once and exit 0 at the end.
    #[arg(long)]
    pub follow: bool,

    /// Look for changes every INTERVAL instead of asking the kernel for change events
    /// (for NFS, SMB and other filesystems that send none).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub poll: Option<Duration>,

    /// The order files are read in: mtime (oldest modified first) or name.
    #[arg(long, value_enum, value_name = "ORDER", default_value_t = Order::Mtime)]
    pub order: Order,

    /// Where to start in a file seen for the first time (no stored position): beginning,
    /// or end (only lines appended from now on). Files that appear while following are
    /// always read from their beginning.
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = From::Beginning)]
    pub from: From,

    /// How long a rotated or deleted file is read on for lines still being written to
    /// it, and how long a file shorter than --fingerprint-bytes must stay unchanged
    /// before it is identified and read.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub rotate_wait: Duration,

    /// How many first bytes of a file its identity covers (with its device and inode).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub fingerprint_bytes: u64,

    /// End a --follow run once no file has changed for DURATION (exit 0): a backfill of
    /// a directory still being written.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "follow")]
    pub exit_when_idle: Option<Duration>,

    /// Keep read positions in FILE: written atomically (write, fsync, rename) at most
    /// every second once the lines before them are written to stdout (in `pipeline`:
    /// once the last stage has handled them). After a crash, lines since the last
    /// checkpoint are read again; none is skipped.
    #[arg(long, value_name = "FILE", conflicts_with = "positions_from")]
    pub positions: Option<PathBuf>,

    /// Drop a file's entry from --positions once the file has been gone this long.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub forget_after: Duration,

    /// Exactly-once mode: positions live in this PostgreSQL database's offsets table,
    /// where persist commits each file's next offset in the same transaction as its rows.
    /// Each file is claimed with a new epoch, so a second reader of the same name fences
    /// the first. Needs --positions-name.
    #[arg(long, value_name = "DATABASE_URL", requires = "positions_name")]
    pub positions_from: Option<String>,

    /// The name positions are kept under in --positions-from (one per reader).
    #[arg(long, value_name = "NAME")]
    pub positions_name: Option<String>,

    /// The offsets table in --positions-from (persist's --offsets-table).
    #[arg(long, value_name = "NAME", default_value = "ndpipe_offsets", value_parser = Table::parse)]
    pub positions_table: Table,

    /// How long to wait for the --positions-from database at start before giving up
    /// with exit 69.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub common: Common,
}

/// The order files are read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Oldest modification time first (rotated files before the live one).
    Mtime,
    /// By path.
    Name,
}

/// Where a file seen for the first time is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum From {
    Beginning,
    End,
}
