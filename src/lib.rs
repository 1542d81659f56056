//! ndpipe: composable Unix-style commands for NDJSON event pipelines.
//!
//! Every command is a *stage*: an async function over bounded channels of [`event::Batch`]es.
//! The binaries in `src/bin` only parse flags and call into this library; `pipeline` wires
//! the very same stage functions in one process.
//!
//! Module map (dependencies point down the list, never up):
//!
//! - [`cli`]: flags shared by every binary, argument parsing, the runtime and exit mapping.
//! - [`shell`]: the shell form of a stage: NDJSON reader → stage → NDJSON writer.
//! - [`stage`]: the stages — [`stage::validate`], [`stage::enrich`], [`stage::persist`] —
//!   and the ordered worker pool they share.
//! - [`ndjson`]: line framing (line numbers, BOM, CRLF, length limit) and the writer
//!   (block-buffered, idle flush, closed-pipe aware).
//! - [`dead_letter`]: the dead-letter record format and its `O_APPEND` writer.
//! - [`event`]: events, batches, acknowledgement handles.
//! - [`jq`]: jq programs, run in helper processes that a runaway program cannot take
//!   down with it.
//! - [`json`]: field paths, raw-text member lookup and splicing (no reformatting).
//! - [`tape`]: the one validating scan of a JSON text, also read by JSON Schema.
//! - [`progress`], [`shutdown`], [`exit`]: progress line and log writer, signal handling,
//!   exit codes.
//! - [`human`]: numbers and durations as the summaries and progress lines print them.
//! - [`docs`]: man pages and shell completions rendered from the clap definitions.

pub mod cli;
pub mod dead_letter;
pub mod docs;
pub mod event;
pub mod exit;
pub mod human;
pub mod jq;
pub mod json;
pub mod ndjson;
pub mod progress;
pub mod shell;
pub mod shutdown;
pub mod stage;
pub mod tape;
