//! librdkafka's callbacks: rebalances (assignment, start positions, epochs), logs and
//! errors (quiet until connected), and what the poller and renderer share about the
//! assignment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use crate::postgres::Claims;

use super::committed::committed_offsets;
use super::Start;

/// Per-partition state the consumer thread and the rebalance callback share.
#[derive(Default)]
pub(super) struct Assigned {
    /// topic → partition → epoch (exactly-once mode) and the end seen at assignment.
    pub(super) parts: HashMap<String, HashMap<i32, PartState>>,
}

pub(super) struct PartState {
    pub(super) epoch: Option<i64>,
    pub(super) end: i64,
    pub(super) done: bool,
}

/// The consumer's context: resolves start positions inside the rebalance callback.
pub(super) struct Callbacks {
    pub(super) start: Start,
    /// Exactly-once mode: the offsets table, and the scope claimed in it (the group or
    /// offsets name).
    pub(super) db: Option<(Claims, String)>,
    pub(super) assigned: Arc<Mutex<Assigned>>,
    /// Bumped whenever the assignment changes.
    pub(super) generation: AtomicU64,
    pub(super) failed: Arc<Mutex<Option<String>>>,
    /// The brokers have answered once: from then on librdkafka's errors are shown.
    pub(super) connected: AtomicBool,
    /// librdkafka errors already shown (their text up to the first digit): each kind once.
    pub(super) shown: Mutex<std::collections::HashSet<String>>,
    /// Assignments received ([`REBALANCES`], through the stage's tally).
    pub(super) rebalances: Arc<std::sync::atomic::AtomicU64>,
    /// The (topic, partition) lag gauges set by the last statistics.
    pub(super) lag_shown: Mutex<std::collections::HashSet<(String, i32)>>,
}

/// Partition assignments this consumer received: its first join and every rebalance that
/// followed (`ndpipe_kafka_rebalances_total` on `/metrics`; not in the summary).
pub static REBALANCES: crate::tally::Figure = crate::tally::Figure {
    series: "ndpipe_kafka_rebalances_total",
    label: None,
    kind: crate::tally::FigureKind::Counter,
    summary: None,
};

impl ClientContext for Callbacks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        // syslog levels: 0 emergency .. 3 error .. 7 debug.
        self.client_log((level as i32) <= 3, &format!("{fac}: {msg}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client_log(true, &format!("{error}: {reason}"));
    }

    /// librdkafka's statistics (only with `statistics.interval.ms`, which `pipeline
    /// --metrics-listen` sets): the lag of every assigned partition, under Vector's name.
    /// A partition that moved to another member of the group reads 0 here from then on,
    /// so that the lag summed over the group's members counts each partition once.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let gauge = |topic: &str, partition: i32| {
            metrics::gauge!(
                "kafka_consumer_lag",
                "topic_id" => topic.to_owned(),
                "partition_id" => partition.to_string()
            )
        };
        let mut now = std::collections::HashSet::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *partition < 0 || !p.desired {
                    continue;
                }
                gauge(topic, *partition).set(p.consumer_lag.max(0) as f64);
                now.insert((topic.clone(), *partition));
            }
        }
        let mut shown = self.lag_shown.lock().expect("not poisoned");
        for (topic, partition) in shown.difference(&now) {
            gauge(topic, *partition).set(0.0);
        }
        *shown = now;
    }
}

impl Callbacks {
    /// librdkafka's own log lines. It retries a broker it cannot reach every second and says
    /// so each time (44 lines before the start-up check gave up): until the brokers have
    /// answered once none is shown, since that check says in one line what is unreachable;
    /// afterwards each kind of error is shown once, and repeats go to the debug level.
    pub(super) fn client_log(&self, error: bool, msg: &str) {
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

impl ConsumerContext for Callbacks {
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
                self.rebalances.fetch_add(1, Ordering::Relaxed);
                let assigned = if incremental(consumer) {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    *self.failed.lock().expect("not poisoned") = Some(e.to_string());
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if self.db.is_none() {
                    let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
                }
                let lost = consumer.assignment_lost();
                let mut a = self.assigned.lock().expect("not poisoned");
                for e in tpl.elements() {
                    if let Some(t) = a.parts.get_mut(e.topic()) {
                        t.remove(&e.partition());
                    }
                    tracing::info!(
                        "revoked {}/{}{}",
                        e.topic(),
                        e.partition(),
                        if lost {
                            " (lost: this member's session with the group expired)"
                        } else {
                            ""
                        }
                    );
                }
                a.parts.retain(|_, t| !t.is_empty());
                self.generation.fetch_add(1, Ordering::Relaxed);
                if incremental(consumer) {
                    let _ = consumer.incremental_unassign(tpl);
                } else {
                    let _ = consumer.unassign();
                }
            }
            _ => {
                tracing::warn!("rebalance error: {err:?}");
                let _ = consumer.unassign();
            }
        }
    }
}

/// Does the group rebalance incrementally (cooperative-sticky: an assignment adds
/// partitions, a revocation removes only those listed), or eagerly (each one replaces all)?
fn incremental(consumer: &BaseConsumer<Callbacks>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

impl Callbacks {
    /// Sets each partition's start offset in `tpl` and records its epoch and end.
    pub(super) fn positions(
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
                Some((db, scope)) => db.claim(scope, &topic, &parts).map_err(|e| e.to_string())?,
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
