//! Past one machine: three (then four) `pipeline`s in one Kafka consumer group, each on a
//! simulated host of its own (`scripts/cluster-sim`: network namespaces on this machine,
//! a broker with a 12-partition topic, one PostgreSQL), while a producer writes keyed
//! events at a steady rate. Each test injects one fault for real — a host's link cut, a
//! host frozen, a host killed and restarted, a fourth host joining then leaving, the
//! database unreachable from one host — and then counts: rows = distinct keys, each row
//! its key's last event, the committed offsets add up to the messages produced, and the
//! log of every offsets commit (a trigger on `ndpipe_offsets`) shows each partition's
//! commits contiguous and never from an older epoch after a newer one. Each host's
//! `/metrics` shows its lag and its fenced events. The longest gap in commits during the
//! fault is printed (`--nocapture`).
//!
//! Needs root for the namespaces (CI runs as root; elsewhere these tests say so and pass
//! only outside CI). One at a time: each runs a broker and a database of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::ClientConfig;

use crate::ingest_kafka::{create_topic, wait_until};
use crate::persist::summary_count;
use crate::util::{bin, gen_events, last_by_id, Dir};

/// The clusters run one at a time: each has a broker and a database of its own, and
/// their timing (session timeouts) should not compete with each other for 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Partitions of the topic: 12, so that 4 hosts still get 3 each.
const PARTITIONS: i32 = 12;
/// A member silent this long leaves the group (the broker's minimum; librdkafka's
/// default is 45 s).
const SESSION: Duration = Duration::from_secs(6);
/// Events produced per test and their rate: about 20 s of steady traffic.
const EVENTS: u64 = 30_000;
const RATE: f64 = 1_500.0;

/// The pipe file every host runs: the one README.md's "More than one machine" shows.
fn loaders_pipe() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme
        .find("## More than one machine")
        .expect("the section")..];
    let start = section.find("```text\n").expect("a ```text block") + "```text\n".len();
    let len = section[start..].find("```").unwrap();
    let pipe = section[start..start + len].to_owned();
    assert!(pipe.starts_with("# loaders.pipe"), "{pipe}");
    pipe
}

/// The line written into a host's log before each start of its process.
const START_MARK: &str = "--- cluster test: host started";

/// One simulated cluster; torn down when dropped, whatever happened.
struct Sim {
    name: String,
    kafka: String,
    db: String,
    pghost: String,
    dir: Dir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster-sim")
}

/// Can this machine build namespaces? In CI it must; elsewhere a test without them says so
/// and passes.
fn namespaces_available() -> bool {
    let ok = unsafe { libc::geteuid() } == 0
        && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "the cluster tests need root and `ip netns` (CI runs as root)"
        );
        eprintln!("skipped outside CI: network namespaces need root");
    }
    ok
}

impl Sim {
    fn up(hosts: &[&str]) -> Sim {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "nds{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let o = Command::new(script())
            .arg("up")
            .arg(&name)
            .args(hosts)
            .env("NDPIPE_CLUSTER_SIM_OWNER", std::process::id().to_string())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cluster-sim up: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let info: BTreeMap<String, String> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let sim = Sim {
            name,
            kafka: info["KAFKA"].clone(),
            db: info["DATABASE_URL"].clone(),
            pghost: info["PGHOST"].clone(),
            dir: Dir::new(),
        };
        sim.dir.create("loaders.pipe", loaders_pipe());
        sim
    }

    /// `scripts/cluster-sim ARGS` on this cluster (`cut h1` runs `cluster-sim cut NAME h1`).
    fn sim(&self, verb: &str, args: &[&str]) {
        let o = Command::new(script())
            .arg(verb)
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cluster-sim {verb} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Runs SQL through the database's Unix socket (this machine is not on the cluster's
    /// network); psql's unaligned, tab-separated output.
    fn sql(&self, sql: &str) -> String {
        let o = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\t"])
            .args([
                "-h",
                &self.pghost,
                "-U",
                "postgres",
                "-d",
                "test",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "psql: {sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap().trim_end().to_owned()
    }

    fn count(&self, sql: &str) -> u64 {
        self.sql(sql).parse().unwrap_or(0)
    }

    /// Runs `f` on a thread inside the cluster's `client` namespace (a thread's network
    /// namespace is its own: the test's other threads stay where they are; librdkafka's
    /// threads, started from it, join it).
    fn on_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = format!("/run/netns/{}-client", self.name);
        std::thread::spawn(move || {
            let file = File::open(&ns).unwrap();
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    fn create_topic(&self) {
        let kafka = self.kafka.clone();
        self.on_client(move || create_topic(&kafka, "orders", PARTITIONS))
            .join()
            .unwrap();
    }

    /// `GET /metrics` of a host.
    fn metrics(&self, host: &str) -> String {
        let url = format!("http://{}:9100/metrics", addr(host));
        self.on_client(move || {
            ureq::get(&url)
                .call()
                .map(|mut r| r.body_mut().read_to_string().unwrap())
                .unwrap_or_else(|e| panic!("{url}: {e}"))
        })
        .join()
        .unwrap()
    }

    /// Starts `pipeline --file loaders.pipe --metrics-listen ADDR:9100` on `host`, as the
    /// README says (KAFKA_BROKERS and DATABASE_URL in its environment); its stderr goes to
    /// `HOST.log`, after a line that marks the start (a restart appends).
    fn start(&self, host: &str) -> Host {
        let path = self.dir.path(&format!("{host}.log"));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        std::io::Write::write_all(&mut log, format!("{START_MARK}\n").as_bytes()).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("{}-{host}", self.name)])
            .arg(bin("pipeline"))
            .args(["--file", "loaders.pipe", "--metrics-listen"])
            .arg(format!("{}:9100", addr(host)))
            .current_dir(self.dir.root())
            .env_remove("NDPIPE_LOG")
            .env("KAFKA_BROKERS", &self.kafka)
            .env("DATABASE_URL", &self.db)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Host {
            name: host.to_owned(),
            child,
        }
    }

    /// The partitions `host`'s running process holds, as its log says: assigned and not
    /// revoked since it started.
    fn owned(&self, host: &str) -> BTreeSet<u32> {
        let log = self.log(host);
        let since = log.rfind(START_MARK).map_or(&log[..], |i| &log[i..]);
        let mut owned = BTreeSet::new();
        for line in since.lines() {
            let partition = |verb: &str| -> Option<u32> {
                let rest = &line[line.find(verb)? + verb.len()..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            };
            if let Some(p) = partition("assigned orders/") {
                owned.insert(p);
            } else if let Some(p) = partition("revoked orders/") {
                owned.remove(&p);
            }
        }
        owned
    }

    fn log(&self, host: &str) -> String {
        std::fs::read_to_string(self.dir.path(&format!("{host}.log"))).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["down", &self.name]).output();
    }
}

/// A host's address on the cluster's network (`scripts/cluster-sim`'s plan).
fn addr(host: &str) -> String {
    let n: u32 = host[1..].parse().unwrap();
    format!("127.77.0.{}", 10 + n)
}

struct Host {
    name: String,
    child: Child,
}

impl Host {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.name);
    }

    /// SIGTERM, then its exit status (a minute at most).
    fn stop(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} did not stop within a minute of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The producer: `text`'s lines, keyed by id, at `RATE` a second from the client host.
struct Traffic {
    sent: Arc<AtomicU64>,
    done: std::thread::JoinHandle<()>,
}

impl Traffic {
    fn start(sim: &Sim, text: &str) -> Traffic {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let sent = Arc::new(AtomicU64::new(0));
        let kafka = sim.kafka.clone();
        let counter = sent.clone();
        let done = sim.on_client(move || {
            let p: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &kafka)
                .set("linger.ms", "5")
                .create()
                .unwrap();
            let start = Instant::now();
            for (i, line) in lines.iter().enumerate() {
                let due = start + Duration::from_secs_f64(i as f64 / RATE);
                while let Some(wait) = due.checked_duration_since(Instant::now()) {
                    p.poll(wait);
                }
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let key = v["id"].as_str().unwrap().to_owned();
                let mut rec = BaseRecord::to("orders").key(&key).payload(line);
                loop {
                    match p.send(rec) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            p.poll(Duration::from_millis(5));
                            rec = r;
                        }
                    }
                }
                counter.store(i as u64 + 1, Ordering::Relaxed);
            }
            p.flush(Duration::from_secs(60)).unwrap();
        });
        Traffic { sent, done }
    }

    /// Waits until `n` events have been sent.
    fn wait_for(&self, n: u64) {
        wait_until(
            &format!("{n} events produced"),
            Duration::from_secs(120),
            || self.sent.load(Ordering::Relaxed) >= n,
        );
    }
}

/// The steady state every fault starts from: the cluster, the topic, three hosts sharing
/// the 12 partitions, the offsets log, the events about to be produced.
struct Run {
    sim: Sim,
    hosts: BTreeMap<String, Host>,
    text: String,
    producer: Option<Traffic>,
    /// When the fault began (for the commit-gap report).
    fault_at: Option<String>,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Run {
    fn start(hosts: &[&str]) -> Option<Run> {
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        if !namespaces_available() {
            return None;
        }
        let sim = Sim::up(hosts);
        sim.create_topic();
        // The events table first: several persists creating it at once would race.
        let o = Command::new("ip")
            .args(["netns", "exec", &format!("{}-h1", sim.name)])
            .arg(bin("persist"))
            .args(["-q", "--database-url", &sim.db, "--create-table"])
            .args(["--version-field", "meta.seq"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(gen_events(
            &sim.dir,
            "events.ndjson",
            EVENTS,
            &["--dups", "0.2"],
        ))
        .unwrap();
        let mut run = Run {
            sim,
            hosts: BTreeMap::new(),
            text,
            producer: None,
            fault_at: None,
            _one: one,
        };
        for h in hosts {
            run.start_host(h);
        }
        // Every partition owned before traffic starts (the claims create the offsets table).
        wait_until(
            "the hosts to share the partitions",
            Duration::from_secs(60),
            || {
                run.sim
                    .count("SELECT count(*) FROM pg_tables WHERE tablename = 'ndpipe_offsets'")
                    == 1
                    && run
                        .sim
                        .count("SELECT count(DISTINCT \"partition\") FROM ndpipe_offsets")
                        == PARTITIONS as u64
            },
        );
        run.wait_owned(hosts, "the hosts to share the partitions");
        // Every change of the offsets table logged (`ndpipe_offsets_log`).
        run.sim.sim("audit", &[]);
        run.producer = Some(Traffic::start(&run.sim, &run.text));
        Some(run)
    }

    fn start_host(&mut self, host: &str) {
        let h = self.sim.start(host);
        self.hosts.insert(host.to_owned(), h);
    }

    fn host(&self, host: &str) -> &Host {
        &self.hosts[host]
    }

    fn producer(&self) -> &Traffic {
        self.producer.as_ref().unwrap()
    }

    /// Marks the start of the fault, for the commit-gap report.
    fn fault_begins(&mut self) {
        self.fault_at = Some(self.sim.sql("SELECT clock_timestamp()"));
    }

    /// Freezes `host` (SIGSTOP) at a moment its persist is inside a transaction that has
    /// written its partitions' offsets rows (and so holds their locks until it commits):
    /// the worst moment, since the partitions' new owners must update those rows to claim
    /// them. Tries until it lands so (thawed between tries, which come every few
    /// milliseconds; a host's batches commit about ten times a second).
    fn freeze_in_transaction(&self, host: &str) {
        let holds = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE a.client_addr = '{}' AND l.relation = 'ndpipe_offsets'::regclass \
             AND l.granted AND l.mode = 'RowExclusiveLock' AND a.state <> 'active'",
            addr(host)
        );
        let start = Instant::now();
        loop {
            self.host(host).signal("-STOP");
            if self.sim.count(&holds) > 0 {
                return;
            }
            self.host(host).signal("-CONT");
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{host}'s persist was never caught inside a transaction"
            );
            // A random pause: tries at a steady period could keep missing transactions
            // that come at the same period.
            std::thread::sleep(Duration::from_millis(fastrand::u64(2..17)));
        }
    }

    /// Waits until `owners`, and no other host, hold the 12 partitions between them, each
    /// at least one, none twice — the group settled after a change.
    fn wait_owned(&self, owners: &[&str], what: &str) {
        let mut seen = Vec::new();
        wait_until(what, Duration::from_secs(60), || {
            seen = owners.iter().map(|h| self.sim.owned(h)).collect();
            let all: BTreeSet<u32> = seen.iter().flatten().copied().collect();
            all.len() == PARTITIONS as usize
                && seen.iter().map(BTreeSet::len).sum::<usize>() == all.len()
                && seen.iter().all(|s| !s.is_empty())
        });
    }

    /// After the fault: the producer done, everything committed, each live host's
    /// `/metrics` with its lag and fenced events, every host stopped with SIGTERM (exit 0),
    /// then the exactly-once checks. Returns the fenced events per host (from `/metrics`).
    fn finish(mut self, fault: &str) -> BTreeMap<String, u64> {
        let producer = self.producer.take().unwrap();
        producer.done.join().unwrap();
        let traffic_ended = self.sim.sql("SELECT clock_timestamp()");
        let n = EVENTS;
        let keys = last_by_id(&self.text).len() as u64;
        wait_until("every event committed", Duration::from_secs(180), || {
            self.sim
                .count("SELECT coalesce(sum(next_offset), 0) FROM ndpipe_offsets")
                == n
                && self.sim.count("SELECT count(*) FROM events") == keys
        });
        // Lag: every live host's gauges for the partitions it owns reach 0 (librdkafka's
        // statistics come every second).
        let mut fenced = BTreeMap::new();
        for h in self.hosts.keys() {
            let mut m = String::new();
            wait_until(
                &format!("{h}'s lag to reach 0 on /metrics"),
                Duration::from_secs(30),
                || {
                    m = self.sim.metrics(h);
                    let lags = series(&m, "kafka_consumer_lag{");
                    !lags.is_empty() && lags.iter().all(|v| *v == 0.0)
                },
            );
            let f = series(
                &m,
                "ndpipe_persist_rows_total{component=\"persist\",outcome=\"fenced\"}",
            );
            assert_eq!(f.len(), 1, "{h}'s /metrics has no fenced count:\n{m}");
            fenced.insert(h.clone(), f[0] as u64);
        }
        let hosts = std::mem::take(&mut self.hosts);
        for (name, host) in hosts {
            let status = host.stop();
            assert!(
                status.success(),
                "{name}: {status}\n{}",
                self.sim.log(&name)
            );
        }
        self.assert_exactly_once();
        self.report_gap(fault, &traffic_ended);
        fenced
    }

    /// Rows = distinct keys, each its key's last event; the committed offsets add up to
    /// the messages produced; per partition the commits are contiguous (each starts where
    /// the one before ended: nothing committed twice, nothing skipped) and their epochs
    /// never go back (no two owners committing at once).
    fn assert_exactly_once(&self) {
        let expected = last_by_id(&self.text);
        let stored: BTreeMap<String, serde_json::Value> = self
            .sim
            .sql("SELECT key, payload::text FROM events")
            .lines()
            .map(|l| {
                let (k, p) = l.split_once('\t').unwrap();
                let mut v: serde_json::Value = serde_json::from_str(p).unwrap();
                // enrich's stamp: not part of the produced event.
                assert_eq!(v["env"], "prod");
                v.as_object_mut().unwrap().remove("env");
                (k.to_owned(), v)
            })
            .collect();
        assert_eq!(stored.len(), expected.len(), "rows = distinct keys");
        for (k, v) in &expected {
            assert_eq!(stored.get(k), Some(v), "row {k} holds its key's last event");
        }
        assert_eq!(
            self.sim
                .count("SELECT sum(next_offset) FROM ndpipe_offsets"),
            EVENTS
        );
        let log = self.sim.sql(
            "SELECT \"partition\", epoch, old_epoch, from_offset, to_offset FROM ndpipe_offsets_log \
             ORDER BY id",
        );
        let mut last: BTreeMap<i64, (i64, i64)> = BTreeMap::new(); // partition → (epoch, next)
        for line in log.lines() {
            let f: Vec<i64> = line.split('\t').map(|x| x.parse().unwrap()).collect();
            let (p, epoch, old_epoch, from, to) = (f[0], f[1], f[2], f[3], f[4]);
            let (e0, next) = last.get(&p).copied().unwrap_or((old_epoch, from));
            assert!(epoch >= e0, "partition {p}: epoch {epoch} after {e0}");
            assert_eq!(
                from, next,
                "partition {p}: a change starting at {from}, not {next}"
            );
            if epoch == old_epoch {
                assert!(to > from, "partition {p}: a commit from {from} to {to}");
            } else {
                assert_eq!(to, from, "partition {p}: a claim that moved the offset");
            }
            last.insert(p, (epoch, to));
        }
        assert_eq!(last.len(), PARTITIONS as usize, "every partition logged");
    }

    /// Prints the longest time one partition went without a commit from the start of the
    /// fault to the end (how long its events waited), and the longest time no partition
    /// was committed while events were still being produced.
    fn report_gap(&self, fault: &str, traffic_ended: &str) {
        let since = self.fault_at.as_deref().unwrap_or("-infinity");
        let row = self.sim.sql(&format!(
            "WITH c AS (SELECT \"partition\", at FROM ndpipe_offsets_log WHERE to_offset > from_offset \
               AND at >= '{since}'::timestamptz - interval '1 second'), \
             any_gap AS (SELECT max(g) AS g FROM (SELECT at, at - lag(at) OVER (ORDER BY at) \
               AS g FROM c) x WHERE at <= '{traffic_ended}'), \
             part_gap AS (SELECT max(g) AS g FROM (SELECT at - lag(at) OVER \
               (PARTITION BY \"partition\" ORDER BY at) AS g FROM c) y) \
             SELECT extract(epoch FROM any_gap.g), extract(epoch FROM part_gap.g) \
             FROM any_gap, part_gap",
        ));
        let (any, part) = row.split_once('\t').unwrap();
        let secs = |s: &str| s.parse::<f64>().unwrap_or(0.0);
        eprintln!(
            "cluster: {fault}: longest gap in commits {:.1} s (one partition), {:.1} s (all, while \
             producing)",
            secs(part),
            secs(any)
        );
    }
}

/// The values of the series of `/metrics` text whose line starts with `prefix`.
fn series(metrics: &str, prefix: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// A host's link cut at the switch for longer than the session timeout, then mended: its
/// partitions move to the others, its in-flight batches are fenced when it comes back, and
/// it rejoins.
#[test]
fn a_host_cut_off_the_network_is_fenced_and_rejoins() {
    let Some(mut run) = Run::start(&["h1", "h2", "h3"]) else {
        return;
    };
    run.producer().wait_for(EVENTS / 5);
    run.fault_begins();
    // The cut lands while h1's persist is inside a transaction: h1 is frozen for the
    // instant it takes to pull its cable, to pick that moment.
    run.freeze_in_transaction("h1");
    run.sim.sim("cut", &["h1"]);
    run.host("h1").signal("-CONT");
    run.wait_owned(&["h2", "h3"], "h2 and h3 to take h1's partitions");
    std::thread::sleep(SESSION);
    run.sim.sim("mend", &["h1"]);
    run.wait_owned(&["h1", "h2", "h3"], "h1 to rejoin");
    let fenced = run.finish("link cut");
    assert!(
        fenced["h1"] > 0,
        "h1's stuck batches were not fenced: {fenced:?}"
    );
}

/// A host frozen (SIGSTOP) until the others have taken its partitions, then resumed: what
/// it held is fenced, and it rejoins.
#[test]
fn a_frozen_host_is_fenced_when_it_wakes_and_rejoins() {
    let Some(mut run) = Run::start(&["h1", "h2", "h3"]) else {
        return;
    };
    run.producer().wait_for(EVENTS / 5);
    run.fault_begins();
    run.freeze_in_transaction("h1");
    run.wait_owned(&["h2", "h3"], "h2 and h3 to take h1's partitions");
    run.host("h1").signal("-CONT");
    run.wait_owned(&["h1", "h2", "h3"], "h1 to rejoin");
    let fenced = run.finish("host frozen");
    assert!(
        fenced["h1"] > 0,
        "h1's stuck batches were not fenced: {fenced:?}"
    );
}

/// A host killed with -9 and started again: the group waits out the dead member's session,
/// the new one resumes its partitions from the committed offsets.
#[test]
fn a_host_killed_and_restarted_resumes_from_the_committed_offsets() {
    let Some(mut run) = Run::start(&["h1", "h2", "h3"]) else {
        return;
    };
    run.producer().wait_for(EVENTS / 5);
    run.fault_begins();
    run.host("h1").signal("-KILL");
    std::thread::sleep(Duration::from_secs(2));
    run.start_host("h1");
    run.wait_owned(&["h1", "h2", "h3"], "h1 to be back in the group");
    run.finish("host killed and restarted");
}

/// A fourth host joins under load and takes a share of the partitions; then it leaves with
/// SIGTERM, committing what it read, and the three take its share back.
#[test]
fn a_fourth_host_joins_under_load_then_leaves() {
    let Some(mut run) = Run::start(&["h1", "h2", "h3"]) else {
        return;
    };
    run.producer().wait_for(EVENTS / 5);
    run.fault_begins();
    run.sim.sim("join", &["h4"]);
    run.start_host("h4");
    run.wait_owned(&["h1", "h2", "h3", "h4"], "h4 to get a share");
    // It works its share for a while, then leaves.
    let committed = || {
        run.sim
            .count("SELECT coalesce(sum(next_offset), 0) FROM ndpipe_offsets")
    };
    let at_join = committed();
    wait_until("h4's share to move on", Duration::from_secs(60), || {
        committed() > at_join + 3_000
    });
    let m = run.sim.metrics("h4");
    assert!(
        !series(&m, "kafka_consumer_lag{").is_empty(),
        "h4's /metrics has no lag:\n{m}"
    );
    let written = series(
        &m,
        "ndpipe_persist_rows_total{component=\"persist\",outcome=\"inserted\"}",
    );
    assert!(
        written.first().is_some_and(|n| *n > 0.0),
        "h4 wrote nothing:\n{m}"
    );
    let fenced = series(
        &m,
        "ndpipe_persist_rows_total{component=\"persist\",outcome=\"fenced\"}",
    );
    assert_eq!(
        fenced,
        [0.0],
        "h4's /metrics: no fenced count, or some:\n{m}"
    );
    let h4 = run.hosts.remove("h4").unwrap();
    let status = h4.stop();
    let log = run.sim.log("h4");
    assert!(status.success(), "h4: {status}\n{log}");
    // It committed what it had read before it left the group: nothing of it fenced.
    assert_eq!(summary_count(&log, "fenced"), 0, "{log}");
    run.wait_owned(&["h1", "h2", "h3"], "h1..h3 to take h4's share back");
    run.finish("a fourth host joins, then leaves");
}

/// PostgreSQL unreachable from one host only for 20 s: that host's batches wait (no
/// rebalance: it still heartbeats to Kafka) and are committed once its route is back; the
/// others go on meanwhile.
#[test]
fn the_database_unreachable_from_one_host_holds_only_that_host() {
    let Some(mut run) = Run::start(&["h1", "h2", "h3"]) else {
        return;
    };
    run.producer().wait_for(EVENTS / 10);
    run.fault_begins();
    run.sim.sim("block", &["h1", "pg"]);
    let committed = || {
        run.sim
            .count("SELECT coalesce(sum(next_offset), 0) FROM ndpipe_offsets")
    };
    let at_block = committed();
    std::thread::sleep(Duration::from_secs(20));
    // The others went on.
    assert!(
        committed() > at_block + 10_000,
        "the other hosts stalled too"
    );
    run.sim.sim("unblock", &["h1", "pg"]);
    run.finish("database unreachable from one host");
}
