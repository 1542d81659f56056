//! The ceiling for bench/kafka.sh: a bare librdkafka consumer that prints each payload as
//! it is, with no metadata and no JSON check, as the Kafka issue describes its 1.1 M msg/s
//! reference: `kafka_bare BROKERS TOPIC COUNT > /dev/null`. It reads every partition of
//! the topic from the beginning, with ingest-kafka's fetch settings, until COUNT messages.

use std::io::Write;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = (&args[1], &args[2]);
    let count: u64 = args[3].parse().expect("count");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.max.bytes", "16777216")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut n = 0;
    while n < count {
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(msg)) => {
                out.write_all(msg.payload().unwrap_or_default())
                    .expect("stdout");
                out.write_all(b"\n").expect("stdout");
                n += 1;
            }
            Some(Err(e)) => eprintln!("kafka: {e}"),
            None => {}
        }
    }
    out.flush().expect("stdout");
}
