//! Live scaling: with `--file`, SIGHUP or a change to the file (seen with `notify`)
//! re-reads it. A new `--workers` of a `validate` or `enrich` stage takes effect at once,
//! without a restart and without losing or repeating an event (the stage starts more
//! batches at a time, or lets the ones started finish: [`crate::stage::workers::map_ordered`]).
//! So does a new `--connections` of `persist`, after a barrier: every loader commits
//! what it holds before rows are routed over the new count (see `persist`'s `rescale`).
//! So do new channel settings on the text's `pipeline` line (`--channel-capacity`,
//! `--channel-bytes`, `--when-full`): every relay reads its bounds before each step.
//! Any other change is refused with one log line naming the stage that needs a restart,
//! and the pipeline carries on as it was.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::Signal;
use tokio::sync::{mpsc, watch};

use crate::cli::Common;
use crate::progress;
use crate::shutdown::Shutdown;
use crate::wire::relay::Bounds;

use super::plan;
use crate::commands::Command;

/// Editors save in several steps (truncate, write, rename): changes closer together than
/// this are read once, after the last.
const SETTLE: Duration = Duration::from_millis(200);
/// How often the watch is set again while the file is missing (an editor's save that
/// removed it and has not yet put the new one in place, or a file moved away for good).
const REARM: Duration = Duration::from_secs(1);

/// A running stage as reload sees it.
pub struct Running {
    pub command: &'static Command,
    pub words: Vec<String>,
    /// The stage's live worker count (validate, enrich) or connections (persist).
    pub workers: Option<watch::Sender<usize>>,
}

/// What a reload may change in a running pipeline.
pub struct Live {
    pub stages: Vec<Running>,
    /// The channel bounds of the command line; a `pipeline` line of the text overrides them.
    pub base: Bounds,
    pub bounds: watch::Sender<Bounds>,
}

/// Catches SIGHUP from now on, for [`start`]: called first thing by a run with `--file`,
/// since a SIGHUP while the stages are being built (databases connecting, jq compiling)
/// would otherwise end the process, SIGHUP's default. `None` (with a warning) when it
/// cannot be caught. Must be called on the runtime.
pub fn catch_hup() -> Option<Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("pipeline: cannot catch SIGHUP: {e}");
            None
        }
    }
}

/// Watches `path`, whose text the run started with is `text`, and SIGHUP (caught since
/// [`catch_hup`]) until shutdown; applies what may change. The file watch is in place when
/// this returns (it must be called on the runtime), so a save right after start is seen.
pub fn start(
    path: PathBuf,
    text: String,
    hup: Option<Signal>,
    live: Live,
    common: Common,
    shutdown: Shutdown,
) {
    let (tx, changes) = mpsc::channel::<()>(1);
    // The file is watched, not its directory. The directory's watch saw every write to
    // every file beside the pipe file, and each was a reason to read it again: with a
    // SQLite database next to it, `pipeline 'validate | enrich | persist'` spent 5 % of
    // its CPU time in the watch's thread and took 2.41-2.49 s for 1 M events, against
    // 2.18-2.30 s with the pipe file elsewhere. An editor's save may replace the file
    // (renaming another over it): the watch then ends with the old file, so it is set
    // again on the path after every change (see `watch`).
    let watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        // Opening or reading the file changes nothing (the reload's own read opens it);
        // a write closed does.
        let change = e.is_ok_and(|e| match e.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        });
        if change {
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&path, RecursiveMode::NonRecursive).map(|()| w));
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "pipeline: not watching {} for changes ({e}); SIGHUP still reloads",
                path.display()
            );
            None
        }
    };
    let Some(hup) = hup else { return };
    tokio::spawn(async move {
        watch(path, text, live, common, shutdown, hup, watcher, changes).await;
    });
}

/// Sets the watch on `path` again (the file there may be another than the one watched):
/// whether it is set.
fn rearm(watcher: &mut RecommendedWatcher, path: &Path) -> bool {
    let _ = watcher.unwatch(path);
    watcher.watch(path, RecursiveMode::NonRecursive).is_ok()
}

#[allow(clippy::too_many_arguments)]
async fn watch(
    path: PathBuf,
    mut last: String,
    live: Live,
    common: Common,
    shutdown: Shutdown,
    mut hup: Signal,
    // Kept for as long as the loop runs: dropping it ends the watch.
    mut watcher: Option<RecommendedWatcher>,
    mut changes: mpsc::Receiver<()>,
) {
    let mut armed = watcher.is_some();
    loop {
        let forced = tokio::select! {
            _ = hup.recv() => true,
            Some(()) = changes.recv() => false,
            // The file was missing when the watch was last set: try again, and read it
            // if it is back.
            () = tokio::time::sleep(REARM), if watcher.is_some() && !armed => {
                armed = rearm(watcher.as_mut().expect("checked"), &path);
                if !armed {
                    continue;
                }
                false
            }
            () = shutdown.wait() => return,
        };
        tokio::time::sleep(SETTLE).await;
        if let Some(w) = watcher.as_mut() {
            armed = rearm(w, &path);
        }
        while changes.try_recv().is_ok() {}
        let text = match read(&path).await {
            Ok(text) => text,
            Err(e) => {
                progress::eprint_line(&format!(
                    "pipeline: reload refused: {e}; carrying on unchanged"
                ));
                continue;
            }
        };
        if text == last && !forced {
            continue; // A change to another file of the directory.
        }
        last = text.clone();
        apply(&text, &live, &common);
    }
}

/// Reads the pipe file as at start ([`plan::read_file`]: regular files only, bounded),
/// on a blocking thread: a slow disk must not hold up a runtime thread.
async fn read(path: &std::path::Path) -> crate::exit::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || plan::read_file(&path))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("reading the pipe file: {e}").into()))
}

/// Applies `text` to the running `stages`, or refuses it with one line.
fn apply(text: &str, live: &Live, common: &Common) {
    let stages = &live.stages;
    let refuse = |why: String| {
        progress::eprint_line(&format!(
            "pipeline: reload refused: {why}; restart to apply it. Carrying on unchanged"
        ));
    };
    let (channels, new) = match plan::scaling(text, common) {
        Ok(n) => n,
        Err(e) => return refuse(crate::redact::text(&e.to_string()).into_owned()),
    };
    let same = |n: &plan::Scaling, r: &Running| std::ptr::eq(n.command, r.command);
    if new.len() != stages.len() || new.iter().zip(stages).any(|(n, r)| !same(n, r)) {
        let names = |v: Vec<&str>| v.join(" | ");
        return refuse(format!(
            "the stages changed ({} → {})",
            names(stages.iter().map(|s| s.command.name).collect()),
            names(new.iter().map(|s| s.command.name).collect())
        ));
    }
    let total = stages.len();
    for (i, (n, r)) in new.iter().zip(stages).enumerate() {
        let flag = r.command.knob;
        if without(flag, &n.words) != without(flag, &r.words) {
            return refuse(format!(
                "{} changed beyond {}",
                plan::label(i + 1, total, r.command.name),
                flag.unwrap_or("nothing that can change live")
            ));
        }
    }
    let bounds = channels.apply(&live.base);
    let old = live.bounds.borrow().clone();
    if (old.events, old.bytes, old.when_full) != (bounds.events, bounds.bytes, bounds.when_full) {
        tracing::info!(
            "pipeline: channels {} events / {} bytes / {} → {} events / {} bytes / {}",
            old.events,
            old.bytes,
            old.when_full.as_str(),
            bounds.events,
            bounds.bytes,
            bounds.when_full.as_str()
        );
        live.bounds.send_replace(bounds);
    }
    for (n, r) in new.iter().zip(stages) {
        if let (Some(tx), Some(workers)) = (&r.workers, n.workers) {
            let old = *tx.borrow();
            if old != workers {
                tx.send_replace(workers);
                let what = r.command.knob.unwrap_or("--workers");
                tracing::info!("pipeline: {}: {what} {old} → {workers}", r.command.name);
            }
        }
    }
}

/// A stage's words without its setting of `flag` (`--workers N`, `--workers=N`).
fn without<'a>(flag: Option<&str>, words: &'a [String]) -> Vec<&'a str> {
    let Some(flag) = flag else {
        return words.iter().map(String::as_str).collect();
    };
    let mut out = Vec::new();
    let mut skip = false;
    for w in words {
        if skip {
            skip = false;
        } else if w == flag {
            skip = true;
        } else if !w
            .strip_prefix(flag)
            .is_some_and(|rest| rest.starts_with('='))
        {
            out.push(w.as_str());
        }
    }
    out
}
