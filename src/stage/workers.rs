//! Worker machinery for filters: [`map_ordered`] runs a pure per-batch function on up to
//! N batches at once and sends results on in input order; [`map_ordered_async`] does the
//! same for work that waits on other services; [`map_sequential`] runs stateful work one
//! batch at a time; [`isolated`] retries a batch that panicked event by event;
//! [`off_runtime`] runs a long piece of work without holding up a runtime thread's other
//! tasks; [`default_workers`] is the default N.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::sync::watch;

use crate::event::{Batch, Event, Reject};
use crate::exit::{Error, Result};
use crate::stage::{Ctx, Ended};

/// The result of working on one batch: the events to pass on, and the rejected ones.
pub struct Worked {
    pub batch: Batch,
    pub rejects: Vec<(Event, Reject)>,
}

impl Worked {
    /// Records `stage`'s span of a traced batch, and carries the trace on.
    fn traced(&mut self, begun: Option<crate::trace::Begun>, stage: &'static str) {
        crate::trace::end(begun, stage, &mut self.batch, self.rejects.len() as u64);
    }
}

/// Where [`map_ordered`] runs a batch's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// As a task of the runtime, whose threads (one per core, at least two) do the work: for work
    /// that only computes. Handing each batch to a thread of the blocking pool and back
    /// cost two wake-ups and a cold cache per batch: a pipeline to stdout took 22 % less
    /// CPU time without them, with half the context switches.
    OnRuntime,
    /// On the runtime's blocking pool: for work that may wait (enrich talking to its jq
    /// helpers), which must not hold a runtime thread.
    Blocking,
}

/// Runs `work` over every batch, up to `workers` batches at once, and sends the results
/// on in input order, so output with N workers is byte-identical to output with one.
/// Rejects are written to the dead-letter output in input order too.
///
/// When the context carries a live worker count ([`Ctx::workers`], `pipeline` after a
/// reload), it replaces `workers` and is followed as it changes: more batches are started
/// at once as soon as it rises; when it falls, the batches already started finish.
pub async fn map_ordered<W>(
    stage: &'static str,
    mut input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: &Ctx,
    workers: usize,
    runs: Runs,
    work: W,
) -> Result<Ended>
where
    W: Fn(Batch) -> Worked + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let gauge = metrics::gauge!("ndpipe_stage_workers", "component" => stage);
    let latency = metrics::histogram!("ndpipe_batch_duration_seconds", "component" => stage);
    let mut live = ctx.workers.clone();
    let limit = |live: &Option<watch::Receiver<usize>>| {
        live.as_ref().map_or(workers, |w| *w.borrow()).max(1)
    };
    // Batches started, oldest first: results leave in this order.
    let mut running: VecDeque<(u64, tokio::task::JoinHandle<Worked>)> = VecDeque::new();
    let mut open = true;
    loop {
        if !open && running.is_empty() {
            break;
        }
        let max = limit(&live);
        gauge.set(max as f64);
        let may_start = open && running.len() < max;
        let has_live = live.is_some();
        let changed = async {
            let changed = match live.as_mut() {
                Some(w) => w.changed().await.is_ok(),
                None => false,
            };
            if !changed {
                // No live count, or nobody left to change it: never again.
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            biased;
            done = async { (&mut running.front_mut().expect("not empty").1).await }, if !running.is_empty() => {
                let (n, _) = running.pop_front().expect("not empty");
                let worked = Error::joined(format_args!("{stage} worker"), done)?;
                if !pass_on(stage, ctx, n, worked, &output).await? {
                    break; // Downstream is gone (say, `| head`): stop quietly.
                }
            }
            batch = input.recv(), if may_start => match batch {
                Some(batch) => {
                    let (work, latency) = (work.clone(), latency.clone());
                    let n = batch.len() as u64;
                    let (isolate, measure) = (ctx.isolate_panics, ctx.measure_batches);
                    let job = move || {
                        let started = std::time::Instant::now();
                        let traced = crate::trace::begin(&batch);
                        let mut worked = if isolate {
                            isolated(stage, &*work, batch)
                        } else {
                            work(batch)
                        };
                        latency.record(started.elapsed());
                        worked.traced(traced, stage);
                        if measure {
                            worked.batch.bytes = Some(worked.batch.size());
                        }
                        worked
                    };
                    running.push_back((n, match runs {
                        Runs::OnRuntime => tokio::spawn(async move { job() }),
                        Runs::Blocking => tokio::task::spawn_blocking(job),
                    }));
                }
                None => open = false,
            },
            () = changed, if has_live => {}
        }
    }
    Ok(Ended::default())
}

/// Runs the async `work` over every batch, as many batches at once as hold up to
/// `max_events` events between them (at least one batch), and sends the results on in
/// input order, as [`map_ordered`] does: for work that waits on other services (enrich's
/// lookups), whose own limits, not a count of batches, bound what is done at once. Its
/// batches are tasks of the runtime; a panic in one ends the run.
pub async fn map_ordered_async<W, F>(
    stage: &'static str,
    mut input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: &Ctx,
    max_events: usize,
    work: W,
) -> Result<Ended>
where
    W: Fn(Batch) -> F,
    F: std::future::Future<Output = Worked> + Send + 'static,
{
    let latency = metrics::histogram!("ndpipe_batch_duration_seconds", "component" => stage);
    let mut running: VecDeque<(u64, tokio::task::JoinHandle<Worked>)> = VecDeque::new();
    let mut holding = 0u64;
    let mut open = true;
    while open || !running.is_empty() {
        let may_start = open && (running.is_empty() || holding < max_events as u64);
        tokio::select! {
            biased;
            done = async { (&mut running.front_mut().expect("not empty").1).await }, if !running.is_empty() => {
                let (n, _) = running.pop_front().expect("not empty");
                holding -= n;
                let worked = Error::joined(format_args!("{stage} worker"), done)?;
                if !pass_on(stage, ctx, n, worked, &output).await? {
                    break; // Downstream is gone (say, `| head`): stop quietly.
                }
            }
            batch = input.recv(), if may_start => match batch {
                Some(batch) => {
                    let n = batch.len() as u64;
                    holding += n;
                    let traced = crate::trace::begin(&batch);
                    let (job, latency, measure) = (work(batch), latency.clone(), ctx.measure_batches);
                    running.push_back((n, tokio::spawn(async move {
                        let started = std::time::Instant::now();
                        let mut worked = job.await;
                        latency.record(started.elapsed());
                        worked.traced(traced, stage);
                        if measure {
                            worked.batch.bytes = Some(worked.batch.size());
                        }
                        worked
                    })));
                }
                None => open = false,
            },
        }
    }
    Ok(Ended::default())
}

/// The one counting step of every helper: `n` events were worked on into `worked`; its
/// rejects go to the dead-letter output (in order), its batch on. False when the output
/// is closed.
async fn pass_on(
    stage: &'static str,
    ctx: &Ctx,
    n: u64,
    worked: Worked,
    output: &Sender<Batch>,
) -> Result<bool> {
    let Worked { batch, rejects } = worked;
    ctx.tally.received(n);
    ctx.tally.rejected(rejects.len() as u64);
    for (mut event, reject) in rejects {
        ctx.dead.keep(stage, &batch.source, &mut event, &reject)?;
    }
    ctx.tally.sent(batch.len() as u64);
    Ok(batch.is_empty() || output.send(batch).await.is_ok())
}

/// Why [`map_sequential`]'s work failed, with the events it held: they are lost (their
/// sources are told, with everything still queued), not handled.
pub struct Failed {
    pub error: Error,
    pub held: Vec<Event>,
}

/// Runs `work` over every batch, one at a time and in order, on the task that called it:
/// for a stateful filter (`tee`'s open files, a window of keys seen) whose work needs
/// `&mut` state and may wait. It counts, keeps rejects and stops on a closed output
/// exactly as [`map_ordered`] does.
pub async fn map_sequential<S, W>(
    stage: &'static str,
    mut input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: &Ctx,
    mut state: S,
    mut work: W,
) -> Result<Ended>
where
    W: for<'s> FnMut(&'s mut S, Batch) -> BoxFuture<'s, std::result::Result<Worked, Failed>>,
{
    let latency = metrics::histogram!("ndpipe_batch_duration_seconds", "component" => stage);
    metrics::gauge!("ndpipe_stage_workers", "component" => stage).set(1.0);
    while let Some(batch) = input.recv().await {
        let n = batch.len() as u64;
        let started = std::time::Instant::now();
        let traced = crate::trace::begin(&batch);
        let mut worked = match work(&mut state, batch).await {
            Ok(worked) => worked,
            Err(Failed { error, held }) => {
                // What was not passed on is not handled: its sources must not count it.
                crate::event::lose_queued(&mut input, held);
                return Err(error);
            }
        };
        latency.record(started.elapsed());
        worked.traced(traced, stage);
        if ctx.measure_batches {
            worked.batch.bytes = Some(worked.batch.size());
        }
        if !pass_on(stage, ctx, n, worked, &output).await? {
            break; // Downstream is gone: stop quietly.
        }
    }
    Ok(Ended::default())
}

/// Runs `work` on `batch`; if it panics, runs it again on each event alone (from a
/// [`crate::event::Replay`] taken first), and makes each event that panics on its own a
/// dead letter of kind `panic` with the panic's message.
fn isolated<W: Fn(Batch) -> Worked>(stage: &'static str, work: &W, batch: Batch) -> Worked {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let source = batch.source.clone();
    let copy = crate::event::Replay::of(&batch.events);
    if let Ok(worked) = catch_unwind(AssertUnwindSafe(|| work(batch))) {
        return worked;
    }
    let mut all = Worked {
        batch: Batch::new(source.clone(), Vec::new()),
        rejects: Vec::new(),
    };
    for event in copy.events() {
        let retry = event.snapshot();
        match catch_unwind(AssertUnwindSafe(|| {
            work(Batch::new(source.clone(), vec![event]))
        })) {
            Ok(w) => {
                all.batch.events.extend(w.batch.events);
                all.rejects.extend(w.rejects);
            }
            Err(payload) => {
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                metrics::counter!("ndpipe_panics_total", "component" => stage).increment(1);
                all.rejects.push((
                    retry,
                    Reject::new("panic", format!("{stage} panicked: {why}")),
                ));
            }
        }
    }
    all
}

/// Panics on an event holding `"ndpipe_fault":"panic"`: the fault-injection hook the
/// tests use to check that a worker's panic ends no `pipeline` run (compiled only with
/// the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
pub fn injected_fault(event: &Event) {
    if memchr::memmem::find(event.bytes(), br#""ndpipe_fault":"panic""#).is_some() {
        panic!("injected fault (line {})", event.line);
    }
}

/// Runs `work`, which holds its thread for a while (CPU work on a whole batch, or a
/// wait), without holding up the runtime's other tasks: on a worker thread of a
/// multi-threaded runtime, tokio first hands the thread's other tasks and its I/O to
/// another thread (`block_in_place`); elsewhere it simply runs.
pub fn off_runtime<T>(work: impl FnOnce() -> T) -> T {
    let on_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_runtime {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// The default number of workers (batches at once): twice the cores this process may use.
/// With one per core, a core sat idle while its finished batch waited for an older one to
/// be sent on: `pipeline 'validate | enrich'` to stdout took 0.73 s instead of 0.66. (When
/// each batch went to a thread of the blocking pool, two per core were 15-25 % faster in
/// `validate`.)
pub fn default_workers() -> usize {
    2 * std::thread::available_parallelism().map_or(2, usize::from)
}
