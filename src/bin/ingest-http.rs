//! `ingest-http`: see `ndpipe::stage::ingest_http` and `ingest-http --help`.

use ndpipe::{cli, commands, stage::ingest_http};

fn main() -> std::process::ExitCode {
    cli::tame_malloc();
    let args: ingest_http::Args = cli::parse();
    let common = args.common.clone();
    cli::run("ingest-http", &common, commands::ingest_http(args))
}
