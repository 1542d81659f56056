//! What lookups count, through the stage's tally ([`crate::tally`]) so that the summary
//! and `/metrics` read the same numbers, and what they log.
//!
//! Series (labelled `component`):
//! - `ndpipe_enrich_calls_total{outcome}`: calls made, by outcome: `ok`, `not_found`,
//!   `client_error` (4xx), `server_error` (5xx), `throttled` (429), `timeout`,
//!   `connect_error`, `transport_error`, `bad_answer`, `query_error` (PostgreSQL refused
//!   the query).
//! - `ndpipe_enrich_retries_total`; `ndpipe_enrich_short_circuited_total` (lookups failed
//!   at once by an open breaker, no call made).
//! - `ndpipe_enrich_cache_hits_total` (answers kept), `ndpipe_enrich_cache_misses_total`
//!   (lookups that made their own call), `ndpipe_enrich_calls_shared_total` (lookups
//!   that waited for another's call to the same request).
//! - `ndpipe_enrich_breaker_opened_total`; `ndpipe_enrich_concurrency` (the limit now)
//!   and `ndpipe_enrich_concurrency_settled` (what `auto` settled at).
//! - Through the metrics facade, for their labels: `ndpipe_enrich_call_duration_seconds`
//!   (a histogram), `ndpipe_enrich_breaker_state{service}` (0 closed, 1 half-open,
//!   2 open) and `ndpipe_enrich_breaker_transitions_total{service,state}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::tally::{Figure, FigureKind, Tally};

use super::breaker::{Breaker, Change, State};
use super::cache::Source;
use super::{Answer, Failure};

macro_rules! figure {
    ($name:ident, $series:literal, $kind:ident, $label:expr, $summary:expr) => {
        pub static $name: Figure = Figure {
            series: $series,
            label: $label,
            kind: FigureKind::$kind,
            summary: $summary,
        };
    };
}

figure!(
    OK,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "ok")),
    Some("calls answered")
);
figure!(
    NOT_FOUND,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "not_found")),
    Some("not found")
);
figure!(
    CLIENT_ERROR,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "client_error")),
    Some("4xx")
);
figure!(
    SERVER_ERROR,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "server_error")),
    Some("5xx")
);
figure!(
    THROTTLED,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "throttled")),
    Some("429")
);
figure!(
    TIMEOUT,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "timeout")),
    Some("timeouts")
);
figure!(
    CONNECT_ERROR,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "connect_error")),
    Some("connection errors")
);
figure!(
    TRANSPORT_ERROR,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "transport_error")),
    Some("broken exchanges")
);
figure!(
    BAD_ANSWER,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "bad_answer")),
    Some("bad answers")
);
figure!(
    QUERY_ERROR,
    "ndpipe_enrich_calls_total",
    Counter,
    Some(("outcome", "query_error")),
    Some("query errors")
);
figure!(
    RETRIES,
    "ndpipe_enrich_retries_total",
    Counter,
    None,
    Some("retries")
);
figure!(
    SHORT_CIRCUITED,
    "ndpipe_enrich_short_circuited_total",
    Counter,
    None,
    Some("short-circuited")
);
figure!(
    HITS,
    "ndpipe_enrich_cache_hits_total",
    Counter,
    None,
    Some("cache hits")
);
figure!(
    MISSES,
    "ndpipe_enrich_cache_misses_total",
    Counter,
    None,
    None
);
figure!(
    SHARED,
    "ndpipe_enrich_calls_shared_total",
    Counter,
    None,
    Some("shared calls")
);
figure!(
    OPENED,
    "ndpipe_enrich_breaker_opened_total",
    Counter,
    None,
    Some("breaker openings")
);
figure!(CONCURRENCY, "ndpipe_enrich_concurrency", Gauge, None, None);
figure!(
    SETTLED,
    "ndpipe_enrich_concurrency_settled",
    Gauge,
    None,
    None
);

/// A figure of the tally, registered at its first count (so that the summary names only
/// what happened).
struct Lazy {
    figure: &'static Figure,
    value: OnceLock<Arc<AtomicU64>>,
}

impl Lazy {
    const fn new(figure: &'static Figure) -> Lazy {
        Lazy {
            figure,
            value: OnceLock::new(),
        }
    }

    fn get(&self, tally: &Tally) -> &AtomicU64 {
        self.value.get_or_init(|| tally.figure(self.figure))
    }
}

/// One stage's lookup counts.
pub struct Counts {
    tally: Tally,
    component: &'static str,
    figures: [Lazy; 18],
    duration: metrics::Histogram,
}

/// Indexes into `figures`, in the statics' order.
#[derive(Clone, Copy)]
enum Of {
    Ok,
    NotFound,
    ClientError,
    ServerError,
    Throttled,
    Timeout,
    ConnectError,
    TransportError,
    BadAnswer,
    QueryError,
    Retries,
    ShortCircuited,
    Hits,
    Misses,
    Shared,
    Opened,
    Concurrency,
    Settled,
}

impl Counts {
    pub fn new(tally: &Tally) -> Counts {
        let component = if tally.is_pending() {
            "enrich"
        } else {
            tally.component()
        };
        Counts {
            tally: tally.clone(),
            component,
            figures: [
                Lazy::new(&OK),
                Lazy::new(&NOT_FOUND),
                Lazy::new(&CLIENT_ERROR),
                Lazy::new(&SERVER_ERROR),
                Lazy::new(&THROTTLED),
                Lazy::new(&TIMEOUT),
                Lazy::new(&CONNECT_ERROR),
                Lazy::new(&TRANSPORT_ERROR),
                Lazy::new(&BAD_ANSWER),
                Lazy::new(&QUERY_ERROR),
                Lazy::new(&RETRIES),
                Lazy::new(&SHORT_CIRCUITED),
                Lazy::new(&HITS),
                Lazy::new(&MISSES),
                Lazy::new(&SHARED),
                Lazy::new(&OPENED),
                Lazy::new(&CONCURRENCY),
                Lazy::new(&SETTLED),
            ],
            duration: metrics::histogram!(
                "ndpipe_enrich_call_duration_seconds",
                "component" => component
            ),
        }
    }

    fn add(&self, of: Of, n: u64) {
        self.figures[of as usize]
            .get(&self.tally)
            .fetch_add(n, Ordering::Relaxed);
    }

    /// A call was made: its outcome and how long it took.
    pub fn call(&self, result: &Result<Answer, Failure>, took: Duration) {
        self.duration.record(took);
        let of = match result {
            Ok(Answer::Found(_)) => Of::Ok,
            Ok(Answer::NotFound) => Of::NotFound,
            Err(Failure::Status { code: 429, .. }) => Of::Throttled,
            Err(Failure::Status { code, .. }) if *code >= 500 => Of::ServerError,
            Err(Failure::Status { .. }) => Of::ClientError,
            Err(Failure::Timeout) => Of::Timeout,
            Err(Failure::Connect(_)) => Of::ConnectError,
            Err(Failure::Transport(_)) => Of::TransportError,
            Err(Failure::BadAnswer(_)) => Of::BadAnswer,
            Err(Failure::Open(_)) => Of::ShortCircuited,
            Err(Failure::Query { .. }) => Of::QueryError,
        };
        self.add(of, 1);
    }

    pub fn retry(&self) {
        self.add(Of::Retries, 1);
    }

    pub fn short_circuited(&self) {
        self.add(Of::ShortCircuited, 1);
    }

    /// With a cache, its hits and misses are counted from the start (at 0): a dashboard's
    /// hit ratio then reads 0 while nothing was found in the cache yet, not no data (the
    /// lookups of a fast source's first batches may all share the first calls).
    pub fn cache_on(&self) {
        for of in [Of::Hits, Of::Misses] {
            self.figures[of as usize].get(&self.tally);
        }
    }

    /// Lookups answered from the cache without a future of their own.
    pub fn hits(&self, n: u64) {
        if n > 0 {
            self.add(Of::Hits, n);
        }
    }

    /// Where a lookup's answer came from.
    pub fn looked_up(&self, source: Source) {
        self.add(
            match source {
                Source::Hit => Of::Hits,
                Source::Joined => Of::Shared,
                Source::Called => Of::Misses,
            },
            1,
        );
    }

    /// The concurrency limit now, and what it settled at.
    pub fn concurrency(&self, now: usize, settled: usize) {
        self.figures[Of::Concurrency as usize]
            .get(&self.tally)
            .store(now as u64, Ordering::Relaxed);
        self.figures[Of::Settled as usize]
            .get(&self.tally)
            .store(settled as u64, Ordering::Relaxed);
    }

    /// A new breaker: its gauge, closed, so that a dashboard shows every service.
    pub fn breaker_made(&self, breaker: &Breaker) {
        metrics::gauge!("ndpipe_enrich_breaker_state", "component" => self.component, "service" => breaker.service.clone())
            .set(State::Closed.gauge());
    }

    /// A breaker's change of state, if any: logged once, counted, and its gauge set.
    pub fn breaker(&self, breaker: &Breaker, change: Option<Change>) {
        let Some(Change { to }) = change else { return };
        let service = breaker.service.clone();
        match to {
            State::Open => {
                self.add(Of::Opened, 1);
                tracing::warn!(
                    "{}: the circuit breaker of {service} is open: no calls to it until a probe succeeds",
                    self.component
                );
            }
            State::HalfOpen => tracing::info!(
                "{}: the circuit breaker of {service} is half-open: one probe call",
                self.component
            ),
            State::Closed => tracing::info!(
                "{}: the circuit breaker of {service} is closed again",
                self.component
            ),
        }
        metrics::gauge!("ndpipe_enrich_breaker_state", "component" => self.component, "service" => service.clone())
            .set(to.gauge());
        metrics::counter!("ndpipe_enrich_breaker_transitions_total", "component" => self.component, "service" => service, "state" => to.word())
            .increment(1);
    }
}
