//! The source's run: bind, serve until shutdown, forward the hub to the output, drain,
//! and account for what could not be written.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::sync::{mpsc, Semaphore};

use crate::event::Batch;
use crate::exit::{Error, Exit, Result};
use crate::shutdown::Shutdown;
use crate::stage::Ctx;

use super::room::units;
use super::server::{router, Hub};
use super::telemetry::Metrics;
use super::{AckMode, Config};

/// Events of waiting requests joined into one batch for the output.
const FORWARD_BATCH: usize = 4096;

/// After this many events, once the hub is empty,
/// freed memory is given back to the system: a burst of 7 M tiny events left 1.07 GB
/// resident after it had drained.
const TRIM_AFTER_EVENTS: usize = 100_000;

/// How long the forwarder gathers waiting requests before passing them on.
const FORWARD_GATHER: Duration = Duration::from_millis(1);

/// The source: serves until shutdown, sending each accepted request's events as one batch.
/// Fails (74) when acknowledged events could not be written: stdout closed, or still
/// queued when --shutdown-timeout expired.
pub async fn run(config: Config, output: mpsc::Sender<Batch>, ctx: Ctx) -> Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<Batch>();
    let (listener, local) = bind(&config)?;
    let tls = tls(&config).await?;
    let shutdown = ctx.shutdown.clone();
    let hub = Arc::new(Hub::new(config, ctx, tx));
    tracing::info!(
        "listening on {}://{local}",
        if tls.is_some() { "https" } else { "http" }
    );
    // Whether stdout closed, even when no batch was sent after it did (the writer took
    // one, failed, and shutdown stopped the requests before the next): a weak handle does
    // not keep the channel open.
    let output_probe = output.downgrade();
    let forward = tokio::spawn(forward(hub.clone(), rx, output));
    let handle = axum_server::Handle::new();
    tokio::spawn(close_on(shutdown, hub.clone(), handle.clone()));
    serve(listener, tls, handle, router(hub.clone())).await?;
    let closed_output = drain(&hub).await;
    // Asked before the forwarder (which holds the sender) is stopped.
    let closed_output = closed_output || output_probe.upgrade().is_some_and(|o| o.is_closed());
    forward.abort();
    account(&hub, closed_output)
}

/// The listening socket (69 when the address cannot be had), and its address.
fn bind(config: &Config) -> Result<(std::net::TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
        Error::new(
            Exit::Unavailable,
            anyhow::anyhow!("cannot listen on {}: {e}", config.listen),
        )
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::new(Exit::IoErr, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::new(Exit::IoErr, e))?;
    Ok((listener, local))
}

/// The TLS settings of `--tls-cert` and `--tls-key`, when given.
async fn tls(config: &Config) -> Result<Option<RustlsConfig>> {
    let Some((cert, key)) = &config.tls else {
        return Ok(None);
    };
    // One process-wide crypto provider (ring); a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(cert, key)
        .await
        .map(Some)
        .map_err(|e| Error::usage(format!("--tls-cert/--tls-key: {e}")))
}

impl Hub {
    fn new(config: Config, ctx: Ctx, tx: mpsc::UnboundedSender<Batch>) -> Hub {
        Hub {
            events: Arc::new(Semaphore::new(config.queue_capacity as usize)),
            bytes: Arc::new(Semaphore::new(units(config.queue_bytes) as usize)),
            inflight: Arc::new(Semaphore::new(units(config.max_inflight_bytes) as usize)),
            metrics: Metrics::new(config.queue_capacity, ctx.tally.clone()),
            open: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            closing_at: std::sync::OnceLock::new(),
            stdout_closed: AtomicBool::new(false),
            lost: Arc::new(AtomicU64::new(0)),
            dead_letters_failed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            id_prefix: format!(
                "{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
                    ^ u64::from(std::process::id())
            ),
            tx: Mutex::new(Some(tx)),
            ctx,
            config,
        }
    }
}

/// Forwards the hub to the output in order, joining the requests waiting at that moment
/// into one batch (fewer, larger writes); the writer drops events once written.
async fn forward(
    hub: Arc<Hub>,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    output: mpsc::Sender<Batch>,
) {
    let source: Arc<str> = Arc::from("http");
    // Events passed on since memory was last given back (see give_back_memory).
    let mut since_trim = 0usize;
    while let Some(first) = rx.recv().await {
        if hub.stdout_closed.load(Ordering::Relaxed) {
            crate::event::lose(&first.events); // `--ack written` answers 500
            continue;
        }
        let started = std::time::SystemTime::now();
        let mut parents: Vec<_> = first.trace.into_iter().collect();
        let mut events = first.events;
        // Under load, wait a moment for more: one wake-up of the writer per
        // millisecond instead of one per request.
        let mut waited = false;
        while events.len() < FORWARD_BATCH {
            match rx.try_recv() {
                Ok(b) => {
                    parents.extend(b.trace);
                    events.extend(b.events);
                }
                Err(_) if !waited => {
                    waited = true;
                    tokio::time::sleep(FORWARD_GATHER).await;
                }
                Err(_) => break,
            }
        }
        let n = events.len();
        let mut batch = Batch::new(source.clone(), events);
        crate::trace::source("ingest-http", &mut batch, started, &parents);
        if let Err(mpsc::error::SendError(batch)) = output.send(batch).await {
            // stdout is gone: stop taking requests; what is queued can never be
            // written, and must not count as written.
            hub.stdout_closed.store(true, Ordering::Relaxed);
            hub.ctx.shutdown.trigger();
            crate::event::lose(&batch.events);
            continue;
        }
        hub.metrics.tally.sent(n as u64);
        since_trim += n;
        if since_trim >= TRIM_AFTER_EVENTS && rx.is_empty() {
            since_trim = 0;
            tokio::task::spawn_blocking(crate::memory::give_back_memory);
        }
    }
}

/// On the first signal: not ready any more, no new connections, and the requests in
/// flight answered within --shutdown-timeout.
async fn close_on(shutdown: Shutdown, hub: Arc<Hub>, handle: axum_server::Handle) {
    shutdown.wait().await;
    let _ = hub.closing_at.set(tokio::time::Instant::now());
    hub.closing.store(true, Ordering::Relaxed);
    handle.graceful_shutdown(Some(hub.config.shutdown_timeout));
}

/// Serves `app` on `listener` (with TLS when given) until the graceful shutdown ends.
async fn serve(
    listener: std::net::TcpListener,
    tls: Option<RustlsConfig>,
    handle: axum_server::Handle,
    app: Router,
) -> Result<()> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        None => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(app)
                .await
        }
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)
                .handle(handle)
                .serve(app)
                .await
        }
    };
    served.map_err(|e| Error::new(Exit::IoErr, anyhow::anyhow!("serving HTTP: {e}")))
}

/// No request can queue more: closes the hub and lets the writer drain it, within what
/// is left of --shutdown-timeout, counted from the signal (it bounds the whole shutdown,
/// stdout stalled or not). True when stdout was found closed.
async fn drain(hub: &Hub) -> bool {
    hub.tx.lock().expect("not poisoned").take();
    let deadline =
        *hub.closing_at.get_or_init(tokio::time::Instant::now) + hub.config.shutdown_timeout;
    // Room comes back when events are written, and when they are known lost.
    let _ = tokio::time::timeout_at(deadline, async {
        while hub.depth() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    hub.stdout_closed.load(Ordering::Relaxed)
}

/// How the run ends once drained: 74 when acknowledged events were not written (they are
/// counted as lost, and said why) or dead letters could not be kept.
fn account(hub: &Hub, closed_output: bool) -> Result<()> {
    let lost = hub.lost.load(Ordering::Relaxed) + hub.depth();
    if lost > 0 {
        hub.metrics.lost(lost);
        let why = if closed_output {
            "stdout was closed (is the next command in the pipe still running?)".to_owned()
        } else {
            format!(
                "they were not written within the shutdown timeout of {} (is stdout, or a \
                 later stage such as a database that does not answer, stalled?)",
                humantime::format_duration(hub.config.shutdown_timeout)
            )
        };
        let said = match hub.config.ack {
            AckMode::Queued => format!("{lost} acknowledged events are lost: {why}"),
            // Their requests are still waiting: nothing acknowledged is lost.
            AckMode::Written => format!(
                "{lost} events could not be written: {why}; their requests were not \
                 acknowledged (answered 500, or cut off), so their clients still hold them"
            ),
        };
        return Err(Error::new(Exit::IoErr, anyhow::anyhow!(said)));
    }
    if hub.dead_letters_failed.load(Ordering::Relaxed) {
        return Err(Error::new(
            Exit::IoErr,
            anyhow::anyhow!(
                "dead letters could not be written: the requests that had malformed events were refused (500)"
            ),
        ));
    }
    Ok(())
}
