//! ingest-http's Prometheus series, kept in the metrics facade.

use super::*;

/// ingest-http's series (`ndpipe_http_…`), kept in the metrics facade with the
/// component counters every stage reports.
pub(super) struct Metrics {
    pub(super) stage: StageCounters,
}

impl Metrics {
    pub(super) fn new(capacity: u32) -> Metrics {
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

    pub(super) fn request(&self, status: StatusCode, seconds: f64) {
        metrics::counter!("ndpipe_http_requests_total", "status" => status.as_str().to_owned())
            .increment(1);
        metrics::histogram!("ndpipe_http_request_duration_seconds").record(seconds);
    }

    pub(super) fn accepted(&self, n: u64) {
        metrics::counter!("ndpipe_http_events_accepted_total").increment(n);
        self.stage.received.increment(n);
    }

    pub(super) fn rejected(&self, n: u64) {
        metrics::counter!("ndpipe_http_events_rejected_total").increment(n);
        self.stage.rejected.increment(n);
    }

    pub(super) fn refused(&self, n: u64) {
        metrics::counter!("ndpipe_http_events_refused_total").increment(n);
    }

    pub(super) fn lost(&self, n: u64) {
        metrics::counter!("ndpipe_http_events_lost_total").increment(n);
    }
}
