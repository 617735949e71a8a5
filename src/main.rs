//! The `baton` binary: parse the command line, load configuration, run.

/// mimalloc: glibc's malloc was about a quarter of the broker's CPU at a
/// thousand orders a second (many small, short-lived allocations across
/// its threads). Everything this binary runs uses it (broker, agent, CLI,
/// and a subagent or reaper started from it); so does the lean
/// `baton-subagent`, while `baton-reaper`, idle nearly always, keeps the
/// system's, smaller. Built without
/// transparent huge pages (`no_thp`): with them the broker held about 24
/// MiB more at the same load, and its CPU per order was no lower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
