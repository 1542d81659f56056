//! `enrich`: see `ndpipe::stage::enrich` and `enrich --help`.

use ndpipe::{cli, stage::enrich};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args: enrich::Args = cli::parse();
    let common = args.common.clone();
    cli::run("enrich", &common, enrich::main(args))
}
