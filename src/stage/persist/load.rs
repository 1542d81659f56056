//! The hot loop: the router that batches rows by key onto connections, and the loaders
//! that commit each batch (rows and source offsets in one transaction), retried until
//! the database takes it; the counts the summary prints.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::event::{Batch, Event, Reject};
use crate::exit::{Error, Exit, Result};
use crate::progress::Progress;
use crate::stage::{Ctx, Ended};

use super::offsets::{Commit, Position, StreamKey, Tracker};
use super::sql_postgres::PostgresConnection;
use super::sql_sqlite::SqliteConnection;
use super::{Mapping, Options, Row};

/// How persist stored what it passed on, and the work it took: the breakdown its summary
/// prints after "N out" (the events in, out and rejected are in its tally).
#[derive(Debug, Default)]
pub struct Counts {
    pub inserted: AtomicU64,
    pub updated: AtomicU64,
    pub unchanged: AtomicU64,
    /// Rows deleted by tombstones.
    pub deleted: AtomicU64,
    /// Events that lost to a later (or newer) event of the same key inside their batch.
    pub superseded: AtomicU64,
    pub fenced: AtomicU64,
    pub retries: AtomicU64,
    pub batches: AtomicU64,
}

impl Counts {
    pub(super) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// What follows "N out" in the summary: how the events handed on were stored, and
    /// the work it took. "Out" counts every event of a committed batch, as `--emit`
    /// writes them: superseded ones too (a later event of the same key in the same batch
    /// was stored instead, as if both had been written in turn).
    pub fn summary(&self) -> (String, String) {
        let n = |c: &AtomicU64| crate::human::count(Counts::get(c));
        (
            format!(
                " ({} inserted, {} updated, {} unchanged, {} deleted, {} superseded in their \
                 batch)",
                n(&self.inserted),
                n(&self.updated),
                n(&self.unchanged),
                n(&self.deleted),
                n(&self.superseded),
            ),
            format!(
                ", {} fenced, {} batches, {} retries",
                n(&self.fenced),
                n(&self.batches),
                n(&self.retries),
            ),
        )
    }
}

/// What one transaction did.
#[derive(Debug, Default)]
pub struct Loaded {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows deleted by tombstones.
    pub deleted: u64,
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub enum LoadError {
    /// Try again later (after reconnecting): nothing was committed.
    Transient(anyhow::Error),
    /// Partitions whose stored epoch is newer than the batch's: rolled back.
    Fenced(Vec<(Arc<StreamKey>, i64)>),
    /// Retrying cannot help (table dropped, permission denied, ...).
    Fatal(anyhow::Error),
}

/// A database connection that can load batches: PostgreSQL or SQLite.
pub enum Connection {
    Postgres(Box<PostgresConnection>),
    Sqlite(SqliteConnection),
}

impl Connection {
    /// Writes `rows` (one per key) and `commits` in one transaction. Rows the database
    /// refuses are passed to `reject` (before the commit) and left out.
    pub(super) async fn load(
        &mut self,
        rows: &[&Row],
        commits: &[Commit],
        reject: &mut (dyn FnMut(usize, Reject) + Send),
    ) -> std::result::Result<Loaded, LoadError> {
        match self {
            Connection::Postgres(l) => l.load(rows, commits, reject).await,
            Connection::Sqlite(l) => l.load(rows, commits, reject).await,
        }
    }

    /// One more connection like this one; `None` for SQLite, which has one writer.
    pub(super) async fn another(&self) -> Option<Result<Connection>> {
        match self {
            Connection::Postgres(l) => {
                Some(l.another().await.map(|l| Connection::Postgres(Box::new(l))))
            }
            Connection::Sqlite(_) => None,
        }
    }
}

/// How rows are batched, and whether stored events are passed on: the hot loop's own
/// settings (see `--batch-size`, `--linger`, `--emit`).
pub struct Batching {
    pub batch_size: usize,
    pub linger: Duration,
    pub emit: bool,
}

impl Batching {
    pub fn new(opts: &Options) -> Batching {
        Batching {
            batch_size: opts.batch_size as usize,
            linger: opts.linger,
            emit: opts.emit,
        }
    }
}

/// Shared between the router and the loaders.
pub(super) struct Shared {
    pub(super) mapping: Mapping,
    pub(super) batching: Batching,
    pub(super) ctx: Ctx,
    pub(super) tracker: Mutex<Tracker>,
    pub(super) counts: Arc<Counts>,
    /// The progress line, which shows the batches and retries so far.
    pub(super) progress: Progress,
}

/// The way to one loader. A batch is handed over only once the loader is free (it holds
/// a permit until its batch is committed), so a connection has at most one batch being
/// committed and one being filled by the router. With a queue of one batch in between,
/// each connection held a third batch, for no speed (the router waits for the loader
/// either way once both are full): 7 MiB more in `pipeline` into PostgreSQL.
pub(super) struct Handoff {
    tx: Sender<(Vec<Row>, OwnedSemaphorePermit)>,
    free: Arc<Semaphore>,
}

impl Handoff {
    fn new() -> (Handoff, Receiver<(Vec<Row>, OwnedSemaphorePermit)>) {
        let (tx, rx) = mpsc::channel(1);
        let free = Arc::new(Semaphore::new(1));
        (Handoff { tx, free }, rx)
    }

    /// Waits until the loader is free, then hands it `rows`; an error once it has stopped.
    pub(super) async fn send(&self, rows: Vec<Row>) -> std::result::Result<(), ()> {
        // A loader that stopped dropped its permit with its channel: the send fails.
        let permit = self.free.clone().acquire_owned().await.map_err(|_| ())?;
        self.tx.send((rows, permit)).await.map_err(|_| ())
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The loaders at work: one task, and the handoff feeding it, per connection.
struct Pool {
    senders: Vec<Handoff>,
    tasks: Vec<tokio::task::JoinHandle<Result<Connection>>>,
}

impl Pool {
    fn start(shared: &Arc<Shared>, loaders: Vec<Connection>, output: &Sender<Batch>) -> Pool {
        let mut pool = Pool {
            senders: Vec::with_capacity(loaders.len()),
            tasks: Vec::with_capacity(loaders.len()),
        };
        for mut loader in loaders {
            let (tx, rx) = Handoff::new();
            pool.senders.push(tx);
            let (shared, output) = (shared.clone(), output.clone());
            pool.tasks.push(tokio::spawn(async move {
                load_loop(&shared, &mut loader, rx, output).await?;
                Ok(loader)
            }));
        }
        pool
    }

    /// Closes every channel and waits until each loader has committed what it was sent:
    /// the loaders back, in order, or the first error one of them stopped with.
    async fn stop(self) -> Result<Vec<Connection>> {
        drop(self.senders);
        let mut loaders = Vec::with_capacity(self.tasks.len());
        let mut first_err = None;
        for t in self.tasks {
            match Error::joined("loader", t.await).and_then(|r| r) {
                Ok(loader) => loaders.push(loader),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(loaders),
        }
    }
}

/// The stage: rows into the database through `loaders` (one per connection), events
/// passed on to `output` after commit when `--emit`. A live connection count
/// ([`Ctx::workers`], `pipeline`'s reload) is followed: see [`rescale`].
pub async fn run(
    mapping: Mapping,
    batching: Batching,
    loaders: Vec<Connection>,
    mut input: Receiver<Batch>,
    output: Sender<Batch>,
    ctx: Ctx,
    counts: Arc<Counts>,
) -> Result<Ended> {
    let progress = ctx.progress.clone();
    let mut live = ctx.workers.clone();
    let shared = Arc::new(Shared {
        mapping,
        batching,
        ctx,
        tracker: Mutex::new(Tracker::default()),
        counts,
        progress,
    });
    assert!(!loaders.is_empty(), "at least one loader");
    let gauge = metrics::gauge!("ndpipe_stage_workers", "component" => "persist");
    gauge.set(loaders.len() as f64);
    let mut pool = Pool::start(&shared, loaders, &output);

    let batch_size = shared.batching.batch_size;
    let mut pending = empty_batches(pool.senders.len(), batch_size);
    let mut oldest: Option<Instant> = None;
    let mut keys = crate::position::Keys::default();
    let meta_field = shared.ctx.meta_field.clone();
    let mut open = true;
    while open {
        let deadline = oldest.map(|t| t + shared.batching.linger);
        let got = tokio::select! {
            b = input.recv() => b,
            _ = sleep_until(deadline) => {
                if flush_all(&pool.senders, &mut pending, &mut oldest).await.is_err() {
                    // A loader stopped: its own error, awaited below, says why.
                    open = false;
                }
                continue;
            }
            want = changed(&mut live) => {
                pool = rescale(&shared, pool, &mut pending, &mut oldest, want, &output).await?;
                gauge.set(pool.senders.len() as f64);
                continue;
            }
        };
        let Some(batch) = got else {
            open = false;
            continue;
        };
        let n = pool.senders.len();
        shared.ctx.tally.received(batch.len() as u64);
        let source = batch.source.clone();
        let trace = batch.trace.map(Arc::new);
        for mut event in batch.events {
            let pos = match event.decode() {
                Ok(()) => crate::position::from_meta(event.field(&meta_field), &mut keys),
                Err(_) => None,
            };
            if let Some(p) = &pos {
                let mut t = shared.tracker.lock().expect("not poisoned");
                if t.is_fenced(p) {
                    Counts::add(&shared.counts.fenced, 1);
                    continue;
                }
                t.receive(p);
            }
            match shared.mapping.row(event, &meta_field, &source, pos.clone()) {
                Ok(mut row) => {
                    row.trace = trace.clone();
                    // Rows with source offsets all take the first connection: each of its
                    // transactions then holds a contiguous stretch of the input, so the
                    // offsets it records cover exactly the rows committed, and a restart
                    // after a crash writes no message twice. Other rows go by key.
                    let i = if row.pos.is_some() {
                        0
                    } else {
                        (row.key_hash % n as u64) as usize
                    };
                    pending[i].push(row);
                    oldest.get_or_insert_with(Instant::now);
                    if pending[i].len() >= batch_size {
                        let rows = std::mem::replace(&mut pending[i], ROWS.take(batch_size));
                        if pool.senders[i].send(rows).await.is_err() {
                            open = false;
                            break;
                        }
                        if pending.iter().all(Vec::is_empty) {
                            oldest = None;
                        }
                    }
                }
                Err((mut event, reject)) => {
                    shared.ctx.tally.rejected(1);
                    shared
                        .ctx
                        .dead
                        .keep("persist", &source, &mut event, &reject)?;
                    if let Some(p) = &pos {
                        shared.tracker.lock().expect("not poisoned").handled(p);
                    }
                }
            }
        }
    }
    let senders_ok = flush_all(&pool.senders, &mut pending, &mut oldest)
        .await
        .is_ok()
        && pool.senders.iter().all(|s| !s.is_closed());
    let mut loaders = pool.stop().await?;
    if !senders_ok {
        return Err(Error::from(anyhow::anyhow!("a loader stopped early")));
    }
    // Offsets that became complete after the last batch (a final dead letter, say).
    commit_rows(&shared, &mut loaders[0], Vec::new(), None).await?;
    Ok(Ended::default())
}

/// The next connection count asked for, when there is a live one; else never.
async fn changed(live: &mut Option<tokio::sync::watch::Receiver<usize>>) -> usize {
    if let Some(w) = live {
        if w.changed().await.is_ok() {
            return (*w.borrow_and_update()).max(1);
        }
    }
    std::future::pending().await
}

/// Changes the number of connections to `want` without losing or repeating a row, and
/// without two versions of a key on two connections at once: rows go to a connection by
/// a hash of their key modulo the count, so first every pending row is sent, every
/// loader commits what it holds and stops (a barrier), and only then does the count, and
/// with it the routing, change. New connections are opened before any row is routed to
/// them; one the server refuses leaves the count where it got to, with a warning. SQLite
/// has one writer: its count stays 1.
async fn rescale(
    shared: &Arc<Shared>,
    pool: Pool,
    pending: &mut Vec<Vec<Row>>,
    oldest: &mut Option<Instant>,
    want: usize,
    output: &Sender<Batch>,
) -> Result<Pool> {
    let had = pool.senders.len();
    if want == had {
        return Ok(pool);
    }
    let flushed = flush_all(&pool.senders, pending, oldest).await;
    let mut loaders = pool.stop().await?;
    flushed?;
    while loaders.len() < want {
        match loaders[0].another().await {
            Some(Ok(l)) => loaders.push(l),
            Some(Err(e)) => {
                tracing::warn!(
                    "persist: cannot open connection {} of {want} ({e}); carrying on with {}",
                    loaders.len() + 1,
                    loaders.len()
                );
                break;
            }
            None => {
                tracing::warn!("persist: SQLite writes through one connection; --connections {want} changes nothing");
                break;
            }
        }
    }
    loaders.truncate(want);
    if loaders.len() != had {
        tracing::info!("persist: connections {had} → {}", loaders.len());
    }
    *pending = empty_batches(loaders.len(), shared.batching.batch_size);
    Ok(Pool::start(shared, loaders, output))
}

/// The blocks rows are gathered in (2,000 rows of 200 bytes), recycled: mapped afresh,
/// they were most of the page faults left in a pipeline into PostgreSQL (60,000 on 2 M
/// rows).
static ROWS: crate::pool::Pool<Row> = crate::pool::Pool::new();

/// One batch to fill per connection.
fn empty_batches(connections: usize, batch_size: usize) -> Vec<Vec<Row>> {
    (0..connections).map(|_| ROWS.take(batch_size)).collect()
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn flush_all(
    senders: &[Handoff],
    pending: &mut [Vec<Row>],
    oldest: &mut Option<Instant>,
) -> Result<()> {
    *oldest = None;
    for (tx, rows) in senders.iter().zip(pending.iter_mut()) {
        if rows.is_empty() {
            continue;
        }
        let next = ROWS.take(rows.capacity());
        if tx.send(std::mem::replace(rows, next)).await.is_err() {
            return Err(Error::from(anyhow::anyhow!("a loader stopped early")));
        }
    }
    Ok(())
}

pub(super) async fn load_loop(
    shared: &Shared,
    loader: &mut Connection,
    mut rx: Receiver<(Vec<Row>, OwnedSemaphorePermit)>,
    output: Sender<Batch>,
) -> Result<()> {
    // The permit goes back when the batch is committed (and emitted): the router may
    // then hand over the next.
    while let Some((rows, _free)) = rx.recv().await {
        let out = if shared.batching.emit {
            Some(&output)
        } else {
            None
        };
        commit_rows(shared, loader, rows, out).await?;
    }
    Ok(())
}

/// A `persist` span per traced batch whose rows this transaction (begun at `began`)
/// committed, with how many of them, and how many the database refused
/// (`refused`: indexes into `rows`).
fn traced(rows: &[Row], refused: &[usize], began: std::time::SystemTime) {
    let mut i = 0;
    while i < rows.len() {
        let Some(trace) = &rows[i].trace else {
            i += 1;
            continue;
        };
        // A batch's rows are consecutive here.
        let from = i;
        while i < rows.len()
            && rows[i]
                .trace
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(t, trace))
        {
            i += 1;
        }
        let rejected = refused.iter().filter(|&&r| (from..i).contains(&r)).count();
        let events = (i - from) as u64;
        let bytes = rows[from..i]
            .iter()
            .map(|r| r.event.bytes().len() as u64 + 1)
            .sum();
        crate::trace::span("persist", trace, began, events, rejected as u64, bytes);
    }
}

/// Commits one batch: winners per key, rows and offsets in one transaction, retried
/// until the database takes it.
pub(super) async fn commit_rows(
    shared: &Shared,
    loader: &mut Connection,
    mut rows: Vec<Row>,
    output: Option<&Sender<Batch>>,
) -> Result<()> {
    let counts = &shared.counts;
    let mut delay = Duration::from_millis(100);
    let mut waiting_since: Option<std::time::Instant> = None;
    let mut fence_rounds = 0;
    loop {
        let winners = winners(&shared.mapping, &rows);
        let positions: Vec<&Position> = rows.iter().filter_map(|r| r.pos.as_deref()).collect();
        let commits = shared
            .tracker
            .lock()
            .expect("not poisoned")
            .plan(&positions);
        if winners.is_empty() && commits.is_empty() {
            return Ok(());
        }
        let chosen: Vec<&Row> = winners.iter().map(|&i| &rows[i]).collect();
        let mut refused: Vec<(usize, Reject)> = Vec::new();
        let began = std::time::Instant::now();
        let began_at = std::time::SystemTime::now();
        let result = {
            let mut reject = |i: usize, r: Reject| refused.push((winners[i], r));
            loader.load(&chosen, &commits, &mut reject).await
        };
        drop(chosen);
        match result {
            Ok(loaded) => {
                metrics::histogram!("ndpipe_persist_commit_duration_seconds", "component" => "persist")
                    .record(began.elapsed().as_secs_f64());
                // Dead letters before anything else, in input order.
                let mut refused_idx = Vec::with_capacity(refused.len());
                for (i, reject) in refused {
                    let row = &mut rows[i];
                    shared.ctx.dead.keep(
                        "persist",
                        &row.source.clone(),
                        &mut row.event,
                        &reject,
                    )?;
                    refused_idx.push(i);
                }
                Counts::add(&counts.inserted, loaded.inserted);
                Counts::add(&counts.updated, loaded.updated);
                Counts::add(&counts.unchanged, loaded.unchanged);
                Counts::add(&counts.deleted, loaded.deleted);
                Counts::add(&counts.superseded, (rows.len() - winners.len()) as u64);
                if !rows.is_empty() {
                    Counts::add(&counts.batches, 1);
                }
                let positions: Vec<&Position> =
                    rows.iter().filter_map(|r| r.pos.as_deref()).collect();
                shared
                    .tracker
                    .lock()
                    .expect("not poisoned")
                    .committed(&positions, &commits);
                if let Some(since) = waiting_since {
                    tracing::info!(
                        "database is back after {:.1}s; batch of {} rows committed",
                        since.elapsed().as_secs_f64(),
                        rows.len()
                    );
                }
                // Out: every event of the batch but the refused, superseded ones too (see
                // [`Counts::summary`]).
                let persisted = rows.len() - refused_idx.len();
                traced(&rows, &refused_idx, began_at);
                shared.ctx.tally.rejected(refused_idx.len() as u64);
                shared.ctx.tally.sent(persisted as u64);
                if shared.progress.is_shown() {
                    shared.progress.note(&format!(
                        "{} batches · {} retries",
                        Counts::get(&counts.batches),
                        Counts::get(&counts.retries)
                    ));
                }
                let Some(out) = output else {
                    ROWS.put(rows);
                    return Ok(());
                };
                refused_idx.sort_unstable();
                let source = rows.first().map(|r| r.source.clone());
                let events: Vec<Event> = rows
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| refused_idx.binary_search(i).is_err())
                    .map(|(_, r)| r.event)
                    .collect();
                if let (Some(source), false) = (source, events.is_empty()) {
                    // A closed stdout (`| head`) does not stop the loading.
                    let _ = out.send(Batch::new(source, events)).await;
                }
                return Ok(());
            }
            Err(LoadError::Fenced(parts)) => {
                fence_rounds += 1;
                if fence_rounds > 16 {
                    return Err(Error::from(anyhow::anyhow!(
                        "offsets table keeps fencing this batch; is another writer changing epochs?"
                    )));
                }
                let mut t = shared.tracker.lock().expect("not poisoned");
                for (part, epoch) in &parts {
                    tracing::warn!(
                        "fenced: {}/{}/{} now belongs to epoch {epoch}; dropping its events \
                         (the new owner reads them again)",
                        part.scope,
                        part.stream,
                        part.partition
                    );
                    t.fence(part, *epoch);
                }
                let before = rows.len();
                rows.retain(|r| r.pos.as_deref().is_none_or(|p| !t.is_fenced(p)));
                Counts::add(&counts.fenced, (before - rows.len()) as u64);
            }
            Err(LoadError::Transient(e)) => {
                Counts::add(&counts.retries, 1);
                let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                tracing::warn!(
                    "database unavailable ({e:#}); waiting {:.1}s, then replaying the batch of \
                     {} rows (waiting for {:.0}s so far)",
                    delay.as_secs_f64(),
                    rows.len(),
                    since.elapsed().as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(LoadError::Fatal(e)) => {
                return Err(Error::new(
                    Exit::IoErr,
                    e.context("the database refused the batch"),
                ))
            }
        }
    }
}

/// Indices of the rows to load, in input order: one per key.
pub(super) fn winners(mapping: &Mapping, rows: &[Row]) -> Vec<usize> {
    let mut best: HashMap<&str, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    let mut dups = false;
    for (i, row) in rows.iter().enumerate() {
        match best.entry(&row.key) {
            Entry::Vacant(v) => {
                v.insert(i);
            }
            Entry::Occupied(mut o) => {
                dups = true;
                if mapping.wins(row, &rows[*o.get()]) {
                    o.insert(i);
                }
            }
        }
    }
    if !dups {
        return (0..rows.len()).collect();
    }
    let mut w: Vec<usize> = best.into_values().collect();
    w.sort_unstable();
    w
}
