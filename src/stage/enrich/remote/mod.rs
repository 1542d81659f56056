//! Lookups in an external service: `enrich --http URL --into FIELD`, or in PostgreSQL,
//! `enrich --sql QUERY --sql-args F1,F2 --into FIELD`.
//!
//! Every event's request is built from its fields ([`template`], or the `--sql-args`
//! values); the answer is set at
//! `--into` by the same splice as `--set`. Calls are async, many at once across the
//! stage ([`concurrency`]: a fixed count or AIMD), and on their way out each passes, in
//! this order: the answers kept and the calls already out for the same request
//! ([`cache`]), the service's circuit breaker ([`breaker`]), the rate limit (a token
//! bucket, `governor`), the concurrency limit; then the call itself ([`http`]) with its
//! timeout, retried with capped, jittered exponential backoff (`backon`) while the
//! failure may pass. What a failed lookup does is `--on-failure`'s choice. The two
//! backends ([`http`], [`sql`]) share everything but the call.
//!
//! Files: `args` (flags), `template`, `http` and `sql` (the call), `pool` (the HTTP
//! connections), `io` (the thread HTTP calls run on), `cache`, `breaker`, `concurrency`, `counts` (what the stage counts and
//! logs); this file builds the lookup from the flags and runs one batch's lookups.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::event::{Event, Reject};
use crate::exit::{Error, Result};
use crate::json::{self, FieldPath};
use crate::shutdown::Shutdown;

pub mod args;
pub mod breaker;
pub mod cache;
pub mod concurrency;
pub mod counts;
pub mod http;
pub mod io;
mod pool;
pub mod sql;
pub mod template;

pub use args::{NotFound, OnFailure, Rate, RemoteArgs};
pub use counts::Counts;

use breaker::Breaker;
use cache::Cache;
use concurrency::{Limiter, Setting};
use http::Http;
use sql::Sql;
use template::{Fill, Template};

/// The first wait before a retry; doubled each time, up to [`RETRY_MAX_WAIT`], each
/// jittered so that events failed together do not come back together.
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(100);
const RETRY_MAX_WAIT: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured: a service asking for more is waited on this long,
/// then asked again (an hour's pause would look like a hang).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// Events whose kept answers are looked up under one lock of the cache: the lock is
/// taken a few hundred times less often than once an event, and held for some
/// microseconds only, so the calls' thread keeping answers never waits long for it.
const KEPT_CHUNK: usize = 64;

/// A service's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Its JSON text, compact.
    Found(Arc<str>),
    NotFound,
}

/// Why a call gave no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// An HTTP status other than 2xx and 404.
    Status {
        code: u16,
        retry_after: Option<Duration>,
        reason: String,
    },
    Timeout,
    /// No connection.
    Connect(String),
    /// The connection broke during the exchange.
    Transport(String),
    /// An answer that cannot be set (not JSON, too big, too deep).
    BadAnswer(String),
    /// The service's breaker is open: no call was made.
    Open(String),
    /// PostgreSQL refused the query (with its SQLSTATE); `retryable` for a server
    /// shutting down, out of resources, or a serialization failure.
    Query {
        reason: String,
        retryable: bool,
    },
}

impl Failure {
    /// Whether asking again may help.
    fn retryable(&self) -> bool {
        match self {
            Failure::Status { code, .. } => *code >= 500 || *code == 429,
            Failure::Timeout | Failure::Connect(_) | Failure::Transport(_) => true,
            Failure::BadAnswer(_) | Failure::Open(_) => false,
            Failure::Query { retryable, .. } => *retryable,
        }
    }

    /// Whether it says the service is unwell (for its breaker).
    fn against_service(&self) -> bool {
        self.retryable()
    }

    /// Whether the service said it is overloaded (for `--concurrency auto`).
    fn overloaded(&self) -> bool {
        matches!(
            self,
            Failure::Status {
                code: 429 | 503,
                ..
            }
        )
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The dead letter's kind, `lookup` being the backend's (`enrich_http`, `enrich_sql`).
    fn kind(&self, lookup: &'static str) -> &'static str {
        match self {
            Failure::Open(_) => "circuit_open",
            _ => lookup,
        }
    }

    fn reason(&self, timeout: Duration) -> String {
        match self {
            Failure::Status { reason, .. } => reason.clone(),
            Failure::Timeout => format!("timed out after {}", humantime::format_duration(timeout)),
            Failure::Connect(e) => format!("no connection: {e}"),
            Failure::Transport(e) => e.clone(),
            Failure::BadAnswer(e) => e.clone(),
            Failure::Open(service) => format!("the circuit breaker of {service} is open"),
            Failure::Query { reason, .. } => reason.clone(),
        }
    }
}

/// What one event's lookup came to, when it goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Looked {
    /// The JSON text to set at `--into`.
    Set(Arc<str>),
    /// `--on-failure pass`: why, for `_meta.enrich_failed`.
    Failed(String),
}

/// One event's request.
struct Request {
    /// What the cache and single-flight know it by.
    key: Arc<str>,
    call: Call,
}

enum Call {
    Http {
        url: Arc<str>,
        body: Option<String>,
    },
    /// The `--sql-args` values, in text form (`None`: NULL).
    Sql {
        params: Vec<Option<String>>,
    },
}

/// A batch's requests against the answers kept: what each event's lookup came to so far
/// (`None` where a call is needed), the requests to call with their events' places, and
/// how many were answered from the cache.
struct Kept {
    looked: Vec<Option<std::result::Result<Looked, Reject>>>,
    waiting: Vec<(usize, Request)>,
    hits: u64,
}

/// Where the calls go.
enum Backend {
    Http {
        /// Boxed, as `Sql`: one is made per stage.
        http: Box<Http>,
        url: Template,
        body: Option<Template>,
    },
    Sql {
        /// Boxed: its connection settings are most of its size, and one is made per stage.
        sql: Box<Sql>,
        args: Vec<FieldPath>,
    },
}

/// The lookup, as built from the flags.
pub struct Remote {
    pub into: FieldPath,
    backend: Backend,
    /// The dead letters' kind: `enrich_http` or `enrich_sql`.
    kind: &'static str,
    on_failure: OnFailure,
    not_found: NotFound,
    timeout: Duration,
    retries: u32,
    setting: Setting,
    breaker: breaker::Settings,
    /// One breaker per service (host and port), made at its first call.
    breakers: Mutex<HashMap<String, Arc<Breaker>, foldhash::fast::RandomState>>,
    pub limiter: Arc<Limiter>,
    cache: Cache,
    cache_size: usize,
    cache_ttl: (Duration, Duration),
    rate: Option<(Rate, DefaultDirectRateLimiter)>,
}

impl Remote {
    /// `None` without `--http` or `--sql`.
    pub fn from_args(args: &RemoteArgs, meta: &str) -> Result<Option<Remote>> {
        let Some(into) = &args.into else {
            return Ok(None);
        };
        if into.first() == meta {
            return Err(Error::usage(format!(
                "--into {into}: the metadata field {meta} is not changed by enrich"
            )));
        }
        let (backend, kind) = match (&args.http, &args.sql) {
            (Some(url), _) => (Self::http(args, url, meta)?, "enrich_http"),
            (None, Some(query)) => (Self::sql(args, query, meta)?, "enrich_sql"),
            (None, None) => return Ok(None),
        };
        let rate = args.rate_limit.map(|rate| {
            let calls = NonZeroU32::new(rate.calls).expect("parsed as 1 or more");
            let quota = if rate.per == Duration::from_secs(60) {
                Quota::per_minute(calls)
            } else {
                Quota::per_second(calls)
            };
            (rate, RateLimiter::direct(quota))
        });
        Ok(Some(Remote {
            into: into.clone(),
            backend,
            kind,
            on_failure: args.on_failure,
            not_found: args.not_found,
            timeout: args.timeout,
            retries: args.retries,
            setting: args.concurrency,
            breaker: breaker::Settings {
                failures: args.breaker_failures as u32,
                rate: args.breaker_rate,
                window: args.breaker_window,
                cooldown: args.breaker_cooldown,
            },
            breakers: Mutex::new(HashMap::default()),
            limiter: Limiter::new(args.concurrency),
            cache: Cache::new(args.cache_size, args.cache_ttl, args.negative_ttl),
            cache_size: args.cache_size,
            cache_ttl: (args.cache_ttl, args.negative_ttl),
            rate,
        }))
    }

    fn http(args: &RemoteArgs, url: &str, meta: &str) -> Result<Backend> {
        let template = |flag: &str, text: &str| {
            Template::parse(text).map_err(|e| Error::usage(format!("{flag}: {e}")))
        };
        let url = template("--http", url)?;
        if !url.prefix().starts_with("http://") && !url.prefix().starts_with("https://") {
            return Err(Error::usage(format!(
                "--http {url}: the URL must start with http:// or https://"
            )));
        }
        // Field values are percent-encoded: the template's own text decides.
        http::check_url(&url.sample("0"))
            .map_err(|e| Error::usage(format!("--http {url}: {e}")))?;
        for field in url.fields() {
            if field.first() == meta {
                return Err(Error::usage(format!(
                    "--http: {field} is in the metadata field, which lookups do not read"
                )));
            }
        }
        let body = args
            .http_body
            .as_deref()
            .map(|b| template("--http-body", b))
            .transpose()?;
        let http = Http::new(
            &args.http_method,
            &args.headers,
            args.http_select.clone(),
            args.timeout,
            args.http_ca.as_deref(),
        )?;
        Ok(Backend::Http {
            http: Box::new(http),
            url,
            body,
        })
    }

    fn sql(args: &RemoteArgs, query: &str, meta: &str) -> Result<Backend> {
        for field in &args.sql_args {
            if field.first() == meta {
                return Err(Error::usage(format!(
                    "--sql-args: {field} is in the metadata field, which lookups do not read"
                )));
            }
        }
        // Connecting is bounded by the call's timeout too; this is the driver's own.
        let spec = crate::postgres::ConnectSpec::from_env(
            args.database_url.as_deref(),
            args.timeout,
            "ndpipe enrich",
        )?
        .ok_or_else(|| {
            Error::usage(
                "--sql needs a PostgreSQL database: --database-url, DATABASE_URL or the PG* variables",
            )
        })?;
        Ok(Backend::Sql {
            sql: Box::new(Sql::new(spec, query, args.sql_rows)?),
            args: args.sql_args.clone(),
        })
    }

    /// What has to hold before the run: the SQL query is one the server takes, with as
    /// many parameters as `--sql-args` gives.
    pub async fn check(&self) -> Result<()> {
        match &self.backend {
            Backend::Http { .. } => Ok(()),
            Backend::Sql { sql, args } => sql.check(args.len()).await,
        }
    }

    /// Its settings, a line each, as `--explain` prints them (credentials redacted).
    pub fn explain(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let per = match &self.backend {
            Backend::Http { http, url, body } => {
                let body = body
                    .as_ref()
                    .map_or(String::new(), |b| format!(" with body {b}"));
                lines.push(format!(
                    "http {} {}{body} into {}",
                    http.method,
                    crate::redact::text(&url.to_string()),
                    self.into
                ));
                for header in http.shown_headers() {
                    lines.push(format!("header {header}"));
                }
                if http.proxied() {
                    lines.push(
                        "through the proxy the environment names (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY; NO_PROXY)"
                            .to_owned(),
                    );
                }
                "host"
            }
            Backend::Sql { sql, args } => {
                let args: Vec<String> = args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| format!("${}={a}", i + 1))
                    .collect();
                lines.push(format!(
                    "sql {:?} with {} into {} ({} row{})",
                    sql.query,
                    if args.is_empty() {
                        "no arguments".to_owned()
                    } else {
                        args.join(", ")
                    },
                    self.into,
                    word(sql.rows),
                    if sql.rows == sql::Rows::All { "s" } else { "" }
                ));
                lines.push(format!("database {}", sql.service()));
                "database"
            }
        };
        let concurrency = match self.setting {
            Setting::Auto => format!("concurrency auto (1 to {})", concurrency::AUTO_MAX),
            Setting::Fixed(n) => format!("concurrency {n}"),
        };
        lines.push(format!(
            "{concurrency}, timeout {}, retries {}",
            humantime::format_duration(self.timeout),
            self.retries
        ));
        let b = &self.breaker;
        lines.push(format!(
            "breaker per {per}: {} failures in a row or over {} % of {} calls or more in {}, cooldown {}",
            b.failures,
            b.rate * 100.0,
            breaker::MIN_CALLS,
            humantime::format_duration(b.window),
            humantime::format_duration(b.cooldown)
        ));
        lines.push(if self.cache_size > 0 {
            format!(
                "cache {} answers for {} (not found: {}), calls shared while out",
                self.cache_size,
                humantime::format_duration(self.cache_ttl.0),
                humantime::format_duration(self.cache_ttl.1)
            )
        } else {
            "no cache, calls shared while out".to_owned()
        });
        if let Some((rate, _)) = &self.rate {
            lines.push(format!("rate limit {rate}"));
        }
        lines.push(format!(
            "on failure {}, not found {}",
            word(self.on_failure),
            word(self.not_found)
        ));
        lines
    }

    /// The concurrency it ran at, for the summary: `concurrency auto, settled at 31`.
    pub fn concurrency_words(&self) -> String {
        match self.setting {
            Setting::Auto => format!("concurrency auto, settled at {}", self.limiter.settled()),
            Setting::Fixed(n) => format!("concurrency {n}"),
        }
    }

    /// The breakers open now, with their services: `/ready` names them.
    pub fn open_breakers(&self) -> Vec<String> {
        let breakers = self.breakers.lock().expect("not poisoned");
        let mut open: Vec<String> = breakers
            .values()
            .filter(|b| b.state() != breaker::State::Closed)
            .map(|b| b.service.clone())
            .collect();
        open.sort();
        open
    }

    /// Whether answers are kept (`--cache-size` above 0).
    pub fn caches(&self) -> bool {
        self.cache_size > 0
    }

    /// Looks up every event of a batch, each call as soon as there is room for it; the
    /// results in the events' order. An event that cannot be decoded or lacks a field of
    /// the templates is rejected without a call.
    pub async fn look_up(
        self: &Arc<Self>,
        events: &mut [Event],
        meta: &str,
        counts: &Arc<Counts>,
        shutdown: &Shutdown,
    ) -> Vec<std::result::Result<Looked, Reject>> {
        // Answers kept are set at once; only the other lookups become futures (with a
        // hot cache, most events of a batch never wait). Building the requests of a
        // batch of thousands holds a thread as editing it does (see `run_looking_up`).
        let Kept {
            mut looked,
            waiting,
            hits,
        } = crate::stage::workers::off_runtime(|| self.kept(events, meta));
        counts.hits(hits);
        if !waiting.is_empty() {
            let answered = match &self.backend {
                // HTTP: the batch's lookups go to the calls' thread together (see
                // [`io`]): a call costs no hand-over between threads, a batch two.
                Backend::Http { http, .. } => {
                    let places: Vec<usize> = waiting.iter().map(|(i, _)| *i).collect();
                    let (me, counts, shutdown) = (self.clone(), counts.clone(), shutdown.clone());
                    let all = async move { me.call_all(waiting, &counts, &shutdown).await };
                    // Outside tokio's cooperative budget: a batch's hundreds of lookups
                    // share one task, whose budget (128 operations a poll) ran out after
                    // the first few; every lookup polled after that was told to wait
                    // and woken again at once, so each call's wait for room was polled
                    // some twenty times (callgrind: 7 % of the calls' instructions).
                    // The lookups still give way: the set of them yields to the
                    // connections' tasks after polling as many lookups as it holds.
                    match http.io.run(tokio::task::unconstrained(all)).await {
                        Some(answered) => answered,
                        None => places
                            .into_iter()
                            .map(|i| {
                                let why = "the lookups' thread stopped";
                                (i, Err(Reject::new(self.kind, why.to_owned())))
                            })
                            .collect(),
                    }
                }
                Backend::Sql { .. } => self.call_all(waiting, counts, shutdown).await,
            };
            for (i, result) in answered {
                looked[i] = Some(result);
            }
        }
        counts.concurrency(self.limiter.limit(), self.limiter.settled());
        looked
            .into_iter()
            .map(|l| l.expect("every lookup answered"))
            .collect()
    }

    /// The lookups of the requests not answered from the cache, all at once: each event's
    /// place with what its lookup came to.
    async fn call_all(
        &self,
        waiting: Vec<(usize, Request)>,
        counts: &Counts,
        shutdown: &Shutdown,
    ) -> Vec<(usize, std::result::Result<Looked, Reject>)> {
        let lookups = waiting.into_iter().map(|(i, request)| async move {
            // The call's future (its HTTP exchange, timeout and retries: kilobytes) is
            // boxed: made only for the lookups that call, not moved into every lookup's
            // task, most of which share another's call or find its answer kept.
            let (outcome, source) = self
                .cache
                .get(&request.key, || {
                    Box::pin(self.call(&request, counts, shutdown))
                })
                .await;
            counts.looked_up(source);
            (i, self.judge(outcome, &request))
        });
        // In the order they end: each result names its event (no reordering heap).
        lookups
            .collect::<futures::stream::FuturesUnordered<_>>()
            .collect()
            .await
    }

    /// Every event's request, and the answers kept for them. The keys of a chunk of
    /// events are rendered first, into a buffer the batch reuses, then looked up together
    /// under one lock of the cache: with a warm cache most events need no more (no
    /// allocation, one look at the clock a batch, a lock a chunk), and only the others
    /// become requests.
    fn kept(&self, events: &mut [Event], meta: &str) -> Kept {
        let mut looked = Vec::with_capacity(events.len());
        let mut waiting = Vec::new();
        let mut hits = 0;
        // A chunk's keys, one after the other, and where each ends and its URL ends.
        let mut keys = String::new();
        let mut ends: Vec<std::result::Result<(usize, usize), Reject>> =
            Vec::with_capacity(KEPT_CHUNK);
        let mut answers = Vec::with_capacity(KEPT_CHUNK);
        // A batch is looked at in a millisecond or two; answers kept for seconds or more
        // may outlive their time by that much.
        let now = Instant::now();
        // The batch's member indexes in one block (no allocation an event); the events it
        // refuses are decoded again below, one by one, for their rejects.
        Event::decode_all(events);
        for (chunk_no, chunk) in events.chunks_mut(KEPT_CHUNK).enumerate() {
            keys.clear();
            ends.clear();
            for event in chunk.iter_mut() {
                let start = keys.len();
                let rendered = event
                    .decode()
                    .and_then(|()| self.key_into(event, meta, &mut keys));
                ends.push(rendered.map(|url_end| (keys.len(), url_end)));
                if ends.last().is_some_and(|e| e.is_err()) {
                    keys.truncate(start);
                }
            }
            answers.clear();
            let mut start = 0;
            let rendered = ends
                .iter()
                .filter_map(|e| e.as_ref().ok())
                .map(|&(end, _)| {
                    let key = &keys[start..end];
                    start = end;
                    key
                });
            self.cache.kept_all(rendered, now, &mut answers);
            let mut answers = answers.drain(..);
            let mut start = 0;
            for (j, (event, end)) in chunk.iter_mut().zip(ends.drain(..)).enumerate() {
                let (end, url_end) = match end {
                    Ok(ends) => ends,
                    Err(reject) => {
                        looked.push(Some(Err(reject)));
                        continue;
                    }
                };
                let key = &keys[start..end];
                let url_end = url_end - start;
                start = end;
                let answer = answers.next().expect("an answer for each key");
                let answer = match answer {
                    Some(Answer::Found(text)) => {
                        hits += 1;
                        looked.push(Some(Ok(Looked::Set(text))));
                        continue;
                    }
                    other => other,
                };
                // Not found (its dead letter names the request), or to be called.
                let request = match self.request(event, meta, key, url_end) {
                    Ok(r) => r,
                    Err(reject) => {
                        looked.push(Some(Err(reject)));
                        continue;
                    }
                };
                match answer {
                    Some(answer) => {
                        hits += 1;
                        looked.push(Some(self.judge(Ok(answer), &request)));
                    }
                    None => {
                        looked.push(None);
                        waiting.push((chunk_no * KEPT_CHUNK + j, request));
                    }
                }
            }
        }
        Kept {
            looked,
            waiting,
            hits,
        }
    }

    /// Renders the key of `event`'s request (what the cache and single flight know it by)
    /// at the end of `key`: the URL, then a newline and the body when there is one; the
    /// query's arguments as a JSON array. Returns where the URL ends (for SQL, the key's
    /// end), counted from the start of `key`.
    fn key_into(
        &self,
        event: &mut Event,
        meta: &str,
        key: &mut String,
    ) -> std::result::Result<usize, Reject> {
        match &self.backend {
            Backend::Http { url, body, .. } => {
                url.render(event, meta, Fill::Url, key)?;
                let end = key.len();
                if let Some(t) = body {
                    // The method is the stage's: the URL and body tell requests apart.
                    key.push('\n');
                    t.render(event, meta, Fill::Json, key)?;
                }
                Ok(end)
            }
            Backend::Sql { args, .. } => {
                let params = self.sql_params(args, event, meta)?;
                key.push_str(&serde_json::to_string(&params).expect("strings"));
                Ok(key.len())
            }
        }
    }

    /// The request of `event`, whose key [`Remote::key_into`] rendered (`end`: where its
    /// URL ends): the URL and body are taken from the key, not rendered again.
    fn request(
        &self,
        event: &mut Event,
        meta: &str,
        key: &str,
        end: usize,
    ) -> std::result::Result<Request, Reject> {
        let call = match &self.backend {
            Backend::Http { body, .. } => {
                let url: Arc<str> = key[..end].into();
                if body.is_none() {
                    // The key is the URL: one text for both.
                    return Ok(Request {
                        key: url.clone(),
                        call: Call::Http { url, body: None },
                    });
                }
                let body = Some(key[end + 1..].to_owned());
                Call::Http { url, body }
            }
            Backend::Sql { args, .. } => Call::Sql {
                params: self.sql_params(args, event, meta)?,
            },
        };
        Ok(Request {
            key: key.into(),
            call,
        })
    }

    /// The `--sql-args` values of `event`, in text form (`None`: NULL).
    fn sql_params(
        &self,
        args: &[FieldPath],
        event: &mut Event,
        meta: &str,
    ) -> std::result::Result<Vec<Option<String>>, Reject> {
        let mut params = Vec::with_capacity(args.len());
        for path in args {
            let Some(raw) = event.get(path, meta) else {
                return Err(Reject::new(
                    "missing_field",
                    format!("no field {path} for the lookup"),
                ));
            };
            params.push(sql::param(raw));
        }
        Ok(params)
    }

    /// The breaker of `service`, made at its first call (then true).
    fn breaker_of(&self, service: &str) -> (Arc<Breaker>, bool) {
        let mut breakers = self.breakers.lock().expect("not poisoned");
        match breakers.get(service) {
            Some(b) => (b.clone(), false),
            None => {
                let b = Arc::new(Breaker::new(service.to_owned(), self.breaker));
                breakers.insert(service.to_owned(), b.clone());
                (b, true)
            }
        }
    }

    /// What an outcome does to its event.
    fn judge(
        &self,
        outcome: cache::Outcome,
        request: &Request,
    ) -> std::result::Result<Looked, Reject> {
        let failure = match outcome {
            // Found answers were checked to fit once, when called.
            Ok(Answer::Found(text)) => return Ok(Looked::Set(text)),
            Ok(Answer::NotFound) => match self.not_found {
                NotFound::Null => return Ok(Looked::Set("null".into())),
                NotFound::Dlq => {
                    let what = match self.backend {
                        Backend::Http { .. } => "404 Not Found",
                        Backend::Sql { .. } => "no row",
                    };
                    return Err(Reject::new(
                        self.kind,
                        format!("{}: {what}", self.shown(request)),
                    ));
                }
            },
            Err(failure) => failure,
        };
        self.failed(failure, request)
    }

    fn failed(&self, failure: Failure, request: &Request) -> std::result::Result<Looked, Reject> {
        let why = format!("{}: {}", self.shown(request), failure.reason(self.timeout));
        match self.on_failure {
            OnFailure::Pass => Ok(Looked::Failed(why)),
            OnFailure::Dlq | OnFailure::Block => Err(Reject::new(failure.kind(self.kind), why)),
        }
    }

    /// A request as messages show it.
    fn shown(&self, request: &Request) -> String {
        match (&self.backend, &request.call) {
            (Backend::Http { http, .. }, Call::Http { url, .. }) => {
                format!("{} {}", http.method, crate::redact::text(url))
            }
            (_, Call::Sql { params }) => {
                let args: Vec<String> = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| match p {
                        Some(v) => format!("${}={v:?}", i + 1),
                        None => format!("${}=NULL", i + 1),
                    })
                    .collect();
                format!("query with {}", args.join(", "))
            }
            (Backend::Sql { .. }, Call::Http { .. }) => {
                unreachable!("an HTTP call of a SQL lookup")
            }
        }
    }

    /// One call to the backend; an answer that cannot be set at `--into` (too deep) is a
    /// bad answer.
    async fn call_once(&self, call: &Call) -> std::result::Result<Answer, Failure> {
        let answer = match (&self.backend, call) {
            (Backend::Http { http, .. }, Call::Http { url, body }) => {
                http.call(url, body.as_deref()).await
            }
            (Backend::Sql { sql, .. }, Call::Sql { params }) => {
                // The driver has no timeout of its own for a query.
                tokio::time::timeout(self.timeout, sql.call(params))
                    .await
                    .unwrap_or(Err(Failure::Timeout))
            }
            _ => unreachable!("a request is built by its backend"),
        }?;
        if let Answer::Found(text) = &answer {
            json::set_fits(self.into.segments(), text).map_err(Failure::BadAnswer)?;
        }
        Ok(answer)
    }

    /// The breaker of the service a call goes to: its host and port, or its database;
    /// true when it was made now.
    fn breaker_for(&self, call: &Call) -> (Arc<Breaker>, bool) {
        match (&self.backend, call) {
            (Backend::Sql { sql, .. }, _) => self.breaker_of(sql.service()),
            (Backend::Http { .. }, Call::Http { url, .. }) => self.breaker_of(authority(url)),
            (Backend::Http { .. }, Call::Sql { .. }) => {
                unreachable!("a SQL call of an HTTP lookup")
            }
        }
    }

    /// One request's call: through the breaker, the rate limit and the concurrency
    /// limit, retried while it may pass (`--on-failure block`: without end, until
    /// shutdown).
    async fn call(
        &self,
        request: &Request,
        counts: &Counts,
        shutdown: &Shutdown,
    ) -> cache::Outcome {
        let (breaker, made) = self.breaker_for(&request.call);
        if made {
            counts.breaker_made(&breaker);
        }
        let breaker = &breaker;
        let block = self.on_failure == OnFailure::Block;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(RETRY_FIRST_WAIT)
            .with_max_delay(RETRY_MAX_WAIT)
            .with_jitter();
        let mut waits = if block {
            backoff.without_max_times().build()
        } else {
            backoff.with_max_times(self.retries as usize).build()
        };
        loop {
            // Room first, then the breaker's word: a call that waited for room is judged
            // by what the calls before it found.
            let permit = self.limiter.acquire().await;
            let admitted = match breaker.admit() {
                Ok((admitted, change)) => {
                    counts.breaker(breaker, change);
                    admitted
                }
                Err(until_probe) if block && !shutdown.is_triggered() => {
                    // Wait for the probe's turn, or for another's probe to close it,
                    // holding no room another call could use.
                    drop(permit);
                    let wait = until_probe.max(Duration::from_millis(10));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = breaker.changed.notified() => {}
                        () = shutdown.wait() => {}
                    }
                    continue;
                }
                Err(_) => {
                    counts.short_circuited();
                    return Err(Failure::Open(breaker.service.clone()));
                }
            };
            if let Some((_, bucket)) = &self.rate {
                bucket.until_ready().await;
            }
            // Timed where the call runs (HTTP: on the calls' own thread, see [`io`]).
            let sent = Instant::now();
            let result = self.call_once(&request.call).await;
            let took = sent.elapsed();
            let (overloaded, timed) = match &result {
                Ok(_) => (false, true),
                Err(f) => (f.overloaded(), !matches!(f, Failure::Connect(_))),
            };
            let healthy = result
                .as_ref()
                .map_or_else(|f| !f.against_service(), |_| true);
            // The breaker learns of the outcome before the room is given back: a call
            // waiting for room then sees the breaker this failure may have opened.
            let change = breaker.record(admitted, healthy);
            counts.breaker(breaker, change);
            permit.done_in(took, overloaded, timed);
            counts.call(&result, took);
            let failure = match result {
                Ok(answer) => return Ok(answer),
                Err(failure) if !failure.retryable() => return Err(failure),
                Err(failure) => failure,
            };
            // After a shutdown signal no call is made again: the event goes its way.
            if shutdown.is_triggered() {
                return Err(failure);
            }
            let Some(wait) = waits.next() else {
                return Err(failure);
            };
            let wait = failure
                .retry_after()
                .map_or(wait, |asked| asked.min(RETRY_AFTER_MAX).max(wait));
            counts.retry();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.wait() => return Err(failure),
            }
        }
    }
}

fn word<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

/// The host and port of a URL: its service, for the breakers.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    host.rsplit_once('@').map_or(host, |(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_shown_urls() {
        assert_eq!(authority("https://u:p@svc:8443/a?b"), "svc:8443");
        assert_eq!(authority("http://127.0.0.1:9"), "127.0.0.1:9");
    }
}
