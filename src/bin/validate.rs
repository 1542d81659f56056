//! `validate`: see `ndpipe::stage::validate` and `validate --help`.

use ndpipe::{cli, stage::validate};

fn main() -> std::process::ExitCode {
    cli::reuse_malloc();
    let args: validate::Args = cli::parse();
    let common = args.common.clone();
    cli::run("validate", &common, validate::main(args))
}
