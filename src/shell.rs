//! The shell form of a command: the chain `[reader, stage, writer]` (a source: `[source,
//! writer]`) run by [`crate::wire`], with dead letters, the progress line, the end-of-run
//! summary and the exit code.

use std::time::{Duration, Instant};

use crate::dead_letter::DeadLetters;
use crate::exit::{Error, Exit, Result};
use crate::human;
use crate::ndjson::{self, Input};
use crate::progress::{self, InputSize, Progress};
use crate::shutdown::Shutdown;
use crate::stage::stdio::{Reader, Writer};
use crate::stage::{Ctx, Kind, Stage, Stats};
use crate::tally::Figure;
use crate::tap::Taps;
use crate::wire::{self, Link};

/// Batches a channel holds between two stages. With ~256 KiB batches this bounds the
/// memory between stages to about a megabyte, and is enough to keep every core busy.
pub const CHANNEL_BATCHES: usize = 4;

/// What a sink adds to its summary, read when the run has ended: a breakdown after
/// "N out" (" (900 inserted, 90 updated, …)") and its work after the rejects
/// (", 3 batches, 0 retries").
pub type Detail = Box<dyn FnOnce() -> (String, String) + Send>;

/// How a command runs, whatever its stage: the common flags' settings, free of clap.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where rejects go (`--dead-letter`; `-` is stderr).
    pub dead_letter: Option<String>,
    pub max_line_bytes: u64,
    pub meta_field: String,
    /// Draw the progress line even when stderr is not a terminal.
    pub progress: bool,
    /// Only errors on stderr.
    pub quiet: bool,
    /// How long the first signal may take to end the run.
    pub shutdown_timeout: Duration,
    /// Where the operator endpoint is served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Runs `stage` as a shell command: NDJSON from `inputs` (opened files, or stdin; none
/// for a source) through the stage to stdout; a source's events straight to stdout,
/// until `shutdown`. The progress line counts what is written to stdout, or for a sink
/// what it stored; a sink's summary ends with `detail`.
pub async fn run(
    stage: Box<dyn Stage>,
    common: &Options,
    inputs: Vec<Input>,
    detail: Option<Detail>,
    shutdown: Shutdown,
    taps: Option<Taps>,
) -> Result<Exit> {
    let started = Instant::now();
    let name = stage.name();
    let kind = stage.kind();
    let dead = DeadLetters::open(common.dead_letter.as_deref(), &common.meta_field)
        .map_err(|e| Error::new(Exit::IoErr, e))?;
    let (mut size, compression) = measure(&inputs);
    if let Some(own) = stage.input_size() {
        size = own;
    }
    let ctx = Ctx::new(dead.clone(), shutdown.clone(), &common.meta_field);
    let mut links = Vec::with_capacity(3);
    if kind != Kind::Source {
        let reader = Reader {
            inputs,
            max_line_bytes: common.max_line_bytes,
            drain_timeout: common.shutdown_timeout,
        };
        links.push(Link::new(Box::new(reader), ctx.clone()));
    }
    links.push(Link::new(stage, ctx.clone()));
    if let Some(taps) = &taps {
        for (link, (_, point)) in links.iter_mut().zip(taps.points()) {
            link.tap = Some(point.clone());
        }
    }
    let writer = Writer {
        out: ndjson::stdout(),
    };
    links.push(Link::new(Box::new(writer), ctx.clone()));
    // The user watches what reaches stdout, or for a sink, what it stored.
    let watched = match kind {
        Kind::Sink => links.len() - 2,
        Kind::Source | Kind::Filter => links.len() - 1,
    };
    let progress = Progress::new(
        name,
        common.progress,
        common.quiet,
        &dead,
        size,
        &links[watched].tally(),
    );
    links[watched].ctx.progress = progress.clone();
    let ran = wire::chain(links, CHANNEL_BATCHES).await;
    progress.finish();
    let mut stats = ran?;
    stats.pop(); // the writer's
                 // A server or consumer: what it consumed in, what it passed on, what it rejected.
    let main = stats.pop().expect("the stage's stats");
    let stopped = stats.pop().and_then(|reader| reader.stopped);
    let exit = finish(name, common, &dead, &main, started, detail);
    Ok(match stopped {
        None => exit,
        Some(stopped) => interrupted(name, &stopped, &compression, &shutdown, exit),
    })
}

/// The tap points of a command's shell form: after the reader (its input) unless it is a
/// source, and after the command.
pub fn taps(kind: Kind, name: &'static str) -> Taps {
    match kind {
        Kind::Source => Taps::new([name]),
        Kind::Filter | Kind::Sink => Taps::new(["reader", name]),
    }
}

/// The files a run reads, with their compression, for resume hints.
pub type Compressions = Vec<(std::sync::Arc<str>, Option<ndjson::Compression>)>;

/// What the progress line and a resume hint need to know of the inputs.
pub fn measure(inputs: &[Input]) -> (InputSize, Compressions) {
    let size = InputSize {
        total: inputs.iter().map(|i| i.size).sum(),
        consumed: inputs.iter().map(|i| i.consumed.clone()).collect(),
    };
    let compression = inputs
        .iter()
        .map(|i| (i.name.clone(), i.compression))
        .collect();
    (size, compression)
}

/// A run interrupted before the end of its input: what was read is handled; says where
/// to resume, and exits 128 + the signal, not 0, so that scripts know.
pub fn interrupted(
    name: &str,
    stopped: &crate::stage::Stopped,
    compression: &Compressions,
    shutdown: &Shutdown,
    exit: Exit,
) -> Exit {
    let (source, line) = (&stopped.source, stopped.line);
    let resume = if &**source == "stdin" {
        format!("skip {line} lines of stdin")
    } else {
        let kind = compression
            .iter()
            .find(|(n, _)| n == source)
            .and_then(|(_, c)| *c);
        ndjson::Input::resume_hint(source, kind, line)
    };
    progress::eprint_line(&format!(
        "{name}: interrupted: stopped after line {line} of {source}; everything up to it was \
         handled (to resume: {resume})"
    ));
    match exit {
        Exit::Ok => shutdown.interrupted_exit(),
        other => other,
    }
}

/// Where a summary says the rejects went: " (dead letters in PATH)", on stderr, or not
/// kept (when there were some).
pub fn dead_letters_at(common: &Options, rejected: u64) -> String {
    match &common.dead_letter {
        Some(p) if p == "-" => " (dead letters on stderr)".to_owned(),
        Some(p) => format!(" (dead letters in {p})"),
        None if rejected > 0 => " (no --dead-letter output: not kept)".to_owned(),
        None => String::new(),
    }
}

/// A stage's own figures as its summary says them (", 3 files, 1 rotations").
pub fn figure_words(figures: &[(&'static Figure, u64)]) -> String {
    let mut words = String::new();
    for (figure, value) in figures {
        if let Some(word) = figure.summary {
            words.push_str(&format!(", {} {word}", human::count(*value)));
        }
    }
    words
}

/// Prints the summary and decides the exit code: 65 when rejects had nowhere to go.
///
/// Every command's summary has the same words: events *in* (read from its input),
/// *out* (handed on: written to stdout, or for a sink, stored), rejected, and the time
/// the run took. A filter prints it when something was rejected or it drew progress; a
/// sink (`detail` given) always, unless `--quiet`.
pub fn finish(
    name: &str,
    common: &Options,
    dead: &DeadLetters,
    stats: &Stats,
    started: Instant,
    detail: Option<Detail>,
) -> Exit {
    // What went to the dead-letter output decides whether the summary is worth a line,
    // where it points and the exit code; the number is the stage's own count (which for
    // ingest-http also holds the lines of requests it refused with 400).
    let kept = dead.count();
    let show = !common.quiet
        && (kept > 0 || detail.is_some() || progress::draws(common.progress, common.quiet));
    if show {
        let whereto = dead_letters_at(common, kept);
        let (breakdown, mut work) = detail.map(|d| d()).unwrap_or_default();
        work.push_str(&figure_words(&stats.figures));
        progress::eprint_line(&format!(
            "{name}: {} events in, {} out{breakdown}, {} rejected{whereto}{work} · {}",
            human::count(stats.events_in),
            human::count(stats.events_out),
            human::count(stats.rejected),
            human::elapsed(started.elapsed()),
        ));
        if kept > 0 {
            for line in dead.summary() {
                progress::eprint_line(&format!("{name}: {line}"));
            }
        }
    }
    if kept > 0 && !dead.has_output() {
        Exit::DataErr
    } else {
        Exit::Ok
    }
}
