//! Produces NDJSON lines from stdin to a topic, keyed by their `id`, for bench/kafka.sh,
//! bench/scale.sh and the cluster tests:
//! `kafka_produce BROKERS TOPIC PARTITIONS [RATE] < events.ndjson` (creates the topic
//! when it is missing). With RATE (events a second) the lines go out at that steady
//! pace, each sent within 5 ms; without it, as fast as the broker takes them. Exits 0
//! once the broker has acknowledged every line.

use std::io::BufRead;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = (&args[1], &args[2]);
    let partitions: i32 = args[3].parse().expect("partitions");
    let rate: Option<f64> = args.get(4).map(|r| r.parse().expect("rate"));
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
    // Paced: a steady trickle, as a live source; else large batches, as a backfill.
    let linger = if rate.is_some() { "5" } else { "100" };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger)
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let start = Instant::now();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.expect("stdin");
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            // poll returns early when a delivery report comes in: wait until due.
            while let Some(wait) = due.checked_duration_since(Instant::now()) {
                producer.poll(wait);
            }
        }
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
