//! The operator endpoint, one for every command that serves one (ingest-http beside its
//! `POST /events`; any command's or `pipeline`'s `--metrics-listen` on its own, with the
//! checks of [`watch`]):
//!
//! - `GET /health`: 200 `{"status":"alive"}` while the process runs.
//! - `GET /ready`: the named readiness checks the command registered, asked at each
//!   request. 200 `{"status":"ready"}` when every one passes; else 503 with Retry-After
//!   and `{"status":"not ready","failing":[names],"reason":"why; why"}`, so that a load
//!   balancer stops sending and an operator reads which check fails. A command may add
//!   figures to both bodies (ingest-http: its queue's depth and capacity).
//! - `GET /metrics`: Prometheus text ([`crate::metrics::render`]), after the command's
//!   scrape hooks have set what is only read on demand (gauges of live state, a sink's
//!   outcome counters).
//! - `GET /tap?after=STAGE&limit=N&sample=P`: the events leaving a stage, as NDJSON
//!   ([`crate::tap`]), when the command offers tap points. No `after`, or an unknown
//!   one: 404 listing the points.

use std::sync::Arc;

pub mod watch;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{Map, Value};

use crate::tap::Taps;

/// A readiness check: `Ok` when ready, else why not.
type Probe = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A readiness check a stage offers (enrich's open circuit breakers), with its name: the
/// command serving the endpoint adds it to its own.
pub type Check = (String, Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

/// What a command serves to operators. Built once, then turned into routes.
#[derive(Default)]
pub struct Operator {
    checks: Vec<(String, Probe)>,
    details: Option<Box<dyn Fn() -> Map<String, Value> + Send + Sync>>,
    on_scrape: Vec<Box<dyn Fn() + Send + Sync>>,
    taps: Option<Taps>,
}

impl Operator {
    pub fn new() -> Operator {
        Operator::default()
    }

    /// Adds the readiness check `name` (`hub`, `channel validate`, `database …`).
    pub fn check(
        mut self,
        name: impl Into<String>,
        probe: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Operator {
        self.checks.push((name.into(), Box::new(probe)));
        self
    }

    /// Adds the checks the stages offer.
    pub fn checks(mut self, checks: Vec<Check>) -> Operator {
        for (name, probe) in checks {
            self = self.check(name, move || probe());
        }
        self
    }

    /// Fields added to every `/ready` body.
    pub fn details(
        mut self,
        details: impl Fn() -> Map<String, Value> + Send + Sync + 'static,
    ) -> Operator {
        self.details = Some(Box::new(details));
        self
    }

    /// Runs `hook` before each `/metrics` answer is rendered.
    pub fn on_scrape(mut self, hook: impl Fn() + Send + Sync + 'static) -> Operator {
        self.on_scrape.push(Box::new(hook));
        self
    }

    /// Serves `/tap` over `taps`.
    pub fn taps(mut self, taps: Taps) -> Operator {
        self.taps = Some(taps);
        self
    }

    /// Every check's verdict: the names failing, with why.
    pub fn failing(&self) -> Vec<(&str, String)> {
        self.checks
            .iter()
            .filter_map(|(name, probe)| probe().err().map(|why| (name.as_str(), why)))
            .collect()
    }

    /// `/health`, `/ready` and `/metrics`, to serve alone or merge into a command's
    /// routes.
    pub fn routes(mut self) -> Router {
        crate::metrics::handle();
        let taps = self.taps.take();
        let this = Arc::new(self);
        let (ready, scrape) = (this.clone(), this);
        let router = match taps {
            Some(taps) => Router::new().route(
                "/tap",
                get(
                    move |ConnectInfo(peer): ConnectInfo<SocketAddr>, Query(q): Query<TapQuery>| {
                        let taps = taps.clone();
                        async move { tap(&taps, q, peer) }
                    },
                ),
            ),
            None => Router::new(),
        };
        router
            .route(
                "/health",
                get(|| async { json(StatusCode::OK, "{\"status\":\"alive\"}".into()) }),
            )
            .route(
                "/ready",
                get(move || {
                    let this = ready.clone();
                    async move { this.ready() }
                }),
            )
            .route(
                "/metrics",
                get(move || {
                    let this = scrape.clone();
                    async move { this.metrics() }
                }),
            )
    }

    fn ready(&self) -> Response {
        let failing = self.failing();
        let mut body = Map::new();
        let status = if failing.is_empty() {
            body.insert("status".into(), "ready".into());
            StatusCode::OK
        } else {
            body.insert("status".into(), "not ready".into());
            let names: Vec<Value> = failing.iter().map(|(n, _)| (*n).into()).collect();
            body.insert("failing".into(), names.into());
            let why: Vec<&str> = failing.iter().map(|(_, w)| w.as_str()).collect();
            body.insert("reason".into(), why.join("; ").into());
            StatusCode::SERVICE_UNAVAILABLE
        };
        if let Some(details) = &self.details {
            body.extend(details());
        }
        let mut r = json(status, Value::Object(body).to_string());
        if status != StatusCode::OK {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }

    fn metrics(&self) -> Response {
        for hook in &self.on_scrape {
            hook();
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
}

/// The query of `/tap`.
#[derive(serde::Deserialize)]
struct TapQuery {
    after: Option<String>,
    limit: Option<u64>,
    sample: Option<f64>,
}

/// Streams the events leaving `q.after` to the client.
fn tap(taps: &Taps, q: TapQuery, peer: SocketAddr) -> Response {
    let sample = q.sample.unwrap_or(1.0);
    if !(sample > 0.0 && sample <= 1.0) {
        let why = format!("sample={sample}: a share of the events, over 0 and at most 1");
        return json(StatusCode::BAD_REQUEST, error_body(&why, taps));
    }
    let Some(point) = q.after.as_deref().and_then(|a| taps.get(a)) else {
        let why = match &q.after {
            Some(after) => format!("no tap point after={after}"),
            None => "name the point to tap: after=STAGE".to_owned(),
        };
        return json(StatusCode::NOT_FOUND, error_body(&why, taps));
    };
    if q.limit == Some(0) {
        return ([(header::CONTENT_TYPE, NDJSON)], "").into_response();
    }
    let who = format!(
        "the client at {peer} (after={})",
        q.after.unwrap_or_default()
    );
    tracing::info!("tap: {who} connected");
    let stream = point.listen(sample, q.limit, who);
    (
        [(header::CONTENT_TYPE, NDJSON)],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

const NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");

fn error_body(why: &str, taps: &Taps) -> String {
    serde_json::json!({"error": why, "points": taps.names()}).to_string()
}

fn json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn ready_names_every_failing_check() {
        let full = Arc::new(AtomicBool::new(false));
        let f = full.clone();
        let op =
            Operator::new()
                .check("shutdown", || Ok(()))
                .check("channel validate", move || {
                    if f.load(Ordering::Relaxed) {
                        Err("the channel into validate has been over 80 % full for 3 s".into())
                    } else {
                        Ok(())
                    }
                });
        assert!(op.failing().is_empty());
        full.store(true, Ordering::Relaxed);
        assert_eq!(
            op.failing(),
            vec![(
                "channel validate",
                "the channel into validate has been over 80 % full for 3 s".to_owned()
            )]
        );
    }
}
