//! `ingest-kafka`: see `ndpipe::stage::ingest_kafka` and `ingest-kafka --help`.

fn main() -> std::process::ExitCode {
    ndpipe::commands::main(&ndpipe::commands::ingest_kafka::COMMAND)
}
