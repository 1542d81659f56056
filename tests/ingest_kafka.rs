//! `ingest-kafka` against Apache Kafka (a single-node KRaft broker run by
//! `scripts/kafka-test-broker`), with an rdkafka producer.

use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::util::*;

/// The broker a test talks to: the shared test broker (`kafka-test-broker shared`, one
/// JVM for the whole run, started by the first test that needs it), or the one that
/// `NDPIPE_TEST_KAFKA` names. Topic and group names are unique per test run.
pub(crate) struct Broker {
    pub(crate) addr: String,
    /// The data folder and the script's state folder of a broker of this test's own,
    /// which survives kill -9 (`start_durable`); it is stopped when the test ends.
    durable: Option<(PathBuf, PathBuf)>,
}

impl Broker {
    pub(crate) fn start() -> Broker {
        if let Ok(addr) = std::env::var("NDPIPE_TEST_KAFKA") {
            return Broker {
                addr,
                durable: None,
            };
        }
        let o = broker_script(None).arg("shared").output().unwrap();
        Broker {
            addr: started(&o),
            durable: None,
        }
    }

    /// A broker of this test's own whose log lives in `dir`, so that it can be killed
    /// with SIGKILL and started again on the same data (always ours, even with
    /// NDPIPE_TEST_KAFKA).
    fn start_durable(dir: &Dir) -> Broker {
        let data = dir.path("kafka");
        let state = dir.path("broker-state");
        let o = broker_script(Some(&state))
            .args(["start", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        Broker {
            addr: started(&o),
            durable: Some((data, state)),
        }
    }

    /// SIGKILL, as a crash would.
    fn kill_9(&self) {
        let (_, state) = self.durable.as_ref().expect("a durable broker");
        let port = self.addr.rsplit(':').next().unwrap();
        let pid = std::fs::read_to_string(state.join(format!("{port}.pid"))).unwrap();
        let status = Std::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 of the broker");
    }

    /// Starts it again on the same address and data.
    fn restart(&self) {
        let (data, state) = self.durable.as_ref().expect("a durable broker");
        let o = broker_script(Some(state))
            .args(["start", "--data"])
            .arg(data)
            .output()
            .unwrap();
        assert_eq!(started(&o), self.addr);
    }

    pub(crate) fn create_topic(&self, name: &str, partitions: i32) {
        create_topic(&self.addr, name, partitions);
    }

    /// A producer with librdkafka's usual batching.
    pub(crate) fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some((_, state)) = &self.durable {
            let _ = broker_script(Some(state))
                .args(["stop", &self.addr])
                .output();
        }
    }
}

/// `scripts/kafka-test-broker`, keeping its pid files in `state` when given.
fn broker_script(state: Option<&Path>) -> Std {
    let mut c = Std::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-test-broker"));
    if let Some(state) = state {
        c.env("NDPIPE_KAFKA_STATE_DIR", state);
    }
    c
}

/// The broker address `kafka-test-broker start` printed.
fn started(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "no Kafka broker for the tests: scripts/kafka-test-broker start failed: {}",
        err(o)
    );
    out(o).trim().to_owned()
}

pub(crate) fn send(
    p: &BaseProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: Option<OwnedHeaders>,
) {
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(v) = payload {
        rec = rec.payload(v);
    }
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    let mut rec = rec;
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((_, r)) => {
                p.poll(Duration::from_millis(10));
                rec = r;
            }
        }
    }
}

/// A new topic of `partitions` holding `n` generated events (`gen_args` for
/// gen_events.py), keyed by id; returns its name and the events' text.
pub(crate) fn topic_with_events(
    dir: &Dir,
    broker: &Broker,
    name: &str,
    partitions: i32,
    n: u64,
    gen_args: &[&str],
) -> (String, String) {
    let topic = format!("{name}-{}", std::process::id());
    broker.create_topic(&topic, partitions);
    let input = gen_events(dir, "events.ndjson", n, gen_args);
    let text = std::fs::read_to_string(&input).unwrap();
    let p = broker.producer();
    produce_lines(&p, &topic, &text);
    p.flush(Duration::from_secs(120)).unwrap();
    (topic, text)
}

/// Sends every NDJSON line of `text` keyed by its `id`.
pub(crate) fn produce_lines(p: &BaseProducer, topic: &str, text: &str) {
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["id"].as_str().unwrap().as_bytes();
        send(p, topic, Some(key), Some(line.as_bytes()), None);
    }
}

/// `ingest-kafka -q --brokers B --topic T` in `dir`, given a minute at most.
fn ingest_kafka(dir: &Dir, broker: &Broker, topic: &str) -> Command {
    let mut c = dir.cmd("ingest-kafka");
    c.args(["-q", "--brokers", &broker.addr, "--topic", topic])
        .timeout(Duration::from_secs(60));
    c
}

/// Default offset handling: offsets of written lines are committed when the consumer
/// stops, and `--offset stored` resumes right after them.
#[test]
fn a_second_run_resumes_after_the_committed_offsets() {
    let dir = Dir::new();
    let broker = Broker::start();
    let (topic, text) = topic_with_events(&dir, &broker, "resume", 3, 3_000, &[]);
    let group = format!("group.id=resume-{}", std::process::id());
    let run = |more: &[&str]| {
        let o = ingest_kafka(&dir, &broker, &topic)
            .args(["-X", &group, "--offset", "stored"])
            .args(more)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        values(&out(&o))
    };
    let first = run(&["--max-messages", "1000"]);
    let second = run(&["--exit-at-end"]);
    assert_eq!((first.len(), second.len()), (1_000, 2_000));
    let ids = |events: &[serde_json::Value]| -> std::collections::BTreeSet<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (ids(&first), ids(&second));
    assert!(a.is_disjoint(&b), "a line came out of both runs");
    let all: std::collections::BTreeSet<String> = values(&text)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        a.union(&b)
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        all
    );
    // Nothing left: a third run has nothing to print.
    assert!(run(&["--exit-at-end"]).is_empty());

    // A dead letter counts as read once a later line is written: a run that ends on one
    // leaves its offset unstored, so the next run reads it again.
    let p = broker.producer();
    send(&p, &topic, Some(b"k"), Some(b"not json"), None);
    p.flush(Duration::from_secs(30)).unwrap();
    for _ in 0..2 {
        let _ = std::fs::remove_file(dir.path("dead.ndjson"));
        assert!(run(&["--exit-at-end", "--dead-letter", "dead.ndjson"]).is_empty());
        assert_eq!(values(&dir.read("dead.ndjson")).len(), 1);
    }
}

#[test]
fn round_trip_of_50k_events_with_exit_at_end() {
    let dir = Dir::new();
    let broker = Broker::start();
    let (topic, text) = topic_with_events(&dir, &broker, "round-trip", 3, 50_000, &[]);

    let o = ingest_kafka(&dir, &broker, &topic)
        .arg("--exit-at-end")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let events = values(&out(&o));
    assert_eq!(events.len(), 50_000);
    let mut seen = std::collections::HashSet::new();
    let mut last = [-1i64; 3];
    for e in &events {
        let m = &e["_meta"];
        assert_eq!(m["source"], "kafka");
        assert_eq!(m["topic"], topic.as_str());
        let (part, off) = (
            m["partition"].as_i64().unwrap(),
            m["offset"].as_i64().unwrap(),
        );
        // Per partition, offsets come in order without gaps.
        assert_eq!(off, last[part as usize] + 1);
        last[part as usize] = off;
        assert_eq!(m["key"], e["id"]);
        assert!(seen.insert(e["id"].as_str().unwrap().to_owned()));
    }
    // Payloads are the produced lines, byte for byte, before the metadata field.
    let produced: std::collections::HashSet<&str> = text.lines().collect();
    let line = out(&o).lines().next().unwrap().to_owned();
    let payload = &line[..line.find(",\"_meta\":").unwrap()];
    assert!(produced.contains(format!("{payload}}}").as_str()), "{line}");
}

/// `ingest-kafka | head -3` ends quietly (exit 0, nothing on stderr), and the offsets of
/// lines it could not write are not committed: the next run starts right after the lines
/// that got out.
#[test]
fn head_ends_a_consumer_quietly_and_keeps_the_unwritten_lines() {
    let dir = Dir::new();
    let broker = Broker::start();
    let (topic, _) = topic_with_events(&dir, &broker, "head", 1, 20_000, &[]);
    let group = format!("group.id=head-{}", std::process::id());
    let o = sh(
        &dir,
        &format!(
            "set -o pipefail; {} --brokers {} --topic {topic} -X {group} --offset stored | head -3",
            bin("ingest-kafka"),
            broker.addr
        ),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).lines().count(), 3);
    assert!(
        !err(&o).contains("error"),
        "a closed stdout is a quiet end: {}",
        err(&o)
    );
    let first: Vec<u64> = values(&out(&o))
        .iter()
        .map(|v| v["_meta"]["offset"].as_u64().unwrap())
        .collect();
    let o = ingest_kafka(&dir, &broker, &topic)
        .args(["-X", &group, "--offset", "stored", "--max-messages", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let next = values(&out(&o))[0]["_meta"]["offset"].as_u64().unwrap();
    // Lines that reached head are committed; those lost with the pipe are read again.
    assert!(next > first[2] && next < 20_000, "{first:?} then {next}");
}

#[test]
fn keys_headers_tombstones_bad_payloads_and_kcat_format() {
    let dir = Dir::new();
    let broker = Broker::start();
    let topic = format!("kinds-{}", std::process::id());
    broker.create_topic(&topic, 1);
    let p = broker.producer();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace",
            value: Some("abc"),
        })
        .insert(Header {
            key: "bin",
            value: Some(&[0xff, 0x00][..]),
        });
    send(
        &p,
        &topic,
        Some(b"k1"),
        Some(br#"{"id":"a"}"#),
        Some(headers),
    );
    send(&p, &topic, Some(&[0xfe, 0x01]), Some(b"not json"), None);
    send(&p, &topic, Some(b"gone"), None, None);
    send(&p, &topic, None, Some(b"[1,2]"), None);
    p.flush(Duration::from_secs(30)).unwrap();

    let run = |more: &[&str]| {
        ingest_kafka(&dir, &broker, &topic)
            .arg("--exit-at-end")
            .args(more)
            .output()
            .unwrap()
    };
    let o = run(&["--dead-letter", "dead.ndjson"]);
    assert!(o.status.success(), "{}", err(&o));
    let events = values(&out(&o));
    assert_eq!(events.len(), 2, "{}", out(&o));
    let m = &events[0]["_meta"];
    assert_eq!(m["key"], "k1");
    assert_eq!(
        m["headers"][0],
        serde_json::json!({"key":"trace","value":"abc"})
    );
    assert_eq!(
        m["headers"][1],
        serde_json::json!({"key":"bin","value":"/wA=","encoding":"base64"})
    );
    assert_eq!(events[1]["_meta"]["tombstone"], true);
    assert_eq!(events[1]["_meta"]["key"], "gone");
    let dead = values(&dir.read("dead.ndjson"));
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["raw"], "not json");
    assert!(dead[0]["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("{topic}/0@1")));
    assert_eq!(dead[1]["kind"], "not_object");

    // --wrap-non-json keeps them, marked; --format kcat prints kcat's envelope.
    let o = run(&["--wrap-non-json"]);
    let events = values(&out(&o));
    assert_eq!(events[1]["value_text"], "not json");
    assert_eq!(events[1]["_meta"]["key_encoding"], "base64");
    assert_eq!(events[3]["value"], serde_json::json!([1, 2]));
    let o = run(&["--format", "kcat"]);
    let events = values(&out(&o));
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["payload"], "{\"id\":\"a\"}");
    assert_eq!(
        events[0]["headers"],
        serde_json::json!(["trace", "abc", "bin", "\u{fffd}\u{0}"])
    );
    assert_eq!(events[2]["payload"], serde_json::Value::Null);
    assert_eq!(events[0]["offset"], 0);

    // No broker at start: exit 69 after --connect-timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = std::time::Instant::now();
    let o = dir
        .cmd("ingest-kafka")
        .args(["--brokers", &format!("127.0.0.1:{port}"), "--topic", "t"])
        .args(["--connect-timeout", "2s"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert!(err(&o).contains("cannot reach the brokers"), "{}", err(&o));
    // One line says so: none of librdkafka's retries.
    assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
    assert!(start.elapsed() < Duration::from_secs(10));

    // Usage errors: exactly-once needs a name and the metadata field.
    let o = run(&["--offsets-from", "postgres://x@127.0.0.1/test"]);
    assert_eq!(o.status.code(), Some(64), "{}", err(&o));
}

/// Rows of `table` in a test schema, and persist's summary counts of one run.
fn count(pg: &Pg, sql: &str) -> u64 {
    pg.sql(sql).parse().unwrap()
}

#[test]
fn exactly_once_into_postgres_survives_kill_9() {
    let dir = Dir::new();
    let broker = Broker::start();
    let pg = Pg::new("kafka_eo");
    let (topic, _) = topic_with_events(&dir, &broker, "eo", 3, 20_000, &[]);
    let url = pg.url();
    let pipe = |exit_at_end: bool| {
        let mut ingest = Std::new(bin("ingest-kafka"));
        ingest
            .args(["--brokers", &broker.addr, "--topic", &topic, "-q"])
            .args(["--offsets-name", "eo", "--offsets-from", &url]);
        if exit_at_end {
            ingest.arg("--exit-at-end");
        }
        let mut ingest = ingest
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let persist = Std::new(bin("persist"))
            .args([
                "--database-url",
                &url,
                "--create-table",
                "--batch-size",
                "300",
            ])
            .args(["--linger-ms", "20"])
            .stdin(ingest.stdout.take().unwrap())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (ingest, persist)
    };
    // First run: killed with SIGKILL once some batches are committed.
    let (mut ingest, mut persist) = pipe(false);
    let start = std::time::Instant::now();
    loop {
        let n = pg
            .sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'events' AND table_schema = current_schema()");
        if n == "1" && count(&pg, "SELECT count(*) FROM events") >= 2_000 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing committed in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ingest.kill().unwrap();
    persist.kill().unwrap();
    ingest.wait().unwrap();
    persist.wait().unwrap();
    // A COMMIT that persist sent just before it died still completes on the server, a
    // moment later: count once the count holds still.
    let mut first = count(&pg, "SELECT count(*) FROM events");
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let again = count(&pg, "SELECT count(*) FROM events");
        if again == first {
            break;
        }
        first = again;
    }
    assert!(
        first < 20_000,
        "the first run finished before it was killed"
    );

    // Second run: from the committed offsets to the end. Nothing is written twice: no
    // row is even looked at again ("0 unchanged"), and every event is there.
    let (ingest, persist) = pipe(true);
    let o = persist.wait_with_output().unwrap();
    let mut ingest = ingest;
    assert!(ingest.wait().unwrap().success());
    let stderr = err(&o);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        crate::persist::summary_count(&stderr, "inserted"),
        20_000 - first,
        "{stderr}"
    );
    assert_eq!(crate::persist::summary_count(&stderr, "updated"), 0);
    assert_eq!(crate::persist::summary_count(&stderr, "unchanged"), 0);
    assert_eq!(count(&pg, "SELECT count(*) FROM events"), 20_000);
    assert_eq!(
        count(
            &pg,
            "SELECT sum(next_offset) FROM ndpipe_offsets WHERE \"group\" = 'eo'"
        ),
        20_000
    );
    // Each row is its message: the metadata's offsets are the partition's 0..n.
    assert_eq!(
        pg.sql(
            "SELECT count(*) FROM (SELECT meta->>'partition' p, count(*) n, \
             max((meta->>'offset')::bigint) m FROM events GROUP BY 1) x WHERE m + 1 <> n"
        ),
        "0"
    );
}

/// The exactly-once pipe as a bash script run in the test's directory:
/// `ingest-kafka --offsets-from | tee -a emitted | validate | persist --version-field`,
/// with the pids of ingest-kafka and persist in `{name}ingest.pid` and `{name}persist.pid`
/// and their logs in `{name}ingest.log` and `{name}persist.log`.
/// `consumer` is `--offsets-name eo` or `--group G`. The script exits non-zero when either
/// end of the pipe does.
fn eo_pipe(
    broker: &Broker,
    topic: &str,
    pg: &Pg,
    consumer: &str,
    name: &str,
    exit_at_end: bool,
) -> String {
    format!(
        "rm -f {name}fifo; mkfifo {name}fifo
         {ingest} --brokers {b} --topic {topic} {consumer} --offsets-from '{url}' {end} \
           > {name}fifo 2>> {name}ingest.log &
         echo $! > {name}ingest.pid; ingest=$!
         tee -a {name}emitted.ndjson < {name}fifo | {validate} -q --require id \
           | {persist} --database-url '{url}' --create-table --version-field meta.seq \
               --batch-size 2000 --linger-ms 20 2>> {name}persist.log &
         echo $! > {name}persist.pid; persist=$!
         wait $ingest; a=$?; wait $persist; b=$?
         [ $a = 0 ] && [ $b = 0 ] || {{ tail -n 5 {name}ingest.log {name}persist.log >&2; false; }}",
        ingest = bin("ingest-kafka"),
        validate = bin("validate"),
        persist = bin("persist"),
        b = broker.addr,
        url = pg.url(),
        end = if exit_at_end { "--exit-at-end" } else { "" },
    )
}

/// Rows in the test schema's `events` table (0 before persist has created it).
pub(crate) fn rows(pg: &Pg) -> u64 {
    let exists = pg.sql(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'events' \
         AND table_schema = current_schema()",
    );
    if exists == "1" {
        count(pg, "SELECT count(*) FROM events")
    } else {
        0
    }
}

/// Waits until `done` holds, `limit` at most.
pub(crate) fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The issue's exactly-once conditions after `text` (`n` messages)
/// went through the pipe into `pg`: row count = distinct keys, every row holds its key's
/// last event, the stored `next_offset`s add up to the high watermarks, and, when given,
/// the pipe emitted fewer than 1.25 × n lines (`emitted` lines).
pub(crate) fn assert_exactly_once(
    pg: &Pg,
    offsets_name: &str,
    text: &str,
    n: u64,
    emitted: Option<u64>,
) {
    let expected = last_by_id(text);
    assert_eq!(rows(pg), expected.len() as u64);
    let stored = stored_payloads(pg);
    assert!(
        stored == expected,
        "stored rows differ from the last event per key"
    );
    assert_eq!(
        count(
            pg,
            &format!(
                "SELECT sum(next_offset) FROM ndpipe_offsets WHERE \"group\" = '{offsets_name}'"
            )
        ),
        n
    );
    // A restart from the beginning would pass the checks above; this one catches it
    // (callers whose kills leave much read-ahead in the pipe check resume points instead).
    if let Some(emitted) = emitted {
        assert!(
            emitted < n * 5 / 4,
            "{emitted} lines emitted for {n} messages"
        );
    }
}

/// Where each partition resumes: the committed `next_offset` of the offsets table (0 for a
/// partition with nothing committed yet).
fn committed_offsets(pg: &Pg, offsets_name: &str) -> std::collections::BTreeMap<u64, u64> {
    if pg.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'ndpipe_offsets' AND table_schema = current_schema()") != "1" {
        return Default::default();
    }
    pg.sql(&format!(
        "SELECT \"partition\", greatest(next_offset, 0) FROM ndpipe_offsets WHERE \"group\" = '{offsets_name}'"
    ))
    .lines()
    .map(|l| {
        let (p, o) = l.split_once('\t').unwrap();
        (p.parse().unwrap(), o.parse().unwrap())
    })
    .collect()
}

/// The first offset each partition's lines start at in an emitted NDJSON file (whose last
/// line may be torn: tee was killed with the pipe).
fn first_offsets(text: &str) -> std::collections::BTreeMap<u64, u64> {
    let mut first = std::collections::BTreeMap::new();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let m = &v["_meta"];
        first
            .entry(m["partition"].as_u64().unwrap())
            .or_insert(m["offset"].as_u64().unwrap());
    }
    first
}

/// The pipe with `victim` ("persist" or "ingest") SIGKILLed twice mid-stream, then
/// restarted until drained. Every restart resumes exactly where the committed rows end.
fn exactly_once_with_kills(victim: &str, name: &str) {
    let dir = Dir::new();
    let broker = Broker::start();
    let pg = Pg::new(name);
    let n = 200_000;
    let (topic, text) = topic_with_events(&dir, &broker, name, 3, n, &["--dups", "0.05"]);
    let script = |run: &str, exit_at_end| {
        eo_pipe(&broker, &topic, &pg, "--offsets-name eo", run, exit_at_end)
    };
    for (i, at_least) in [20_000, 90_000].into_iter().enumerate() {
        let run = format!("run{i}-");
        let resume = committed_offsets(&pg, "eo");
        let mut child = Std::new("bash")
            .args(["-c", &script(&run, false)])
            .current_dir(dir.root())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(
            &format!("{at_least} rows"),
            Duration::from_secs(120),
            || rows(&pg) >= at_least,
        );
        let pid = dir.read(&format!("{run}{victim}.pid"));
        let _ = Std::new("kill").args(["-KILL", pid.trim()]).status();
        // The rest of the pipe ends by itself (closed pipe or end of input); make sure.
        std::thread::sleep(Duration::from_millis(500));
        for other in ["ingest", "persist"] {
            let pid = dir.read(&format!("{run}{other}.pid"));
            let _ = Std::new("kill").args(["-KILL", pid.trim()]).status();
        }
        child.wait().unwrap();
        let lines = dir.read(&format!("{run}emitted.ndjson"));
        for (p, first) in first_offsets(&lines) {
            assert_eq!(
                first,
                resume.get(&p).copied().unwrap_or(0),
                "run {i} partition {p}"
            );
        }
    }
    let resume = committed_offsets(&pg, "eo");
    let o = Std::new("bash")
        .args(["-c", &script("last-", true)])
        .current_dir(dir.root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let lines = dir.read("last-emitted.ndjson");
    for (p, first) in first_offsets(&lines) {
        assert_eq!(
            first,
            resume.get(&p).copied().unwrap_or(0),
            "last run, partition {p}"
        );
    }
    // Read-ahead held in the pipe at each kill (up to ~30 k lines) is read again, so no
    // bound on the lines emitted: the resume points above say no run started over.
    assert_exactly_once(&pg, "eo", &text, n, None);
}

#[test]
fn exactly_once_when_persist_is_killed_twice() {
    exactly_once_with_kills("persist", "eo_persist");
}

#[test]
fn exactly_once_when_ingest_kafka_is_killed_twice() {
    exactly_once_with_kills("ingest", "eo_ingest");
}

#[test]
fn exactly_once_when_the_broker_is_killed_and_restarted() {
    let dir = Dir::new();
    let broker = Broker::start_durable(&dir);
    let pg = Pg::new("eo_broker");
    let n = 30_000;
    let (topic, text) = topic_with_events(&dir, &broker, "eo-broker", 3, n, &["--dups", "0.05"]);
    // A small prefetch queue, so that librdkafka cannot hold the whole topic before the
    // broker is killed.
    let consumer = "--offsets-name eo -X queued.max.messages.kbytes=256";
    let script = eo_pipe(&broker, &topic, &pg, consumer, "", true);
    let mut run = Std::new("bash")
        .args(["-c", &script])
        .current_dir(dir.root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the broker once 3000 lines have passed tee: early, since rows in PostgreSQL
    // lag behind by all that the pipe holds.
    let emitted = || dir.read("emitted.ndjson").lines().count() as u64;
    wait_until("3000 lines read", Duration::from_secs(120), || {
        dir.path("emitted.ndjson").exists() && emitted() >= 3_000
    });
    broker.kill_9();
    let during = emitted();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the pipe ended with the broker down"
    );
    broker.restart();
    wait_until("the pipe to end", Duration::from_secs(180), || {
        run.try_wait().unwrap().is_some()
    });
    let o = run.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        during < n,
        "every line had passed tee before the broker was killed"
    );
    let emitted = dir.read("emitted.ndjson").lines().count() as u64;
    assert_exactly_once(&pg, "eo", &text, n, Some(emitted));
}

/// Creates `name` with `partitions` on the broker at `addr`.
pub(crate) fn create_topic(addr: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let res = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap();
    for r in res {
        r.unwrap_or_else(|e| panic!("create topic {name}: {e:?}"));
    }
}

/// Sends `text` (NDJSON keyed by id) to `topic` and waits until the broker has it.
fn produce_all(broker: &Broker, topic: &str, text: &str) {
    let p = broker.producer();
    produce_lines(&p, topic, text);
    p.flush(Duration::from_secs(120)).unwrap();
}

/// Two pipes in one consumer group split the partitions; when one member dies with lines
/// read but not committed, the other takes its partitions over from the committed
/// offsets, and the dead member's stuck lines are fenced by the epoch when its persist
/// finally tries to commit them: rows exact, nothing written twice.
#[test]
fn two_consumers_in_one_group_split_and_take_over_partitions() {
    let dir = Dir::new();
    let broker = Broker::start();
    let pg = Pg::new("eo_group");
    let topic = format!("eo-group-{}", std::process::id());
    broker.create_topic(&topic, 4);
    let text = std::fs::read_to_string(gen_events(
        &dir,
        "events.ndjson",
        40_000,
        &["--dups", "0.05"],
    ))
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = (lines[..20_000].join("\n"), lines[20_000..].join("\n"));
    // The table first: two persists creating it at once would race.
    let o = dir
        .cmd("persist")
        .args(["-q", "--database-url", &pg.url(), "--create-table"])
        .write_stdin("")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let group_name = format!("g-{}", std::process::id());
    // A member that dies is noticed after 6 s (the broker's minimum), not librdkafka's 45.
    let group = format!("--group {group_name} -X session.timeout.ms=6000");
    let start = |name: &str| {
        Std::new("bash")
            .args(["-c", &eo_pipe(&broker, &topic, &pg, &group, name, false)])
            .current_dir(dir.root())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let assigned = |name: &str| -> usize {
        std::fs::read_to_string(dir.path(&format!("{name}ingest.log")))
            .unwrap_or_default()
            .matches("assigned ")
            .count()
    };
    let a = start("a-");
    wait_until("a- to be assigned", Duration::from_secs(60), || {
        assigned("a-") > 0
    });
    let b = start("b-");
    wait_until("b- to be assigned", Duration::from_secs(60), || {
        assigned("b-") > 0
    });
    let revoked = |name: &str| -> usize {
        std::fs::read_to_string(dir.path(&format!("{name}ingest.log")))
            .unwrap_or_default()
            .matches("revoked ")
            .count()
    };
    // b-'s join makes a- give up partitions (only those that move: the assignment is
    // incremental).
    wait_until("a- to give b- its share", Duration::from_secs(60), || {
        revoked("a-") > 0 && assigned("b-") >= revoked("a-")
    });

    produce_all(&broker, &topic, &first);
    let offsets = format!(
        "SELECT coalesce(sum(next_offset), 0) FROM ndpipe_offsets WHERE \"group\" = '{group_name}' \
         AND next_offset >= 0"
    );
    let expected_first = last_by_id(&first).len() as u64;
    wait_until(
        "both members to load the first half",
        Duration::from_secs(120),
        || rows(&pg) == expected_first && count(&pg, &offsets) == 20_000,
    );
    // Which partitions each one read: both some, none the same.
    let parts = |name: &str| -> std::collections::BTreeSet<u64> {
        values(&dir.read(&format!("{name}emitted.ndjson")))
            .iter()
            .map(|v| v["_meta"]["partition"].as_u64().unwrap())
            .collect()
    };
    let (pa, pb) = (parts("a-"), parts("b-"));
    assert!(!pa.is_empty() && !pb.is_empty(), "{pa:?} {pb:?}");
    assert!(pa.is_disjoint(&pb), "{pa:?} {pb:?}");

    // a-'s persist stalls, so a- reads its share of the second half into the pipe
    // without committing it; then a-'s consumer dies.
    let pid = |name: &str| dir.read(&format!("{name}.pid")).trim().to_owned();
    let signal = |sig: &str, pid: &str| {
        assert!(Std::new("kill")
            .args([sig, pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP", &pid("a-persist"));
    let before = dir.read("a-emitted.ndjson").lines().count();
    produce_all(&broker, &topic, &second);
    wait_until(
        "a- to read some of the second half",
        Duration::from_secs(60),
        || dir.read("a-emitted.ndjson").lines().count() > before,
    );
    signal("-KILL", &pid("a-ingest"));
    // b- takes a-'s partitions over from the committed offsets and loads everything.
    wait_until("b- to load everything", Duration::from_secs(120), || {
        rows(&pg) == last_by_id(&text).len() as u64 && count(&pg, &offsets) == 40_000
    });
    assert_eq!(parts("b-").len(), 4, "b- took over every partition");
    // Now a-'s persist wakes up with lines of the old epoch: all fenced.
    signal("-CONT", &pid("a-persist"));
    let o = a.wait_with_output().unwrap();
    assert!(!o.status.success(), "a-'s ingest-kafka was killed");
    let log = dir.read("a-persist.log");
    let fenced = crate::persist::summary_count(&log, "fenced");
    assert!(fenced > 0, "a-'s stuck lines were not fenced: {log}");
    signal("-TERM", &pid("b-ingest"));
    let o = b.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let emitted = ["a-", "b-"]
        .iter()
        .map(|name| dir.read(&format!("{name}emitted.ndjson")).lines().count() as u64)
        .sum::<u64>();
    // a-'s fenced lines were read twice (once by each member): allow for them.
    assert_exactly_once(&pg, &group_name, &text, 40_000, Some(emitted - fenced));
}

/// `--offsets-from` connects as `sslmode` says: a TLS-only server refuses it with
/// `disable` and serves it with `require` (it used to connect without TLS whatever the
/// URL said).
#[test]
fn offsets_from_uses_tls_as_sslmode_says() {
    let dir = Dir::new();
    let broker = Broker::start();
    let cluster = crate::persist::Cluster::tls_only();
    let (topic, _) = topic_with_events(&dir, &broker, "tls", 1, 20, &[]);
    let run = |mode: &str| {
        ingest_kafka(&dir, &broker, &topic)
            .args(["--offsets-name", "tls", "--exit-at-end", "--offsets-from"])
            .arg(format!("{}?sslmode={mode}", cluster.url()))
            .env_remove("PGSSLMODE")
            .output()
            .unwrap()
    };
    let o = run("disable");
    assert!(!o.status.success());
    assert!(err(&o).contains("no encryption"), "{}", err(&o));
    let o = run("require");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(values(&out(&o)).len(), 20);
}

/// A member killed with -9 never leaves its group: the next one waits for the dead one's
/// session to expire before it gets partitions, and says so (#24: it waited about 45 s
/// without a word).
#[test]
fn a_member_waiting_for_a_dead_members_session_says_so() {
    use std::io::BufRead;
    let dir = Dir::new();
    let broker = Broker::start();
    let (topic, _) = topic_with_events(&dir, &broker, "group-wait", 2, 200, &[]);
    let group = format!("group-wait-{}", std::process::id());
    let member = || {
        let mut c = Std::new(bin("ingest-kafka"));
        c.args([
            "--brokers",
            &broker.addr,
            "--topic",
            &topic,
            "--group",
            &group,
        ])
        .args(["-X", "session.timeout.ms=15000"])
        .current_dir(dir.root())
        .env_remove("NDPIPE_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        c
    };
    let mut first = member().spawn().unwrap();
    // It holds the partitions once it has printed every message.
    let lines = std::io::BufReader::new(first.stdout.take().unwrap()).lines();
    assert_eq!(lines.take(200).count(), 200);
    first.kill().unwrap(); // SIGKILL: no goodbye to the group
    first.wait().unwrap();

    let second = member().arg("--exit-at-end").output().unwrap();
    let stderr = err(&second);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "waiting for the group {group} (a previous member's session expires in"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("session.timeout.ms 15000"), "{stderr}");
}
