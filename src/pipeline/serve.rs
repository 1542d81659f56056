//! `--metrics-listen ADDR`: `GET /metrics` (Prometheus text), `GET /ready`, `GET /health`.
//!
//! Ready means: no channel has been more than 80 % full (in events or bytes) for
//! `--ready-window` without a break, and every PostgreSQL database a `persist` stage writes
//! to answers `SELECT 1` (probed every second, each probe given [`PROBE_TIMEOUT`]). A
//! load balancer then stops sending to an HTTP source that cannot keep up, and an
//! orchestrator sees a database outage, while a short burst changes nothing.
//!
//! Series: every stage's `component_received_events_total`, `component_sent_events_total`,
//! `component_rejected_events_total` and `ndpipe_batch_duration_seconds`; every channel's
//! `buffer_events`, `buffer_byte_size`, `buffer_max_event_size`, `buffer_max_byte_size`
//! and `component_discarded_events_total` (labelled with the stage it feeds); each
//! stage's `ndpipe_stage_workers`; persist's `ndpipe_persist_rows_total{outcome}`,
//! `ndpipe_persist_retries_total` and `ndpipe_persist_batches_total`; a Kafka source's
//! `kafka_consumer_lag{topic_id,partition_id}`; an HTTP source's `ndpipe_http_*` series.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::exit::{Error, Result};
use crate::postgres::ConnectSpec;
use crate::shutdown::Shutdown;
use crate::wire::relay::{Bounds, Fill};

/// How long one readiness probe of a database may take before it counts as no answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often channels are sampled and databases probed.
const TICK: Duration = Duration::from_secs(1);
/// A channel fuller than this share of its bounds counts as full for `/ready`.
const FULL_SHARE: f64 = 0.8;

/// What `/ready` looks at.
pub struct Watch {
    /// Every channel, with the name of the stage it feeds.
    pub channels: Vec<(&'static str, Arc<Fill>)>,
    pub bounds: tokio::sync::watch::Receiver<Bounds>,
    pub window: Duration,
    /// The PostgreSQL databases persist stages write to.
    pub databases: Vec<ConnectSpec>,
    /// persist's counts, exported when scraped.
    pub sinks: Vec<(&'static str, Arc<dyn crate::commands::Outcomes>)>,
}

#[derive(Default)]
struct State {
    /// Since when each channel has been over [`FULL_SHARE`] without a break.
    full_since: Mutex<Vec<Option<Instant>>>,
    why: Mutex<String>,
}

/// Binds `addr` (failing at once, exit 69, when it cannot) and serves until shutdown.
pub async fn start(addr: SocketAddr, watch: Watch, shutdown: Shutdown) -> Result<()> {
    crate::metrics::handle();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("--metrics-listen {addr}: {e}")))?;
    let watch = Arc::new(watch);
    let state = Arc::new(State {
        full_since: Mutex::new(vec![None; watch.channels.len()]),
        why: Mutex::new(String::new()),
    });
    tokio::spawn(sample(watch.clone(), state.clone(), shutdown.clone()));
    let ready_state = state.clone();
    let scrape = watch.clone();
    let app = Router::new()
        .route(
            "/health",
            get(|| async { (StatusCode::OK, "{\"status\":\"alive\"}") }),
        )
        .route(
            "/ready",
            get(move || {
                let state = ready_state.clone();
                async move { ready(&state) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let watch = scrape.clone();
                async move { metrics(&watch) }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
    });
    Ok(())
}

fn metrics(watch: &Watch) -> Response {
    for (component, outcomes) in &watch.sinks {
        outcomes.export(component);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        crate::metrics::render(),
    )
        .into_response()
}

fn ready(state: &State) -> Response {
    let why = state.why.lock().expect("not poisoned").clone();
    let (status, body) = if why.is_empty() {
        (StatusCode::OK, "{\"status\":\"ready\"}".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "not ready", "reason": why }).to_string(),
        )
    };
    (status, body).into_response()
}

/// Samples the channels and probes the databases every [`TICK`]; keeps `why` (empty:
/// ready) up to date.
async fn sample(watch: Arc<Watch>, state: Arc<State>, shutdown: Shutdown) {
    let mut clients: Vec<Option<tokio_postgres::Client>> =
        watch.databases.iter().map(|_| None).collect();
    loop {
        let now = Instant::now();
        let bounds = watch.bounds.borrow().clone();
        let mut reasons = Vec::new();
        {
            let mut since = state.full_since.lock().expect("not poisoned");
            for (i, (into, fill)) in watch.channels.iter().enumerate() {
                let events = fill.events.load(Ordering::Relaxed) as f64;
                let bytes = fill.bytes.load(Ordering::Relaxed) as f64;
                let full = events > FULL_SHARE * bounds.events as f64
                    || bytes > FULL_SHARE * bounds.bytes as f64;
                since[i] = match (full, since[i]) {
                    (false, _) => None,
                    (true, None) => Some(now),
                    (true, s) => s,
                };
                if let Some(s) = since[i] {
                    if now - s >= watch.window {
                        reasons.push(format!(
                            "the channel into {into} has been over 80 % full for {} s",
                            (now - s).as_secs()
                        ));
                    }
                }
            }
        }
        for (spec, client) in watch.databases.iter().zip(clients.iter_mut()) {
            if !probe(spec, client).await {
                reasons.push(format!("the database {} does not answer", spec.display()));
            }
        }
        *state.why.lock().expect("not poisoned") = reasons.join("; ");
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = shutdown.wait() => {
                *state.why.lock().expect("not poisoned") = "shutting down".into();
                return;
            }
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
