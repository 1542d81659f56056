//! ingest-http's flags (clap), and the examples its `--help` ends with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::cli::{parse_bytes, Common};

pub(super) const EXAMPLES: &str = "\
Examples:
  Serve on 127.0.0.1:8080 (the default), events to a file:
    ingest-http --listen 127.0.0.1:8080 > received.ndjson

  Into the database, with a token, answering once written:
    ingest-http --listen 127.0.0.1:8080 --ack written \\
      --auth-token-file token.txt \\
      --dead-letter rejects.ndjson \\
      | validate --schema event.schema.json \\
        --dead-letter rejects.ndjson \\
      | persist --table events --create-table
  then send events, from another terminal:
    curl --fail --data-binary @events.ndjson \\
      -H \"Authorization: Bearer $(cat token.txt)\" \\
      -H 'Content-Type: application/x-ndjson' \\
      http://127.0.0.1:8080/events";

/// Receive events over HTTP and write them to stdout as NDJSON, with back-pressure.
///
/// POST /events takes a JSON object, a JSON array of objects, or NDJSON
/// (Content-Type application/json or application/x-ndjson; Content-Encoding gzip allowed).
/// The answer is 202 {accepted, rejected, errors} once the events are queued (200 once
/// written, with --ack written). A request is queued whole or not at all: when the queue
/// has no room within --enqueue-timeout, it gets 503 with Retry-After and nothing of it is
/// kept. Malformed events are rejected one by one (and written to the dead-letter output);
/// --all-or-nothing refuses the whole request instead. GET /health, /ready and /metrics
/// (Prometheus) are for operators.
#[derive(Parser, Clone, Debug)]
#[command(name = "ingest-http", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the address is logged).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest request body accepted, as sent (larger: 413). K, M, G suffixes.
    #[arg(long, value_name = "BYTES", default_value = "10M", value_parser = parse_bytes)]
    pub max_body_bytes: u64,

    /// Largest body after gzip inflation (larger: 413).
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_bytes)]
    pub max_decompressed_bytes: u64,

    /// Events the queue holds between the server and stdout.
    #[arg(long, value_name = "EVENTS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,

    /// Bytes of events the queue holds between the server and stdout.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_bytes)]
    pub queue_bytes: u64,

    /// Memory for requests being received and parsed at once: their bytes as they arrive,
    /// inflated, and made into events. A request waits for room like it waits for queue
    /// room (then 503); one that could never fit gets 413.
    #[arg(long, value_name = "BYTES", default_value = "24M", value_parser = parse_bytes)]
    pub max_inflight_bytes: u64,

    /// The longest a request body may take to arrive (then 408).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// The slowest a request body may arrive, in bytes per second, after its first 5
    /// seconds (then 408): an idle or trickling body does not hold a connection for long.
    #[arg(long, value_name = "BYTES", default_value = "4K", value_parser = parse_bytes)]
    pub min_body_rate: u64,

    /// How long a request waits for room before it gets 503 with Retry-After.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub enqueue_timeout: Duration,

    /// Requests handled at once; more are shed at once with 503 and Retry-After.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_open_requests: usize,

    /// When to answer: once the events are queued (202), or once they are written to
    /// stdout (200).
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = AckMode::Queued)]
    pub ack: AckMode,

    /// Refuse the whole request (400) when any event in it is malformed.
    #[arg(long)]
    pub all_or_nothing: bool,

    /// Require `Authorization: Bearer TOKEN` (compared in constant time).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "NDPIPE_AUTH_TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<String>,

    /// Read the bearer token from a file (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,

    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub common: Common,
}

/// When a request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// Once the events are in the queue (202 Accepted).
    Queued,
    /// Once the events have been written to stdout (200 OK).
    Written,
}
