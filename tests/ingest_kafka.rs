//! `ingest-kafka` against a real Kafka-protocol broker (tansu, started by
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

/// A throw-away broker on a free port. `NDPIPE_TEST_KAFKA` points the tests at another
/// broker instead (topics get unique names).
struct Broker {
    addr: String,
    ours: bool,
    /// SQLite storage and the script's state directory, for a broker that survives kill -9.
    durable: Option<(String, PathBuf)>,
}

impl Broker {
    fn start() -> Broker {
        if let Ok(addr) = std::env::var("NDPIPE_TEST_KAFKA") {
            return Broker {
                addr,
                ours: false,
                durable: None,
            };
        }
        let o = broker_script(None).arg("start").output().unwrap();
        Broker {
            addr: started(&o),
            ours: true,
            durable: None,
        }
    }

    /// A broker of our own whose topics live in a SQLite file in `dir`, so that it can be
    /// killed with SIGKILL and started again (always tansu, even with NDPIPE_TEST_KAFKA).
    fn start_durable(dir: &Dir) -> Broker {
        let storage = format!("sqlite://{}", dir.path("tansu/tansu.db").display());
        let state = dir.path("broker-state");
        let o = broker_script(Some(&state))
            .args(["start", "--storage", &storage])
            .output()
            .unwrap();
        Broker {
            addr: started(&o),
            ours: true,
            durable: Some((storage, state)),
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

    /// Starts it again on the same address and storage.
    fn restart(&self) {
        let (storage, state) = self.durable.as_ref().expect("a durable broker");
        let port = self.addr.rsplit(':').next().unwrap();
        let o = broker_script(Some(state))
            .args(["start", "--storage", storage, "--port", port])
            .output()
            .unwrap();
        assert_eq!(started(&o), self.addr);
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
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

    /// A producer that sends every record in a batch of its own (tansu's high watermark
    /// counts batches, not records).
    fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.ours {
            let state = self.durable.as_ref().map(|(_, state)| state.as_path());
            let _ = broker_script(state).args(["stop", &self.addr]).output();
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

fn send(
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
fn topic_with_events(
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
fn produce_lines(p: &BaseProducer, topic: &str, text: &str) {
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
    let first = count(&pg, "SELECT count(*) FROM events");
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
    assert!(
        stderr.contains(&format!(
            "{} inserted, 0 updated, 0 unchanged",
            20_000 - first
        )),
        "{stderr}"
    );
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
/// with the pids of ingest-kafka and persist in `{name}ingest.pid` and `{name}persist.pid`.
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
         {ingest} -q --brokers {b} --topic {topic} {consumer} --offsets-from '{url}' {end} > {name}fifo &
         echo $! > {name}ingest.pid; ingest=$!
         tee -a {name}emitted.ndjson < {name}fifo | {validate} -q --require id \
           | {persist} -q --database-url '{url}' --create-table --version-field meta.seq \
               --batch-size 2000 --linger-ms 20 &
         echo $! > {name}persist.pid; persist=$!
         wait $ingest; a=$?; wait $persist; b=$?
         [ $a = 0 ] && [ $b = 0 ]",
        ingest = bin("ingest-kafka"),
        validate = bin("validate"),
        persist = bin("persist"),
        b = broker.addr,
        url = pg.url(),
        end = if exit_at_end { "--exit-at-end" } else { "" },
    )
}

/// Rows in the test schema's `events` table (0 before persist has created it).
fn rows(pg: &Pg) -> u64 {
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
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The issue's exactly-once conditions after `text` (`n` messages, one per produce batch)
/// went through the pipe into `pg`: row count = distinct keys, every row holds its key's
/// last event, the stored `next_offset`s add up to the high watermarks, and the pipe
/// emitted fewer than 1.25 × n lines (`emitted` lines).
fn assert_exactly_once(pg: &Pg, offsets_name: &str, text: &str, n: u64, emitted: u64) {
    let expected = last_by_id(text);
    assert_eq!(rows(pg), expected.len() as u64);
    let stored: std::collections::BTreeMap<String, serde_json::Value> = pg
        .sql("SELECT key, payload::text FROM events")
        .lines()
        .map(|l| {
            let (k, p) = l.split_once('\t').unwrap();
            (k.to_owned(), serde_json::from_str(p).unwrap())
        })
        .collect();
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
    // A restart from the beginning would pass the checks above; this one catches it.
    assert!(
        emitted < n * 5 / 4,
        "{emitted} lines emitted for {n} messages"
    );
}

/// The pipe with `victim` ("persist" or "ingest") SIGKILLed twice mid-stream, then
/// restarted until drained.
fn exactly_once_with_kills(victim: &str, name: &str) {
    let dir = Dir::new();
    let broker = Broker::start();
    let pg = Pg::new(name);
    let n = 200_000;
    let (topic, text) = topic_with_events(&dir, &broker, name, 3, n, &["--dups", "0.05"]);
    let script = |exit_at_end| eo_pipe(&broker, &topic, &pg, "--offsets-name eo", "", exit_at_end);
    for at_least in [20_000, 90_000] {
        let mut run = Std::new("bash")
            .args(["-c", &script(false)])
            .current_dir(dir.root())
            .spawn()
            .unwrap();
        wait_until(
            &format!("{at_least} rows"),
            Duration::from_secs(120),
            || rows(&pg) >= at_least,
        );
        let pid = dir.read(&format!("{victim}.pid"));
        let _ = Std::new("kill").args(["-KILL", pid.trim()]).status();
        // The rest of the pipe ends by itself (closed pipe or end of input); make sure.
        std::thread::sleep(Duration::from_millis(500));
        for other in ["ingest", "persist"] {
            let pid = dir.read(&format!("{other}.pid"));
            let _ = Std::new("kill").args(["-KILL", pid.trim()]).status();
        }
        run.wait().unwrap();
    }
    let o = Std::new("bash")
        .args(["-c", &script(true)])
        .current_dir(dir.root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let emitted = dir.read("emitted.ndjson").lines().count() as u64;
    assert_exactly_once(&pg, "eo", &text, n, emitted);
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
    // SQLite-backed tansu takes about 1 k produce batches/s and serves ~10 k messages/s.
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
    assert_exactly_once(&pg, "eo", &text, n, emitted);
}

#[test]
fn two_consumers_in_one_group_split_the_partitions() {
    let dir = Dir::new();
    let broker = Broker::start();
    let pg = Pg::new("eo_group");
    let n = 20_000;
    let (topic, text) = topic_with_events(&dir, &broker, "eo-group", 4, n, &["--dups", "0.05"]);
    // The table first: two persists creating it at once would race.
    let o = dir
        .cmd("persist")
        .args(["-q", "--database-url", &pg.url(), "--create-table"])
        .write_stdin("")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let group = format!("--group g-{}", std::process::id());
    let runs: Vec<_> = ["a-", "b-"]
        .iter()
        .map(|name| {
            Std::new("bash")
                .args(["-c", &eo_pipe(&broker, &topic, &pg, &group, name, false)])
                .current_dir(dir.root())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let expected = last_by_id(&text).len() as u64;
    let offsets = format!(
        "SELECT coalesce(sum(next_offset), 0) FROM ndpipe_offsets WHERE \"group\" = 'g-{}' \
         AND next_offset >= 0",
        std::process::id()
    );
    // A group join takes ~20 s on tansu.
    wait_until(
        "both consumers to drain the topic",
        Duration::from_secs(150),
        || rows(&pg) == expected && count(&pg, &offsets) == n,
    );
    for name in ["a-", "b-"] {
        let pid = dir.read(&format!("{name}ingest.pid"));
        let _ = Std::new("kill").args(["-TERM", pid.trim()]).status();
    }
    for run in runs {
        let o = run.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", err(&o));
    }
    // Which partitions each one read: both some, none the same.
    let parts = |name: &str| -> std::collections::BTreeSet<u64> {
        values(&dir.read(&format!("{name}emitted.ndjson")))
            .iter()
            .map(|v| v["_meta"]["partition"].as_u64().unwrap())
            .collect()
    };
    let (a, b) = (parts("a-"), parts("b-"));
    assert!(!a.is_empty() && !b.is_empty(), "{a:?} {b:?}");
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    let emitted = ["a-", "b-"]
        .iter()
        .map(|name| dir.read(&format!("{name}emitted.ndjson")).lines().count() as u64)
        .sum();
    assert_exactly_once(&pg, &format!("g-{}", std::process::id()), &text, n, emitted);
}
