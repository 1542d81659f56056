//! ingest-kafka's flags (clap), start positions, and the examples its `--help` ends with.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::cli::Common;
use crate::postgres::Table;

pub(super) const EXAMPLES: &str = "\
Examples:
  Everything in a topic, then stop (a backfill):
    ingest-kafka --brokers 127.0.0.1:9092 --topic orders \\
      --offset beginning --exit-at-end > orders.ndjson

  A consumer group into PostgreSQL, exactly once:
    export KAFKA_BROKERS=kafka1:9092,kafka2:9092
    export DATABASE_URL=postgres://app@db.internal/orders
    ingest-kafka --topic orders --group loader \\
      --offsets-from \"$DATABASE_URL\" \\
      | validate --schema order.schema.json \\
        --dead-letter dl.ndjson \\
      | persist --table orders --create-table

  kcat's JSON envelope; librdkafka settings passed through:
    ingest-kafka --brokers 127.0.0.1:9092 --topic orders \\
      --format kcat --exit-at-end \\
      -X client.id=audit -X fetch.wait.max.ms=100 \\
      > kcat.ndjson";

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

    /// Consumer group: the group's members share the partitions, moved incrementally
    /// when members come and go (cooperative-sticky; every member of a group must use
    /// the same `-X partition.assignment.strategy`). Without it, every partition of the
    /// topics is assigned to this process.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// A librdkafka setting, KEY=VALUE (kcat's -X); repeatable. Overrides ours. For SASL
    /// over TLS, as an example: -X security.protocol=SASL_SSL -X
    /// sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=U -X sasl.password=P.
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

pub(super) fn parse_start(s: &str) -> std::result::Result<Start, String> {
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

pub(super) fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
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
