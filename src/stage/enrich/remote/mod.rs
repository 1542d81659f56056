//! Lookups in an external service: `enrich --http URL --into FIELD`.
//!
//! Every event's request is built from its fields ([`template`]); the answer is set at
//! `--into` by the same splice as `--set`. Calls are async, many at once across the
//! stage ([`concurrency`]: a fixed count or AIMD), and on their way out each passes, in
//! this order: the answers kept and the calls already out for the same request
//! ([`cache`]), the service's circuit breaker ([`breaker`]), the rate limit (a token
//! bucket, `governor`), the concurrency limit; then the call itself ([`http`]) with its
//! timeout, retried with capped, jittered exponential backoff (`backon`) while the
//! failure may pass. What a failed lookup does is `--on-failure`'s choice.
//!
//! Files: `args` (flags), `template`, `http` (the call), `cache`, `breaker`,
//! `concurrency`, `counts` (what the stage counts and logs); this file builds the lookup
//! from the flags and runs one batch's lookups.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
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
pub mod template;

pub use args::{NotFound, OnFailure, Rate, RemoteArgs};
pub use counts::Counts;

use breaker::Breaker;
use cache::Cache;
use concurrency::{Limiter, Setting};
use http::Http;
use template::{Fill, Template};

/// The first wait before a retry; doubled each time, up to [`RETRY_MAX_WAIT`], each
/// jittered so that events failed together do not come back together.
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(100);
const RETRY_MAX_WAIT: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured: a service asking for more is waited on this long,
/// then asked again (an hour's pause would look like a hang).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

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
}

impl Failure {
    /// Whether asking again may help.
    fn retryable(&self) -> bool {
        match self {
            Failure::Status { code, .. } => *code >= 500 || *code == 429,
            Failure::Timeout | Failure::Connect(_) | Failure::Transport(_) => true,
            Failure::BadAnswer(_) | Failure::Open(_) => false,
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

    /// The dead letter's kind.
    fn kind(&self) -> &'static str {
        match self {
            Failure::Open(_) => "circuit_open",
            _ => "enrich_http",
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
    key: Arc<str>,
    url: String,
    body: Option<String>,
    breaker: Arc<Breaker>,
}

/// The lookup, as built from the flags.
pub struct Remote {
    pub into: FieldPath,
    url: Template,
    body: Option<Template>,
    http: Http,
    on_failure: OnFailure,
    not_found: NotFound,
    timeout: Duration,
    retries: u32,
    setting: Setting,
    breaker: breaker::Settings,
    /// One breaker per service (host and port), made at its first call.
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    pub limiter: Arc<Limiter>,
    cache: Cache,
    cache_size: usize,
    cache_ttl: (Duration, Duration),
    rate: Option<(Rate, DefaultDirectRateLimiter)>,
}

impl Remote {
    /// `None` without `--http`.
    pub fn from_args(args: &RemoteArgs, meta: &str) -> Result<Option<Remote>> {
        let (Some(url), Some(into)) = (&args.http, &args.into) else {
            return Ok(None);
        };
        let template = |flag: &str, text: &str| {
            Template::parse(text).map_err(|e| Error::usage(format!("{flag}: {e}")))
        };
        let url = template("--http", url)?;
        if !url.prefix().starts_with("http://") && !url.prefix().starts_with("https://") {
            return Err(Error::usage(format!(
                "--http {url}: the URL must start with http:// or https://"
            )));
        }
        for field in url.fields() {
            if field.first() == meta {
                return Err(Error::usage(format!(
                    "--http: {field} is in the metadata field, which lookups do not read"
                )));
            }
        }
        if into.first() == meta {
            return Err(Error::usage(format!(
                "--into {into}: the metadata field {meta} is not changed by enrich"
            )));
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
            url,
            body,
            http,
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
            breakers: Mutex::new(HashMap::new()),
            limiter: Limiter::new(args.concurrency),
            cache: Cache::new(args.cache_size, args.cache_ttl, args.negative_ttl),
            cache_size: args.cache_size,
            cache_ttl: (args.cache_ttl, args.negative_ttl),
            rate,
        }))
    }

    /// Its settings, a line each, as `--explain` prints them (credentials redacted).
    pub fn explain(&self) -> Vec<String> {
        let body = self
            .body
            .as_ref()
            .map_or(String::new(), |b| format!(" with body {b}"));
        let mut lines = vec![format!(
            "http {} {}{body} into {}",
            self.http.method,
            crate::redact::text(&self.url.to_string()).into_owned(),
            self.into
        )];
        for header in self.http.shown_headers() {
            lines.push(format!("header {header}"));
        }
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
            "breaker per host: {} failures in a row or over {} % of {} calls or more in {}, cooldown {}",
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

    /// Looks up every event of a batch, each call as soon as there is room for it; the
    /// results in the events' order. An event that cannot be decoded or lacks a field of
    /// the templates is rejected without a call.
    pub async fn look_up(
        &self,
        events: &mut [Event],
        meta: &str,
        counts: &Counts,
        shutdown: &Shutdown,
    ) -> Vec<std::result::Result<Looked, Reject>> {
        let requests: Vec<std::result::Result<Request, Reject>> = events
            .iter_mut()
            .map(|event| {
                event.decode()?;
                self.request(event, meta)
            })
            .collect();
        let lookups = requests.into_iter().map(|request| async move {
            let request = request?;
            let (outcome, source) = self
                .cache
                .get(&request.key, || self.call(&request, counts, shutdown))
                .await;
            counts.looked_up(source);
            self.judge(outcome, &request)
        });
        let looked = futures::future::join_all(lookups).await;
        counts.concurrency(self.limiter.limit(), self.limiter.settled());
        looked
    }

    fn request(&self, event: &mut Event, meta: &str) -> std::result::Result<Request, Reject> {
        let mut url = String::with_capacity(self.url.prefix().len() + 32);
        self.url.render(event, meta, Fill::Url, &mut url)?;
        let body = match &self.body {
            Some(t) => {
                let mut body = String::new();
                t.render(event, meta, Fill::Json, &mut body)?;
                Some(body)
            }
            None => None,
        };
        let key: Arc<str> = match &body {
            Some(b) => format!("{} {url}\n{b}", self.http.method).into(),
            None => format!("{} {url}", self.http.method).into(),
        };
        let service = authority(&url);
        let breaker = {
            let mut breakers = self.breakers.lock().expect("not poisoned");
            match breakers.get(service) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(Breaker::new(service.to_owned(), self.breaker));
                    breakers.insert(service.to_owned(), b.clone());
                    b
                }
            }
        };
        Ok(Request {
            key,
            url,
            body,
            breaker,
        })
    }

    /// What an outcome does to its event.
    fn judge(
        &self,
        outcome: cache::Outcome,
        request: &Request,
    ) -> std::result::Result<Looked, Reject> {
        let failure = match outcome {
            Ok(Answer::Found(text)) => {
                return match json::set_fits(self.into.segments(), &text) {
                    Ok(()) => Ok(Looked::Set(text)),
                    Err(e) => self.failed(Failure::BadAnswer(e), request),
                }
            }
            Ok(Answer::NotFound) => match self.not_found {
                NotFound::Null => return Ok(Looked::Set("null".into())),
                NotFound::Dlq => {
                    return Err(Reject::new(
                        "enrich_http",
                        format!("{}: 404 Not Found", self.shown(request)),
                    ))
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
            OnFailure::Dlq | OnFailure::Block => Err(Reject::new(failure.kind(), why)),
        }
    }

    /// A request as messages show it.
    fn shown(&self, request: &Request) -> String {
        format!("{} {}", self.http.method, crate::redact::text(&request.url))
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
        let breaker = &request.breaker;
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
            let sent = Instant::now();
            let result = self.http.call(&request.url, request.body.as_deref()).await;
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
            permit.done(overloaded, timed);
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
