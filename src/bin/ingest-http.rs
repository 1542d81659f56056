//! `ingest-http`: see `ndpipe::stage::ingest_http` and `ingest-http --help`.

fn main() -> std::process::ExitCode {
    ndpipe::commands::main(&ndpipe::commands::ingest_http::COMMAND)
}
