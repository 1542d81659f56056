//! One metrics facade for every stage: the `metrics` crate's macros, recorded by its
//! Prometheus exporter and rendered as Prometheus text where a command serves it
//! (ingest-http's `GET /metrics`, `pipeline --metrics-listen`).
//!
//! Nothing is recorded until a command asks for [`handle`]: without a recorder the
//! macros cost a branch, so commands that serve no metrics pay nothing for them.
//!
//! What every stage received, sent on, rejected and had dropped is not recorded here but
//! counted once in its tally ([`crate::tally`]), and rendered after the facade's series
//! under the names Vector users know (`component_received_events_total{component=…}`, …).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of every `…_seconds` histogram: from 100 µs (a request answered from memory)
/// to 5 s (past `--enqueue-timeout`, a client is already being told to retry).
const LATENCY_BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// How often histogram samples are folded into their buckets (and freed).
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(1);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder (once per process) and returns what renders it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails when a recorder is already installed: then that one records.
        let _ = metrics::set_global_recorder(recorder);
        // Histograms keep their samples until drained: drain them on a timer, not only
        // when scraped, so memory stays flat when nobody scrapes.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            });
        handle
    })
}

/// Everything `GET /metrics` answers: the facade's series, then every stage's counts
/// from its tally ([`crate::tally::render`]).
pub fn render() -> String {
    let mut text = handle().render();
    crate::tally::render(&mut text);
    text
}
