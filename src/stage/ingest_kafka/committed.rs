//! Exactly-once bookkeeping in PostgreSQL (`--offsets-from`): claiming partitions with
//! a new epoch inside the rebalance callback, and reading the committed next offsets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::exit::{Error, Exit, Result};
use crate::postgres::{create_if_absent, message, offsets_ddl, ConnectSpec, Table};

use super::callbacks::Callbacks;

/// Exactly-once bookkeeping: the offsets table, reached from the consumer thread.
pub(super) struct OffsetsDb {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) client: tokio_postgres::Client,
    pub(super) table: String,
    pub(super) name: String,
}

impl OffsetsDb {
    pub(super) fn connect(
        url: &str,
        table: &Table,
        name: String,
        timeout: Duration,
    ) -> Result<OffsetsDb> {
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
    pub(super) fn claim(&self, topic: &str, partitions: &[i32]) -> Result<Vec<(Option<i64>, i64)>> {
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

/// Kafka's committed offsets of `q`. Right after a broker starts, or when a group's
/// coordinator moves, the coordinator answers "not coordinator" or "loading" for a
/// while (seen on a fresh Apache Kafka broker): those answers are retried until
/// `timeout`, like librdkafka retries its own requests.
pub(super) fn committed_offsets(
    consumer: &BaseConsumer<Callbacks>,
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
