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
use crate::stage::{Ctx, Ended, Stats};
use crate::tally::Tally;
use crate::tap::Taps;
use crate::wire::merge::Merge;
use crate::wire::relay::{Bounds, Fill};
use crate::wire::{self, Link};

use super::plan::{Plan, Planned};
use super::reload::{Live, Running};
use crate::operator::watch::Watch;

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
    /// `--top`: the live view on the terminal instead of progress lines.
    pub top: bool,
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

/// What every stage of one run shares: the flags given to `pipeline` itself, the
/// dead-letter output and the shutdown token.
struct Run<'a> {
    common: &'a shell::Options,
    dead: DeadLetters,
    shutdown: Shutdown,
    /// `--metrics-listen` was given: stages register their series.
    serves: bool,
}

impl Run<'_> {
    /// The context of a planned stage: its own dead-letter output if it names one.
    fn ctx_for(&self, p: &Planned) -> Result<Ctx> {
        let own = match &p.common.dead_letter {
            same if *same == self.common.dead_letter => self.dead.clone(),
            other => DeadLetters::open(other.as_deref(), &self.common.meta_field)
                .map_err(|e| Error::new(Exit::IoErr, e))?,
        };
        let mut ctx = Ctx::new(own, self.shutdown.clone(), &self.common.meta_field);
        ctx.isolate_panics = true;
        ctx.measure_batches = true;
        Ok(ctx)
    }

    fn ctx(&self) -> Ctx {
        Ctx::new(
            self.dead.clone(),
            self.shutdown.clone(),
            &self.common.meta_field,
        )
    }
}

/// The hub: its one link, what the summary says about its source stages (with their
/// tallies), and the source stages as reload knows them.
struct Hub {
    link: Link,
    sources: Vec<(Line, Tally)>,
    running: Vec<Running>,
}

/// The filters and sinks, linked, with what the summary and reload need of them.
struct Stages {
    links: Vec<Link>,
    lines: Vec<Line>,
    running: Vec<Running>,
    databases: Vec<crate::postgres::ConnectSpec>,
    checks: Vec<crate::operator::Check>,
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
        top,
    } = options;
    if top {
        crate::top::check_terminal()?;
    }
    // The view reads the run's own /metrics: on a port of its own unless one is given.
    let serve = match (serve, top) {
        (None, true) => Some((
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            std::time::Duration::from_secs(10),
        )),
        (serve, _) => serve,
    };
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
    let reads_files = !inputs.is_empty();
    let run = Run {
        common,
        dead: dead.clone(),
        shutdown: shutdown.clone(),
        serves: serve.is_some(),
    };
    if run.serves {
        // Before any stage registers its series: without a recorder they record nothing.
        crate::metrics::handle();
    }
    let hub = open_hub(&run, plan.sources, inputs).await?;

    // The bounds every channel follows (reload changes them), and how full each is.
    let (limits_tx, limits) = tokio::sync::watch::channel(bounds);
    let n = plan.stages.len();
    let fills: Vec<Arc<Fill>> = (0..n).map(|_| Arc::default()).collect();
    // One line per stage on a terminal: what it passed on, and the fill of the channel
    // in front of it. A pipe of no stage (a source alone) shows the one line of the shell.
    let display = (n > 0 && !top)
        .then(|| progress::Lines::new(common.progress, common.quiet))
        .flatten();
    let total = hub.running.len() + n;
    let stages = open_stages(&run, plan.stages, display.as_ref(), &fills, &limits, total).await?;
    let mut links = vec![hub.link];
    links.extend(stages.links);
    let writer = Link::new(
        Box::new(Writer {
            out: ndjson::stdout(),
        }),
        run.ctx(),
    );
    let progress = if n == 0 && !top {
        Progress::new(
            "pipeline",
            common.progress,
            common.quiet,
            &dead,
            size,
            &writer.tally(),
        )
    } else {
        Progress::hidden()
    };
    let taps = serve.map(|_| {
        let taps = Taps::new(links.iter().map(|l| l.stage.name()));
        for (link, (_, point)) in links.iter_mut().zip(taps.points()) {
            link.tap = Some(point.clone());
        }
        taps
    });
    links.push(writer);

    let mut served = None;
    if let Some((addr, window)) = serve {
        let watch = Watch {
            channels: links[1..]
                .iter()
                .map(|l| l.stage.name())
                .zip(fills.iter().cloned())
                .collect(),
            bounds: Some(limits.clone()),
            window,
            databases: stages.databases,
            checks: stages.checks,
            sinks: stages
                .lines
                .iter()
                .filter_map(|l| l.detail.clone().map(|c| (l.name, c)))
                .collect(),
            taps,
        };
        served = Some(crate::operator::watch::start(addr, watch, shutdown.clone()).await?);
    }
    if let Some(reload) = reload {
        let mut running = hub.running;
        running.extend(stages.running);
        let live = Live {
            stages: running,
            base,
            bounds: limits_tx,
        };
        start_reload(reload, live, shutdown.clone());
    }
    let view = served.as_ref().filter(|_| top).map(|served| {
        let (addr, shutdown) = (served.addr, shutdown.clone());
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let shown = tokio::spawn(async move {
            let left = crate::top::show(addr, "this pipeline", async {
                let _ = ended.await;
            })
            .await?;
            if left == crate::top::Left::Quit {
                // As the first signal: the run drains and ends.
                shutdown.trigger();
            }
            Ok::<_, Error>(())
        });
        (end, shown)
    });
    let ran = wire::chain_bounded(links, limits, fills, dead.clone()).await;
    if let Some((end, shown)) = view {
        let _ = end.send(());
        Error::joined("top", shown.await)??;
    }
    if let Some(served) = served {
        served.finish().await;
    }
    progress.finish();
    if let Some(d) = &display {
        d.finish();
    }
    let stats = ran?;

    let stopped = stats[0].stopped.clone();
    let exit = summary(
        common,
        &hub.sources,
        &stages.lines,
        &stats,
        dead.has_output(),
        started,
    );
    Ok(match (stopped, reads_files) {
        (Some(stopped), true) => {
            shell::interrupted("pipeline", &stopped, &compression, &shutdown, exit)
        }
        _ => exit,
    })
}

/// Watches `--file` for a new text (and SIGHUP), to apply what may change live.
fn start_reload(reload: Reload, live: Live, shutdown: Shutdown) {
    let Reload {
        path,
        text,
        hup,
        common,
    } = reload;
    super::reload::start(path, text, hup, live, common, shutdown);
}

/// Opens the source stages and the input files into one hub link (several sources feed
/// it through [`Merge`]).
async fn open_hub(run: &Run<'_>, planned: Vec<Planned>, inputs: Vec<ndjson::Input>) -> Result<Hub> {
    let mut links: Vec<Link> = Vec::new();
    let mut sources = Vec::new();
    let mut running = Vec::new();
    for mut p in planned {
        if run.serves {
            p.config.serve_metrics();
        }
        running.push(Running {
            command: p.command,
            words: p.words.clone(),
            workers: None,
        });
        let ctx = run.ctx_for(&p)?;
        let Opened { stage, .. } = p.config.open().await?;
        let link = Link::new(stage, ctx);
        let line = Line {
            name: p.command.name,
            dead: link.ctx.dead.clone(),
            detail: None,
        };
        sources.push((line, link.tally()));
        links.push(link);
    }
    if !inputs.is_empty() {
        let reader = Reader {
            inputs,
            max_line_bytes: run.common.max_line_bytes,
            drain_timeout: run.common.shutdown_timeout,
        };
        links.push(Link::new(Box::new(reader), run.ctx()));
    }
    let link = if links.len() == 1 {
        links.pop().expect("one")
    } else {
        // The sources count for themselves: the hub's own tally is unlisted, and counts
        // nothing.
        let mut ctx = run.ctx();
        ctx.tally = Tally::unlisted("sources");
        Link {
            stage: Box::new(Merge { sources: links }),
            ctx,
            tap: None,
        }
    };
    Ok(Hub {
        link,
        sources,
        running,
    })
}

/// Opens the filters and sinks (databases are connected now), each with its line of the
/// display when there is one.
async fn open_stages(
    run: &Run<'_>,
    planned: Vec<Planned>,
    display: Option<&progress::Lines>,
    fills: &[Arc<Fill>],
    limits: &tokio::sync::watch::Receiver<Bounds>,
    total: usize,
) -> Result<Stages> {
    let mut stages = Stages {
        links: Vec::new(),
        lines: Vec::new(),
        running: Vec::new(),
        databases: Vec::new(),
        checks: Vec::new(),
    };
    // Whether each stage looks inside events (tee, like the writer after the last stage,
    // only copies their bytes): a stage keeps indexes when one after it does.
    let looks: Vec<bool> = planned.iter().map(|p| p.config.looks_inside()).collect();
    for (i, mut p) in planned.into_iter().enumerate() {
        if run.serves {
            p.config.serve_metrics();
        }
        let mut ctx = run.ctx_for(&p)?;
        ctx.keep_index = looks[i + 1..].iter().any(|&l| l);
        stages.databases.extend(p.config.databases());
        stages.checks.extend(p.config.checks());
        let Opened {
            stage,
            outcomes: detail,
        } = p.config.open().await?;
        let workers = p.knob.map(|n| {
            let (tx, rx) = tokio::sync::watch::channel(n);
            ctx.workers = Some(rx);
            tx
        });
        let mut link = Link::new(stage, ctx);
        if let Some(display) = display {
            let (fill, limits) = (fills[i].clone(), limits.clone());
            link.ctx.progress = Progress::line(
                display,
                &format!("{}/{total} {}", p.position, p.command.name),
                &link.ctx.dead,
                &link.tally(),
                move || {
                    let queued = fill.events.load(std::sync::atomic::Ordering::Relaxed);
                    format!(
                        "channel {} of {}",
                        human::count(queued),
                        human::count(limits.borrow().events as u64)
                    )
                },
            );
        }
        stages.running.push(Running {
            command: p.command,
            words: p.words,
            workers,
        });
        stages.lines.push(Line {
            name: p.command.name,
            dead: link.ctx.dead.clone(),
            detail,
        });
        stages.links.push(link);
    }
    Ok(stages)
}

/// One line per source stage and per stage, then the totals; the exit code (65 when
/// rejects or drops had nowhere to go). The totals add up: what the sources read is what
/// came out, was rejected or was dropped (a jq program giving several outputs per event
/// aside). `kept`: dropped events were kept as dead letters.
fn summary(
    common: &shell::Options,
    sources: &[(Line, Tally)],
    lines: &[Line],
    stats: &[Stats],
    kept: bool,
    started: Instant,
) -> Exit {
    // stats: [hub, stage…, writer]
    let stage_stats = &stats[1..stats.len() - 1];
    // What the stages rejected: a source's rejects were never read into the pipe (its
    // own line says them).
    let rejected_total: u64 = stage_stats.iter().map(|s| s.rejected).sum();
    let dropped_total: u64 = stage_stats.iter().map(|s| s.dropped).sum();
    let unkept = lines
        .iter()
        .chain(sources.iter().map(|(l, _)| l))
        .any(|l| l.dead.count() > 0 && !l.dead.has_output())
        || (dropped_total > 0 && !kept);
    // Stages sharing a dead-letter output share its counts: summarise each output once.
    let mut seen: Vec<&DeadLetters> = Vec::new();
    for l in sources.iter().map(|(l, _)| l).chain(lines) {
        if !seen.iter().any(|d| d.same(&l.dead)) {
            seen.push(&l.dead);
        }
    }
    let has_sink = lines.iter().any(|l| l.detail.is_some());
    let sources_rejected = sources.iter().any(|(_, t)| t.get().rejected > 0);
    let show = !common.quiet
        && (rejected_total > 0
            || sources_rejected
            || dropped_total > 0
            || has_sink
            || progress::draws(common.progress, common.quiet));
    if show {
        // What each source consumed (Kafka messages, lines of HTTP bodies), then what
        // each stage did.
        let consumed: Vec<Stats> = sources
            .iter()
            .map(|(_, t)| Stats::of(t.get(), t.figures(), Ended::default()))
            .collect();
        let every = sources.iter().map(|(l, _)| l).chain(lines);
        for (l, s) in every.zip(consumed.iter().chain(stage_stats)) {
            let (breakdown, mut work) = l.detail.as_ref().map(|c| c.summary()).unwrap_or_default();
            work.push_str(&shell::figure_words(&s.figures));
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
        let read = match stage_stats.first() {
            Some(s) => s.events_in + s.dropped,
            None => stats[stats.len() - 1].events_in,
        };
        let last_out = stats[stats.len() - 1].events_out;
        let out = match lines.last() {
            Some(l) if l.detail.is_some() => stage_stats.last().map_or(0, |s| s.events_out),
            _ => last_out,
        };
        let whereto = shell::dead_letters_at(common, rejected_total);
        let dropped_words = match (dropped_total, kept) {
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
