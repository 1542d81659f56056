//! `ingest-kafka`: see `ndpipe::stage::ingest_kafka` and `ingest-kafka --help`.

use ndpipe::commands;

fn main() -> std::process::ExitCode {
    // Not cli::tame_malloc(): librdkafka reads whole fetch responses (megabytes) into
    // fresh buffers, and mapping each one anew cost a page fault per 4 KiB.
    commands::main("ingest-kafka")
}
