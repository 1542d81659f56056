//! ndpipe: composable Unix-style commands for NDJSON event pipelines.
//!
//! Every command is a *stage* behind one contract ([`stage::Stage`]): built from a plain
//! config, run over bounded channels of [`event::Batch`]es with a context (dead letters,
//! shutdown, metadata field, progress line, and the tally it counts into), returning how
//! it ended ([`stage::Ended`]). The binaries in `src/bin` only call [`commands::main`]
//! with their row of the one table ([`commands::ALL`]), or [`pipeline::main`]; the shell
//! form of a command is the chain `[reader, stage, writer]` run by [`wire`], which
//! `pipeline` uses for `[source, stage, …, sink]`.
//!
//! Module map (dependencies point down the list, never up):
//!
//! - [`pipeline`]: a pipe text run in one process: `[hub, stage, …, writer]`, planned
//!   from the command table, naming no command.
//! - [`commands`]: the command table: each command's row (name, kind, clap definition,
//!   `Args → Config` step, what it explains and connects to) and the shell form.
//! - [`shell`]: the shell form: `[reader, stage, writer]`, summary and exit code.
//! - [`wire`]: runs a chain of stages over bounded channels, and decides how it ends.
//! - [`stage`]: the contract and the stages — sources ([`stage::ingest_file`],
//!   [`stage::ingest_http`], [`stage::ingest_kafka`], the NDJSON reader in
//!   [`stage::stdio`]), filters
//!   ([`stage::validate`], [`stage::enrich`]) and sinks ([`stage::persist`], the NDJSON
//!   writer) — and the ordered worker pool they share.
//! - [`postgres`]: reaching PostgreSQL as libpq does (URL, `PG*` variables, password
//!   file, TLS modes), identifiers and shared statements, the resuming sources' claims
//!   on the offsets table; used by persist, ingest-kafka and ingest-file.
//! - [`cli`]: flags shared by every command (flattened into each stage's `Args`), argument
//!   parsing, logging, the runtime and exit mapping.
//! - [`ndjson`]: line framing (line numbers, BOM, CRLF, length limit, gzip and zstd) and
//!   the writer (block-buffered, idle flush, closed-pipe aware).
//! - [`top`]: the live terminal view of a run, drawn from its `/metrics`
//!   (`pipeline --top`, `pipeline top ADDR`).
//! - [`operator`]: the operator endpoint (`/health`, `/ready` from named checks,
//!   `/metrics`, `/tap`) that ingest-http serves, and `--metrics-listen` of every command and of
//!   `pipeline` ([`operator::watch`]: channels, databases and the stages' checks).
//! - [`progress`], [`metrics`]: the progress line and log writer; the metrics facade every
//!   stage reports into.
//! - [`trace`]: OTLP traces: a span per batch per stage, a batch's spans in one trace.
//! - [`tally`]: counting once: each stage's events in, out, rejected and dropped (and
//!   its own figures, such as ingest-file's rotations), which the summaries, progress
//!   lines and `/metrics` all read.
//! - [`tap`]: the events leaving a stage of a running chain, for `GET /tap`; the wiring
//!   offers every batch to its stage's point.
//! - [`position`]: source positions (kind, stream, partition, offset, epoch), written
//!   into and read from the metadata field; made by sources, committed by sinks, owned by
//!   neither.
//! - [`dead_letter`]: the dead-letter record format and its `O_APPEND` writer.
//! - [`redact`]: passwords and tokens masked wherever words are echoed.
//! - [`jq`]: jq programs, run in helper processes that a runaway program cannot take
//!   down with it.
//! - [`event`]: events, batches, acknowledgement handles.
//! - [`pool`]: batch-sized buffers (read chunks, new texts, member indexes, persist's
//!   rows), recycled from the stage that frees them to the next batch.
//! - [`json`]: field paths, raw-text member lookup and splicing (no reformatting).
//! - [`tape`]: the one validating scan of a JSON text, also read by JSON Schema.
//! - [`shutdown`], [`human`], [`exit`], [`memory`]: signal handling; numbers, durations
//!   and times as people read them; exit codes; allocator tuning.

pub mod cli;
pub mod commands;
pub mod dead_letter;
pub mod event;
pub mod exit;
pub mod human;
pub mod jq;
pub mod json;
pub mod memory;
pub mod metrics;
pub mod ndjson;
pub mod operator;
pub mod pipeline;
pub mod pool;
pub mod position;
pub mod postgres;
pub mod progress;
pub mod redact;
pub mod shell;
pub mod shutdown;
pub mod stage;
pub mod tally;
pub mod tap;
pub mod tape;
pub mod top;
pub mod trace;
pub mod wire;
