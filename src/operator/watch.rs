//! `--metrics-listen ADDR`, of every command and of `pipeline`: the operator endpoint
//! ([`crate::operator`]: `GET /metrics`, `GET /ready`, `GET /health`) with the readiness
//! checks of what runs. The shell form of a command and `pipeline` serve the same names,
//! so that one dashboard reads both.
//!
//! Ready means, one named check each: not shutting down (`shutdown`); in `pipeline`, no
//! channel has been more than 80 % full (in events or bytes) for `--ready-window` without
//! a break (`channel validate`, named after the stage it feeds); and every PostgreSQL database a
//! `persist` stage writes to answers `SELECT 1` (`database …`; probed every second, each
//! probe given [`PROBE_TIMEOUT`]); and the stages' own checks (`breaker`: no circuit
//! breaker of an enrich lookup is open). A load balancer then stops sending to an HTTP source
//! that cannot keep up, and an orchestrator sees a database outage, while a short burst
//! changes nothing.
//!
//! Series: every stage's tally ([`crate::tally`]: `component_received_events_total`,
//! `component_received_bytes_total`, `component_sent_events_total`,
//! `component_rejected_events_total`, and `component_discarded_events_total` for what the
//! channel in front of it dropped) and `ndpipe_batch_duration_seconds`; every channel's
//! `buffer_events`, `buffer_byte_size`, `buffer_max_event_size` and
//! `buffer_max_byte_size` (labelled with the stage it feeds; `pipeline` only); each
//! stage's `ndpipe_stage_workers`; persist's `ndpipe_persist_rows_total{outcome}`,
//! `ndpipe_persist_retries_total`, `ndpipe_persist_batches_total`, the time each batch's
//! transaction took (`ndpipe_persist_commit_duration_seconds`) and whether each database
//! answers its probe (`ndpipe_persist_database_up{database}`, 1 or 0); a Kafka source's
//! `kafka_consumer_lag{topic_id,partition_id}` and `ndpipe_kafka_rebalances_total`; an
//! HTTP source's `ndpipe_http_*` series.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exit::{Error, Result};
use crate::operator::{Check, Operator};
use crate::postgres::ConnectSpec;
use crate::shutdown::Shutdown;
use crate::tap::Taps;
use crate::wire::relay::{Bounds, Fill};

/// How long one readiness probe of a database may take before it counts as no answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often channels are sampled and databases probed.
const TICK: Duration = Duration::from_secs(1);
/// A channel fuller than this share of its bounds counts as full for `/ready`.
const FULL_SHARE: f64 = 0.8;

/// What `/ready` looks at.
pub struct Watch {
    /// Every channel, with the name of the stage it feeds, and their bounds (`pipeline`'s
    /// hub; a shell command's own channels are a few batches, not watched).
    pub channels: Vec<(&'static str, Arc<Fill>)>,
    pub bounds: Option<tokio::sync::watch::Receiver<Bounds>>,
    pub window: Duration,
    /// The PostgreSQL databases persist stages write to.
    pub databases: Vec<ConnectSpec>,
    /// The stages' own readiness checks (enrich's circuit breakers).
    pub checks: Vec<Check>,
    /// persist's counts, exported when scraped.
    pub sinks: Vec<(&'static str, Arc<dyn crate::commands::Outcomes>)>,
    /// The chain's tap points, served at `/tap`.
    pub taps: Option<Taps>,
}

/// What the sampler last saw, read by the readiness checks.
struct Sampled {
    /// Since when each channel has been over [`FULL_SHARE`] without a break.
    full_since: Mutex<Vec<Option<Instant>>>,
    /// Whether each database answered its last probe (until the first: yes).
    answers: Vec<AtomicBool>,
}

/// How long the end of a run waits for tap responses to be written out: a tap client
/// reading along gets the last events; one that stopped reading holds nothing up longer.
const TAP_DRAIN: Duration = Duration::from_secs(2);
/// How long the connections of those answers then have to end on their own.
const LAST_WRITES: Duration = Duration::from_millis(200);

/// The endpoint being served.
pub struct Served {
    taps: Option<Taps>,
    /// The address bound (a port of its own when `addr` asked for port 0).
    pub addr: SocketAddr,
    done: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// The run has ended: stops taking requests and lets the tap answers of clients
    /// reading along finish (for [`TAP_DRAIN`] at most); a client that was cut off for
    /// not reading is not waited for.
    pub async fn finish(mut self) {
        let _ = self.done.send(());
        let reading = self.taps.as_ref().filter(|t| t.busy());
        if let Some(taps) = reading {
            let drained = async {
                while taps.busy() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let _ = tokio::time::timeout(TAP_DRAIN, drained).await;
            // The last bytes of those answers, written once their bodies have ended.
            let _ = tokio::time::timeout(LAST_WRITES, &mut self.task).await;
        }
        // Anything else (a scrape under way, a cut-off client's stuck connection) ends
        // with the process.
        self.task.abort();
    }
}

/// Binds `addr` (failing at once, exit 69, when it cannot) and serves until shutdown or
/// [`Served::finish`].
pub async fn start(addr: SocketAddr, watch: Watch, shutdown: Shutdown) -> Result<Served> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("--metrics-listen {addr}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::unavailable(format!("--metrics-listen {addr}: {e}")))?;
    let sampled = Arc::new(Sampled {
        full_since: Mutex::new(vec![None; watch.channels.len()]),
        answers: watch
            .databases
            .iter()
            .map(|_| AtomicBool::new(true))
            .collect(),
    });
    let app = operator(&watch, &sampled, &shutdown).routes();
    let taps = watch.taps.clone();
    tokio::spawn(sample(watch, sampled, shutdown.clone()));
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    () = shutdown.wait() => {}
                    _ = finished => {}
                }
            })
            .await;
    });
    Ok(Served {
        taps,
        addr,
        done,
        task,
    })
}

/// The readiness checks (shutdown, each channel, each database) and the sinks' counts.
fn operator(watch: &Watch, sampled: &Arc<Sampled>, shutdown: &Shutdown) -> Operator {
    let stopping = shutdown.clone();
    let mut op = Operator::new().check("shutdown", move || {
        if stopping.is_triggered() {
            Err("shutting down".into())
        } else {
            Ok(())
        }
    });
    for (i, (into, _)) in watch.channels.iter().enumerate() {
        let (sampled, window, into) = (sampled.clone(), watch.window, *into);
        op = op.check(format!("channel {into}"), move || {
            let since = sampled.full_since.lock().expect("not poisoned")[i];
            match since.map(|s| s.elapsed()) {
                Some(full) if full >= window => Err(format!(
                    "the channel into {into} has been over 80 % full for {} s",
                    full.as_secs()
                )),
                _ => Ok(()),
            }
        });
    }
    for (i, spec) in watch.databases.iter().enumerate() {
        let (sampled, shown) = (sampled.clone(), spec.display().to_owned());
        op = op.check(format!("database {shown}"), move || {
            if sampled.answers[i].load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(format!("the database {shown} does not answer"))
            }
        });
    }
    op = op.checks(watch.checks.clone());
    if let Some(taps) = &watch.taps {
        op = op.taps(taps.clone());
    }
    let sinks = watch.sinks.clone();
    op.on_scrape(move || {
        for (component, outcomes) in &sinks {
            outcomes.export(component);
        }
    })
}

/// Samples the channels and probes the databases every [`TICK`], until shutdown.
async fn sample(watch: Watch, sampled: Arc<Sampled>, shutdown: Shutdown) {
    let mut clients: Vec<Option<tokio_postgres::Client>> =
        watch.databases.iter().map(|_| None).collect();
    loop {
        let now = Instant::now();
        if let Some(bounds) = watch.bounds.as_ref().map(|b| b.borrow().clone()) {
            let mut since = sampled.full_since.lock().expect("not poisoned");
            for (i, (_, fill)) in watch.channels.iter().enumerate() {
                let events = fill.events.load(Ordering::Relaxed) as f64;
                let bytes = fill.bytes.load(Ordering::Relaxed) as f64;
                let full = events > FULL_SHARE * bounds.events as f64
                    || bytes > FULL_SHARE * bounds.bytes as f64;
                since[i] = match (full, since[i]) {
                    (false, _) => None,
                    (true, None) => Some(now),
                    (true, s) => s,
                };
            }
        }
        for (i, (spec, client)) in watch.databases.iter().zip(clients.iter_mut()).enumerate() {
            let answers = probe(spec, client).await;
            sampled.answers[i].store(answers, Ordering::Relaxed);
            metrics::gauge!("ndpipe_persist_database_up", "database" => spec.display().to_owned())
                .set(if answers { 1.0 } else { 0.0 });
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// `SELECT 1` on a kept connection, reconnecting when it is gone.
async fn probe(spec: &ConnectSpec, client: &mut Option<tokio_postgres::Client>) -> bool {
    let attempt = async {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            *client = spec.connect().await.ok();
        }
        match client {
            Some(c) => c.simple_query("SELECT 1").await.is_ok(),
            None => false,
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(true) => true,
        _ => {
            *client = None;
            false
        }
    }
}
