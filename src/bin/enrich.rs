//! `enrich`: see `ndpipe::stage::enrich` and `enrich --help`.

use ndpipe::{cli, commands};

fn main() -> std::process::ExitCode {
    cli::reuse_malloc();
    commands::main("enrich")
}
