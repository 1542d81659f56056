//! `pipeline`: see `ndpipe::pipeline` and `pipeline --help`.

use ndpipe::{cli, commands, pipeline};

fn main() -> std::process::ExitCode {
    let args: pipeline::Args = cli::parse();
    match pipeline::holds(&args) {
        pipeline::Holds::Passing => cli::reuse_malloc(),
        pipeline::Holds::Rows => cli::sink_malloc(),
        pipeline::Holds::Bursts => cli::tame_malloc(),
    }
    let common = args.common.clone();
    cli::run("pipeline", &common, commands::pipeline(args))
}
