//! The polling thread: messages into raw batches (the messages themselves, for the
//! rendering thread), where each partition ends, and the offsets read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::mpsc::Sender;

use crate::event::{Ack, Batch};
use crate::exit::{Error, Exit, Result};
use crate::json;
use crate::postgres::Claims;
use crate::stage::Ctx;

use super::callbacks::{Assigned, Callbacks};
use super::render::{render_batches, Names};
use super::{Config, Start};

/// Events per batch sent on, at most; a batch also goes out after 50 ms.
pub(super) const BATCH: usize = 1000;

/// How long a group member may wait for its first assignment before it says why. A
/// group's first join takes about 3 s (the broker's `group.initial.rebalance.delay.ms`);
/// a longer wait is almost always a previous member, killed without leaving, whose
/// session must expire before the group can rebalance.
const GROUP_NOTE_AFTER: Duration = Duration::from_secs(5);

/// librdkafka's `session.timeout.ms` when not set with `-X`.
const DEFAULT_SESSION_MS: u64 = 45_000;

pub(super) fn consume(config: Config, output: Sender<Batch>, ctx: Ctx) -> Result<()> {
    let cfg = &config;
    let start = cfg.offset.clone().unwrap_or(if cfg.group.is_some() {
        Start::Stored
    } else {
        Start::Beginning
    });
    let name = cfg.group.clone().or_else(|| cfg.offsets_name.clone());
    let db = match &cfg.offsets_from {
        Some(url) => Some((
            Claims::connect(
                url,
                &cfg.offsets_table,
                "--offsets-from",
                "ndpipe ingest-kafka",
                cfg.connect_timeout,
            )?,
            name.clone().expect("checked"),
        )),
        None => None,
    };
    let exactly_once = db.is_some();
    let assigned = Arc::new(Mutex::new(Assigned::default()));
    let failed = Arc::new(Mutex::new(None));
    let context = Callbacks {
        start,
        db,
        assigned: assigned.clone(),
        generation: AtomicU64::new(0),
        failed: failed.clone(),
        connected: AtomicBool::new(false),
        shown: Mutex::new(Default::default()),
        rebalances: ctx.tally.figure(&super::callbacks::REBALANCES),
        lag_shown: Mutex::new(Default::default()),
    };
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
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
            cfg.group.as_deref().unwrap_or("ndpipe-ingest-kafka"),
        );
    if cfg.group.is_some() {
        // Incremental rebalancing: when a member comes or goes only the partitions that
        // move change hands; the others keep their owner and epoch, so their batches in
        // flight are not fenced and read again (librdkafka's default, range/roundrobin,
        // takes every partition from every member on each rebalance: bench/scale.sh).
        // Every member of a group must use the same protocol; -X overrides it.
        cc.set("partition.assignment.strategy", "cooperative-sticky")
            // A member learns of a rebalance at its next heartbeat, and an incremental
            // one takes two rounds (give up what moves, then take it): every second,
            // not librdkafka's 3 s, so that a moved partition waits about 1 s for its new
            // owner, and a session timeout of a few seconds still sees several heartbeats.
            .set("heartbeat.interval.ms", "1000");
    }
    for (k, v) in &cfg.settings {
        cc.set(k, v);
    }
    let consumer: Arc<BaseConsumer<Callbacks>> = Arc::new(
        cc.create_with_context(context)
            .map_err(|e| Error::usage(format!("kafka settings: {e}")))?,
    );
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    // The brokers must answer at start (a metadata request), in group mode too.
    let md = consumer
        .fetch_metadata(None, cfg.connect_timeout)
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot reach the brokers {} within {}: {e}",
                cfg.brokers,
                humantime::format_duration(cfg.connect_timeout)
            ))
        })?;
    consumer.context().connected.store(true, Ordering::Relaxed);
    if cfg.group.is_some() {
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
    // Two threads: this one polls the messages into batches; the other one reads them,
    // checks the payloads and turns each batch into events. On two cores that work no
    // longer holds up polling.
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<RawBatch<'_>>(2);
    std::thread::scope(|s| {
        let renderer = std::thread::Builder::new()
            .name("ingest-kafka-render".into())
            .spawn_scoped(s, || {
                render_batches(raw_rx, &consumer, &output, cfg, &names, &ctx)
            })
            .map_err(|e| Error::new(Exit::Software, anyhow::anyhow!("thread: {e}")))?;
        let polled = poll_batches(&consumer, cfg, &ctx, &raw_tx);
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
pub(super) fn poll_batches<'c>(
    consumer: &'c BaseConsumer<Callbacks>,
    cfg: &Config,
    ctx: &Ctx,
    raw_tx: &std::sync::mpsc::SyncSender<RawBatch<'c>>,
) -> Result<()> {
    let context = consumer.context();
    let exactly_once = context.db.is_some();
    let mut cursor: Option<Cursor> = None;
    let mut raw = RawBatch::default();
    let mut first_at = Instant::now();
    let mut count = 0u64;
    let mut stop = false;
    let subscribed = Instant::now();
    let mut waiting_noted = cfg.group.is_none();
    // Whether to look at the assignment's state (a failed rebalance; every partition at
    // its end): when idle, after a partition reached its end, and every
    // [`STATE_EVERY`] messages, rather than taking its locks for every message.
    let mut look = true;
    // With one topic named (not a pattern), every message is of that topic: a message
    // fits the cursor by its partition alone, without reading its topic's name.
    let one_topic = cfg.topics.len() == 1 && !cfg.topics[0].starts_with('^');
    loop {
        if stop {
            break;
        }
        if !waiting_noted
            && subscribed.elapsed() >= GROUP_NOTE_AFTER
            && context.generation.load(Ordering::Relaxed) == 0
        {
            waiting_noted = true;
            note_group_wait(cfg, subscribed.elapsed());
        }
        if look || count.is_multiple_of(STATE_EVERY) {
            look = false;
            if ctx.shutdown.is_triggered() {
                break;
            }
            if let Some(e) = context.failed.lock().expect("not poisoned").take() {
                return Err(Error::new(Exit::IoErr, anyhow::anyhow!("rebalance: {e}")));
            }
            if cfg.exit_at_end && at_end(&context.assigned) {
                break;
            }
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
            None | Some(Err(KafkaError::PartitionEOF(_))) => look = true,
            Some(Err(e)) => {
                look = true;
                tracing::warn!("kafka: {e}");
            }
            Some(Ok(msg)) => {
                if raw.msgs.is_empty() {
                    first_at = Instant::now();
                }
                let (partition, offset) = (msg.partition(), msg.offset());
                let generation = context.generation.load(Ordering::Relaxed);
                let cur = match &mut cursor {
                    Some(c)
                        if c.partition == partition
                            && c.generation == generation
                            && (one_topic || *c.run.topic == *msg.topic()) =>
                    {
                        c
                    }
                    slot => slot.insert(Cursor::new(
                        &context.assigned,
                        msg.topic(),
                        partition,
                        generation,
                    )),
                };
                if !cur.done && offset + 1 >= cur.end {
                    cur.mark_done(&context.assigned);
                    look = true;
                }
                if !exactly_once {
                    raw.positions.note(&cur.run.topic, partition, offset);
                }
                raw.push(msg, cur);
                count += 1;
                stop = cfg.max_messages.is_some_and(|m| count >= m);
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

/// How many messages may pass between two looks at the assignment's state (its locks)
/// and at the shutdown signal: a failed rebalance or a signal is seen at most this many
/// messages late (microseconds at full speed; an idle input looks at every poll).
const STATE_EVERY: u64 = 64;

/// Says why no partition has come yet: the group waits for a previous member's session
/// to expire (after a kill -9 it never said goodbye), up to `session.timeout.ms`.
fn note_group_wait(cfg: &Config, waited: Duration) {
    let session = cfg
        .settings
        .iter()
        .rev()
        .find(|(k, _)| k == "session.timeout.ms")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(DEFAULT_SESSION_MS);
    let left = Duration::from_millis(session).saturating_sub(waited);
    tracing::info!(
        "waiting for the group {} (a previous member's session expires in {} at most: \
         session.timeout.ms {session})",
        cfg.group.as_deref().unwrap_or_default(),
        humantime::format_duration(Duration::from_secs(left.as_secs()))
    );
}

/// Sends the batch on; false when the renderer has stopped.
pub(super) fn send_raw<'c>(
    raw: &mut RawBatch<'c>,
    raw_tx: &std::sync::mpsc::SyncSender<RawBatch<'c>>,
) -> bool {
    raw_tx.send(std::mem::take(raw)).is_ok()
}

/// Where the last message came from, with what the assignment says of that partition, so
/// that a run of messages from one partition looks the assignment up once.
pub(super) struct Cursor {
    /// The partition's topic, and what the metadata of its messages says of it.
    pub(super) run: Arc<Run>,
    pub(super) partition: i32,
    pub(super) generation: u64,
    pub(super) end: i64,
    pub(super) done: bool,
}

/// What the messages of one partition's run share: the topic (as text, and as JSON) and
/// the leader epoch of the assignment.
pub(super) struct Run {
    pub(super) topic: Arc<str>,
    pub(super) topic_json: String,
    pub(super) epoch: Option<i64>,
}

impl Cursor {
    pub(super) fn new(
        assigned: &Mutex<Assigned>,
        topic: &str,
        partition: i32,
        generation: u64,
    ) -> Cursor {
        let a = assigned.lock().expect("not poisoned");
        let st = a.parts.get(topic).and_then(|t| t.get(&partition));
        Cursor {
            run: Arc::new(Run {
                topic: Arc::from(topic),
                topic_json: json::quote(topic),
                epoch: st.and_then(|s| s.epoch),
            }),
            partition,
            generation,
            end: st.map_or(i64::MAX, |s| s.end),
            done: st.is_none_or(|s| s.done),
        }
    }

    /// The partition has reached the end it had at assignment (for `--exit-at-end`).
    pub(super) fn mark_done(&mut self, assigned: &Mutex<Assigned>) {
        self.done = true;
        let mut a = assigned.lock().expect("not poisoned");
        if let Some(st) = a
            .parts
            .get_mut(&*self.run.topic)
            .and_then(|t| t.get_mut(&self.partition))
        {
            st.done = true;
        }
    }
}

/// Messages polled, for the rendering thread, which reads their payloads, keys and
/// headers where librdkafka keeps them, writes their lines and metadata objects, and
/// lets them go. The polling thread, which librdkafka's queue waits on, does nothing more
/// per message than note where it came from: copying the payload, parsing the headers
/// (librdkafka parses a record's header section at each ask, a buffer allocated and freed
/// even when it holds none) and destroying the message were 22 % of its time in `perf`.
/// The messages hold their fetch buffers meanwhile: a few batches' worth.
#[derive(Default)]
pub(super) struct RawBatch<'c> {
    pub(super) msgs: Vec<RawMsg<'c>>,
    /// The bytes of its payloads and keys.
    pub(super) bytes: u64,
    /// The runs of its messages ([`RawMsg::run`] indexes it): one entry per run of
    /// messages from one partition, so that a message costs no reference count.
    pub(super) runs: Vec<Arc<Run>>,
    /// The offsets this batch read (default mode).
    pub(super) positions: Positions,
    /// When traces are exported: when its first message was read, and the W3C
    /// `traceparent` headers of its messages (the first continued, the rest linked).
    pub(super) started: Option<std::time::SystemTime>,
    pub(super) parents: Vec<opentelemetry::trace::SpanContext>,
}

/// One message of a [`RawBatch`], with its run (an index into [`RawBatch::runs`]).
pub(super) struct RawMsg<'c> {
    pub(super) msg: BorrowedMessage<'c>,
    pub(super) run: u32,
}

impl<'c> RawBatch<'c> {
    pub(super) fn push(&mut self, msg: BorrowedMessage<'c>, cur: &Cursor) {
        if crate::trace::enabled() {
            self.traced(&msg);
        }
        if self.runs.last().is_none_or(|r| !Arc::ptr_eq(r, &cur.run)) {
            self.runs.push(cur.run.clone());
        }
        self.bytes += (msg.payload_len() + msg.key().map_or(0, <[u8]>::len)) as u64;
        self.msgs.push(RawMsg {
            msg,
            run: (self.runs.len() - 1) as u32,
        });
    }
}

impl RawBatch<'_> {
    fn traced<M: Message>(&mut self, msg: &M) {
        use rdkafka::message::Headers;
        self.started.get_or_insert_with(std::time::SystemTime::now);
        if self.parents.len() > crate::trace::MAX_LINKS {
            return;
        }
        let Some(headers) = msg.headers() else { return };
        let parent = headers
            .iter()
            .find(|h| h.key == "traceparent")
            .and_then(|h| std::str::from_utf8(h.value?).ok())
            .and_then(crate::trace::parent);
        self.parents.extend(parent);
    }
}

/// The last offset read per partition since the previous batch went out (default mode).
/// A batch carries one [`Ack`] that stores them all once every event of the batch is
/// written; batches are written in order, so the stored offsets stay contiguous.
/// Dead letters count as read: a batch stores the offsets of those before it too (if
/// none follows, they are read again after a restart and dead-lettered again). The
/// acknowledgement is made only for a batch that is sent, so batches dropped on an error
/// store nothing.
#[derive(Default)]
pub(super) struct Positions(Vec<(String, i32, i64)>);

impl Positions {
    pub(super) fn note(&mut self, topic: &str, partition: i32, offset: i64) {
        match self
            .0
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        {
            Some(e) => e.2 = e.2.max(offset),
            None => self.0.push((topic.to_owned(), partition, offset)),
        }
    }

    pub(super) fn merge(&mut self, other: &Positions) {
        for (topic, partition, offset) in &other.0 {
            self.note(topic, *partition, *offset);
        }
    }

    /// The acknowledgement that stores the offsets noted since the last one (none in
    /// exactly-once mode, where persist's offsets table is the truth).
    pub(super) fn ack(&mut self, consumer: &Arc<BaseConsumer<Callbacks>>) -> Option<Ack> {
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
pub(super) fn at_end(assigned: &Mutex<Assigned>) -> bool {
    let a = assigned.lock().expect("not poisoned");
    !a.parts.is_empty() && a.parts.values().flat_map(|t| t.values()).all(|p| p.done)
}
