//! `enrich`: see `ndpipe::stage::enrich` and `enrich --help`.

use ndpipe::{cli, commands, jq, stage::enrich};

fn main() -> std::process::ExitCode {
    // Started as a jq helper of another enrich (see ndpipe::jq): serve that, and exit.
    jq::serve_if_helper();
    cli::reuse_malloc();
    let args: enrich::Args = cli::parse();
    let common = args.common.clone();
    cli::run("enrich", &common, commands::enrich(args))
}
