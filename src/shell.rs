//! The shell form of a stage: NDJSON reader (files or stdin) → stage → NDJSON writer
//! (stdout), with dead letters, progress, the end-of-run summary and the exit code.

use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc::{self, Receiver, Sender};

use crate::cli::Common;
use crate::dead_letter::DeadLetters;
use crate::event::Batch;
use crate::exit::{Error, Exit, Result};
use crate::human;
use crate::ndjson;
use crate::progress::{self, InputSize, Progress};
use crate::shutdown::Shutdown;
use crate::stage::{Ctx, Stats};

/// Batches a channel holds between two stages. With ~256 KiB batches this bounds the
/// memory between stages to about a megabyte, and is enough to keep every core busy.
pub const CHANNEL_BATCHES: usize = 4;

/// Runs `stage` between stdin/files and stdout; the progress line counts events written.
pub async fn filter<F, Fut>(
    name: &'static str,
    common: &Common,
    inputs: &[PathBuf],
    stage: F,
) -> Result<Exit>
where
    F: FnOnce(Receiver<Batch>, Sender<Batch>, Ctx) -> Fut,
    Fut: Future<Output = Result<Stats>> + Send + 'static,
{
    wire(name, common, inputs, None, |i, o, ctx, _| stage(i, o, ctx)).await
}

/// What a sink adds to its summary, read when the run has ended: a breakdown after
/// "N out" (" (900 inserted, 90 updated, …)") and its work after the rejects
/// (", 3 batches, 0 retries").
pub type Detail = Box<dyn FnOnce() -> (String, String) + Send>;

/// Like [`filter`], for a sink: it counts its own progress (rows committed), always
/// prints its summary, with `detail` after the count out.
pub async fn sink<F, Fut>(
    name: &'static str,
    common: &Common,
    inputs: &[PathBuf],
    detail: Detail,
    stage: F,
) -> Result<Exit>
where
    F: FnOnce(Receiver<Batch>, Sender<Batch>, Ctx, Progress) -> Fut,
    Fut: Future<Output = Result<Stats>> + Send + 'static,
{
    wire(name, common, inputs, Some(detail), stage).await
}

async fn wire<F, Fut>(
    name: &'static str,
    common: &Common,
    inputs: &[PathBuf],
    sink_detail: Option<Detail>,
    stage: F,
) -> Result<Exit>
where
    F: FnOnce(Receiver<Batch>, Sender<Batch>, Ctx, Progress) -> Fut,
    Fut: Future<Output = Result<Stats>> + Send + 'static,
{
    let started = Instant::now();
    let dead = DeadLetters::open(common.dead_letter.as_deref(), &common.meta_field)
        .map_err(|e| Error::new(Exit::IoErr, e))?;
    let inputs = ndjson::open_inputs(inputs)?;
    let size = InputSize {
        total: inputs.iter().map(|i| i.size).sum(),
        consumed: inputs.iter().map(|i| i.consumed.clone()).collect(),
    };
    let compression: Vec<_> = inputs
        .iter()
        .map(|i| (i.name.clone(), i.compression))
        .collect();
    let shutdown = Shutdown::on_signals();
    let ctx = Ctx::new(dead.clone(), shutdown.clone(), &common.meta_field);
    let progress = Progress::new(name, common.progress, common.quiet, &dead, size);
    let writer_counts = sink_detail.is_none();
    let (writer_progress, stage_progress) = if writer_counts {
        (progress.clone(), Progress::hidden())
    } else {
        (Progress::hidden(), progress.clone())
    };

    let (in_tx, in_rx) = mpsc::channel(CHANNEL_BATCHES);
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_BATCHES);
    let reader = tokio::spawn(ndjson::read(
        inputs,
        common.max_line_bytes,
        in_tx,
        shutdown.clone(),
        common.shutdown_timeout,
    ));
    let stage = tokio::spawn(stage(in_rx, out_tx, ctx, stage_progress));
    let written = ndjson::write(out_rx, ndjson::stdout(), writer_progress).await;
    // A closed stdout (`| head`) ends a filter at once (exit 0, the rest of the input
    // unread). A sink's stdout is only a copy (`persist --emit`): it loads to the end.
    let sink = !writer_counts;
    if let Err(e) = written {
        if !(sink && e.is_broken_pipe()) {
            progress.finish();
            return Err(e);
        }
    }
    let stats = stage
        .await
        .map_err(|e| Error::from(anyhow::anyhow!("{name} panicked: {e}")))??;
    progress.finish();
    let end = reader
        .await
        .map_err(|e| Error::from(anyhow::anyhow!("reader panicked: {e}")))??;
    let exit = finish(name, common, &dead, &stats, started, sink_detail);
    match end {
        ndjson::ReadEnd::Complete => Ok(exit),
        ndjson::ReadEnd::Stopped { source, line } => {
            // Interrupted before the end of its input: what was read is handled; say
            // where to resume, and exit 128 + the signal, not 0, so that scripts know.
            let resume = if &*source == "stdin" {
                format!("skip {line} lines of stdin")
            } else {
                let kind = compression
                    .iter()
                    .find(|(n, _)| *n == source)
                    .and_then(|(_, c)| *c);
                ndjson::Input::resume_hint(&source, kind, line)
            };
            progress::eprint_line(&format!(
                "{name}: interrupted: stopped after line {line} of {source}; everything up to \
                 it was handled (to resume: {resume})"
            ));
            Ok(match exit {
                Exit::Ok => shutdown.interrupted_exit(),
                other => other,
            })
        }
    }
}

/// Runs a source (a server, a consumer) into stdout; it ends on shutdown or when it
/// has nothing more to send.
pub async fn source<F, Fut>(name: &'static str, common: &Common, source: F) -> Result<Exit>
where
    F: FnOnce(Sender<Batch>, Ctx) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let dead = DeadLetters::open(common.dead_letter.as_deref(), &common.meta_field)
        .map_err(|e| Error::new(Exit::IoErr, e))?;
    let started = Instant::now();
    let shutdown = Shutdown::on_signals();
    let ctx = Ctx::new(dead.clone(), shutdown.clone(), &common.meta_field);
    let progress = Progress::new(
        name,
        common.progress,
        common.quiet,
        &dead,
        InputSize::default(),
    );
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_BATCHES);
    let mut task = tokio::spawn(source(out_tx, ctx));
    let mut writer = tokio::spawn(ndjson::write(out_rx, ndjson::stdout(), progress.clone()));
    let panicked = |e| Error::from(anyhow::anyhow!("{name} panicked: {e}"));
    let (ran, written) = tokio::select! {
        // The source ended (its own end, or shutdown). A failed source (acknowledged
        // events it could not write before --shutdown-timeout) ends the run at once,
        // even with the writer stuck on a stalled stdout.
        ran = &mut task => (ran, None),
        // stdout closed or failed: stop taking input (HTTP answers 503, Kafka stops
        // fetching); the source then says what it had acknowledged but could not write.
        written = &mut writer => {
            let written = written.map_err(panicked)?;
            if written.is_err() {
                shutdown.trigger();
            }
            (task.await, Some(written))
        }
    };
    if let Err(e) = ran.map_err(panicked).and_then(|r| r) {
        progress.finish();
        return Err(e);
    }
    let written = match written {
        Some(w) => w,
        None => writer.await.map_err(panicked)?,
    };
    progress.finish();
    let events = written?;
    let stats = Stats {
        events_in: events,
        events_out: events,
        rejected: dead.count(),
    };
    Ok(finish(name, common, &dead, &stats, started, None))
}

/// Prints the summary and decides the exit code: 65 when rejects had nowhere to go.
///
/// Every command's summary has the same words: events *in* (read from its input),
/// *out* (handed on: written to stdout, or for a sink, stored), rejected, and the time
/// the run took. A filter prints it when something was rejected or it drew progress; a
/// sink (`detail` given) always, unless `--quiet`.
pub fn finish(
    name: &str,
    common: &Common,
    dead: &DeadLetters,
    stats: &Stats,
    started: Instant,
    detail: Option<Detail>,
) -> Exit {
    let rejected = dead.count();
    let show = !common.quiet
        && (rejected > 0 || detail.is_some() || progress::draws(common.progress, common.quiet));
    if show {
        let whereto = match &common.dead_letter {
            Some(p) if p == "-" => " (dead letters on stderr)".to_owned(),
            Some(p) => format!(" (dead letters in {p})"),
            None if rejected > 0 => " (no --dead-letter output: not kept)".to_owned(),
            None => String::new(),
        };
        let (breakdown, work) = detail.map(|d| d()).unwrap_or_default();
        progress::eprint_line(&format!(
            "{name}: {} events in, {} out{breakdown}, {} rejected{whereto}{work} · {}",
            human::count(stats.events_in),
            human::count(stats.events_out),
            human::count(rejected),
            human::elapsed(started.elapsed()),
        ));
        if rejected > 0 {
            for line in dead.summary() {
                progress::eprint_line(&format!("{name}: {line}"));
            }
        }
    }
    if rejected > 0 && !dead.has_output() {
        Exit::DataErr
    } else {
        Exit::Ok
    }
}
