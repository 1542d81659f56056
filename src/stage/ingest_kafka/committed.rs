//! Exactly-once bookkeeping (`--offsets-from`): reading Kafka's committed offsets for
//! `--offset stored`. Claiming partitions and reading the next offsets persist committed
//! is [`crate::postgres::Claims`], shared with `ingest-file --positions-from`.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::callbacks::Callbacks;

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
