//! `persist`: see `ndpipe::stage::persist` and `persist --help`.

use ndpipe::{cli, commands};

fn main() -> std::process::ExitCode {
    cli::sink_malloc();
    commands::main("persist")
}
