//! The `baton` binary: parse the command line, load configuration, run.

fn main() -> std::process::ExitCode {
    baton::cli::main()
}
