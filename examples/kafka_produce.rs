//! Produces NDJSON lines from stdin to a topic, keyed by their `id`, for bench/kafka.sh:
//! `kafka_produce BROKERS TOPIC PARTITIONS < events.ndjson` (creates the topic).

use std::io::BufRead;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = (&args[1], &args[2]);
    let partitions: i32 = args[3].parse().expect("partitions");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    rt.block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("create topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "100")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        let key = v["id"].as_str().unwrap_or_default().to_owned();
        let mut rec = BaseRecord::to(topic).key(&key).payload(&line);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(5));
                    rec = r;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}
