//! `ingest-kafka`: see `ndpipe::stage::ingest_kafka` and `ingest-kafka --help`.

use ndpipe::{cli, stage::ingest_kafka};

fn main() -> std::process::ExitCode {
    cli::tame_malloc();
    let args: ingest_kafka::Args = cli::parse();
    let common = args.common.clone();
    cli::run("ingest-kafka", &common, ingest_kafka::main(args))
}
