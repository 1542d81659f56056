//! `ingest-http`: an HTTP ingest server that pushes back instead of falling over.
//!
//! `POST /events` takes one JSON object, a JSON array of objects, or an NDJSON body
//! (gzip allowed, with a cap on the inflated size). Every valid event gets the metadata
//! field `{"source":"http","received_at":…,"request_id":…,"remote_addr":…}` and goes
//! into the *hub*: a queue bounded both in events (`--queue-capacity`) and in bytes
//! (`--queue-bytes`). A request reserves room for all of its events before any is queued,
//! so it is taken whole or not at all; when there is no room within `--enqueue-timeout`
//! it gets 503 with `Retry-After`. The room is given back when the events have been
//! written (each event carries an [`Ack`] that fires then), so the hub measures what is
//! really in flight. Request bodies being read are bounded too (`--max-inflight-bytes`),
//! and past `--max-open-requests` new requests are shed at once with 503.
//!
//! `--ack written` answers only after the request's events have been written to stdout.
//! `GET /health`, `GET /ready` (503 above 80 % of the hub or while shutting down) and
//! `GET /metrics` (Prometheus text) serve operators.
//!
//! Files, one concern each: `args` (flags), `config`, `server` (routes, the POST handler,
//! reading bodies within their limits, answers), `body` (bodies into events), `room` (the
//! in-flight budget), `telemetry` (its Prometheus series).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use clap::{Parser, ValueEnum};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::cli::{parse_bytes, Common};
use crate::event::{Ack, Batch, Event, Reject};
use crate::exit::{Error, Exit, Result};
use crate::json;
use crate::operator::Operator;
use crate::stage::{Ctx, Ended, Kind, Stage};
use crate::tally::Tally;

mod args;
mod body;
mod config;
mod room;
mod server;
mod telemetry;

pub use args::{AckMode, Args};
use body::*;
pub use config::Config;
use room::*;
use server::*;
use telemetry::*;

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
    let (tx, mut rx) = mpsc::unbounded_channel::<Batch>();
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
    let tls = match &config.tls {
        None => None,
        Some((cert, key)) => Some({
            // One process-wide crypto provider (ring); a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| Error::usage(format!("--tls-cert/--tls-key: {e}")))?
        }),
    };
    let shutdown = ctx.shutdown.clone();
    let hub = Arc::new(Hub {
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
    });
    tracing::info!(
        "listening on {}://{local}",
        if tls.is_some() { "https" } else { "http" }
    );

    // Forward the hub to the output in order, joining the requests waiting at that moment
    // into one batch (fewer, larger writes); the writer drops events once written.
    let fwd_hub = hub.clone();
    // Whether stdout closed, even when no batch was sent after it did (the writer took
    // one, failed, and shutdown stopped the requests before the next): a weak handle does
    // not keep the channel open.
    let output_probe = output.downgrade();
    let forward = tokio::spawn(async move {
        let source: Arc<str> = Arc::from("http");
        let hub = fwd_hub;
        // Events passed on since memory was last given back (see give_back_memory).
        let mut since_trim = 0usize;
        while let Some(first) = rx.recv().await {
            if hub.stdout_closed.load(Ordering::Relaxed) {
                crate::event::lose(&first.events); // `--ack written` answers 500
                continue;
            }
            let mut events = first.events;
            // Under load, wait a moment for more: one wake-up of the writer per
            // millisecond instead of one per request.
            let mut waited = false;
            while events.len() < FORWARD_BATCH {
                match rx.try_recv() {
                    Ok(b) => events.extend(b.events),
                    Err(_) if !waited => {
                        waited = true;
                        tokio::time::sleep(FORWARD_GATHER).await;
                    }
                    Err(_) => break,
                }
            }
            let n = events.len();
            if let Err(mpsc::error::SendError(batch)) =
                output.send(Batch::new(source.clone(), events)).await
            {
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
    });

    let handle = axum_server::Handle::new();
    let h = handle.clone();
    let hub_for_signal = hub.clone();
    let timeout = hub.config.shutdown_timeout;
    tokio::spawn(async move {
        shutdown.wait().await;
        let _ = hub_for_signal.closing_at.set(tokio::time::Instant::now());
        hub_for_signal.closing.store(true, Ordering::Relaxed);
        h.graceful_shutdown(Some(timeout));
    });
    let app = router(hub.clone()).into_make_service_with_connect_info::<SocketAddr>();
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
    served.map_err(|e| Error::new(Exit::IoErr, anyhow::anyhow!("serving HTTP: {e}")))?;
    // No request can queue more: close the hub and let the writer drain it, within what
    // is left of --shutdown-timeout, counted from the signal (it bounds the whole
    // shutdown, stdout stalled or not).
    hub.tx.lock().expect("not poisoned").take();
    let deadline = *hub.closing_at.get_or_init(tokio::time::Instant::now) + timeout;
    // Room comes back when events are written, and when they are known lost.
    let _ = tokio::time::timeout_at(deadline, async {
        while hub.depth() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let lost = hub.lost.load(Ordering::Relaxed) + hub.depth();
    // Asked before the forwarder (which holds the sender) is stopped.
    let closed = output_probe.upgrade().is_some_and(|o| o.is_closed());
    forward.abort();
    if lost > 0 {
        hub.metrics.lost(lost);
        let why = if hub.stdout_closed.load(Ordering::Relaxed) || closed {
            "stdout was closed (is the next command in the pipe still running?)".to_owned()
        } else {
            format!(
                "they were not written within the shutdown timeout of {} (is stdout, or a \
                 later stage such as a database that does not answer, stalled?)",
                humantime::format_duration(timeout)
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

impl Stage for Config {
    fn name(&self) -> &'static str {
        "ingest-http"
    }

    fn kind(&self) -> Kind {
        Kind::Source
    }

    fn acknowledges(&self) -> bool {
        true
    }

    fn run(
        self: Box<Self>,
        _input: mpsc::Receiver<Batch>,
        output: mpsc::Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Ended>> {
        Box::pin(async move {
            run(*self, output, ctx).await?;
            Ok(Ended::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_events_with_meta() {
        let meta = r#"{"source":"http"}"#;
        let ok = &mut |_: usize| Ok(());
        let p = split_events(
            r#"[{"a":1}, 2, {"b":"x"}]"#,
            false,
            1 << 20,
            "_meta",
            meta,
            ok,
        )
        .ok()
        .unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!((p.errors[0].at, p.errors[0].kind), (1, "not_object"));
        assert_eq!(p.events[0].text(), r#"{"a":1,"_meta":{"source":"http"}}"#);
        let p = split_events(
            "{\"a\":1}\n\nnope\n{\"_meta\":5}\r\n",
            true,
            1 << 20,
            "_meta",
            meta,
            ok,
        )
        .ok()
        .unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[1].text(), r#"{"_meta":{"source":"http"}}"#);
        assert_eq!(
            (p.errors[0].at, p.errors[0].event.line, p.errors[0].kind),
            (3, 3, "malformed_json")
        );
        assert!(split_events("nope", false, 1 << 20, "_meta", meta, ok).is_err());
        let mut counted = 0;
        let mut count = |n: usize| {
            counted = n;
            Err(Answer::busy("no"))
        };
        assert!(split_events(
            "{}\n\n{}\r\n {} \n",
            true,
            1 << 20,
            "_meta",
            meta,
            &mut count
        )
        .is_err());
        assert_eq!(counted, 3);
    }

    #[test]
    fn gzip_bombs_stop_at_the_cap() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 10 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 64 << 10);
        let all = &mut |_: u64| Ok(());
        assert!(matches!(inflate(&gz, 1 << 20, all), Err(Inflate::TooLarge)));
        assert_eq!(
            inflate(&gz, 10 << 20, all).ok().map(|v| v.len()),
            Some(10 << 20)
        );
        // Room is asked before each step, never for more than what was inflated plus one.
        let mut most = 0;
        let mut track = |n: u64| {
            most = most.max(n);
            Ok(())
        };
        assert!(inflate(&gz, 10 << 20, &mut track).is_ok());
        assert!(
            most <= (10 << 20) * 5 / 4 + 2 * INFLATE_STEP as u64,
            "{most}"
        );
        let mut refuse = |n: u64| {
            if n > 1 << 20 {
                Err(NoRoom::Busy)
            } else {
                Ok(())
            }
        };
        assert!(matches!(
            inflate(&gz, 10 << 20, &mut refuse),
            Err(Inflate::NoRoom(NoRoom::Busy))
        ));
    }
}
