//! `validate`: see `ndpipe::stage::validate` and `validate --help`.

use ndpipe::{cli, commands};

fn main() -> std::process::ExitCode {
    cli::reuse_malloc();
    commands::main("validate")
}
