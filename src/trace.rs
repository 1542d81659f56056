//! Traces: `--otlp-endpoint URL` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) exports one span per
//! batch per stage over OTLP/HTTP (protobuf), which Jaeger, Tempo and the OpenTelemetry
//! Collector take, so that a trace shows where a batch spent its time.
//!
//! A source opens a batch's trace: its span (`ingest-kafka`, `reader`, …) is the root,
//! or the child of the W3C `traceparent` the batch came with (a Kafka message header, an
//! HTTP request's header; the batch's other messages' parents become span links). The
//! batch carries that span's context ([`crate::event::Batch::trace`]); every stage that
//! works on it records a child span from when it took the batch to when it was done, with
//! the events, rejects and bytes. In `pipeline` every stage of a batch is thus in one
//! trace; a shell pipe's commands are separate processes, each with its own traces.
//!
//! Sampling follows `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (the SDK's
//! reading of them; default: parent-based, always on). The decision is taken once, at the
//! source: a batch not sampled carries no trace, and no stage looks at it again. With no
//! endpoint nothing is set up, and each batch costs one check of an empty cell.
//!
//! Spans are sent in the background by the SDK's batch processor (its own thread, a
//! bounded queue that drops rather than slows the run); what is queued at the end is
//! flushed for at most [`FLUSH_TIMEOUT`]. A collector that stops taking them is named once
//! on stderr, and once more when it takes them again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::event::Batch;

/// How long the end of a run waits for the last spans to be sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Span links kept per batch for the other parents of its messages: a batch of a
/// thousand traced messages would otherwise make a span of a thousand links.
pub const MAX_LINKS: usize = 32;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The exporter of this process, flushed by [`Traces::finish`].
pub struct Traces(Option<Export>);

struct Export {
    provider: SdkTracerProvider,
    url: String,
    /// Whether the collector was last seen not taking spans (and said so).
    failing: Arc<AtomicBool>,
}

/// Sets up the export to `endpoint` (the collector's base URL: `/v1/traces` is added,
/// as the OpenTelemetry variable means it) for `command`; nothing without one.
pub fn start(command: &str, endpoint: Option<&str>) -> Result<Traces, String> {
    let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
        return Ok(Traces(None));
    };
    let url = traces_url(endpoint);
    // reqwest has no crypto provider of its own (see enrich's client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("--otlp-endpoint {url}: {e}"))?;
    let resource = Resource::builder()
        .with_service_name("ndpipe")
        .with_attribute(KeyValue::new("ndpipe.command", command.to_owned()))
        .build();
    let failing = Arc::new(AtomicBool::new(false));
    let exporter = Reported {
        inner: exporter,
        url: url.clone(),
        failing: failing.clone(),
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let _ = TRACER.set(provider.tracer("ndpipe"));
    Ok(Traces(Some(Export {
        provider,
        url,
        failing,
    })))
}

/// The exporter, saying once on stderr when the collector stops taking spans (they are
/// dropped meanwhile: the run is never held up for them) and once when it takes them
/// again.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    url: String,
    failing: Arc<AtomicBool>,
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                "traces: the collector at {} does not take spans ({e}); they are dropped until it does",
                self.url
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("traces: the collector at {} takes spans again", self.url);
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// `…/v1/traces` under `endpoint`, unless it names that path already.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

impl Traces {
    /// Sends what is queued, for [`FLUSH_TIMEOUT`] at most; says so when it could not
    /// (unless the collector's failure was said already).
    pub fn finish(self) {
        let Some(export) = self.0 else { return };
        if let Err(e) = export.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            // Marked failing as it is said: an export still in flight that fails after
            // this stays quiet (said once, not twice).
            if !export.failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "traces: the last spans were not taken by the collector at {} ({e})",
                    export.url
                );
            }
        }
    }
}

/// Whether spans are exported at all: sources look at their messages' parents only then.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The span context of a W3C `traceparent` value, if it is one.
pub fn parent(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// A source made `batch`, starting at `started`: its span, the child of `parents[0]` when
/// the batch came with parents (the rest linked), else a root; the batch carries it when
/// it is sampled.
pub fn source(name: &'static str, batch: &mut Batch, started: SystemTime, parents: &[SpanContext]) {
    let Some(tracer) = TRACER.get() else { return };
    let cx = match parents.first() {
        Some(p) => Context::new().with_remote_span_context(p.clone()),
        None => Context::new(),
    };
    let links = parents
        .iter()
        .skip(1)
        .take(MAX_LINKS)
        .map(|p| Link::with_context(p.clone()))
        .collect();
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Producer)
        .with_start_time(started)
        .with_links(links)
        .start_with_context(tracer, &cx);
    if !span.is_recording() {
        return; // not sampled: the batch carries nothing, and nothing is measured
    }
    let bytes = batch.bytes.unwrap_or_else(|| batch.size());
    span.set_attributes([
        KeyValue::new("ndpipe.events", batch.len() as i64),
        KeyValue::new("ndpipe.bytes", bytes as i64),
        KeyValue::new("ndpipe.source", batch.source.to_string()),
    ]);
    let sc = span.span_context().clone();
    span.end();
    batch.trace = sc.is_sampled().then_some(sc);
}

/// A stage took a sampled batch: what its span needs of it.
pub struct Begun {
    parent: SpanContext,
    at: SystemTime,
    events: u64,
    bytes: u64,
}

/// The start of a stage's work on `batch`: nothing unless tracing is on and the batch is
/// sampled.
pub fn begin(batch: &Batch) -> Option<Begun> {
    TRACER.get()?;
    let parent = batch.trace.clone()?;
    Some(Begun {
        parent,
        at: SystemTime::now(),
        events: batch.len() as u64,
        bytes: batch.bytes.unwrap_or_else(|| batch.size()),
    })
}

/// The end of `stage`'s work begun as `begun`: its span, with `rejected` of the events
/// made dead letters; `out` (the batch passed on) carries the trace on.
pub fn end(begun: Option<Begun>, stage: &'static str, out: &mut Batch, rejected: u64) {
    let (Some(begun), Some(tracer)) = (begun, TRACER.get()) else {
        return;
    };
    record(tracer, stage, &begun, rejected, SystemTime::now());
    out.trace = Some(begun.parent);
}

/// The end of `stage`'s work begun as `begun`, for a stage that passes nothing on (the
/// writer).
pub fn done(begun: Option<Begun>, stage: &'static str, rejected: u64) {
    if let (Some(begun), Some(tracer)) = (begun, TRACER.get()) {
        record(tracer, stage, &begun, rejected, SystemTime::now());
    }
}

/// A span of `stage` under `parent`, from `at` to now, for work not shaped as one batch in
/// and one out (persist's transactions): `events` of `bytes` in it, `rejected` refused.
pub fn span(
    stage: &'static str,
    parent: &SpanContext,
    at: SystemTime,
    events: u64,
    rejected: u64,
    bytes: u64,
) {
    let Some(tracer) = TRACER.get() else { return };
    let begun = Begun {
        parent: parent.clone(),
        at,
        events,
        bytes,
    };
    record(tracer, stage, &begun, rejected, SystemTime::now());
}

fn record(tracer: &SdkTracer, stage: &'static str, begun: &Begun, rejected: u64, to: SystemTime) {
    let cx = Context::new().with_remote_span_context(begun.parent.clone());
    let mut attributes = vec![
        KeyValue::new("ndpipe.events", begun.events as i64),
        KeyValue::new("ndpipe.rejected", rejected as i64),
    ];
    if begun.bytes > 0 {
        attributes.push(KeyValue::new("ndpipe.bytes", begun.bytes as i64));
    }
    let mut span = tracer
        .span_builder(stage)
        .with_kind(SpanKind::Consumer)
        .with_start_time(begun.at)
        .with_attributes(attributes)
        .start_with_context(tracer, &cx);
    span.end_with_timestamp(to);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn a_traceparent_is_read_or_refused() {
        let p = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id().to_string(), "00f067aa0ba902b7");
        assert!(p.is_sampled() && p.is_remote());
        assert!(parent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(parent("nonsense").is_none());
    }
}
