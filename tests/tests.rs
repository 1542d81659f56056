//! Integration tests: the real binaries, run the way a user runs them.
//!
//! - `util`: temp dirs, running a command with stdin, the event generator.
//! - `framing`: NDJSON framing and the conventions every command shares — bad input of
//!   every kind, BOM/CRLF, long lines, dead-letter records, exit codes, `| head -1`,
//!   idle flushing, signals.
//! - `validate`: schemas (draft 2020-12 and 7), quick rules, the metadata field, order
//!   with several workers.
//! - `enrich`: --set, --timestamp, --id, --lookup, --jq and its split stamps, order.
//! - `enrich_http`: `enrich --http` against a service the test starts: answers in order
//!   with 64 calls out, templates, timeouts and the circuit breaker, retries, failure
//!   modes, the cache and single flight, adaptive concurrency, `/metrics` and `/ready`.
//! - `enrich_sql`: `enrich --sql` against PostgreSQL: rows as JSON, not found, refused
//!   queries, `--explain`.
//! - `ingest_file`: files read once and followed: appends, partial lines, rotation,
//!   copytruncate, truncation, inode reuse, equal first lines, new and growing files,
//!   compressed files, bad input, the checkpoint file across kill -9.
//! - `ingest_http`: the HTTP server: body forms, status codes, back-pressure with a stalled
//!   stdout, `--ack written`, shutdown under load.
//! - `ingest_kafka`: Apache Kafka (`scripts/kafka-test-broker`): round trip with
//!   --exit-at-end, keys, headers, tombstones, bad payloads, kcat's envelope, exactly-once
//!   into PostgreSQL with kill -9 of either command or of the broker, two members of one
//!   group taking over each other's partitions with epoch fencing.
//! - `cluster`: several `pipeline`s in one consumer group on simulated hosts
//!   (`scripts/cluster-sim`, network namespaces): a link cut, a host frozen, killed,
//!   joining and leaving, the database cut off from one host; rows exact every time.
//! - `persist`: PostgreSQL and SQLite round trips, replays, versions, bad rows, offsets
//!   and fencing, a database restart mid-run, table names.
//! - `chain`: the stage contract in one process — validate and enrich chained by the
//!   wiring, byte for byte the shell pipe's output and dead letters.
//! - `pipeline`: the shell pipe's text in one process: the same stdout, dead letters and
//!   rows as the shell pipe (SQLite and PostgreSQL), bad texts refused with 64 before
//!   anything runs, `--explain`, `--file`, full channels blocking or dropping.
//! - `counts`: one count per stage: the stand-alone summaries, `pipeline`'s summary and
//!   `/metrics` say the same numbers, with rejects, drops and persist's outcomes; the
//!   sources count what they consumed.
//! - `faults`: the standing fault suite: signals to a whole pipe, a closed or stalled
//!   stdout, a database stopped mid-run, ingest-file's exactly-once pipe (and pipeline)
//!   killed while files rotate, SIGTERM while 64 lookups hang, enrich --sql's database
//!   restarted; nothing acknowledged may be lost.
//! - `terminal`: what a terminal shows (captured with `script`): one progress line per
//!   pipe, summaries, `NO_COLOR`.
//! - `prometheus`: a real Prometheus scrapes a running `pipeline`; every query of the
//!   shipped Grafana dashboard returns data.
//! - `tap`: `GET /tap` on a running `pipeline` and command: the events after a stage,
//!   sampled and limited; a client that stops reading is cut off, the run goes on.
//! - `traces`: OTLP traces into a receiver the test starts: one span per batch per stage,
//!   one trace per batch in `pipeline`, a request's traceparent continued, sampling.
//! - `readme`: every shell block of README.md, run as written; `scripts/demo`.
//! - `docs`: `--help` everywhere; committed man pages and completions are current.

mod util;

mod chain;
mod cluster;
mod counts;
mod docs;
mod enrich;
mod enrich_http;
mod enrich_sql;
mod faults;
mod framing;
mod ingest_file;
mod ingest_http;
mod ingest_kafka;
mod persist;
mod pipeline;
mod prometheus;
mod readme;
mod tap;
mod terminal;
mod traces;
mod validate;
