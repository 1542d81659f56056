//! `pipeline`'s own flags. Each stage's flags are that command's (parsed in [`super::plan`]).

use std::path::PathBuf;

use clap::Parser;

use crate::cli::{parse_bytes, Common};
use crate::wire::relay::WhenFull;

const EXAMPLES: &str = "\
Examples:
  A shell pipe in one process, rows into SQLite (ndpipe.db):
    pipeline --dead-letter rejects.ndjson \\
      'validate --schema event.schema.json \\
      | enrich --timestamp processed_at \\
      | persist --table events --create-table' events.ndjson

  Kafka into PostgreSQL, exactly once:
    export KAFKA_BROKERS=kafka1:9092,kafka2:9092
    export DATABASE_URL=postgres://app@db.internal/orders
    pipeline 'ingest-kafka --topic orders \\
        --offsets-name loader --offsets-from $DATABASE_URL
      | validate --schema order.schema.json
      | persist --table orders --create-table'

  The same text kept in a file:
    pipeline --file etl.pipe --dead-letter rejects.ndjson \\
      events.ndjson

  Two sources into one hub; look inside with tee:
    pipeline 'ingest-http --listen 127.0.0.1:8080
      & ingest-kafka --topic orders
      | validate --require id | tee seen.ndjson
      | persist --table events --create-table'

  What would run, without running it:
    pipeline --explain --file etl.pipe";

/// The bounds of every channel, and what a full one does. A `--file` may also give them
/// on a first line of its own, `pipeline --channel-capacity N …` (changed live on reload).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Channels")]
pub struct Channels {
    /// Events each channel between two stages may hold. A batch may take it past this by
    /// at most itself.
    #[arg(long, value_name = "EVENTS", default_value_t = 10_000, value_parser = crate::cli::parse_count)]
    pub channel_capacity: usize,

    /// Bytes each channel may hold, whatever the size of its events: their lines and, once
    /// a stage has looked inside them, their field index. There is a channel in front of
    /// every stage: with the default, the three channels of a three-stage pipe hold 12 MiB
    /// at most.
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_bytes)]
    pub channel_bytes: u64,

    /// What a full channel does: wait (back-pressure up to the source: Kafka stops
    /// fetching, HTTP answers 503, files stop being read), or drop events, counted and
    /// kept as dead letters of kind `dropped`.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = WhenFull::Block)]
    pub when_full: WhenFull,
}

/// `--when-full`'s values, for clap: the wiring's [`WhenFull`] knows no command line.
impl clap::ValueEnum for WhenFull {
    fn value_variants<'a>() -> &'a [Self] {
        &[WhenFull::Block, WhenFull::DropOldest, WhenFull::DropNewest]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            WhenFull::Block => "Wait for room: back-pressure all the way to the source",
            WhenFull::DropOldest => "Drop the oldest queued events to make room for new ones",
            WhenFull::DropNewest => "Drop new events while the channel is full",
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}

/// What `pipeline` does besides running a pipe.
#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Show the live view of `--top` for a command or pipeline already running with
    /// `--metrics-listen ADDR` (here or across SSH), until q.
    Top {
        /// The address it serves /metrics on.
        #[arg(value_name = "ADDR")]
        addr: std::net::SocketAddr,
    },
}

/// The first line of a pipe file that starts with `pipeline`: channel settings.
#[derive(Parser, Debug)]
#[command(name = "pipeline")]
pub struct SettingsLine {
    #[command(flatten)]
    pub channels: Channels,
}

/// Run a shell pipe of ndpipe commands in one process: the same stages, joined by bounded
/// channels instead of pipes, each event parsed once.
///
/// PIPE is the text you would give the shell, `ingest-kafka … | validate … | enrich … |
/// persist …`: each stage is a command with exactly that command's flags (see its
/// `--help`), plus `tee FILE` to copy the stream at any point. The text is split with the
/// shell's quoting rules; `$VAR` and `${VAR:-default}` are taken from the environment, and
/// nothing else of the shell is. Sources joined with `&` feed one hub, each keeping its
/// order. Without a source stage, the FILEs after the text are read (none, or `-`:
/// stdin). The output is what the shell pipe would print: NDJSON on stdout, or nothing
/// when the last stage is `persist` (rows go to the database; `--emit` passes them on).
#[derive(Parser, Debug)]
#[command(
    name = "pipeline",
    version,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,

    /// The pipe text (with --file: the first input file).
    #[arg(value_name = "PIPE")]
    pub text: Option<String>,

    /// NDJSON input files, read in order; none or `-` means stdin. Gzip and zstd files are
    /// recognised. With a source stage, files given here feed the same hub.
    #[arg(value_name = "FILE")]
    pub inputs: Vec<PathBuf>,

    /// Read the pipe text from PATH: `\` continues a line, `#` starts a comment, and a
    /// new line ends a stage as `|` does. SIGHUP, or saving the file, re-reads it while
    /// the pipeline runs: new `--workers` (validate, enrich), `--connections` (persist)
    /// and channel settings take effect live; any other change is refused, with one line.
    #[arg(short, long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Print the stages with their effective settings (workers, channels, batch sizes,
    /// database, acknowledgements) and exit, touching no input, database or broker.
    #[arg(long)]
    pub explain: bool,

    /// Show a live view of every stage on the terminal while the pipeline runs, instead of
    /// progress lines: rate in and out, rejects, channel fill, batch time, persist's
    /// commits, Kafka lag. Redrawn every second on stderr (stdout stays data); q ends the
    /// run as the first Ctrl-C would. Needs a terminal; no colour with NO_COLOR.
    #[arg(long)]
    pub top: bool,

    #[command(flatten)]
    pub channels: Channels,

    /// /ready answers 503 once a channel has been more than 80 % full this long without a
    /// break (or at once while a database does not answer).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub ready_window: std::time::Duration,

    #[command(flatten)]
    pub common: Common,
}
