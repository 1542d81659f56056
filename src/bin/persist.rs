//! `persist`: see `ndpipe::stage::persist` and `persist --help`.

fn main() -> std::process::ExitCode {
    ndpipe::commands::main(&ndpipe::commands::persist::COMMAND)
}
