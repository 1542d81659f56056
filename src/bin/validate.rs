//! `validate`: see `ndpipe::stage::validate` and `validate --help`.

fn main() -> std::process::ExitCode {
    ndpipe::commands::main(&ndpipe::commands::validate::COMMAND)
}
