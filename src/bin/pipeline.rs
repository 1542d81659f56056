//! `pipeline`: see `ndpipe::pipeline` and `pipeline --help`.

fn main() -> std::process::ExitCode {
    ndpipe::pipeline::main()
}
