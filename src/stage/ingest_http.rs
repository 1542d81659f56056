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
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::cli::{parse_bytes, Common};
use crate::event::{Ack, Batch, Event, Reject};
use crate::exit::{Error, Exit, Result};
use crate::json;
use crate::metrics::StageCounters;
use crate::stage::{Ctx, Kind, Stage, Stats};

const EXAMPLES: &str = "\
Examples:
  Serve on the default address, events to a file:
    ingest-http > events.ndjson

  Into the database, with a token, answering once written:
    ingest-http --listen 0.0.0.0:8080 --ack written \\
      --auth-token-file /run/secrets/token \\
      | validate --schema event.schema.json \\
        --dead-letter rejects.ndjson \\
      | persist

  Send events:
    curl -H 'Content-Type: application/x-ndjson' \\
      --data-binary @events.ndjson \\
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

    /// Memory for requests being received and parsed at once: their bytes as they arrive,
    /// inflated, and made into events. A request waits for room like it waits for queue
    /// room (then 503); one that could never fit gets 413.
    #[arg(long, value_name = "BYTES", default_value = "24M", value_parser = parse_bytes)]
    pub max_inflight_bytes: u64,

    /// The longest a request body may take to arrive (then 408).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// The slowest a request body may arrive, in bytes per second, after its first 5
    /// seconds (then 408): an idle or trickling body does not hold a connection for long.
    #[arg(long, value_name = "BYTES", default_value = "4K", value_parser = parse_bytes)]
    pub min_body_rate: u64,

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
    pub body_timeout: Duration,
    pub min_body_rate: u64,
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
            body_timeout: args.body_timeout,
            min_body_rate: args.min_body_rate,
            enqueue_timeout: args.enqueue_timeout,
            max_open_requests: args.max_open_requests.max(1),
            ack: args.ack,
            all_or_nothing: args.all_or_nothing,
            auth_token,
            max_line_bytes: to_usize(args.common.max_line_bytes),
            shutdown_timeout: args.common.shutdown_timeout,
            tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        })
    }
}

/// Events of waiting requests joined into one batch for the output.
const FORWARD_BATCH: usize = 4096;

/// After this many events, once the hub is empty,
/// freed memory is given back to the system: a burst of 7 M tiny events left 1.07 GB
/// resident after it had drained.
const TRIM_AFTER_EVENTS: usize = 100_000;

/// How long the forwarder gathers waiting requests before passing them on.
const FORWARD_GATHER: Duration = Duration::from_millis(1);

/// Byte budgets are counted in KiB so they fit a semaphore's u32 permits.
const UNIT: u64 = 1024;

/// Memory an event takes beyond its text: the `Event` and its member index, plus
/// allocator slack. Counted against the queue and in-flight budgets, or bodies of many
/// tiny events escape them: 3.4 M `{}` lines took 226 bytes each with their metadata.
const EVENT_OVERHEAD: u64 = 96;

/// A body has this long before --min-body-rate applies (a client's first bytes may be
/// slow to come: TLS, a cold connection).
const MIN_RATE_GRACE: Duration = Duration::from_secs(5);

/// Bytes inflated at a time, taking in-flight room for each step first.
const INFLATE_STEP: usize = 256 * 1024;

/// What one request holds of --max-inflight-bytes. It grows with what has actually
/// arrived and been made of it (raw bytes, inflated bytes, events), never with what a
/// client only declares: three clients announcing 8 MiB and going quiet used to hold it
/// all, and every other POST got 503.
struct Room {
    sem: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    units: u32,
    total_units: u32,
    wait: Duration,
}

/// Why room could not be had.
enum NoRoom {
    /// Not now: retry later (503).
    Busy,
    /// Never: more than the whole budget (413).
    TooLarge,
}

impl Room {
    fn new(hub: &Hub) -> Room {
        Room {
            sem: hub.inflight.clone(),
            held: None,
            units: 0,
            total_units: units(hub.config.max_inflight_bytes),
            wait: hub.config.enqueue_timeout,
        }
    }

    /// Holds room for `bytes` in all, waiting up to --enqueue-timeout for it.
    async fn grow_to(&mut self, bytes: u64) -> std::result::Result<(), NoRoom> {
        let want = self.check(bytes)?;
        if want > self.units {
            let p = acquire(&self.sem, want - self.units, self.wait)
                .await
                .ok_or(NoRoom::Busy)?;
            self.add(p, want);
        }
        Ok(())
    }

    /// The same, without waiting.
    fn try_grow_to(&mut self, bytes: u64) -> std::result::Result<(), NoRoom> {
        let want = self.check(bytes)?;
        if want > self.units {
            let p = self
                .sem
                .clone()
                .try_acquire_many_owned(want - self.units)
                .map_err(|_| NoRoom::Busy)?;
            self.add(p, want);
        }
        Ok(())
    }

    fn check(&self, bytes: u64) -> std::result::Result<u32, NoRoom> {
        let want = units(bytes);
        if want > self.total_units {
            return Err(NoRoom::TooLarge);
        }
        Ok(want)
    }

    fn add(&mut self, p: OwnedSemaphorePermit, want: u32) {
        match &mut self.held {
            Some(h) => h.merge(p),
            None => self.held = Some(p),
        }
        self.units = want;
    }
}

impl NoRoom {
    fn answer(self, config: &Config) -> Answer {
        match self {
            NoRoom::Busy => Answer::busy("too many request bytes in flight"),
            NoRoom::TooLarge => too_large(
                config.max_inflight_bytes as usize,
                "request in memory (--max-inflight-bytes)",
            ),
        }
    }
}

fn units(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as u64) as u32
}

/// ingest-http's series (`ndpipe_http_…`), kept in the metrics facade with the
/// component counters every stage reports.
struct Metrics {
    stage: StageCounters,
}

impl Metrics {
    fn new(capacity: u32) -> Metrics {
        crate::metrics::handle();
        metrics::describe_counter!(
            "ndpipe_http_requests_total",
            "HTTP requests answered, by status code"
        );
        metrics::describe_counter!("ndpipe_http_events_accepted_total", "Events queued");
        metrics::describe_counter!(
            "ndpipe_http_events_rejected_total",
            "Malformed events rejected"
        );
        metrics::describe_counter!(
            "ndpipe_http_events_refused_total",
            "Events of requests refused for lack of room (503) or size (413)"
        );
        metrics::describe_counter!(
            "ndpipe_http_events_lost_total",
            "Events queued but not written when the shutdown timeout expired"
        );
        metrics::describe_gauge!(
            "ndpipe_http_hub_depth_events",
            "Events queued, not yet written"
        );
        metrics::describe_gauge!(
            "ndpipe_http_hub_depth_bytes",
            "Bytes of events queued, not yet written"
        );
        metrics::describe_gauge!("ndpipe_http_hub_capacity_events", "Events the queue holds");
        metrics::describe_histogram!(
            "ndpipe_http_request_duration_seconds",
            "Time to answer POST /events"
        );
        metrics::gauge!("ndpipe_http_hub_capacity_events").set(f64::from(capacity));
        // Present from the start, at 0, as Prometheus clients expect.
        for name in [
            "ndpipe_http_events_accepted_total",
            "ndpipe_http_events_rejected_total",
            "ndpipe_http_events_refused_total",
            "ndpipe_http_events_lost_total",
        ] {
            metrics::counter!(name).absolute(0);
        }
        Metrics {
            stage: StageCounters::new("ingest-http"),
        }
    }

    fn request(&self, status: StatusCode, seconds: f64) {
        metrics::counter!("ndpipe_http_requests_total", "status" => status.as_str().to_owned())
            .increment(1);
        metrics::histogram!("ndpipe_http_request_duration_seconds").record(seconds);
    }

    fn accepted(&self, n: u64) {
        metrics::counter!("ndpipe_http_events_accepted_total").increment(n);
        self.stage.received.increment(n);
    }

    fn rejected(&self, n: u64) {
        metrics::counter!("ndpipe_http_events_rejected_total").increment(n);
        self.stage.rejected.increment(n);
    }

    fn refused(&self, n: u64) {
        metrics::counter!("ndpipe_http_events_refused_total").increment(n);
    }

    fn lost(&self, n: u64) {
        metrics::counter!("ndpipe_http_events_lost_total").increment(n);
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
    /// When the shutdown began: --shutdown-timeout counts from there.
    closing_at: std::sync::OnceLock<tokio::time::Instant>,
    /// stdout closed or failed: nothing queued can be written any more.
    stdout_closed: AtomicBool,
    /// Events acknowledged (202) that could not be written.
    lost: Arc<AtomicU64>,
    /// A dead letter could not be written (the exit code is then 74).
    dead_letters_failed: AtomicBool,
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
    hub.metrics
        .request(answer.status, started.elapsed().as_secs_f64());
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
    // Room for the request is taken as its bytes arrive and grow (see `Room`).
    let mut room = Room::new(hub);
    let raw = match read_body(body, config, &mut room).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(config.max_body_bytes, "request body"),
        Err(BodyError::NoRoom(r)) => return r.answer(config),
        Err(BodyError::Slow(why)) => return Answer::error(StatusCode::REQUEST_TIMEOUT, &why),
        Err(BodyError::Read(e)) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            )
        }
    };
    let text: Bytes = if gzip {
        let base = raw.len() as u64;
        let mut reserve = |bytes: u64| room.try_grow_to(base + bytes);
        match inflate(&raw, config.max_decompressed_bytes, &mut reserve) {
            Ok(t) => t.into(),
            Err(Inflate::TooLarge) => {
                return too_large(config.max_decompressed_bytes, "inflated body")
            }
            Err(Inflate::NoRoom(r)) => return r.answer(config),
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
        crate::human::timestamp_now(),
        json::quote(&request_id)
    );
    // Before any event is made: no more events than the queue holds, and room for them.
    let held = room.units as u64 * UNIT;
    let per_event = EVENT_OVERHEAD + meta.len() as u64 + 16;
    let mut admit = |count: usize| -> std::result::Result<(), Answer> {
        if count > config.queue_capacity as usize {
            hub.metrics.refused(count as u64);
            return Err(too_large_for_queue(count as u32, text.len() as u64, config));
        }
        room.try_grow_to(held + text.len() as u64 + count as u64 * per_event)
            .map_err(|r| r.answer(config))
    };
    let parsed = split_events(
        text,
        ndjson,
        config.max_line_bytes,
        &hub.ctx.meta_field,
        &meta,
        &mut admit,
    );
    let Parsed { events, mut errors } = match parsed {
        Ok(p) => p,
        Err(Refused::Bad(reason)) => return Answer::error(StatusCode::BAD_REQUEST, &reason),
        Err(Refused::Answer(a)) => return a,
    };
    let source: Arc<str> = Arc::from(format!("http:{request_id}"));
    let rejected = errors.len();
    if rejected > 0 && (config.all_or_nothing || events.is_empty()) {
        hub.metrics.rejected(rejected as u64);
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

    // Reserve room for every event before queueing any.
    let n = events.len() as u32;
    let size: u64 = events
        .iter()
        .map(|e| e.bytes().len() as u64 + 1 + EVENT_OVERHEAD)
        .sum();
    if n > config.queue_capacity || units(size) > units(config.queue_bytes) {
        hub.metrics.refused(u64::from(n));
        return too_large_for_queue(n, size, config);
    }
    let deadline = tokio::time::Instant::now() + config.enqueue_timeout;
    let Some(event_permits) = acquire_until(&hub.events, n, deadline).await else {
        hub.metrics.refused(u64::from(n));
        return Answer::busy("the queue is full; retry later");
    };
    let Some(byte_permits) = acquire_until(&hub.bytes, units(size), deadline).await else {
        hub.metrics.refused(u64::from(n));
        return Answer::busy("the queue is full; retry later");
    };
    // The request is taken: dead letters for its malformed events (a request refused
    // with 413 or 503 is the client's to resend, and leaves none). One that cannot be
    // written fails the whole request, with nothing queued: a 202 would claim it is kept.
    for m in &mut errors {
        let reject = Reject::new(m.kind, m.reason.clone());
        if let Err(e) = hub
            .ctx
            .dead
            .write("ingest-http", &source, &mut m.event, &reject)
        {
            tracing::error!("cannot write a dead letter, refusing the request: {e}");
            hub.dead_letters_failed.store(true, Ordering::Relaxed);
            return Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request's malformed events cannot be kept (dead-letter output failed); nothing was queued",
            );
        }
    }
    hub.metrics.rejected(rejected as u64);
    let (written_tx, written_rx) = oneshot::channel();
    let lost = hub.lost.clone();
    let ack = Ack::with_loss(
        move || {
            drop(event_permits);
            drop(byte_permits);
            let _ = written_tx.send(());
        },
        move || {
            lost.fetch_add(n.into(), Ordering::Relaxed);
        },
    );
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
    hub.metrics.accepted(n.into());
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

/// Why a body could not be read.
enum BodyError {
    /// Over --max-body-bytes (the rest was drained, up to a limit).
    TooLarge,
    NoRoom(NoRoom),
    /// Over --body-timeout, or under --min-body-rate.
    Slow(String),
    Read(axum::Error),
}

/// The body, taking in-flight room for its bytes as they arrive, within --body-timeout
/// and --min-body-rate.
async fn read_body(
    body: axum::body::Body,
    config: &Config,
    room: &mut Room,
) -> std::result::Result<Bytes, BodyError> {
    use futures::StreamExt;
    let limit = config.max_body_bytes;
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let start = tokio::time::Instant::now();
    let rate = config.min_body_rate.max(1);
    loop {
        // By when more must have come: the body's timeout, or where its bytes so far fall
        // below the minimum rate.
        let at_rate = MIN_RATE_GRACE + Duration::from_secs_f64(total as f64 / rate as f64);
        let deadline = start + config.body_timeout.min(at_rate);
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                let why = if at_rate < config.body_timeout {
                    format!(
                        "the body arrives slower than --min-body-rate {rate} bytes/s ({total} bytes in {:.1}s)",
                        start.elapsed().as_secs_f64()
                    )
                } else {
                    format!(
                        "the body did not arrive within --body-timeout {}",
                        humantime::format_duration(config.body_timeout)
                    )
                };
                return Err(BodyError::Slow(why));
            }
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(BodyError::Read)?;
        total += chunk.len();
        if total > limit {
            drop((first, more));
            drain_stream(stream, total as u64).await;
            return Err(BodyError::TooLarge);
        }
        room.grow_to(total as u64)
            .await
            .map_err(BodyError::NoRoom)?;
        match &first {
            None => first = Some(chunk),
            Some(f) => {
                if more.is_empty() {
                    more.reserve(total.next_power_of_two().min(limit));
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
    NoRoom(NoRoom),
    Bad(std::io::Error),
}

/// Inflates gzip, refusing to produce more than `cap` bytes (a gzip bomb stops there).
/// `reserve(n)` takes in-flight room for `n` inflated bytes before each step, so that
/// many small bodies inflating at once stay within --max-inflight-bytes.
fn inflate(
    raw: &[u8],
    cap: usize,
    reserve: &mut dyn FnMut(u64) -> std::result::Result<(), NoRoom>,
) -> std::result::Result<Vec<u8>, Inflate> {
    let mut out: Vec<u8> = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(raw);
    loop {
        let step = INFLATE_STEP.min(cap + 1 - out.len());
        // Grow by a quarter, not double: the room taken stays near what was inflated,
        // and the copies stay linear in all.
        out.reserve_exact(step.max(out.len() / 4));
        reserve(out.capacity() as u64).map_err(Inflate::NoRoom)?;
        let len = out.len();
        out.resize(len + step, 0);
        let n = match dec.read(&mut out[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                out.truncate(len);
                continue;
            }
            Err(e) => return Err(Inflate::Bad(e)),
        };
        out.truncate(len + n);
        if out.len() > cap {
            return Err(Inflate::TooLarge);
        }
        if n == 0 && step > 0 {
            return Ok(out);
        }
    }
}

/// Valid events of a body, and the malformed ones.
struct Parsed {
    events: Vec<Event>,
    errors: Vec<Malformed>,
}

/// One malformed event of a body.
struct Malformed {
    /// Its position as the answer reports it: the array index (from 0) or the line.
    at: usize,
    /// The dead-letter kind, as the NDJSON framer and decoder name it.
    kind: &'static str,
    reason: String,
    /// The event as read (an over-long line holds only its start), for its dead letter.
    event: Event,
}

/// Why a body was refused whole.
enum Refused {
    /// Not JSON, an array, nor NDJSON (400).
    Bad(String),
    /// What `admit` answered.
    Answer(Answer),
}

/// Splits a body into events, each with the metadata field set. A body that is neither
/// an object, an array, nor NDJSON is an error for the whole request. `admit(n)` is asked
/// before any event is made, with how many the body holds at most.
fn split_events(
    text: &str,
    ndjson: bool,
    max_line: usize,
    meta_field: &str,
    meta: &str,
    admit: &mut dyn FnMut(usize) -> std::result::Result<(), Answer>,
) -> std::result::Result<Parsed, Refused> {
    let mut parsed = Parsed {
        events: Vec::new(),
        errors: Vec::new(),
    };
    let body = text.trim_start_matches('\u{feff}');
    let trimmed = body.trim_ascii();
    let one = |mut event: Event, at: usize, parsed: &mut Parsed| match with_meta(
        &mut event, meta_field, meta,
    ) {
        Ok(()) => parsed.events.push(event),
        Err(r) => parsed.errors.push(Malformed {
            at,
            kind: r.kind,
            reason: r.reason,
            event,
        }),
    };
    if !ndjson && trimmed.starts_with('[') {
        let Some(elems) = json::scan_array(trimmed) else {
            return Err(Refused::Bad(
                "the body is not valid JSON (an array was expected)".into(),
            ));
        };
        admit(elems.len()).map_err(Refused::Answer)?;
        for (i, r) in elems.into_iter().enumerate() {
            let event = Event::from_line(trimmed[r].as_bytes().to_vec(), i as u64 + 1);
            one(event, i, &mut parsed);
        }
        return Ok(parsed);
    }
    if !ndjson {
        // One object; a body of several lines is taken as NDJSON all the same.
        let single = serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok();
        if single {
            admit(1).map_err(Refused::Answer)?;
            one(
                Event::from_line(trimmed.as_bytes().to_vec(), 1),
                0,
                &mut parsed,
            );
            return Ok(parsed);
        }
        if !trimmed.contains('\n') {
            let mut event = Event::from_line(trimmed.as_bytes().to_vec(), 0);
            let reason = event
                .decode()
                .err()
                .map_or("malformed JSON".into(), |r| r.reason);
            return Err(Refused::Bad(format!(
                "the body is not a JSON object: {reason}"
            )));
        }
    }
    // Counted before any event is made, so that a body too large for the queue is
    // refused without building its events.
    let lines = body
        .split('\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    admit(lines).map_err(Refused::Answer)?;
    // The same framer as files and stdin: BOM, CRLF, blank lines, over-long lines.
    let mut framer = crate::ndjson::Framer::new(max_line as u64);
    let mut events = Vec::with_capacity(lines);
    framer.feed(text.as_bytes(), &mut events);
    framer.finish(&mut events);
    for event in events {
        let at = event.line as usize;
        one(event, at, &mut parsed);
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
    errors: &[Malformed],
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
    for (i, Malformed { at, reason, .. }) in errors.iter().take(100).enumerate() {
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
    metrics::gauge!("ndpipe_http_hub_depth_events").set(hub.depth() as f64);
    metrics::gauge!("ndpipe_http_hub_depth_bytes").set(hub.depth_bytes() as f64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        crate::metrics::handle().render(),
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
        metrics: Metrics::new(config.queue_capacity),
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
    let forward = tokio::spawn(async move {
        let source: Arc<str> = Arc::from("http");
        let hub = fwd_hub;
        // Events passed on since memory was last given back (see give_back_memory).
        let mut since_trim = 0usize;
        while let Some(first) = rx.recv().await {
            if hub.stdout_closed.load(Ordering::Relaxed) {
                lose(&first.events);
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
                lose(&batch.events);
                continue;
            }
            hub.metrics.stage.sent.increment(n as u64);
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
    forward.abort();
    if lost > 0 {
        hub.metrics.lost(lost);
        let why = if hub.stdout_closed.load(Ordering::Relaxed) {
            "stdout was closed (is the next command in the pipe still running?)".to_owned()
        } else {
            format!(
                "they were not written within the shutdown timeout of {} (is stdout stalled?)",
                humantime::format_duration(timeout)
            )
        };
        return Err(Error::new(
            Exit::IoErr,
            anyhow::anyhow!("{lost} acknowledged events are lost: {why}"),
        ));
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

/// Marks events that can never be written as lost: their requests' acknowledgements must
/// not fire (`--ack written` answers 500, and they are counted as lost).
fn lose(events: &[Event]) {
    for ack in events.iter().filter_map(|e| e.ack.as_ref()) {
        ack.disarm();
    }
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
    ) -> BoxFuture<'static, Result<Stats>> {
        Box::pin(async move {
            run(*self, output, ctx).await?;
            Ok(Stats::default())
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
