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
use axum::routing::{any, get};
use axum::Router;
use clap::{Parser, ValueEnum};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::cli::{parse_bytes, Common};
use crate::event::{Ack, Batch, Event, Reject};
use crate::exit::{Error, Exit, Result};
use crate::json;
use crate::stage::Ctx;

const EXAMPLES: &str = "\
Examples:
  Serve on the default address, events to a file:
    ingest-http > events.ndjson

  Straight into the database, with a token, answering only once events are written:
    ingest-http --listen 0.0.0.0:8080 --auth-token-file /run/secrets/token --ack written \\
      | validate --schema event.schema.json --dead-letter rejects.ndjson | persist

  Send events:
    curl -H 'Content-Type: application/x-ndjson' --data-binary @events.ndjson \\
      http://127.0.0.1:8080/events";

/// Receive events over HTTP and write them to stdout as NDJSON, with back-pressure.
///
/// POST /events takes a JSON object, a JSON array of objects, or NDJSON
/// (Content-Type application/json or application/x-ndjson; Content-Encoding gzip allowed).
/// The answer is 202 {accepted, rejected, errors} once the events are queued (200 once
/// written, with --ack written). A request is queued whole or not at all: when the queue
/// has no room within --enqueue-timeout, it gets 503 with Retry-After and nothing of it is
/// kept. Malformed events are rejected one by one (and written to the dead-letter output);
/// --all-or-nothing refuses the whole request instead. GET /health, /ready and /metrics
/// (Prometheus) are for operators.
#[derive(Parser, Clone, Debug)]
#[command(name = "ingest-http", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the address is logged).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest request body accepted, as sent (larger: 413). K, M, G suffixes.
    #[arg(long, value_name = "BYTES", default_value = "10M", value_parser = parse_bytes)]
    pub max_body_bytes: u64,

    /// Largest body after gzip inflation (larger: 413).
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_bytes)]
    pub max_decompressed_bytes: u64,

    /// Events the queue holds between the server and stdout.
    #[arg(long, value_name = "EVENTS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,

    /// Bytes of events the queue holds between the server and stdout.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_bytes)]
    pub queue_bytes: u64,

    /// Bytes of request bodies being received and parsed at once; a request waits for its
    /// share (its Content-Length, else --max-body-bytes) like it waits for queue room.
    #[arg(long, value_name = "BYTES", default_value = "24M", value_parser = parse_bytes)]
    pub max_inflight_bytes: u64,

    /// How long a request waits for room before it gets 503 with Retry-After.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub enqueue_timeout: Duration,

    /// Requests handled at once; more are shed at once with 503 and Retry-After.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_open_requests: usize,

    /// When to answer: once the events are queued (202), or once they are written to
    /// stdout (200).
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = AckMode::Queued)]
    pub ack: AckMode,

    /// Refuse the whole request (400) when any event in it is malformed.
    #[arg(long)]
    pub all_or_nothing: bool,

    /// Require `Authorization: Bearer TOKEN` (compared in constant time).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "NDPIPE_AUTH_TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,

    /// Read the bearer token from a file (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,

    /// On SIGTERM/SIGINT, how long to wait for queued events to be written; events still
    /// queued then are counted and logged as lost (exit 74).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub common: Common,
}

/// When a request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// Once the events are in the queue (202 Accepted).
    Queued,
    /// Once the events have been written to stdout (200 OK).
    Written,
}

/// Settings fixed at start.
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub queue_capacity: u32,
    pub queue_bytes: u64,
    pub max_inflight_bytes: u64,
    pub enqueue_timeout: Duration,
    pub max_open_requests: usize,
    pub ack: AckMode,
    pub all_or_nothing: bool,
    pub auth_token: Option<String>,
    pub max_line_bytes: usize,
    pub shutdown_timeout: Duration,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        let auth_token = match (&args.auth_token, &args.auth_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => {
                let t = std::fs::read_to_string(path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Error::no_input(format!(
                        "--auth-token-file {}: no such file",
                        path.display()
                    )),
                    _ => Error::new(
                        Exit::IoErr,
                        anyhow::anyhow!("--auth-token-file {}: {e}", path.display()),
                    ),
                })?;
                Some(t.trim().to_owned())
            }
            (None, None) => None,
        };
        if auth_token.as_deref() == Some("") {
            return Err(Error::usage("the auth token is empty"));
        }
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Config {
            listen: args.listen,
            max_body_bytes: to_usize(args.max_body_bytes),
            max_decompressed_bytes: to_usize(args.max_decompressed_bytes),
            queue_capacity: args.queue_capacity,
            queue_bytes: args.queue_bytes.min(u32::MAX as u64 * 1024),
            max_inflight_bytes: args.max_inflight_bytes.max(args.max_body_bytes),
            enqueue_timeout: args.enqueue_timeout,
            max_open_requests: args.max_open_requests.max(1),
            ack: args.ack,
            all_or_nothing: args.all_or_nothing,
            auth_token,
            max_line_bytes: to_usize(args.common.max_line_bytes),
            shutdown_timeout: args.shutdown_timeout,
            tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        })
    }
}

/// Events of waiting requests joined into one batch for the output.
const FORWARD_BATCH: usize = 4096;

/// How long the forwarder gathers waiting requests before passing them on.
const FORWARD_GATHER: Duration = Duration::from_millis(1);

/// Byte budgets are counted in KiB so they fit a semaphore's u32 permits.
const UNIT: u64 = 1024;

fn units(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as u64) as u32
}

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    accepted: IntCounter,
    rejected: IntCounter,
    refused: IntCounter,
    lost: IntCounter,
    depth: IntGauge,
    depth_bytes: IntGauge,
    capacity: IntGauge,
    latency: Histogram,
}

impl Metrics {
    fn new(capacity: u32) -> Metrics {
        let registry =
            Registry::new_custom(Some("ndpipe_http".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "HTTP requests answered, by status code"),
            &["status"],
        )
        .expect("valid metric");
        let accepted = IntCounter::new("events_accepted_total", "Events queued").expect("valid");
        let rejected =
            IntCounter::new("events_rejected_total", "Malformed events rejected").expect("valid");
        let refused = IntCounter::new(
            "events_refused_total",
            "Events of requests refused for lack of room (503) or size (413)",
        )
        .expect("valid");
        let lost = IntCounter::new(
            "events_lost_total",
            "Events queued but not written when the shutdown timeout expired",
        )
        .expect("valid");
        let depth =
            IntGauge::new("hub_depth_events", "Events queued, not yet written").expect("valid");
        let depth_bytes =
            IntGauge::new("hub_depth_bytes", "Bytes of events queued, not yet written")
                .expect("valid");
        let cap = IntGauge::new("hub_capacity_events", "Events the queue holds").expect("valid");
        cap.set(capacity.into());
        let latency = Histogram::with_opts(
            HistogramOpts::new("request_duration_seconds", "Time to answer POST /events").buckets(
                vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
            ),
        )
        .expect("valid");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(accepted.clone()),
            Box::new(rejected.clone()),
            Box::new(refused.clone()),
            Box::new(lost.clone()),
            Box::new(depth.clone()),
            Box::new(depth_bytes.clone()),
            Box::new(cap.clone()),
            Box::new(latency.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            accepted,
            rejected,
            refused,
            lost,
            depth,
            depth_bytes,
            capacity: cap,
            latency,
        }
    }
}

/// Everything the handlers share.
struct Hub {
    config: Config,
    ctx: Ctx,
    tx: Mutex<Option<mpsc::UnboundedSender<Batch>>>,
    events: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    inflight: Arc<Semaphore>,
    open: AtomicUsize,
    closing: AtomicBool,
    next_id: AtomicU64,
    id_prefix: String,
    metrics: Metrics,
}

impl Hub {
    fn depth(&self) -> u64 {
        u64::from(self.config.queue_capacity) - self.events.available_permits() as u64
    }

    fn depth_bytes(&self) -> u64 {
        (units(self.config.queue_bytes) as u64 - self.bytes.available_permits() as u64) * UNIT
    }
}

/// One answer: status, JSON body, optional Retry-After.
struct Answer {
    status: StatusCode,
    body: String,
    retry_after: bool,
}

impl Answer {
    fn error(status: StatusCode, message: &str) -> Answer {
        Answer {
            status,
            body: format!("{{\"error\":{}}}", json::quote(message)),
            retry_after: false,
        }
    }

    fn busy(message: &str) -> Answer {
        Answer {
            retry_after: true,
            ..Answer::error(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body,
        )
            .into_response();
        if self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// Decrements the open-request count when a request ends, however it ends.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn post_events(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let started = Instant::now();
    let answer = {
        let open = hub.open.fetch_add(1, Ordering::Relaxed) + 1;
        let _guard = OpenGuard(&hub.open);
        if open > hub.config.max_open_requests {
            Answer::busy("too many open requests")
        } else {
            handle(&hub, remote, &headers, body).await
        }
    };
    hub.metrics.latency.observe(started.elapsed().as_secs_f64());
    hub.metrics
        .requests
        .with_label_values(&[answer.status.as_str()])
        .inc();
    answer.into_response()
}

async fn handle(
    hub: &Hub,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Answer {
    let config = &hub.config;
    if let Some(token) = &config.auth_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        let ok = given.is_some_and(|g| {
            use subtle::ConstantTimeEq;
            bool::from(g.ct_eq(token.as_bytes()))
        });
        if !ok {
            let mut a = Answer::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            a.body = a
                .body
                .replace('}', ",\"hint\":\"Authorization: Bearer TOKEN\"}");
            return a;
        }
    }
    if hub.closing.load(Ordering::Relaxed) {
        return Answer::busy("shutting down");
    }
    let ndjson = match media_type(headers) {
        Some("application/json") | None => false,
        Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => true,
        Some(_) => {
            return Answer::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json or application/x-ndjson",
            )
        }
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e == "identity" => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(_) => {
            return Answer::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding must be gzip or identity",
            )
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        // Read and drop what the client sends, so that it gets to read the answer.
        drain(body).await;
        return too_large(config.max_body_bytes, "request body");
    }
    // Room to receive the body: its declared length, else the most it may be.
    let share = units(declared.unwrap_or(config.max_body_bytes as u64).max(1));
    let Some(_receiving) = acquire(&hub.inflight, share, config.enqueue_timeout).await else {
        return Answer::busy("too many request bytes in flight");
    };
    let raw = match read_body(body, config.max_body_bytes).await {
        Ok(b) => b,
        Err(None) => return too_large(config.max_body_bytes, "request body"),
        Err(Some(e)) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            )
        }
    };
    let text: Bytes = if gzip {
        match inflate(&raw, config.max_decompressed_bytes) {
            Ok(t) => t.into(),
            Err(Inflate::TooLarge) => {
                return too_large(config.max_decompressed_bytes, "inflated body")
            }
            Err(Inflate::Bad(e)) => {
                return Answer::error(StatusCode::BAD_REQUEST, &format!("bad gzip body: {e}"))
            }
        }
    } else {
        raw
    };
    let Ok(text) = std::str::from_utf8(&text) else {
        return Answer::error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "{}-{:x}",
                hub.id_prefix,
                hub.next_id.fetch_add(1, Ordering::Relaxed)
            )
        });
    let meta = format!(
        "{{\"source\":\"http\",\"received_at\":\"{}\",\"request_id\":{},\"remote_addr\":\"{remote}\"}}",
        jiff::Timestamp::now(),
        json::quote(&request_id)
    );
    let parsed = split_events(
        text,
        ndjson,
        config.max_line_bytes,
        &hub.ctx.meta_field,
        &meta,
    );
    let Parsed { events, errors } = match parsed {
        Ok(p) => p,
        Err(reason) => return Answer::error(StatusCode::BAD_REQUEST, &reason),
    };
    let source: Arc<str> = Arc::from(format!("http:{request_id}"));
    let rejected = errors.len();
    if rejected > 0 && (config.all_or_nothing || events.is_empty()) {
        hub.metrics.rejected.inc_by(rejected as u64);
        let why = if events.is_empty() {
            "no valid event in the request"
        } else {
            "the request holds malformed events (--all-or-nothing)"
        };
        return Answer {
            status: StatusCode::BAD_REQUEST,
            body: summary_json(0, &errors, ndjson, Some(why)),
            retry_after: false,
        };
    }
    if events.is_empty() {
        return Answer::error(StatusCode::BAD_REQUEST, "no event in the request");
    }
    // Dead letters for the malformed ones (the valid ones are queued below).
    for (at, reason, raw) in &errors {
        let mut ev = Event::from_line(raw.as_bytes().to_vec(), *at as u64);
        let reject = Reject::new("http", reason.clone());
        if let Err(e) = hub.ctx.dead.write("ingest-http", &source, &mut ev, &reject) {
            tracing::error!("cannot write a dead letter: {e}");
        }
    }
    hub.metrics.rejected.inc_by(rejected as u64);

    // Reserve room for every event before queueing any.
    let n = events.len() as u32;
    let size: u64 = events.iter().map(|e| e.bytes().len() as u64 + 1).sum();
    if n > config.queue_capacity || units(size) > units(config.queue_bytes) {
        hub.metrics.refused.inc_by(n.into());
        return too_large_for_queue(n, size, config);
    }
    let deadline = tokio::time::Instant::now() + config.enqueue_timeout;
    let Some(event_permits) = acquire_until(&hub.events, n, deadline).await else {
        hub.metrics.refused.inc_by(n.into());
        return Answer::busy("the queue is full; retry later");
    };
    let Some(byte_permits) = acquire_until(&hub.bytes, units(size), deadline).await else {
        hub.metrics.refused.inc_by(n.into());
        return Answer::busy("the queue is full; retry later");
    };
    let (written_tx, written_rx) = oneshot::channel();
    let ack = Ack::new(move || {
        drop(event_permits);
        drop(byte_permits);
        let _ = written_tx.send(());
    });
    let mut events = events;
    for e in &mut events {
        e.ack = Some(ack.clone());
    }
    drop(ack);
    let sent = {
        let tx = hub.tx.lock().expect("not poisoned");
        match tx.as_ref() {
            Some(tx) => tx.send(Batch::new(source, events)).is_ok(),
            None => false,
        }
    };
    if !sent {
        return Answer::busy("shutting down");
    }
    hub.metrics.accepted.inc_by(n.into());
    match config.ack {
        AckMode::Queued => Answer {
            status: StatusCode::ACCEPTED,
            body: summary_json(n as usize, &errors, ndjson, None),
            retry_after: false,
        },
        AckMode::Written => match written_rx.await {
            Ok(()) => Answer {
                status: StatusCode::OK,
                body: summary_json(n as usize, &errors, ndjson, None),
                retry_after: false,
            },
            Err(_) => Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the events were queued but could not be written",
            ),
        },
    }
}

/// Most bytes of an oversized body read (and dropped) so the client sees the 413.
const DRAIN_LIMIT: u64 = 64 << 20;

/// The body, up to `limit` bytes; `Err(None)` when larger (the rest is drained).
async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> std::result::Result<Bytes, Option<axum::Error>> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Some)?;
        total += chunk.len();
        if total > limit {
            drop((first, more));
            drain_stream(stream, total as u64).await;
            return Err(None);
        }
        match &first {
            None => first = Some(chunk),
            Some(f) => {
                if more.is_empty() {
                    more.extend_from_slice(f);
                }
                more.extend_from_slice(&chunk);
            }
        }
    }
    Ok(if more.is_empty() {
        first.unwrap_or_default()
    } else {
        more.into()
    })
}

async fn drain(body: axum::body::Body) {
    drain_stream(body.into_data_stream(), 0).await;
}

async fn drain_stream(mut stream: axum::body::BodyDataStream, mut seen: u64) {
    use futures::StreamExt;
    while seen < DRAIN_LIMIT {
        match stream.next().await {
            Some(Ok(chunk)) => seen += chunk.len() as u64,
            _ => break,
        }
    }
}

fn too_large(limit: usize, what: &str) -> Answer {
    Answer::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the {what} is larger than {limit} bytes"),
    )
}

fn too_large_for_queue(n: u32, size: u64, config: &Config) -> Answer {
    Answer::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "the request holds {n} events ({size} bytes); the queue holds at most {} events \
             and {} bytes: split it",
            config.queue_capacity, config.queue_bytes
        ),
    )
}

async fn acquire(sem: &Arc<Semaphore>, n: u32, wait: Duration) -> Option<OwnedSemaphorePermit> {
    acquire_until(sem, n, tokio::time::Instant::now() + wait).await
}

async fn acquire_until(
    sem: &Arc<Semaphore>,
    n: u32,
    deadline: tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = sem.clone().try_acquire_many_owned(n) {
        return Some(p);
    }
    tokio::time::timeout_at(deadline, sem.clone().acquire_many_owned(n))
        .await
        .ok()?
        .ok()
}

fn media_type(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().unwrap_or("?");
    Some(v.split(';').next().unwrap_or("").trim()).map(|t| {
        // Compare case-insensitively without allocating for the usual lowercase forms.
        match t {
            "application/json"
            | "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl" => t,
            _ if t.eq_ignore_ascii_case("application/json") => "application/json",
            _ if t.eq_ignore_ascii_case("application/x-ndjson") => "application/x-ndjson",
            _ => t,
        }
    })
}

enum Inflate {
    TooLarge,
    Bad(std::io::Error),
}

/// Inflates gzip, refusing to produce more than `cap` bytes (a gzip bomb stops there).
fn inflate(raw: &[u8], cap: usize) -> std::result::Result<Vec<u8>, Inflate> {
    let mut out = Vec::with_capacity((raw.len() * 4).min(cap));
    let mut dec = flate2::read::MultiGzDecoder::new(raw).take(cap as u64 + 1);
    dec.read_to_end(&mut out).map_err(Inflate::Bad)?;
    if out.len() > cap {
        return Err(Inflate::TooLarge);
    }
    Ok(out)
}

/// Valid events of a body, and (position, reason, raw text) of the malformed ones.
struct Parsed {
    events: Vec<Event>,
    errors: Vec<(usize, String, String)>,
}

/// Splits a body into events, each with the metadata field set. A body that is neither
/// an object, an array, nor NDJSON is an error for the whole request.
fn split_events(
    text: &str,
    ndjson: bool,
    max_line: usize,
    meta_field: &str,
    meta: &str,
) -> std::result::Result<Parsed, String> {
    let mut parsed = Parsed {
        events: Vec::new(),
        errors: Vec::new(),
    };
    let body = text.trim_start_matches('\u{feff}');
    let trimmed = body.trim_ascii();
    let one = |raw: &str, at: usize, parsed: &mut Parsed| {
        let mut event = Event::from_line(raw.as_bytes().to_vec(), at as u64);
        match with_meta(&mut event, meta_field, meta) {
            Ok(()) => parsed.events.push(event),
            Err(r) => parsed.errors.push((at, r.reason, raw.to_owned())),
        }
    };
    if !ndjson && trimmed.starts_with('[') {
        let Some(elems) = json::scan_array(trimmed) else {
            return Err("the body is not valid JSON (an array was expected)".into());
        };
        for (i, r) in elems.into_iter().enumerate() {
            one(&trimmed[r], i, &mut parsed);
        }
        return Ok(parsed);
    }
    if !ndjson {
        // One object; a body of several lines is taken as NDJSON all the same.
        let single = serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok();
        if single {
            one(trimmed, 0, &mut parsed);
            return Ok(parsed);
        }
        if !trimmed.contains('\n') {
            let mut event = Event::from_line(trimmed.as_bytes().to_vec(), 0);
            let reason = event
                .decode()
                .err()
                .map_or("malformed JSON".into(), |r| r.reason);
            return Err(format!("the body is not a JSON object: {reason}"));
        }
    }
    for (n, line) in body.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        if line.len() > max_line {
            parsed.errors.push((
                n + 1,
                format!(
                    "line of {} bytes is longer than --max-line-bytes {max_line}",
                    line.len()
                ),
                line[..line.floor_char_boundary(8192)].to_owned(),
            ));
            continue;
        }
        one(line, n + 1, &mut parsed);
    }
    Ok(parsed)
}

/// Checks that an event is one JSON object and sets its metadata field.
fn with_meta(event: &mut Event, meta_field: &str, meta: &str) -> std::result::Result<(), Reject> {
    event.decode()?;
    event.set_field(meta_field, meta)
}

fn summary_json(
    accepted: usize,
    errors: &[(usize, String, String)],
    ndjson: bool,
    error: Option<&str>,
) -> String {
    let mut s = format!("{{\"accepted\":{accepted},\"rejected\":{}", errors.len());
    if let Some(e) = error {
        s.push_str(",\"error\":");
        s.push_str(&json::quote(e));
    }
    s.push_str(",\"errors\":[");
    // At most 100 explained; the count says how many there were.
    for (i, (at, reason, _)) in errors.iter().take(100).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let key = if ndjson { "line" } else { "index" };
        s.push_str(&format!(
            "{{\"{key}\":{at},\"reason\":{}}}",
            json::quote(reason)
        ));
    }
    s.push_str("]}");
    s
}

async fn health() -> Answer {
    Answer {
        status: StatusCode::OK,
        body: "{\"status\":\"alive\"}".into(),
        retry_after: false,
    }
}

async fn ready(State(hub): State<Arc<Hub>>) -> Answer {
    let depth = hub.depth();
    let cap = u64::from(hub.config.queue_capacity);
    let bytes = hub.depth_bytes();
    let full = depth * 5 > cap * 4 || bytes * 5 > hub.config.queue_bytes * 4;
    let closing = hub.closing.load(Ordering::Relaxed);
    let status = if full || closing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let state = if closing {
        "shutting down"
    } else if full {
        "queue above 80 %"
    } else {
        "ready"
    };
    Answer {
        status,
        body: format!(
            "{{\"status\":\"{state}\",\"queued\":{depth},\"capacity\":{cap},\"queued_bytes\":{bytes}}}"
        ),
        retry_after: status == StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let m = &hub.metrics;
    m.depth.set(hub.depth() as i64);
    m.depth_bytes.set(hub.depth_bytes() as i64);
    m.capacity.set(hub.config.queue_capacity.into());
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&m.registry.gather(), &mut out) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        out,
    )
        .into_response()
}

async fn not_allowed(method: Method) -> Response {
    let allow = "POST";
    let mut r = Answer::error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{method} is not allowed here; use {allow}"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route(
            "/events",
            axum::routing::post(post_events).fallback(not_allowed),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/", any(|| async { StatusCode::NOT_FOUND }))
        // Bodies are limited by the handler (it answers 413 itself).
        .layer(DefaultBodyLimit::disable())
        .with_state(hub)
}

/// The source: serves until shutdown, sending each accepted request's events as one batch.
/// Returns the number of events lost (queued but not written within the shutdown timeout).
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
        metrics: Metrics::new(config.queue_capacity),
        open: AtomicUsize::new(0),
        closing: AtomicBool::new(false),
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
    let forward = tokio::spawn(async move {
        let source: Arc<str> = Arc::from("http");
        while let Some(first) = rx.recv().await {
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
            if output
                .send(Batch::new(source.clone(), events))
                .await
                .is_err()
            {
                break;
            }
        }
    });

    let handle = axum_server::Handle::new();
    let h = handle.clone();
    let hub_for_signal = hub.clone();
    let grace = hub.config.shutdown_timeout;
    tokio::spawn(async move {
        shutdown.wait().await;
        hub_for_signal.closing.store(true, Ordering::Relaxed);
        h.graceful_shutdown(Some(grace));
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
    // No request can queue more: close the hub and let the writer drain it.
    hub.tx.lock().expect("not poisoned").take();
    let deadline = hub.config.shutdown_timeout;
    let drained = tokio::time::timeout(deadline, async {
        while hub.depth() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let lost = hub.depth();
    forward.abort();
    if drained.is_err() && lost > 0 {
        hub.metrics.lost.inc_by(lost);
        return Err(Error::new(
            Exit::IoErr,
            anyhow::anyhow!(
                "{lost} queued events were not written within the shutdown timeout of {} \
                 (is stdout stalled?): they are lost",
                humantime::format_duration(deadline)
            ),
        ));
    }
    Ok(())
}

/// The `ingest-http` command: HTTP → stdout.
pub async fn main(args: Args) -> Result<Exit> {
    let config = Config::from_args(&args)?;
    crate::shell::source("ingest-http", &args.common, move |out, ctx| {
        run(config, out, ctx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_events_with_meta() {
        let meta = r#"{"source":"http"}"#;
        let p = split_events(r#"[{"a":1}, 2, {"b":"x"}]"#, false, 1 << 20, "_meta", meta).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.errors[0].0, 1);
        assert_eq!(p.events[0].text(), r#"{"a":1,"_meta":{"source":"http"}}"#);
        let p = split_events(
            "{\"a\":1}\n\nnope\n{\"_meta\":5}\r\n",
            true,
            1 << 20,
            "_meta",
            meta,
        )
        .unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[1].text(), r#"{"_meta":{"source":"http"}}"#);
        assert_eq!(p.errors[0].0, 3);
        assert!(split_events("nope", false, 1 << 20, "_meta", meta).is_err());
    }

    #[test]
    fn gzip_bombs_stop_at_the_cap() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 10 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 64 << 10);
        assert!(matches!(inflate(&gz, 1 << 20), Err(Inflate::TooLarge)));
        assert_eq!(inflate(&gz, 10 << 20).ok().map(|v| v.len()), Some(10 << 20));
    }
}
