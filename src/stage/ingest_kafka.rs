//! `ingest-kafka`: Kafka messages in, NDJSON events out, with their coordinates in the
//! metadata field.
//!
//! One thread polls a librdkafka consumer and copies the messages into batches; a second
//! one checks the payloads, adds the metadata field and sends the batches of events on,
//! in order. The reader side of back-pressure is the bounded channels (and librdkafka's
//! prefetch queue, kept small).
//!
//! Offsets, default mode: every batch carries one [`Ack`] that fires once all its lines
//! have been written (or dropped as dead letters by a later stage in the same process).
//! It stores the next offset of each partition the batch read; batches leave in order,
//! so what is stored is a contiguous watermark. Stored offsets are committed by
//! librdkafka every few seconds, on rebalance and at shutdown. That is "delivered to the
//! pipe".
//!
//! Exactly-once mode (`--offsets-from DATABASE_URL`): the offsets table that `persist`
//! writes in the same transaction as the rows is the source of truth. On every partition
//! assignment (inside the rebalance callback) each partition's row gets its `epoch`
//! incremented, and the partition starts at the stored `next_offset`; every event is
//! stamped with that epoch, so `persist` commits only while the epoch still matches
//! (an old owner is fenced).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Parser, ValueEnum};
use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::cli::Common;
use crate::event::{Ack, Batch, Event, Reject};
use crate::exit::{Error, Exit, Result};
use crate::json;
use crate::postgres::{create_if_absent, message, offsets_ddl, ConnectSpec, Table};
use crate::stage::{Ctx, Kind, Stage, Stats};

const EXAMPLES: &str = "\
Examples:
  Everything in a topic, then stop (a backfill):
    ingest-kafka --brokers 127.0.0.1:9092 --topic orders \\
      --offset beginning --exit-at-end > orders.ndjson

  A consumer group into PostgreSQL, exactly once:
    export KAFKA_BROKERS=kafka1:9092,kafka2:9092
    ingest-kafka --topic orders --group loader \\
      --offsets-from \"$DATABASE_URL\" \\
      | validate --schema order.schema.json \\
        --dead-letter dl.ndjson \\
      | persist --table orders

  kcat's JSON envelope; librdkafka settings passed through:
    ingest-kafka --brokers b:9093 --topic t --format kcat \\
      -X security.protocol=SASL_SSL \\
      -X sasl.mechanisms=SCRAM-SHA-512 \\
      -X sasl.username=u -X sasl.password=p";

/// Consume Kafka topics and write the messages to stdout as NDJSON events.
///
/// Each JSON-object payload becomes one line, with the metadata field holding where it came
/// from: {"source":"kafka", group, topic, partition, offset, key, timestamp, headers}.
/// Payloads that are not JSON objects are dead letters (or wrapped, with --wrap-non-json);
/// a null payload (tombstone) becomes an event {} with "tombstone":true in the metadata.
/// Without --offsets-from, an offset is committed once its line has been written to
/// stdout. With --offsets-from, the offsets persist writes in PostgreSQL are the truth:
/// `ingest-kafka --group g --offsets-from URL | … | persist` loses nothing and writes
/// nothing twice, even when a process is killed.
#[derive(Parser, Clone, Debug)]
#[command(name = "ingest-kafka", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Bootstrap brokers, host:port[,host:port...].
    #[arg(long, env = "KAFKA_BROKERS", value_name = "HOSTS")]
    pub brokers: String,

    /// Topic to read; repeatable.
    #[arg(long = "topic", value_name = "TOPIC", required = true)]
    pub topics: Vec<String>,

    /// Consumer group: the group's members share the partitions. Without it, every
    /// partition of the topics is assigned to this process.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// A librdkafka setting, KEY=VALUE (kcat's -X); repeatable. Overrides ours.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub settings: Vec<(String, String)>,

    /// Where to start in partitions with no stored position: beginning, end, stored (the
    /// group's committed offset, else beginning), an offset N, -N (N before the end), or
    /// @MS (the first message at or after unix time MS) [default: stored with --group,
    /// else beginning].
    #[arg(long, value_name = "WHERE", value_parser = parse_start)]
    pub offset: Option<Start>,

    /// Stop once every assigned partition has reached the end it had at start.
    #[arg(long)]
    pub exit_at_end: bool,

    /// Stop after N messages (dead letters included).
    #[arg(long, value_name = "N")]
    pub max_messages: Option<u64>,

    /// Output format: events (payload with the metadata field) or kcat's -J envelope.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Events)]
    pub format: Format,

    /// Wrap payloads that are not JSON objects as {"value": <JSON>} or {"value_text":
    /// "<text>"} (or {"value_base64": …} when not UTF-8) instead of dead-lettering them.
    #[arg(long)]
    pub wrap_non_json: bool,

    /// Do not add the metadata field.
    #[arg(long)]
    pub no_meta: bool,

    /// Exactly-once mode: start every assigned partition at the next_offset stored in
    /// this PostgreSQL database's offsets table (written by persist), and fence old
    /// owners with an epoch. Needs --group or --offsets-name.
    #[arg(long, value_name = "DATABASE_URL")]
    pub offsets_from: Option<String>,

    /// The offsets table in --offsets-from.
    #[arg(long, value_name = "NAME", default_value = "ndpipe_offsets", value_parser = Table::parse)]
    pub offsets_table: Table,

    /// The name offsets are kept under without --group (plain assignment).
    #[arg(long, value_name = "NAME")]
    pub offsets_name: Option<String>,

    /// How long to wait for the brokers (and the --offsets-from database) at start before
    /// giving up with exit 69. Later outages are waited out: librdkafka reconnects.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub common: Common,
}

/// Where to start reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    Stored,
    At(i64),
    FromEnd(i64),
    Time(i64),
}

fn parse_start(s: &str) -> std::result::Result<Start, String> {
    let bad = || format!("{s:?}: expected beginning, end, stored, N, -N or @UNIX_MS");
    Ok(match s {
        "beginning" => Start::Beginning,
        "end" => Start::End,
        "stored" => Start::Stored,
        _ if s.starts_with('@') => Start::Time(s[1..].parse().map_err(|_| bad())?),
        _ if s.starts_with('-') => Start::FromEnd(s[1..].parse().map_err(|_| bad())?),
        _ => Start::At(s.parse().map_err(|_| bad())?),
    })
}

fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The payload object with the metadata field added.
    Events,
    /// kcat -J: {"topic","partition","offset","tstype","ts","broker","headers","key","payload"}.
    Kcat,
}

/// Exactly-once bookkeeping: the offsets table, reached from the consumer thread.
struct OffsetsDb {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    table: String,
    name: String,
}

impl OffsetsDb {
    fn connect(url: &str, table: &Table, name: String, timeout: Duration) -> Result<OffsetsDb> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(Exit::Software, e))?;
        // The same resolution as persist's (libpq's environment, password file, TLS
        // modes): the offsets must live in the database persist writes to.
        let spec = ConnectSpec::from_url(url, timeout, "ndpipe ingest-kafka")
            .map_err(|e| Error::usage(format!("--offsets-from: {e}")))?;
        let client = rt
            .block_on(spec.connect())
            .map_err(|e| Error::unavailable(format!("--offsets-from: {}", spec.failure(&e))))?;
        let table = table.quoted();
        rt.block_on(create_if_absent(&client, &offsets_ddl(&table)))
            .map_err(|e| Error::unavailable(format!("--offsets-from: {}", message(&e))))?;
        Ok(OffsetsDb {
            rt,
            client,
            table,
            name,
        })
    }

    /// Takes ownership of partitions: bumps their epoch and returns
    /// (stored next_offset when there is one, new epoch) per partition.
    fn claim(&self, topic: &str, partitions: &[i32]) -> Result<Vec<(Option<i64>, i64)>> {
        let sql = format!(
            "INSERT INTO {t} AS o (\"group\", topic, \"partition\", next_offset, epoch) \
             SELECT $1, $2, p, -1, 1 FROM unnest($3::int[]) AS p \
             ON CONFLICT (\"group\", topic, \"partition\") \
             DO UPDATE SET epoch = coalesce(o.epoch, 0) + 1, updated_at = now() \
             RETURNING \"partition\", next_offset, epoch",
            t = self.table
        );
        let rows = self
            .rt
            .block_on(self.client.query(&sql, &[&self.name, &topic, &partitions]))
            .map_err(|e| {
                Error::new(
                    Exit::IoErr,
                    anyhow::anyhow!("--offsets-from: {}", message(&e)),
                )
            })?;
        let by: HashMap<i32, (i64, i64)> = rows
            .iter()
            .map(|r| (r.get::<_, i32>(0), (r.get(1), r.get(2))))
            .collect();
        Ok(partitions
            .iter()
            .map(|p| {
                let (next, epoch) = by[p];
                ((next >= 0).then_some(next), epoch)
            })
            .collect())
    }
}

/// Per-partition state the consumer thread and the rebalance callback share.
#[derive(Default)]
struct Assigned {
    /// topic → partition → epoch (exactly-once mode) and the end seen at assignment.
    parts: HashMap<String, HashMap<i32, PartState>>,
}

struct PartState {
    epoch: Option<i64>,
    end: i64,
    done: bool,
}

/// The consumer's context: resolves start positions inside the rebalance callback.
struct Ctx2 {
    start: Start,
    db: Option<OffsetsDb>,
    assigned: Arc<Mutex<Assigned>>,
    /// Bumped whenever the assignment changes.
    generation: AtomicU64,
    failed: Arc<Mutex<Option<String>>>,
    /// The brokers have answered once: from then on librdkafka's errors are shown.
    connected: AtomicBool,
    /// librdkafka errors already shown (their text up to the first digit): each kind once.
    shown: Mutex<std::collections::HashSet<String>>,
}

impl ClientContext for Ctx2 {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        // syslog levels: 0 emergency .. 3 error .. 7 debug.
        self.client_log((level as i32) <= 3, &format!("{fac}: {msg}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client_log(true, &format!("{error}: {reason}"));
    }
}

impl Ctx2 {
    /// librdkafka's own log lines. It retries a broker it cannot reach every second and says
    /// so each time (44 lines before the start-up check gave up): until the brokers have
    /// answered once none is shown, since that check says in one line what is unreachable;
    /// afterwards each kind of error is shown once, and repeats go to the debug level.
    fn client_log(&self, error: bool, msg: &str) {
        if !error || !self.connected.load(Ordering::Relaxed) {
            tracing::debug!("librdkafka: {msg}");
            return;
        }
        let kind: String = msg
            .chars()
            .take_while(|c| !c.is_ascii_digit())
            .take(80)
            .collect();
        if self.shown.lock().expect("not poisoned").insert(kind) {
            tracing::warn!("kafka: {msg} (repeats of this are logged at debug level)");
        } else {
            tracing::debug!("librdkafka: {msg}");
        }
    }
}

impl ConsumerContext for Ctx2 {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(e) = self.positions(consumer, tpl) {
                    *self.failed.lock().expect("not poisoned") = Some(e);
                    let _ = consumer.unassign();
                    return;
                }
                self.generation.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = consumer.assign(tpl) {
                    *self.failed.lock().expect("not poisoned") = Some(e.to_string());
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if self.db.is_none() {
                    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
                }
                let mut a = self.assigned.lock().expect("not poisoned");
                for e in tpl.elements() {
                    if let Some(t) = a.parts.get_mut(e.topic()) {
                        t.remove(&e.partition());
                    }
                }
                a.parts.retain(|_, t| !t.is_empty());
                self.generation.fetch_add(1, Ordering::Relaxed);
                let _ = consumer.unassign();
            }
            _ => {
                tracing::warn!("rebalance error: {err:?}");
                let _ = consumer.unassign();
            }
        }
    }
}

impl Ctx2 {
    /// Sets each partition's start offset in `tpl` and records its epoch and end.
    fn positions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> std::result::Result<(), String> {
        let mut by_topic: HashMap<String, Vec<i32>> = HashMap::new();
        for e in tpl.elements() {
            by_topic
                .entry(e.topic().to_owned())
                .or_default()
                .push(e.partition());
        }
        let timeout = Duration::from_secs(10);
        let mut assigned = self.assigned.lock().expect("not poisoned");
        for (topic, parts) in by_topic {
            let claimed = match &self.db {
                Some(db) => db.claim(&topic, &parts).map_err(|e| e.to_string())?,
                None => parts.iter().map(|_| (None, 0)).collect(),
            };
            // Kafka's committed offsets, for --offset stored: where it starts, so that
            // --exit-at-end knows whether a partition is at its end already.
            let committed = match (&self.db, &self.start) {
                (None, Start::Stored) => {
                    let mut q = TopicPartitionList::new();
                    for p in &parts {
                        q.add_partition(&topic, *p);
                    }
                    Some(
                        committed_offsets(consumer, &q, timeout)
                            .map_err(|e| format!("{topic}: committed offsets: {e}"))?,
                    )
                }
                _ => None,
            };
            for (p, (stored, epoch)) in parts.into_iter().zip(claimed) {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, timeout)
                    .map_err(|e| format!("{topic}/{p}: {e}"))?;
                let offset = match (stored, &self.start) {
                    (Some(n), _) => Offset::Offset(n),
                    (None, Start::Beginning) => Offset::Beginning,
                    (None, Start::End) => Offset::End,
                    (None, Start::Stored) => Offset::Stored,
                    (None, Start::At(n)) => Offset::Offset(*n),
                    (None, Start::FromEnd(n)) => Offset::Offset((high - n).max(low)),
                    (None, Start::Time(ms)) => {
                        let mut q = TopicPartitionList::new();
                        q.add_partition_offset(&topic, p, Offset::Offset(*ms))
                            .map_err(|e| e.to_string())?;
                        let found = consumer
                            .offsets_for_times(q, timeout)
                            .map_err(|e| format!("{topic}/{p}: {e}"))?;
                        found
                            .find_partition(&topic, p)
                            .map(|e| e.offset())
                            .unwrap_or(Offset::End)
                    }
                };
                tpl.set_partition_offset(&topic, p, offset)
                    .map_err(|e| e.to_string())?;
                let epoch = self.db.as_ref().map(|_| epoch);
                let from = match offset {
                    Offset::Offset(n) => n,
                    Offset::End => high,
                    Offset::Stored => match committed
                        .as_ref()
                        .and_then(|c| c.find_partition(&topic, p))
                        .map(|e| e.offset())
                    {
                        Some(Offset::Offset(n)) => n,
                        _ => low,
                    },
                    _ => low,
                };
                assigned.parts.entry(topic.clone()).or_default().insert(
                    p,
                    PartState {
                        epoch,
                        end: high,
                        done: from >= high,
                    },
                );
                tracing::info!(
                    "assigned {topic}/{p}: from {offset:?}, end {high}{}",
                    epoch.map(|e| format!(", epoch {e}")).unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

/// Kafka's committed offsets of `q`. Right after a broker starts, or when a group's
/// coordinator moves, the coordinator answers "not coordinator" or "loading" for a
/// while (seen on a fresh Apache Kafka broker): those answers are retried until
/// `timeout`, like librdkafka retries its own requests.
fn committed_offsets(
    consumer: &BaseConsumer<Ctx2>,
    q: &TopicPartitionList,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<TopicPartitionList> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = Instant::now() + timeout;
    loop {
        match consumer.committed_offsets(q.clone(), timeout) {
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        Code::NotCoordinator
                            | Code::CoordinatorLoadInProgress
                            | Code::CoordinatorNotAvailable
                    )
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Settings fixed at start.
pub struct Config {
    args: Args,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        if args.offsets_from.is_some() {
            if args.group.is_none() && args.offsets_name.is_none() {
                return Err(Error::usage(
                    "--offsets-from needs --group or --offsets-name",
                ));
            }
            if args.no_meta || args.format == Format::Kcat {
                return Err(Error::usage(
                    "--offsets-from needs the metadata field: not with --no-meta or --format kcat",
                ));
            }
        }
        Ok(Config { args: args.clone() })
    }
}

/// Events per batch sent on, at most; a batch also goes out after 50 ms.
const BATCH: usize = 1000;

/// The source: consumes until shutdown, `--exit-at-end` or `--max-messages`.
pub async fn run(config: Config, output: Sender<Batch>, ctx: Ctx) -> Result<()> {
    tokio::task::spawn_blocking(move || consume(config, output, ctx))
        .await
        .map_err(|e| Error::from(anyhow::anyhow!("consumer panicked: {e}")))?
}

fn consume(config: Config, output: Sender<Batch>, ctx: Ctx) -> Result<()> {
    let args = &config.args;
    let start = args.offset.clone().unwrap_or(if args.group.is_some() {
        Start::Stored
    } else {
        Start::Beginning
    });
    let name = args.group.clone().or_else(|| args.offsets_name.clone());
    let db = match &args.offsets_from {
        Some(url) => Some(OffsetsDb::connect(
            url,
            &args.offsets_table,
            name.clone().expect("checked"),
            args.connect_timeout,
        )?),
        None => None,
    };
    let exactly_once = db.is_some();
    let assigned = Arc::new(Mutex::new(Assigned::default()));
    let failed = Arc::new(Mutex::new(None));
    let context = Ctx2 {
        start,
        db,
        assigned: assigned.clone(),
        generation: AtomicU64::new(0),
        failed: failed.clone(),
        connected: AtomicBool::new(false),
        shown: Mutex::new(Default::default()),
    };
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &args.brokers)
        .set("enable.partition.eof", "false")
        // Bounded memory: librdkafka prefetches up to 64 MiB per consumer by default.
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.max.bytes", "16777216")
        // When that queue is full, fetching pauses for this long (1 s by default, which
        // left the consumer idle half of the time in bench/kafka.sh).
        .set("fetch.queue.backoff.ms", "10")
        .set("enable.auto.offset.store", "false")
        .set(
            "enable.auto.commit",
            if exactly_once { "false" } else { "true" },
        )
        .set("auto.offset.reset", "earliest")
        .set(
            "group.id",
            args.group.as_deref().unwrap_or("ndpipe-ingest-kafka"),
        );
    for (k, v) in &args.settings {
        cc.set(k, v);
    }
    let consumer: Arc<BaseConsumer<Ctx2>> = Arc::new(
        cc.create_with_context(context)
            .map_err(|e| Error::usage(format!("kafka settings: {e}")))?,
    );
    let topics: Vec<&str> = args.topics.iter().map(String::as_str).collect();
    // The brokers must answer at start (a metadata request), in group mode too.
    let md = consumer
        .fetch_metadata(None, args.connect_timeout)
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot reach the brokers {} within {}: {e}",
                args.brokers,
                humantime::format_duration(args.connect_timeout)
            ))
        })?;
    consumer.context().connected.store(true, Ordering::Relaxed);
    if args.group.is_some() {
        consumer
            .subscribe(&topics)
            .map_err(|e| Error::unavailable(format!("subscribe: {e}")))?;
    } else {
        let mut tpl = TopicPartitionList::new();
        for t in &topics {
            let Some(topic) = md.topics().iter().find(|x| x.name() == *t) else {
                return Err(Error::unavailable(format!("topic {t} does not exist")));
            };
            if topic.partitions().is_empty() {
                return Err(Error::unavailable(format!("topic {t} does not exist")));
            }
            for p in topic.partitions() {
                tpl.add_partition(t, p.id());
            }
        }
        // The same path as a group assignment: positions, epochs, ends.
        consumer.context().rebalance(
            &consumer,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS,
            &mut tpl,
        );
    }
    if let Some(e) = failed.lock().expect("not poisoned").take() {
        return Err(Error::unavailable(format!("assigning partitions: {e}")));
    }

    let meta_field = ctx.meta_field.clone();
    let names = Names {
        group: name.as_deref().map_or("null".to_owned(), json::quote),
        meta_key: json::quote(&meta_field),
        meta_field: meta_field.to_string(),
    };
    // Two threads: this one polls and copies each message's payload and metadata into a
    // batch; the other one checks the payloads and turns the batch into events. On two
    // cores the JSON check no longer holds up polling.
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<RawBatch>(2);
    std::thread::scope(|s| {
        let renderer = std::thread::Builder::new()
            .name("ingest-kafka-render".into())
            .spawn_scoped(s, || {
                render_batches(raw_rx, &consumer, &output, args, &names, &ctx)
            })
            .map_err(|e| Error::new(Exit::Software, anyhow::anyhow!("thread: {e}")))?;
        let polled = poll_batches(&consumer, args, &names, &ctx, &raw_tx);
        drop(raw_tx);
        let rendered = renderer
            .join()
            .map_err(|_| Error::from(anyhow::anyhow!("the render thread panicked")))?;
        polled.and(rendered)
    })?;
    drop(output);
    Ok(())
}

/// Polls messages into batches for [`render_batches`] until shutdown, `--exit-at-end`,
/// `--max-messages`, or the renderer stops (stdout closed).
fn poll_batches(
    consumer: &BaseConsumer<Ctx2>,
    args: &Args,
    names: &Names,
    ctx: &Ctx,
    raw_tx: &std::sync::mpsc::SyncSender<RawBatch>,
) -> Result<()> {
    let context = consumer.context();
    let exactly_once = context.db.is_some();
    let mut cursor: Option<Cursor> = None;
    let mut raw = RawBatch::default();
    let mut first_at = Instant::now();
    let mut count = 0u64;
    let mut stop = false;
    loop {
        if ctx.shutdown.is_triggered() || stop {
            break;
        }
        if let Some(e) = context.failed.lock().expect("not poisoned").take() {
            return Err(Error::new(Exit::IoErr, anyhow::anyhow!("rebalance: {e}")));
        }
        if args.exit_at_end && at_end(&context.assigned) {
            break;
        }
        // Take what is queued without waiting; when nothing is, the input is idle: send
        // the batch now, then wait for more.
        let mut polled = consumer.poll(Duration::ZERO);
        if polled.is_none() {
            if !raw.msgs.is_empty() && !send_raw(&mut raw, raw_tx) {
                break;
            }
            polled = consumer.poll(Duration::from_millis(50));
        }
        match polled {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!("kafka: {e}"),
            Some(Ok(msg)) => {
                if raw.msgs.is_empty() {
                    first_at = Instant::now();
                }
                let (partition, offset) = (msg.partition(), msg.offset());
                let generation = context.generation.load(Ordering::Relaxed);
                let cur = match &mut cursor {
                    Some(c) if c.fits(msg.topic(), partition, generation) => c,
                    slot => slot.insert(Cursor::new(
                        &context.assigned,
                        msg.topic(),
                        partition,
                        generation,
                    )),
                };
                if !cur.done && offset + 1 >= cur.end {
                    cur.mark_done(&context.assigned);
                }
                if !exactly_once {
                    raw.positions.note(&cur.topic, partition, offset);
                }
                raw.push(&msg, args, names, cur);
                count += 1;
                stop = args.max_messages.is_some_and(|m| count >= m);
            }
        }
        // Full, stopping, or the oldest message has waited 50 ms (checked every 64
        // messages: messages that keep coming fill a batch within milliseconds).
        let n = raw.msgs.len();
        if n > 0
            && (n >= BATCH
                || stop
                || (n % 64 == 0 && first_at.elapsed() >= Duration::from_millis(50)))
            && !send_raw(&mut raw, raw_tx)
        {
            break;
        }
    }
    if !raw.msgs.is_empty() {
        send_raw(&mut raw, raw_tx);
    }
    Ok(())
}

/// Sends the batch on; false when the renderer has stopped.
fn send_raw(raw: &mut RawBatch, raw_tx: &std::sync::mpsc::SyncSender<RawBatch>) -> bool {
    raw_tx.send(std::mem::take(raw)).is_ok()
}

/// Where the last message came from, with what the assignment says of that partition, so
/// that a run of messages from one partition looks the assignment up once.
struct Cursor {
    topic: Arc<str>,
    /// The topic as JSON text.
    topic_json: String,
    partition: i32,
    generation: u64,
    epoch: Option<i64>,
    end: i64,
    done: bool,
}

impl Cursor {
    fn new(assigned: &Mutex<Assigned>, topic: &str, partition: i32, generation: u64) -> Cursor {
        let a = assigned.lock().expect("not poisoned");
        let st = a.parts.get(topic).and_then(|t| t.get(&partition));
        Cursor {
            topic: Arc::from(topic),
            topic_json: json::quote(topic),
            partition,
            generation,
            epoch: st.and_then(|s| s.epoch),
            end: st.map_or(i64::MAX, |s| s.end),
            done: st.is_none_or(|s| s.done),
        }
    }

    fn fits(&self, topic: &str, partition: i32, generation: u64) -> bool {
        self.partition == partition && self.generation == generation && *self.topic == *topic
    }

    /// The partition has reached the end it had at assignment (for `--exit-at-end`).
    fn mark_done(&mut self, assigned: &Mutex<Assigned>) {
        self.done = true;
        let mut a = assigned.lock().expect("not poisoned");
        if let Some(st) = a
            .parts
            .get_mut(&*self.topic)
            .and_then(|t| t.get_mut(&self.partition))
        {
            st.done = true;
        }
    }
}

/// Messages copied out of librdkafka by the polling thread, for the rendering thread.
#[derive(Default)]
struct RawBatch {
    /// Payloads, back to back.
    bytes: Vec<u8>,
    /// Metadata objects, back to back.
    metas: String,
    msgs: Vec<RawMsg>,
    /// The offsets this batch read (default mode).
    positions: Positions,
}

/// One message of a [`RawBatch`]: `bytes[payload]` is the payload (`{}` for a tombstone;
/// the whole line with `--format kcat`), `metas[meta]` the metadata object (empty with
/// `--no-meta` or `--format kcat`).
struct RawMsg {
    payload: Range<usize>,
    meta: Range<usize>,
    /// Coordinates, for dead letters.
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

impl RawBatch {
    fn push<M: Message>(&mut self, msg: &M, args: &Args, names: &Names, cur: &Cursor) {
        let (start, meta_start) = (self.bytes.len(), self.metas.len());
        if args.format == Format::Kcat {
            self.bytes.extend_from_slice(kcat_line(msg).as_bytes());
        } else {
            self.bytes.extend_from_slice(msg.payload().unwrap_or(b"{}"));
        }
        if args.format == Format::Events && !args.no_meta {
            push_meta(&mut self.metas, msg, names, &cur.topic_json, cur.epoch);
        }
        self.msgs.push(RawMsg {
            payload: start..self.bytes.len(),
            meta: meta_start..self.metas.len(),
            topic: cur.topic.clone(),
            partition: msg.partition(),
            offset: msg.offset(),
        });
    }
}

/// Turns the polled batches into events, in order, and sends them on; rejects become dead
/// letters. Each batch's lines share one buffer.
fn render_batches(
    rx: std::sync::mpsc::Receiver<RawBatch>,
    consumer: &Arc<BaseConsumer<Ctx2>>,
    output: &Sender<Batch>,
    args: &Args,
    names: &Names,
    ctx: &Ctx,
) -> Result<()> {
    let source: Arc<str> = Arc::from("kafka");
    let extra = names.meta_key.len() + 2;
    // Offsets read and not yet handed to a sent batch's acknowledgement.
    let mut read = Positions::default();
    let counters = crate::metrics::StageCounters::new("ingest-kafka");
    for raw in rx {
        read.merge(&raw.positions);
        counters.received.increment(raw.msgs.len() as u64);
        let mut text =
            String::with_capacity(raw.bytes.len() + raw.metas.len() + raw.msgs.len() * extra);
        let mut spans = Vec::with_capacity(raw.msgs.len());
        for m in &raw.msgs {
            let body = &raw.bytes[m.payload.clone()];
            let at = text.len();
            match render(body, &raw.metas[m.meta.clone()], args, names, &mut text) {
                Ok(()) => spans.push(at..text.len()),
                Err(reject) => {
                    text.truncate(at);
                    let mut ev = Event::from_line(body.to_vec(), 0);
                    let r = Reject::new(
                        reject.kind,
                        format!(
                            "{}/{}@{}: {}",
                            m.topic, m.partition, m.offset, reject.reason
                        ),
                    );
                    ctx.dead.keep("ingest-kafka", &source, &mut ev, &r)?;
                    counters.rejected.increment(1);
                }
            }
        }
        if spans.is_empty() {
            continue; // all dead letters: the next batch stores their offsets
        }
        let ack = read.ack(consumer);
        counters.sent.increment(spans.len() as u64);
        let chunk = Arc::new(text);
        let events = spans
            .into_iter()
            .map(|r| {
                let mut e = Event::from_chunk(chunk.clone(), r.start, r.end, 0);
                e.ack = ack.clone();
                e
            })
            .collect();
        if output
            .blocking_send(Batch::new(source.clone(), events))
            .is_err()
        {
            // stdout closed: these lines were not written, so their offsets stay unstored.
            if let Some(a) = ack {
                a.disarm();
            }
            break;
        }
    }
    Ok(())
}

/// The last offset read per partition since the previous batch went out (default mode).
/// A batch carries one [`Ack`] that stores them all once every event of the batch is
/// written; batches are written in order, so the stored offsets stay contiguous.
/// Dead letters count as read: a batch stores the offsets of those before it too (if
/// none follows, they are read again after a restart and dead-lettered again). The
/// acknowledgement is made only for a batch that is sent, so batches dropped on an error
/// store nothing.
#[derive(Default)]
struct Positions(Vec<(String, i32, i64)>);

impl Positions {
    fn note(&mut self, topic: &str, partition: i32, offset: i64) {
        match self
            .0
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        {
            Some(e) => e.2 = e.2.max(offset),
            None => self.0.push((topic.to_owned(), partition, offset)),
        }
    }

    fn merge(&mut self, other: &Positions) {
        for (topic, partition, offset) in &other.0 {
            self.note(topic, *partition, *offset);
        }
    }

    /// The acknowledgement that stores the offsets noted since the last one (none in
    /// exactly-once mode, where persist's offsets table is the truth).
    fn ack(&mut self, consumer: &Arc<BaseConsumer<Ctx2>>) -> Option<Ack> {
        if self.0.is_empty() {
            return None;
        }
        let noted = std::mem::take(&mut self.0);
        let c = consumer.clone();
        Some(Ack::new(move || {
            // The next offset to read, as given (BaseConsumer::store_offset would add 1
            // itself). Fails only for partitions revoked meanwhile: their new owner reads
            // them again.
            let mut tpl = TopicPartitionList::with_capacity(noted.len());
            for (topic, partition, offset) in &noted {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1));
            }
            let _ = c.store_offsets(&tpl);
        }))
    }
}

/// Whether every assigned partition has reached the end it had at assignment.
fn at_end(assigned: &Mutex<Assigned>) -> bool {
    let a = assigned.lock().expect("not poisoned");
    !a.parts.is_empty() && a.parts.values().flat_map(|t| t.values()).all(|p| p.done)
}

/// Base64 (standard alphabet) of bytes that are not UTF-8.
fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// JSON texts that are the same for many messages, made once.
struct Names {
    /// The group (or offsets name) as JSON, or `null`.
    group: String,
    /// The metadata field's name, and as JSON.
    meta_field: String,
    meta_key: String,
}

/// Appends the output line of one message to `out`: `body` (the payload) with `meta` (its
/// metadata object, or empty for none) as the metadata field. Err is why the message is
/// a dead letter; `out` may then hold part of a line.
fn render(
    body: &[u8],
    meta: &str,
    args: &Args,
    names: &Names,
    out: &mut String,
) -> std::result::Result<(), Reject> {
    if args.format == Format::Kcat {
        out.push_str(std::str::from_utf8(body).expect("kcat lines are JSON text"));
        return Ok(());
    }
    // The common case in one pass: a JSON object without the metadata field.
    if !args.no_meta {
        if let Ok(text) = std::str::from_utf8(body) {
            if json::append_member(text, &names.meta_field, &names.meta_key, meta, out) {
                return Ok(());
            }
        }
    }
    // The general way: rejects with their reasons, --wrap-non-json, a payload that has
    // the metadata field already.
    let mut event = Event::from_line(body.to_vec(), 0);
    if let Err(reject) = event.decode() {
        if !args.wrap_non_json {
            return Err(reject);
        }
        let wrapped = match std::str::from_utf8(body) {
            Ok(s) if serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok() => {
                format!("{{\"value\":{}}}", s.trim())
            }
            Ok(s) => format!("{{\"value_text\":{}}}", json::quote(s)),
            Err(_) => format!("{{\"value_base64\":{}}}", json::quote(&b64(body))),
        };
        event = Event::from_line(wrapped.into_bytes(), 0);
        event.decode()?;
    }
    if !args.no_meta {
        event.set_field(&names.meta_field, meta)?;
    }
    out.push_str(event.text());
    Ok(())
}

/// Appends the metadata object of `msg` to `out`.
fn push_meta<M: Message>(
    out: &mut String,
    msg: &M,
    names: &Names,
    topic_json: &str,
    epoch: Option<i64>,
) {
    let mut num = itoa::Buffer::new();
    out.push_str("{\"source\":\"kafka\",\"group\":");
    out.push_str(&names.group);
    out.push_str(",\"topic\":");
    out.push_str(topic_json);
    out.push_str(",\"partition\":");
    out.push_str(num.format(msg.partition()));
    out.push_str(",\"offset\":");
    out.push_str(num.format(msg.offset()));
    if let Some(e) = epoch {
        out.push_str(",\"epoch\":");
        out.push_str(num.format(e));
    }
    out.push_str(",\"key\":");
    match msg.key() {
        None => out.push_str("null"),
        Some(k) => {
            if push_text_or_b64(out, k) {
                out.push_str(",\"key_encoding\":\"base64\"");
            }
        }
    }
    out.push_str(",\"timestamp\":");
    match msg.timestamp().to_millis() {
        Some(t) => out.push_str(num.format(t)),
        None => out.push_str("null"),
    }
    out.push_str(",\"headers\":[");
    if let Some(h) = msg.headers() {
        for (i, header) in h.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"key\":");
            json::push_quoted(out, header.key);
            match header.value {
                None => out.push_str(",\"value\":null"),
                Some(v) => {
                    out.push_str(",\"value\":");
                    if push_text_or_b64(out, v) {
                        out.push_str(",\"encoding\":\"base64\"");
                    }
                }
            }
            out.push('}');
        }
    }
    out.push(']');
    if msg.payload().is_none() {
        out.push_str(",\"tombstone\":true");
    }
    out.push('}');
}

/// Pushes `"text"` for UTF-8 bytes, else the quoted base64 text; true when base64.
fn push_text_or_b64(out: &mut String, bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            json::push_quoted(out, s);
            false
        }
        Err(_) => {
            json::push_quoted(out, &b64(bytes));
            true
        }
    }
}

/// kcat -J's envelope of a message.
fn kcat_line<M: Message>(msg: &M) -> String {
    let text = |b: Option<&[u8]>| {
        let mut s = String::new();
        match b {
            Some(b) => {
                push_text_or_b64(&mut s, b);
            }
            None => s.push_str("null"),
        }
        s
    };
    format!(
        "{{\"topic\":{},\"partition\":{},\"offset\":{},\"tstype\":\"{}\",\"ts\":{},\"broker\":-1,\"headers\":{},\"key\":{},\"payload\":{}}}",
        json::quote(msg.topic()),
        msg.partition(),
        msg.offset(),
        match msg.timestamp() {
            rdkafka::Timestamp::CreateTime(_) => "create",
            rdkafka::Timestamp::LogAppendTime(_) => "logappend",
            rdkafka::Timestamp::NotAvailable => "none",
        },
        msg.timestamp().to_millis().unwrap_or(-1),
        kcat_headers(msg),
        text(msg.key()),
        text(msg.payload()),
    )
}

fn kcat_headers<M: Message>(msg: &M) -> String {
    let mut s = String::from("[");
    if let Some(h) = msg.headers() {
        for (i, header) in h.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&json::quote(header.key));
            s.push(',');
            match header.value {
                None => s.push_str("null"),
                Some(v) => s.push_str(&json::quote(&String::from_utf8_lossy(v))),
            }
        }
    }
    s.push(']');
    s
}

impl Stage for Config {
    fn name(&self) -> &'static str {
        "ingest-kafka"
    }

    fn kind(&self) -> Kind {
        Kind::Source
    }

    fn acknowledges(&self) -> bool {
        true
    }

    fn run(
        self: Box<Self>,
        _input: Receiver<Batch>,
        output: Sender<Batch>,
        ctx: Ctx,
    ) -> BoxFuture<'static, Result<Stats>> {
        Box::pin(async move {
            run(*self, output, ctx).await?;
            Ok(Stats::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("-10"), Ok(Start::FromEnd(10)));
        assert_eq!(parse_start("42"), Ok(Start::At(42)));
        assert_eq!(
            parse_start("@1700000000000"),
            Ok(Start::Time(1_700_000_000_000))
        );
        assert!(parse_start("soon").is_err());
    }
}
