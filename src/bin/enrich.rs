//! `enrich`: see `ndpipe::stage::enrich` and `enrich --help`.

use ndpipe::{cli, commands, stage::enrich};

fn main() -> std::process::ExitCode {
    cli::reuse_malloc();
    let args: enrich::Args = cli::parse();
    let common = args.common.clone();
    cli::run("enrich", &common, commands::enrich(args))
}
