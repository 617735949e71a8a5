//! The `baton` binary: parse the command line, load configuration, run.

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == baton::subagent::reaper::ARG)
    {
        // a subagent's companion: see subagent/reaper.rs
        baton::subagent::reaper::main();
    }
    baton::cli::main()
}
