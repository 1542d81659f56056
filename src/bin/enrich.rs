//! `enrich`: see `ndpipe::stage::enrich` and `enrich --help`.

fn main() -> std::process::ExitCode {
    ndpipe::commands::main(&ndpipe::commands::enrich::COMMAND)
}
