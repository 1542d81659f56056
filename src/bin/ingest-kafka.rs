//! `ingest-kafka`: see `ndpipe::stage::ingest_kafka` and `ingest-kafka --help`.

use ndpipe::{cli, commands, stage::ingest_kafka};

fn main() -> std::process::ExitCode {
    // Not cli::tame_malloc(): librdkafka reads whole fetch responses (megabytes) into
    // fresh buffers, and mapping each one anew cost a page fault per 4 KiB.
    let args: ingest_kafka::Args = cli::parse();
    let common = args.common.clone();
    cli::run("ingest-kafka", &common, commands::ingest_kafka(args))
}
