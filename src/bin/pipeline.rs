//! `pipeline`: see `ndpipe::pipeline` and `pipeline --help`.

use ndpipe::{cli, commands, pipeline};

fn main() -> std::process::ExitCode {
    cli::reuse_malloc();
    let args: pipeline::Args = cli::parse();
    let common = args.common.clone();
    cli::run("pipeline", &common, commands::pipeline(args))
}
