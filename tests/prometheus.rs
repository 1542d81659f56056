//! A real Prometheus (Debian's, fetched by `scripts/prometheus install`, started here on
//! a free port) scrapes a running `pipeline`: the names, labels and types are what
//! Prometheus takes, its queries return the run's figures, and every query of the
//! Grafana dashboard we ship (`examples/grafana/ndpipe.json`) returns data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::enrich_http::Service;
use crate::ingest_kafka::{topic_with_events, wait_until, Broker};
use crate::pipeline::{free_port, get};
use crate::util::*;

/// The Prometheus binary: `scripts/prometheus install` fetches it once.
fn prometheus_bin() -> PathBuf {
    let o = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prometheus"))
        .arg("install")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "no Prometheus for the tests: scripts/prometheus install failed: {}",
        err(&o)
    );
    PathBuf::from(out(&o).trim())
}

/// Prometheus scraping 127.0.0.1:`target` every second; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Dir, target: u16) -> Prometheus {
        dir.create(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ndpipe\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        );
        let port = free_port();
        let child = Command::new(prometheus_bin())
            .arg(format!(
                "--config.file={}",
                dir.path("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus { child, port }
    }

    /// The result vector of an instant query (`status` must be success).
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let q = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
        let body = get(self.port, &format!("/api/v1/query?query={q}"))
            .map(|(_, b)| b)
            .unwrap_or_default();
        // Not JSON: not up yet ("Service Unavailable" while it starts), no result.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The one value of a query returning one series.
    fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        r.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric names a PromQL expression reads: the words followed by `{`, `[` or ` `
/// that look like our series (functions and label names are not).
fn metric_names(expr: &str) -> Vec<String> {
    let prefixes = ["component_", "buffer_", "ndpipe_", "kafka_"];
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| prefixes.iter().any(|p| w.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn prometheus_scrapes_a_running_pipeline_and_the_dashboard_queries_it() {
    let dir = Dir::new();
    let broker = Broker::start();
    let n = 5_000;
    let (topic, _) = topic_with_events(&dir, &broker, "prom", 3, n, &[]);
    let users = Service::start();
    let port = free_port();
    let text = format!(
        "ingest-kafka --brokers {} --topic {topic} --group prom \
         | validate --require id \
         | enrich --http '{}' --into user --cache-size 1000 \
         | persist --key id --table t --create-table --sqlite out.db",
        broker.addr,
        // By event type: a few keys, so that the cache both misses and hits.
        users.url("/users/{type}"),
    );
    let pipeline = Command::new(bin("pipeline"))
        .args([
            "-q",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            &text,
        ])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if the test fails before it is stopped, so that nothing outlives it.
    let mut pipeline = KillOnDrop(pipeline);
    wait_until("every event stored", Duration::from_secs(60), || {
        get(port, "/metrics").is_some_and(|(_, m)| {
            m.lines().any(|l| {
                l.starts_with("component_sent_events_total{component=\"persist\"}")
                    && l.ends_with(&format!(" {n}"))
            })
        })
    });
    let prometheus = Prometheus::start(&dir, port);
    wait_until("Prometheus scraping", Duration::from_secs(60), || {
        prometheus.value("up{job=\"ndpipe\"}") == Some(1.0)
    });
    // Rates need two samples in their range.
    std::thread::sleep(Duration::from_secs(3));

    // What Prometheus stored is what the run counted.
    let sent =
        |c: &str| prometheus.value(&format!("component_sent_events_total{{component=\"{c}\"}}"));
    for stage in ["ingest-kafka", "validate", "enrich", "persist"] {
        assert_eq!(sent(stage), Some(n as f64), "{stage}");
    }
    let r = prometheus.query("rate(component_sent_events_total[10s])");
    assert!(r.len() >= 4, "{r:?}");
    let buffers = prometheus.query("buffer_events");
    assert!(
        buffers
            .iter()
            .any(|s| s["metric"]["component"] == "persist"),
        "{buffers:?}"
    );
    assert_eq!(
        prometheus.value("sum(ndpipe_persist_rows_total{outcome=\"inserted\"})"),
        Some(n as f64)
    );
    let lag = prometheus.query("kafka_consumer_lag");
    assert!(!lag.is_empty(), "consumer lag per partition");
    // The group's first assignment is a rebalance, counted.
    let rebalances = prometheus.value("ndpipe_kafka_rebalances_total{component=\"ingest-kafka\"}");
    assert!(rebalances.is_some_and(|r| r >= 1.0), "{rebalances:?}");
    // The type Prometheus took from the text: counters are counters.
    let (_, meta) = get(
        prometheus.port,
        "/api/v1/targets/metadata?metric=component_sent_events_total",
    )
    .unwrap();
    assert!(meta.contains("\"type\":\"counter\""), "{meta}");

    // Every query of the dashboard reads series the scrape has, and returns data.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana/ndpipe.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let (_, scrape) = get(port, "/metrics").unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 12);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(
                    scrape.lines().any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                    "{name} of {:?} is not in a scrape",
                    panel["title"]
                );
            }
            let result = prometheus.query(expr);
            assert!(
                !result.is_empty(),
                "{:?}: {expr} returned nothing",
                panel["title"]
            );
        }
    }

    let _ = Command::new("kill")
        .args(["-TERM", &pipeline.0.id().to_string()])
        .status();
    let status = pipeline.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
