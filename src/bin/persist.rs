//! `persist`: see `ndpipe::stage::persist` and `persist --help`.

use ndpipe::{cli, commands, stage::persist};

fn main() -> std::process::ExitCode {
    cli::sink_malloc();
    let args: persist::Args = cli::parse();
    let common = args.common.clone();
    cli::run("persist", &common, commands::persist(args))
}
