//! `ingest-file`: see `ndpipe::stage::ingest_file` and `ingest-file --help`.

fn main() -> std::process::ExitCode {
    ndpipe::commands::main(&ndpipe::commands::ingest_file::COMMAND)
}
