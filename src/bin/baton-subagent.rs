//! `baton-subagent`: `baton subagent` in a binary of its own (see
//! `cli/lean.rs`); `baton subagent` runs it when it lies beside `baton`.

fn main() -> std::process::ExitCode {
    baton::cli::lean::main()
}
