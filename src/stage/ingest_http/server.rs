//! The HTTP side: routes, the POST /events handler, reading bodies within their
//! limits, and the answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::event::{Ack, Batch, Event, Reject};
use crate::json;
use crate::operator::Operator;
use crate::stage::Ctx;

use super::body::{inflate, split_events, summary_json, Inflate, Malformed, Parsed, Refused};
use super::room::{units, NoRoom, Room, EVENT_OVERHEAD, UNIT};
use super::telemetry::Metrics;
use super::{AckMode, Config};

/// A body has this long before --min-body-rate applies (a client's first bytes may be
/// slow to come: TLS, a cold connection).
pub(super) const MIN_RATE_GRACE: Duration = Duration::from_secs(5);

/// Everything the handlers share.
pub(super) struct Hub {
    pub(super) config: Config,
    pub(super) ctx: Ctx,
    pub(super) tx: Mutex<Option<mpsc::UnboundedSender<Batch>>>,
    pub(super) events: Arc<Semaphore>,
    pub(super) bytes: Arc<Semaphore>,
    pub(super) inflight: Arc<Semaphore>,
    pub(super) open: AtomicUsize,
    pub(super) closing: AtomicBool,
    /// When the shutdown began: --shutdown-timeout counts from there.
    pub(super) closing_at: std::sync::OnceLock<tokio::time::Instant>,
    /// stdout closed or failed: nothing queued can be written any more.
    pub(super) stdout_closed: AtomicBool,
    /// Events acknowledged (202) that could not be written.
    pub(super) lost: Arc<AtomicU64>,
    /// A dead letter could not be written (the exit code is then 74).
    pub(super) dead_letters_failed: AtomicBool,
    pub(super) next_id: AtomicU64,
    pub(super) id_prefix: String,
    pub(super) metrics: Metrics,
}

impl Hub {
    pub(super) fn depth(&self) -> u64 {
        u64::from(self.config.queue_capacity) - self.events.available_permits() as u64
    }

    pub(super) fn depth_bytes(&self) -> u64 {
        (units(self.config.queue_bytes) as u64 - self.bytes.available_permits() as u64) * UNIT
    }
}

/// One answer: status, JSON body, optional Retry-After.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: String,
    pub(super) retry_after: bool,
}

impl Answer {
    pub(super) fn error(status: StatusCode, message: &str) -> Answer {
        Answer {
            status,
            body: format!("{{\"error\":{}}}", json::quote(message)),
            retry_after: false,
        }
    }

    pub(super) fn busy(message: &str) -> Answer {
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
pub(super) struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn post_events(
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

/// Answers one `POST /events`: each step either passes the request on or is the answer.
pub(super) async fn handle(
    hub: &Hub,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Answer {
    match take(hub, remote, headers, body).await {
        Ok(answer) | Err(answer) => answer,
    }
}

/// The steps of [`handle`]; `Err` is an answer given before the request was taken.
async fn take(
    hub: &Hub,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> std::result::Result<Answer, Answer> {
    let config = &hub.config;
    authorize(config, headers)?;
    if hub.closing.load(Ordering::Relaxed) {
        return Err(Answer::busy("shutting down"));
    }
    let (ndjson, gzip) = (is_ndjson(headers)?, is_gzip(headers)?);
    // Room for the request is taken as its bytes arrive and grow (see `Room`).
    let mut room = Room::new(hub);
    let bytes = body_bytes(config, headers, body, gzip, &mut room).await?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8",
        ));
    };
    let request_id = request_id(hub, headers);
    let meta = format!(
        "{{\"source\":\"http\",\"received_at\":\"{}\",\"request_id\":{},\"remote_addr\":\"{remote}\"}}",
        crate::human::timestamp_now(),
        json::quote(&request_id)
    );
    let Parsed { events, mut errors } = parse(hub, text, ndjson, &meta, &mut room)?;
    refuse_malformed(hub, &events, &errors, ndjson)?;
    let n = events.len() as u32;
    let permits = reserve(hub, &events).await?;
    // The request is taken.
    let source: Arc<str> = Arc::from(format!("http:{request_id}"));
    keep_dead_letters(hub, &source, &mut errors)?;
    hub.metrics.rejected(errors.len() as u64);
    // A request's W3C traceparent: its events' spans continue that trace.
    let parent = crate::trace::enabled()
        .then(|| headers.get("traceparent")?.to_str().ok())
        .flatten()
        .and_then(crate::trace::parent);
    let written = enqueue(hub, source, events, permits, parent)?;
    // Consumed: the events taken, and the (inflated) body they came in.
    hub.metrics.accepted(n.into(), text.len() as u64);
    Ok(answer(config.ack, n as usize, &errors, ndjson, written).await)
}

/// `--auth-token`: the bearer token, compared in constant time.
fn authorize(config: &Config, headers: &HeaderMap) -> std::result::Result<(), Answer> {
    let Some(token) = &config.auth_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let ok = given.is_some_and(|g| {
        use subtle::ConstantTimeEq;
        bool::from(g.ct_eq(token.as_bytes()))
    });
    if ok {
        return Ok(());
    }
    let mut a = Answer::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    a.body = a
        .body
        .replace('}', ",\"hint\":\"Authorization: Bearer TOKEN\"}");
    Err(a)
}

/// Whether the body is NDJSON (else one JSON object or an array), from Content-Type.
fn is_ndjson(headers: &HeaderMap) -> std::result::Result<bool, Answer> {
    match media_type(headers) {
        Some("application/json") | None => Ok(false),
        Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => Ok(true),
        Some(_) => Err(Answer::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json or application/x-ndjson",
        )),
    }
}

/// Whether the body is gzipped, from Content-Encoding.
fn is_gzip(headers: &HeaderMap) -> std::result::Result<bool, Answer> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => Ok(false),
        Some(e) if e == "identity" => Ok(false),
        Some(e) if e == "gzip" || e == "x-gzip" => Ok(true),
        Some(_) => Err(Answer::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding must be gzip or identity",
        )),
    }
}

/// The body, read within its limits and inflated when gzipped, its room taken in `room`.
async fn body_bytes(
    config: &Config,
    headers: &HeaderMap,
    body: axum::body::Body,
    gzip: bool,
    room: &mut Room,
) -> std::result::Result<Bytes, Answer> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        // Read and drop what the client sends, so that it gets to read the answer.
        drain(body).await;
        return Err(too_large(config.max_body_bytes, "request body"));
    }
    let raw = match read_body(body, config, room).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Err(too_large(config.max_body_bytes, "request body")),
        Err(BodyError::NoRoom(r)) => return Err(r.answer(config)),
        Err(BodyError::Slow(why)) => return Err(Answer::error(StatusCode::REQUEST_TIMEOUT, &why)),
        Err(BodyError::Read(e)) => {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            ))
        }
    };
    if !gzip {
        return Ok(raw);
    }
    let base = raw.len() as u64;
    let mut reserve = |bytes: u64| room.try_grow_to(base + bytes);
    match inflate(&raw, config.max_decompressed_bytes, &mut reserve) {
        Ok(t) => Ok(t.into()),
        Err(Inflate::TooLarge) => Err(too_large(config.max_decompressed_bytes, "inflated body")),
        Err(Inflate::NoRoom(r)) => Err(r.answer(config)),
        Err(Inflate::Bad(e)) => Err(Answer::error(
            StatusCode::BAD_REQUEST,
            &format!("bad gzip body: {e}"),
        )),
    }
}

/// The client's `X-Request-Id` (up to 128 bytes), else one of ours.
fn request_id(hub: &Hub, headers: &HeaderMap) -> String {
    headers
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
        })
}

/// The body's events with `meta`, and its malformed ones. Before any event is made: no
/// more events than the queue holds, and room for them.
fn parse(
    hub: &Hub,
    text: &str,
    ndjson: bool,
    meta: &str,
    room: &mut Room,
) -> std::result::Result<Parsed, Answer> {
    let config = &hub.config;
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
        meta,
        &mut admit,
    );
    match parsed {
        Ok(p) => Ok(p),
        Err(Refused::Bad(reason)) => Err(Answer::error(StatusCode::BAD_REQUEST, &reason)),
        Err(Refused::Answer(a)) => Err(a),
    }
}

/// 400 for a request with no valid event, or with a malformed one under
/// `--all-or-nothing`.
fn refuse_malformed(
    hub: &Hub,
    events: &[Event],
    errors: &[Malformed],
    ndjson: bool,
) -> std::result::Result<(), Answer> {
    let rejected = errors.len();
    if rejected > 0 && (hub.config.all_or_nothing || events.is_empty()) {
        hub.metrics.rejected(rejected as u64);
        let why = if events.is_empty() {
            "no valid event in the request"
        } else {
            "the request holds malformed events (--all-or-nothing)"
        };
        return Err(Answer {
            status: StatusCode::BAD_REQUEST,
            body: summary_json(0, errors, ndjson, Some(why)),
            retry_after: false,
        });
    }
    if events.is_empty() {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "no event in the request",
        ));
    }
    Ok(())
}

/// Room in the hub for every event of the request, taken before any is queued (413 when
/// it could never fit, 503 when none comes within --enqueue-timeout).
async fn reserve(
    hub: &Hub,
    events: &[Event],
) -> std::result::Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Answer> {
    let config = &hub.config;
    let n = events.len() as u32;
    let size: u64 = events
        .iter()
        .map(|e| e.bytes().len() as u64 + 1 + EVENT_OVERHEAD)
        .sum();
    if n > config.queue_capacity || units(size) > units(config.queue_bytes) {
        hub.metrics.refused(u64::from(n));
        return Err(too_large_for_queue(n, size, config));
    }
    let deadline = tokio::time::Instant::now() + config.enqueue_timeout;
    let Some(event_permits) = acquire_until(&hub.events, n, deadline).await else {
        hub.metrics.refused(u64::from(n));
        return Err(Answer::busy("the queue is full; retry later"));
    };
    let Some(byte_permits) = acquire_until(&hub.bytes, units(size), deadline).await else {
        hub.metrics.refused(u64::from(n));
        return Err(Answer::busy("the queue is full; retry later"));
    };
    Ok((event_permits, byte_permits))
}

/// Dead letters for a taken request's malformed events (a request refused with 413 or
/// 503 is the client's to resend, and leaves none). One that cannot be written fails the
/// whole request, with nothing queued: a 202 would claim it is kept.
fn keep_dead_letters(
    hub: &Hub,
    source: &Arc<str>,
    errors: &mut [Malformed],
) -> std::result::Result<(), Answer> {
    for m in errors {
        let reject = Reject::new(m.kind, m.reason.clone());
        if let Err(e) = hub
            .ctx
            .dead
            .write("ingest-http", source, &mut m.event, &reject)
        {
            tracing::error!("cannot write a dead letter, refusing the request: {e}");
            hub.dead_letters_failed.store(true, Ordering::Relaxed);
            return Err(Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request's malformed events cannot be kept (dead-letter output failed); nothing was queued",
            ));
        }
    }
    Ok(())
}

/// Queues the events, each holding an acknowledgement that gives the room back once
/// every one is written (and fires the returned channel) or counts them lost.
fn enqueue(
    hub: &Hub,
    source: Arc<str>,
    mut events: Vec<Event>,
    (event_permits, byte_permits): (OwnedSemaphorePermit, OwnedSemaphorePermit),
    parent: Option<opentelemetry::trace::SpanContext>,
) -> std::result::Result<oneshot::Receiver<()>, Answer> {
    let n = events.len() as u64;
    let (written_tx, written_rx) = oneshot::channel();
    let lost = hub.lost.clone();
    let ack = Ack::with_loss(
        move || {
            drop(event_permits);
            drop(byte_permits);
            let _ = written_tx.send(());
        },
        move || {
            lost.fetch_add(n, Ordering::Relaxed);
        },
    );
    for e in &mut events {
        e.ack = Some(ack.clone());
    }
    drop(ack);
    let sent = {
        let tx = hub.tx.lock().expect("not poisoned");
        match tx.as_ref() {
            Some(tx) => {
                let mut batch = Batch::new(source, events);
                batch.trace = parent;
                tx.send(batch).is_ok()
            }
            None => false,
        }
    };
    if sent {
        Ok(written_rx)
    } else {
        Err(Answer::busy("shutting down"))
    }
}

/// 202 once queued, or (`--ack written`) 200 once written, with what was accepted and
/// rejected.
async fn answer(
    ack: AckMode,
    n: usize,
    errors: &[Malformed],
    ndjson: bool,
    written: oneshot::Receiver<()>,
) -> Answer {
    match ack {
        AckMode::Queued => Answer {
            status: StatusCode::ACCEPTED,
            body: summary_json(n, errors, ndjson, None),
            retry_after: false,
        },
        AckMode::Written => match written.await {
            Ok(()) => Answer {
                status: StatusCode::OK,
                body: summary_json(n, errors, ndjson, None),
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
pub(super) const DRAIN_LIMIT: u64 = 64 << 20;

/// Why a body could not be read.
pub(super) enum BodyError {
    /// Over --max-body-bytes (the rest was drained, up to a limit).
    TooLarge,
    NoRoom(NoRoom),
    /// Over --body-timeout, or under --min-body-rate.
    Slow(String),
    Read(axum::Error),
}

/// The body, taking in-flight room for its bytes as they arrive, within --body-timeout
/// and --min-body-rate.
pub(super) async fn read_body(
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

pub(super) async fn drain(body: axum::body::Body) {
    drain_stream(body.into_data_stream(), 0).await;
}

pub(super) async fn drain_stream(mut stream: axum::body::BodyDataStream, mut seen: u64) {
    use futures::StreamExt;
    while seen < DRAIN_LIMIT {
        match stream.next().await {
            Some(Ok(chunk)) => seen += chunk.len() as u64,
            _ => break,
        }
    }
}

pub(super) fn too_large(limit: usize, what: &str) -> Answer {
    Answer::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the {what} is larger than {limit} bytes"),
    )
}

pub(super) fn too_large_for_queue(n: u32, size: u64, config: &Config) -> Answer {
    Answer::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "the request holds {n} events ({size} bytes); the queue holds at most {} events \
             and {} bytes: split it",
            config.queue_capacity, config.queue_bytes
        ),
    )
}

pub(super) async fn acquire(
    sem: &Arc<Semaphore>,
    n: u32,
    wait: Duration,
) -> Option<OwnedSemaphorePermit> {
    acquire_until(sem, n, tokio::time::Instant::now() + wait).await
}

pub(super) async fn acquire_until(
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

pub(super) fn media_type(headers: &HeaderMap) -> Option<&str> {
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

/// The operator endpoint: ready unless shutting down or the hub is above 80 % full (in
/// events or bytes), with the queue's figures in every `/ready` body; the depth gauges
/// set at each scrape.
fn operator(hub: &Arc<Hub>) -> Operator {
    let (closing, full, figures, scraped) = (hub.clone(), hub.clone(), hub.clone(), hub.clone());
    Operator::new()
        .check("shutdown", move || {
            if closing.closing.load(Ordering::Relaxed) {
                Err("shutting down".into())
            } else {
                Ok(())
            }
        })
        .check("hub", move || {
            let (depth, bytes) = (full.depth(), full.depth_bytes());
            let cap = u64::from(full.config.queue_capacity);
            if depth * 5 > cap * 4 || bytes * 5 > full.config.queue_bytes * 4 {
                Err(format!(
                    "the queue is above 80 %: {depth} of {cap} events, {bytes} of {} bytes",
                    full.config.queue_bytes
                ))
            } else {
                Ok(())
            }
        })
        .details(move || {
            let mut m = serde_json::Map::new();
            m.insert("queued".into(), figures.depth().into());
            m.insert(
                "capacity".into(),
                u64::from(figures.config.queue_capacity).into(),
            );
            m.insert("queued_bytes".into(), figures.depth_bytes().into());
            m
        })
        .on_scrape(move || {
            metrics::gauge!("ndpipe_http_hub_depth_events").set(scraped.depth() as f64);
            metrics::gauge!("ndpipe_http_hub_depth_bytes").set(scraped.depth_bytes() as f64);
        })
}

pub(super) async fn not_allowed(method: Method) -> Response {
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

pub(super) fn router(hub: Arc<Hub>) -> Router {
    let operator = operator(&hub).routes();
    Router::new()
        .route(
            "/events",
            axum::routing::post(post_events).fallback(not_allowed),
        )
        .route("/", any(|| async { StatusCode::NOT_FOUND }))
        // Bodies are limited by the handler (it answers 413 itself).
        .layer(DefaultBodyLimit::disable())
        .with_state(hub)
        .merge(operator)
}
