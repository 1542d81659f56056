//! `validate`: see `ndpipe::stage::validate` and `validate --help`.

use ndpipe::{cli, commands, stage::validate};

fn main() -> std::process::ExitCode {
    cli::reuse_malloc();
    let args: validate::Args = cli::parse();
    let common = args.common.clone();
    cli::run("validate", &common, commands::validate(args))
}
