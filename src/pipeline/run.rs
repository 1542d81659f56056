//! Running a plan: every stage built (databases opened only now), chained by
//! [`crate::wire`] with bounded channels, then one summary for the whole pipe.

use std::sync::Arc;
use std::time::Instant;

use crate::cli::Common;
use crate::commands::{Opened, Outcomes};
use crate::dead_letter::DeadLetters;
use crate::exit::{Error, Exit, Result};
use crate::human;
use crate::ndjson;
use crate::progress::{self, Progress};
use crate::shell;
use crate::shutdown::Shutdown;
use crate::stage::stdio::{Reader, Writer};
use crate::stage::{Ctx, Stats};
use crate::wire::merge::Merge;
use crate::wire::relay::{Bounds, Fill};
use crate::wire::{self, Link};

use super::plan::{Plan, Planned};

/// What the summary says about one stage after the run.
struct Line {
    name: &'static str,
    dead: DeadLetters,
    /// A sink's breakdown and work (persist's counts).
    detail: Option<Arc<dyn Outcomes>>,
}

/// How a plan runs, besides the flags common to every command.
pub struct Options {
    /// The channel bounds of the command line, before the text's `pipeline` line.
    pub base: Bounds,
    /// The channel bounds the run starts with.
    pub bounds: Bounds,
    /// `--metrics-listen`, with `--ready-window`.
    pub serve: Option<(std::net::SocketAddr, std::time::Duration)>,
    /// `--file`, watched for live scaling.
    pub reload: Option<Reload>,
}

/// What live scaling starts from.
pub struct Reload {
    pub path: std::path::PathBuf,
    /// The text the run started with.
    pub text: String,
    /// SIGHUP, caught since start.
    pub hup: Option<tokio::signal::unix::Signal>,
    /// `pipeline`'s common flags, which a new text's stages are parsed with.
    pub common: Common,
}

/// Runs `plan` until it ends or `shutdown`; `common` holds the flags given to `pipeline`
/// itself.
pub async fn run(
    plan: Plan,
    common: &shell::Options,
    options: Options,
    shutdown: Shutdown,
) -> Result<Exit> {
    let Options {
        base,
        bounds,
        serve,
        reload,
    } = options;
    let started = Instant::now();
    let dead = DeadLetters::open(common.dead_letter.as_deref(), &common.meta_field)
        .map_err(|e| Error::new(Exit::IoErr, e))?;
    // Input files are opened first: a missing one exits 66 before a database is touched.
    let inputs = if plan.sources.is_empty() || !plan.inputs.is_empty() {
        ndjson::open_inputs(&plan.inputs)?
    } else {
        Vec::new()
    };
    let (size, compression) = shell::measure(&inputs);
    let ctx_for = |p: &Planned| -> Result<Ctx> {
        let own = match &p.common.dead_letter {
            same if *same == common.dead_letter => dead.clone(),
            other => DeadLetters::open(other.as_deref(), &common.meta_field)
                .map_err(|e| Error::new(Exit::IoErr, e))?,
        };
        let mut ctx = Ctx::new(own, shutdown.clone(), &common.meta_field);
        ctx.isolate_panics = true;
        ctx.measure_batches = true;
        Ok(ctx)
    };

    // The hub: one source, or several feeding it (source stages, then the files).
    let mut sources: Vec<Link> = Vec::new();
    // Every stage of the text, for reload to compare a new text with.
    let mut running = Vec::new();
    for mut p in plan.sources {
        if serve.is_some() {
            p.config.serve_metrics();
        }
        running.push(super::reload::Running {
            command: p.command,
            words: p.words.clone(),
            workers: None,
        });
        let ctx = ctx_for(&p)?;
        let Opened { stage, .. } = p.config.open().await?;
        sources.push(Link { stage, ctx });
    }
    let reads_files = !inputs.is_empty();
    if reads_files {
        sources.push(Link {
            stage: Box::new(Reader {
                inputs,
                max_line_bytes: common.max_line_bytes,
                drain_timeout: common.shutdown_timeout,
            }),
            ctx: Ctx::new(dead.clone(), shutdown.clone(), &common.meta_field),
        });
    }
    let first = if sources.len() == 1 {
        sources.pop().expect("one")
    } else {
        Link {
            stage: Box::new(Merge { sources }),
            ctx: Ctx::new(dead.clone(), shutdown.clone(), &common.meta_field),
        }
    };

    // The bounds every channel follows (reload changes them), and how full each is.
    let (limits_tx, limits) = tokio::sync::watch::channel(bounds);
    let n = plan.stages.len();
    let fills: Vec<Arc<Fill>> = (0..n).map(|_| Arc::default()).collect();
    // One line per stage on a terminal: what it passed on, and the fill of the channel
    // in front of it. A pipe of no stage (a source alone) shows the one line of the shell.
    let display = (n > 0)
        .then(|| progress::Lines::new(common.progress, common.quiet))
        .flatten();
    let progress = if n == 0 {
        Progress::new("pipeline", common.progress, common.quiet, &dead, size)
    } else {
        Progress::hidden()
    };
    let total = running.len() + n;
    if serve.is_some() {
        // Before any stage registers its series: without a recorder they record nothing.
        crate::metrics::handle();
    }
    let mut links = vec![first];
    let mut lines = Vec::new();
    let mut databases = Vec::new();
    // Whether each stage looks inside events (tee, like the writer after the last stage,
    // only copies their bytes): a stage keeps indexes when one after it does.
    let looks: Vec<bool> = plan
        .stages
        .iter()
        .map(|p| p.config.looks_inside())
        .collect();
    for (i, p) in plan.stages.into_iter().enumerate() {
        let mut ctx = ctx_for(&p)?;
        ctx.keep_index = looks[i + 1..].iter().any(|&l| l);
        if let Some(display) = &display {
            let (fill, limits) = (fills[i].clone(), limits.clone());
            let line = Progress::line(
                display,
                &format!("{}/{total} {}", p.position, p.command.name),
                &ctx.dead,
                move || {
                    let queued = fill.events.load(std::sync::atomic::Ordering::Relaxed);
                    format!(
                        "channel {} of {}",
                        human::count(queued),
                        human::count(limits.borrow().events as u64)
                    )
                },
            );
            ctx = ctx.with_progress(line);
        }
        databases.extend(p.config.databases());
        let live = p.knob;
        let Opened {
            stage,
            outcomes: detail,
        } = p.config.open().await?;
        let workers = live.map(|n| {
            let (tx, rx) = tokio::sync::watch::channel(n);
            ctx.workers = Some(rx);
            tx
        });
        running.push(super::reload::Running {
            command: p.command,
            words: p.words.clone(),
            workers,
        });
        lines.push(Line {
            name: p.command.name,
            dead: ctx.dead.clone(),
            detail,
        });
        links.push(Link { stage, ctx });
    }
    links.push(Link {
        stage: Box::new(Writer {
            out: ndjson::stdout(),
        }),
        ctx: Ctx::new(dead.clone(), shutdown.clone(), &common.meta_field)
            .with_progress(progress.clone()),
    });

    if let Some((addr, window)) = serve {
        let watch = crate::pipeline::serve::Watch {
            channels: links[1..]
                .iter()
                .map(|l| l.stage.name())
                .zip(fills.iter().cloned())
                .collect(),
            bounds: limits.clone(),
            window,
            databases,
            sinks: lines
                .iter()
                .filter_map(|l| l.detail.clone().map(|c| (l.name, c)))
                .collect(),
        };
        crate::pipeline::serve::start(addr, watch, shutdown.clone()).await?;
    }
    if let Some(Reload {
        path,
        text,
        hup,
        common,
    }) = reload
    {
        super::reload::start(
            path,
            text,
            hup,
            super::reload::Live {
                stages: running,
                base,
                bounds: limits_tx,
            },
            common,
            shutdown.clone(),
        );
    }
    let ran = wire::chain_bounded(links, limits, fills.clone(), dead.clone()).await;
    progress.finish();
    if let Some(d) = &display {
        d.finish();
    }
    let stats = ran?;

    let dropped = fills
        .iter()
        .map(|f| f.dropped.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    let hub = &stats[0];
    let exit = summary(
        common,
        &lines,
        &stats,
        &Dropped {
            at: dropped,
            kept: dead.has_output(),
        },
        started,
    );
    Ok(match (&hub.stopped, reads_files) {
        (Some(stopped), true) => {
            shell::interrupted("pipeline", stopped, &compression, &shutdown, exit)
        }
        _ => exit,
    })
}

/// What `--when-full drop-*` dropped in front of each stage, and whether the dropped
/// events were kept as dead letters.
struct Dropped {
    at: Vec<u64>,
    kept: bool,
}

/// One line per stage, then the totals; the exit code (65 when rejects or drops had
/// nowhere to go). The totals add up: what the sources read is what came out, was
/// rejected or was dropped (a jq program giving several outputs per event aside).
fn summary(
    common: &shell::Options,
    lines: &[Line],
    stats: &[Stats],
    dropped: &Dropped,
    started: Instant,
) -> Exit {
    // stats: [hub, stage…, writer]
    let stage_stats = &stats[1..stats.len() - 1];
    let rejected_total: u64 = stage_stats.iter().map(|s| s.rejected).sum();
    let dropped_total: u64 = dropped.at.iter().sum();
    let unkept = lines
        .iter()
        .any(|l| l.dead.count() > 0 && !l.dead.has_output())
        || (dropped_total > 0 && !dropped.kept);
    // Stages sharing a dead-letter output share its counts: summarise each output once.
    let mut seen: Vec<&DeadLetters> = Vec::new();
    for l in lines {
        if !seen.iter().any(|d| d.same(&l.dead)) {
            seen.push(&l.dead);
        }
    }
    let has_sink = lines.iter().any(|l| l.detail.is_some());
    let show = !common.quiet
        && (rejected_total > 0
            || dropped_total > 0
            || has_sink
            || progress::draws(common.progress, common.quiet));
    if show {
        for (l, s) in lines.iter().zip(stage_stats) {
            let (breakdown, work) = l.detail.as_ref().map(|c| c.summary()).unwrap_or_default();
            progress::eprint_line(&format!(
                "pipeline: {}: {} in, {} out{breakdown}, {} rejected{work}",
                l.name,
                human::count(s.events_in),
                human::count(s.events_out),
                human::count(s.rejected),
            ));
        }
        // What the sources read: what reached the first stage, and what was dropped
        // in front of it.
        let read = match (stage_stats.first(), dropped.at.first()) {
            (Some(s), Some(d)) => s.events_in + d,
            _ => stats[stats.len() - 1].events_in,
        };
        let last_out = stats[stats.len() - 1].events_out;
        let out = match lines.last() {
            Some(l) if l.detail.is_some() => stage_stats.last().map_or(0, |s| s.events_out),
            _ => last_out,
        };
        let whereto = shell::dead_letters_at(common, rejected_total);
        let dropped_words = match (dropped_total, dropped.kept) {
            (0, _) => String::new(),
            (n, true) => format!(", {} dropped by --when-full", human::count(n)),
            (n, false) => format!(
                ", {} dropped by --when-full (no --dead-letter output: not kept)",
                human::count(n)
            ),
        };
        progress::eprint_line(&format!(
            "pipeline: {} events in, {} out, {} rejected{whereto}{dropped_words} · {}",
            human::count(read),
            human::count(out),
            human::count(rejected_total),
            human::elapsed(started.elapsed()),
        ));
        for d in &seen {
            for line in d.summary() {
                progress::eprint_line(&format!("pipeline: {line}"));
            }
        }
    }
    if unkept {
        Exit::DataErr
    } else {
        Exit::Ok
    }
}
