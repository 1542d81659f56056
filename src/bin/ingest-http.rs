//! `ingest-http`: see `ndpipe::stage::ingest_http` and `ingest-http --help`.

use ndpipe::{cli, commands};

fn main() -> std::process::ExitCode {
    cli::tame_malloc();
    commands::main("ingest-http")
}
