//! Traces (#28): a test OTLP/HTTP receiver on 127.0.0.1:0 decodes the protobuf the
//! commands export and checks the spans: one per batch per stage, a batch's spans in one
//! trace in `pipeline`, a request's `traceparent` continued, sampling followed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

use crate::util::*;

/// One span as received.
#[derive(Clone, Debug)]
pub struct Span {
    pub name: String,
    pub trace: String,
    pub id: String,
    pub parent: String,
    pub attrs: BTreeMap<String, i64>,
    pub command: String,
}

/// An OTLP/HTTP receiver: every span POSTed to `/v1/traces`.
pub struct Receiver {
    pub port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = spans.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(receive))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { port, spans }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut got = spans.lock().unwrap();
    for rs in request.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        let text = |k: &str| {
            resource
                .attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        assert_eq!(text("service.name"), "ndpipe");
        let command = text("ndpipe.command");
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attrs = s
                    .attributes
                    .iter()
                    .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
                        Value::IntValue(i) => Some((a.key.clone(), *i)),
                        _ => None,
                    })
                    .collect();
                got.push(Span {
                    name: s.name,
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    attrs,
                    command: command.clone(),
                });
            }
        }
    }
    ""
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn by_name<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// `pipeline 'validate | enrich'` with every batch sampled: the reader's span opens each
/// batch's trace; validate, enrich and the writer each have one span per batch, children
/// of it, in its trace; their events add up to the run's, validate's rejects to its
/// dead letters.
#[test]
fn pipeline_exports_one_span_per_batch_per_stage_in_one_trace() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 50_000, &["--bad", "0.05"]);
    let receiver = Receiver::start();
    let o = Command::new(bin("pipeline"))
        .args([
            "--otlp-endpoint",
            &receiver.url(),
            "--dead-letter",
            "dl.ndjson",
        ])
        .arg("validate --require id,type --type amount=number | enrich --set traced=true")
        .arg("ev.ndjson")
        .current_dir(dir.root())
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let out_lines = out(&o).lines().count() as i64;
    let rejected = dir.read("dl.ndjson").lines().count() as i64;
    let spans = receiver.spans();
    let roots = by_name(&spans, "reader");
    assert!(roots.len() > 1, "several batches: {}", roots.len());
    assert!(roots
        .iter()
        .all(|r| r.parent.is_empty() && r.command == "pipeline"));
    let traces: BTreeMap<&str, &Span> = roots.iter().map(|r| (r.trace.as_str(), *r)).collect();
    assert_eq!(traces.len(), roots.len(), "a trace per batch");
    let events = |ss: &[&Span], k: &str| ss.iter().map(|s| s.attrs[k]).sum::<i64>();
    assert_eq!(events(&roots, "ndpipe.events"), 50_000);
    for stage in ["validate", "enrich", "writer"] {
        let ss = by_name(&spans, stage);
        assert_eq!(ss.len(), roots.len(), "{stage}: one span per batch");
        let batches: BTreeSet<&str> = ss.iter().map(|s| s.trace.as_str()).collect();
        assert_eq!(batches.len(), roots.len(), "{stage}: one per trace");
        for s in &ss {
            let root = traces[s.trace.as_str()];
            assert_eq!(
                s.parent, root.id,
                "{stage} is a child of its batch's source span"
            );
        }
    }
    let validate = by_name(&spans, "validate");
    assert_eq!(events(&validate, "ndpipe.events"), 50_000);
    assert_eq!(events(&validate, "ndpipe.rejected"), rejected);
    assert!(validate.iter().all(|s| s.attrs["ndpipe.bytes"] > 0));
    assert_eq!(
        events(&by_name(&spans, "writer"), "ndpipe.events"),
        out_lines
    );
}

/// `ingest-http | persist` as a pipeline: a request sent with a W3C traceparent has its
/// batch's spans in that trace, the source span a child of the caller's span; persist's
/// transaction is there too. With OTEL_TRACES_SAMPLER=always_off nothing is exported.
#[test]
fn ingest_http_continues_a_requests_traceparent_and_sampling_is_followed() {
    let dir = Dir::new();
    for (sampler, expect) in [("parentbased_always_on", true), ("always_off", false)] {
        let receiver = Receiver::start();
        let port = crate::pipeline::free_port();
        let mut child = Command::new(bin("pipeline"))
            .args(["--otlp-endpoint", &receiver.url()])
            .arg(format!(
                "ingest-http --listen 127.0.0.1:{port} | persist --sqlite {sampler}.db --create-table"
            ))
            .current_dir(dir.root())
            .env("OTEL_TRACES_SAMPLER", sampler)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        crate::pipeline::eventually("ingest-http listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller = "00f067aa0ba902b7";
        let body: String = (0..10).map(|i| format!("{{\"id\":\"t{i}\"}}\n")).collect();
        let r = crate::ingest_http::agent()
            .post(&format!("http://127.0.0.1:{port}/events"))
            .header("content-type", "application/x-ndjson")
            .header("traceparent", &format!("00-{trace_id}-{caller}-01"))
            .send(body.as_str())
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "accepted");
        crate::pipeline::eventually("the rows", || {
            rows(&dir.path(&format!("{sampler}.db"))) == 10
        });
        // SIGTERM: the run ends and its spans are flushed.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success());
        let spans = receiver.spans();
        if !expect {
            assert!(spans.is_empty(), "{spans:?}");
            continue;
        }
        let source = by_name(&spans, "ingest-http");
        assert_eq!(source.len(), 1, "{spans:?}");
        assert_eq!(source[0].trace, trace_id);
        assert_eq!(source[0].parent, caller);
        assert_eq!(source[0].attrs["ndpipe.events"], 10);
        let persist = by_name(&spans, "persist");
        assert_eq!(persist.len(), 1, "{spans:?}");
        assert_eq!(persist[0].trace, trace_id);
        assert_eq!(persist[0].parent, source[0].id);
        assert_eq!(persist[0].attrs["ndpipe.events"], 10);
        assert!(persist[0].attrs["ndpipe.bytes"] > 10 * 10);
    }
}

fn rows(db: &std::path::Path) -> i64 {
    let Ok(c) = rusqlite::Connection::open(db) else {
        return 0;
    };
    c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap_or(0)
}

/// A stand-alone command exports its own spans: `validate` in a shell pipe, one span per
/// batch under its reader's.
#[test]
fn a_shell_command_exports_its_own_spans() {
    let dir = Dir::new();
    gen_events(&dir, "ev.ndjson", 20_000, &[]);
    let receiver = Receiver::start();
    let mut child = Command::new(bin("validate"))
        .args(["--require", "id", "--otlp-endpoint", &receiver.url()])
        .current_dir(dir.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dir.read("ev.ndjson").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let spans = receiver.spans();
    let validate = by_name(&spans, "validate");
    assert!(!validate.is_empty());
    assert!(spans.iter().all(|s| s.command == "validate"));
    assert_eq!(
        validate
            .iter()
            .map(|s| s.attrs["ndpipe.events"])
            .sum::<i64>(),
        20_000
    );
}

/// `ingest-kafka` continues the `traceparent` header of a batch's messages: the batch's
/// source span is the child of the first one's, and the others are its links' traces
/// (checked by the span of every later stage being in that first trace).
#[test]
fn ingest_kafka_continues_a_messages_traceparent() {
    use crate::ingest_kafka::{send, Broker};
    use rdkafka::message::{Header, OwnedHeaders};
    let dir = Dir::new();
    let broker = Broker::start();
    let topic = format!("traced-{}", std::process::id());
    broker.create_topic(&topic, 1);
    let p = broker.producer();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    let parent = format!("00-{trace_id}-{caller}-01");
    for i in 0..100 {
        let headers = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(parent.as_str()),
        });
        let payload = format!("{{\"id\":\"k{i}\"}}");
        send(&p, &topic, None, Some(payload.as_bytes()), Some(headers));
    }
    rdkafka::producer::Producer::flush(&p, std::time::Duration::from_secs(30)).unwrap();
    let receiver = Receiver::start();
    let o = Command::new(bin("pipeline"))
        .args(["--otlp-endpoint", &receiver.url()])
        .arg(format!(
            "ingest-kafka --brokers {} --topic {topic} --exit-at-end | validate --require id",
            broker.addr
        ))
        .current_dir(dir.root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 100);
    let spans = receiver.spans();
    let source = by_name(&spans, "ingest-kafka");
    assert!(!source.is_empty(), "{spans:?}");
    for s in &source {
        assert_eq!(s.trace, trace_id);
        assert_eq!(s.parent, caller);
    }
    assert_eq!(
        source.iter().map(|s| s.attrs["ndpipe.events"]).sum::<i64>(),
        100
    );
    let validate = by_name(&spans, "validate");
    assert_eq!(validate.len(), source.len());
    assert!(validate.iter().all(|s| s.trace == trace_id));
}
