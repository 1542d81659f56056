//! The commands, in one table ([`ALL`]): every command a binary runs or a pipe text names,
//! each described once by its [`Command`] row (as mini-redis's `cmd/mod.rs` lists its
//! commands, or Vector's registry its components). `pipeline`'s planner, runner and
//! `--explain`, its allocator choice and the docs generator read this table; none of them
//! names a command. A binary runs its own row ([`main`]), and only that: naming the whole
//! table would link every command into every binary (`validate` grew from 16 to 30 MB,
//! and its peak RSS by 4 MiB). Adding a command is its stage folder, its file here and
//! one row of [`ALL`].
//!
//! A command goes through three steps, each a trait object the next step is made from:
//!
//! 1. [`Command::parse`]: clap's matches (plus the common flags as they apply to it) →
//!    [`Parsed`]: no file is read yet, so a pipe text's every stage is parsed before any
//!    is built, and live scaling compares words without building anything.
//! 2. [`Parsed::configure`]: `Args → Config`, reading the files its flags name (a schema,
//!    a lookup table, a token file) → [`Configured`]: explains itself, says what it will
//!    connect to and what may change live.
//! 3. [`Configured::open`]: connects (databases) → the [`Stage`] the wiring runs, and the
//!    counts its summary ends with.
//!
//! [`main`] is the shell form every binary but `pipeline` runs: `[reader, stage, writer]`
//! through [`crate::shell`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgMatches, FromArgMatches};
use futures::future::{BoxFuture, LocalBoxFuture};

use crate::cli::{self, Common};
use crate::exit::{Exit, Result};
use crate::ndjson;
use crate::operator::watch::Watch;
use crate::postgres::ConnectSpec;
use crate::shell::{self, Detail};
use crate::shutdown::Shutdown;
use crate::stage::{Kind, Stage};

pub mod enrich;
pub mod ingest_file;
pub mod ingest_http;
pub mod ingest_kafka;
pub mod persist;
pub mod tee;
pub mod validate;

/// Every command, sources first (the order `pipeline`'s "known:" list gives).
pub static ALL: [&Command; 7] = [
    &ingest_file::COMMAND,
    &ingest_http::COMMAND,
    &ingest_kafka::COMMAND,
    &validate::COMMAND,
    &enrich::COMMAND,
    &persist::COMMAND,
    &tee::COMMAND,
];

/// The row of the command called `name`.
pub fn find(name: &str) -> Option<&'static Command> {
    ALL.iter().copied().find(|c| c.name == name)
}

/// One command, as the table describes it.
pub struct Command {
    /// Its name: the binary's, and the word of a pipe text.
    pub name: &'static str,
    /// Where its stage sits in a chain.
    pub kind: Kind,
    /// Whether it has a binary of its own (`tee` is a stage of `pipeline` only: in a
    /// shell, the system's `tee` does).
    pub binary: bool,
    /// Whether its stage holds many events in flight across threads (a server source, a
    /// sink), so that `pipeline` tunes the allocator for that ([`crate::memory`]).
    pub holds_events: bool,
    /// How its binary tunes the allocator, first thing in `main` ([`crate::memory`]).
    pub memory: Option<fn()>,
    /// The flag live scaling may change while `pipeline --file` runs (`--workers`,
    /// `--connections`); its value is [`Parsed::knob`].
    pub knob: Option<&'static str>,
    /// Its clap definition: flags, help, examples.
    pub cli: fn() -> clap::Command,
    /// Its words parsed: from clap's matches, with `common` the common flags as they
    /// apply to it (a binary's own; in a pipe text, `pipeline`'s with the stage's
    /// `--dead-letter`).
    pub parse: ParseWords,
}

/// See [`Command::parse`].
pub type ParseWords = fn(&ArgMatches, &Common) -> std::result::Result<Box<dyn Parsed>, clap::Error>;

impl Command {
    /// Whether it takes the common flags ([`Common`]).
    pub fn takes_common(&self) -> bool {
        (self.cli)()
            .get_arguments()
            .any(|a| a.get_id() == "meta_field")
    }
}

/// A command's words, parsed, before any file they name is read.
pub trait Parsed: Send {
    /// Input files among its words: the shell form reads them; in a pipe text, input
    /// files go after the text.
    fn inputs(&self) -> &[PathBuf] {
        &[]
    }

    /// Why these words run alone and cannot be a stage of a pipe (`persist --show`).
    fn not_a_stage(&self) -> Option<String> {
        None
    }

    /// Whether the stage passes events on (`persist` only with `--emit`): a stage that
    /// does not is last in a pipe.
    fn passes_on(&self) -> bool {
        true
    }

    /// The value of [`Command::knob`], as live scaling reads it.
    fn knob(&self) -> Option<usize> {
        None
    }

    /// What the shell form runs instead of a stage (`persist --show`), if anything.
    fn alone(&self) -> Option<LocalBoxFuture<'static, Result<Exit>>> {
        None
    }

    /// The `Args → Config` step its binary takes too: reads the files the flags name,
    /// opens nothing else.
    fn configure(self: Box<Self>) -> Result<Box<dyn Configured>>;
}

/// A command's config: what `--explain` prints, what it connects to, and how it opens.
pub trait Configured: Send {
    /// Its effective settings, a line each, for `pipeline --explain`.
    fn explain(&self) -> Vec<String>;

    /// The PostgreSQL databases its stage writes to, which `pipeline --metrics-listen`
    /// probes for `/ready`.
    fn databases(&self) -> Vec<ConnectSpec> {
        Vec::new()
    }

    /// Readiness checks of its own, for `/ready` (enrich's circuit breakers).
    fn checks(&self) -> Vec<crate::operator::Check> {
        Vec::new()
    }

    /// Whether it looks inside events: a stage before one that does keeps the field
    /// index of a text it rewrites ([`crate::stage::Ctx::keep_index`]); `tee` only copies
    /// bytes.
    fn looks_inside(&self) -> bool {
        true
    }

    /// Files it writes (`tee`): `pipeline` refuses one that is an input, or written twice.
    fn writes(&self) -> &[PathBuf] {
        &[]
    }

    /// Whether nothing reaches stdout after it (`persist` without `--emit`).
    fn ends_output(&self) -> bool {
        false
    }

    /// `/metrics` will be served: report what only costs when it is (Kafka's statistics).
    fn serve_metrics(&mut self) {}

    /// Opens the stage: connects what it needs (databases), fails with the exit code
    /// the binary would.
    fn open(self: Box<Self>) -> BoxFuture<'static, Result<Opened>>;
}

/// An opened stage.
pub struct Opened {
    pub stage: Box<dyn Stage>,
    /// What its summary line adds, and its outcomes on `/metrics` (persist's rows).
    pub outcomes: Option<Arc<dyn Outcomes>>,
}

impl Opened {
    /// A stage with no outcomes of its own.
    pub fn stage(stage: impl Stage) -> Opened {
        Opened {
            stage: Box::new(stage),
            outcomes: None,
        }
    }
}

/// Outcomes a stage counts besides in, out and rejected (persist's inserted, updated,
/// …): read by its summary and by `/metrics`.
pub trait Outcomes: Send + Sync {
    /// A breakdown after "N out" (" (900 inserted, 90 updated)") and its work after the
    /// rejects (", 3 batches, 0 retries").
    fn summary(&self) -> (String, String);

    /// Sets its series for `/metrics`, labelled `component`.
    fn export(&self, component: &'static str);
}

/// Runs the binary of `command` (its row of the table): its allocator tuned, its command
/// line parsed (usage errors exit 64), then its shell form ([`run`]) on the runtime, and
/// the exit code.
pub fn main(command: &'static Command) -> ExitCode {
    let name = command.name;
    if let Some(tune) = command.memory {
        tune(); // Before any other thread starts.
    }
    let matches = cli::parse_matches((command.cli)());
    let parsed = Common::from_arg_matches(&matches)
        .and_then(|common| Ok(((command.parse)(&matches, &common)?, common)));
    let (parsed, common) = match parsed {
        Ok(p) => p,
        Err(e) => cli::usage_exit(e.format(&mut (command.cli)())),
    };
    let options = shell::Options::from(&common);
    cli::run(name, &common, run(command, parsed, options))
}

/// The shell form of a command: NDJSON from its input files (or stdin) through its stage
/// to stdout; a source's events straight to stdout. Input files are opened before the
/// stage: a missing one exits 66 before a database (or SQLite file) is touched.
pub async fn run(
    command: &Command,
    parsed: Box<dyn Parsed>,
    options: shell::Options,
) -> Result<Exit> {
    if let Some(alone) = parsed.alone() {
        return alone.await;
    }
    let paths = parsed.inputs().to_vec();
    let mut configured = parsed.configure()?;
    let inputs = match command.kind {
        Kind::Source => Vec::new(),
        Kind::Filter | Kind::Sink => ndjson::open_inputs(&paths)?,
    };
    let shutdown = Shutdown::on_signals();
    if options.metrics_listen.is_some() {
        configured.serve_metrics();
    }
    let (databases, checks) = (configured.databases(), configured.checks());
    let Opened { stage, outcomes } = configured.open().await?;
    let taps = options
        .metrics_listen
        .map(|_| shell::taps(command.kind, command.name));
    let mut served = None;
    if let Some(addr) = options.metrics_listen {
        // The same endpoint as `pipeline`'s, for a pipe of one stage.
        let watch = Watch {
            channels: Vec::new(),
            bounds: None,
            window: Duration::ZERO,
            databases,
            checks,
            sinks: outcomes.iter().map(|o| (command.name, o.clone())).collect(),
            taps: taps.clone(),
        };
        served = Some(crate::operator::watch::start(addr, watch, shutdown.clone()).await?);
    }
    let detail: Option<Detail> = outcomes.map(|o| Box::new(move || o.summary()) as Detail);
    let exit = shell::run(stage, &options, inputs, detail, shutdown, taps).await;
    if let Some(served) = served {
        served.finish().await;
    }
    exit
}

/// The common flags' settings, free of clap, as the shell form and `pipeline` run with.
impl From<&Common> for shell::Options {
    fn from(c: &Common) -> shell::Options {
        shell::Options {
            dead_letter: c.dead_letter.clone(),
            max_line_bytes: c.max_line_bytes,
            meta_field: c.meta_field.clone(),
            progress: c.progress,
            quiet: c.quiet,
            shutdown_timeout: c.shutdown_timeout,
            metrics_listen: c.metrics_listen,
        }
    }
}
