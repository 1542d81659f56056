//! ingest-http's Prometheus series, kept in the metrics facade.

use axum::http::StatusCode;

use crate::tally::Tally;

/// ingest-http's series (`ndpipe_http_…`), kept in the metrics facade, and the stage's
/// tally (what it consumed, passed on and rejected).
pub(super) struct Metrics {
    pub(super) tally: Tally,
    /// Handles made once: a request costs atomic adds, not a registry lookup.
    requests: Vec<(StatusCode, metrics::Counter)>,
    latency: metrics::Histogram,
    accepted: metrics::Counter,
    rejected: metrics::Counter,
    refused: metrics::Counter,
    lost: metrics::Counter,
}

impl Metrics {
    pub(super) fn new(capacity: u32, tally: Tally) -> Metrics {
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
        // Every status the handler answers with.
        let statuses = [200, 202, 400, 401, 405, 408, 413, 415, 500, 503];
        Metrics {
            tally,
            requests: statuses
                .into_iter()
                .map(|code| {
                    let status = StatusCode::from_u16(code).expect("a valid status");
                    let counter = metrics::counter!(
                        "ndpipe_http_requests_total",
                        "status" => status.as_str().to_owned()
                    );
                    (status, counter)
                })
                .collect(),
            latency: metrics::histogram!("ndpipe_http_request_duration_seconds"),
            accepted: metrics::counter!("ndpipe_http_events_accepted_total"),
            rejected: metrics::counter!("ndpipe_http_events_rejected_total"),
            refused: metrics::counter!("ndpipe_http_events_refused_total"),
            lost: metrics::counter!("ndpipe_http_events_lost_total"),
        }
    }

    pub(super) fn request(&self, status: StatusCode, seconds: f64) {
        match self.requests.iter().find(|(s, _)| *s == status) {
            Some((_, c)) => c.increment(1),
            None => metrics::counter!(
                "ndpipe_http_requests_total",
                "status" => status.as_str().to_owned()
            )
            .increment(1),
        }
        self.latency.record(seconds);
    }

    pub(super) fn accepted(&self, n: u64, bytes: u64) {
        self.accepted.increment(n);
        self.tally.consumed(n, bytes);
    }

    pub(super) fn rejected(&self, n: u64) {
        self.rejected.increment(n);
        self.tally.rejected(n);
    }

    pub(super) fn refused(&self, n: u64) {
        self.refused.increment(n);
    }

    pub(super) fn lost(&self, n: u64) {
        self.lost.increment(n);
    }
}
