//! `pipeline`: see `ndpipe::pipeline` and `pipeline --help`.

use ndpipe::{cli, commands, pipeline};

fn main() -> std::process::ExitCode {
    let args: pipeline::Args = cli::parse();
    if pipeline::holds_events(&args) {
        cli::tame_malloc();
    } else {
        cli::reuse_malloc();
    }
    let common = args.common.clone();
    cli::run("pipeline", &common, commands::pipeline(args))
}
