//! `baton-subagent`: `baton subagent` in a binary of its own, beside
//! `baton` (`cargo build` and `cargo install` make both), linking only what
//! a subagent runs: no broker, agent, console, HTTP client or bench. A
//! thousand subagents each map the code they run, and the kernel maps it 64
//! KB at a time (fault-around), so in the whole binary an idle subagent's
//! heartbeat, spread over 19 MB of code, kept about 6.7 MB of it mapped;
//! and each process relocates its own copy of the binary's pointer tables
//! (RELRO), about 1.6 MB private in the whole one.
//!
//! `baton subagent` (without a command) replaces itself with
//! `baton-subagent` when it lies beside it and comes from the same build
//! (`subagent::build`; `cargo run` builds `baton` alone): same process, same
//! pid, same arguments ([`exec_beside`]); otherwise it runs the subagent
//! itself.
//! `baton-subagent` runs the full reaper (`__reaper`) as `baton` does, since
//! a subagent starts its reaper from its own executable.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{signal, SigHandler, Signal};

use super::{load_config, run_subagent, Cli, Command, SubagentArgs, EXIT_ERROR};
use crate::subagent::build::{same_build, BUILD_ARG, BUILD_ID};

/// The lean subagent's file name, beside `baton`.
pub const BINARY: &str = "baton-subagent";
/// The lean subagent beside `exe`, unless `exe` is it.
fn beside(exe: &Path) -> Option<PathBuf> {
    let lean = exe.with_file_name(BINARY);
    (exe.file_name() != lean.file_name() && lean.is_file()).then_some(lean)
}

/// Replaces this process with `baton-subagent`, given the same arguments,
/// when it lies beside this executable from the same build; returns only
/// when it does not (or cannot be started: then this process runs the
/// subagent itself).
pub fn exec_beside() {
    let Some(lean) = std::env::current_exe().ok().and_then(|exe| beside(&exe)) else {
        return;
    };
    if let Err(why) = same_build(&lean) {
        tracing::warn!(lean = %lean.display(), %why, "not using the lean subagent beside baton; running in this process");
        return;
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let error = std::process::Command::new(&lean).args(args).exec();
    // std set SIGPIPE back to its default for the new program: a subagent
    // must see a closed pipe as an error, not die of it
    // SAFETY: setting a signal to be ignored installs no handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    tracing::warn!(lean = %lean.display(), %error, "cannot start the lean subagent; running in this process");
}

/// `baton-subagent`'s main: `baton subagent`'s command line, and only that.
pub fn main() -> ExitCode {
    let first = std::env::args_os().nth(1);
    if first
        .as_ref()
        .is_some_and(|a| a == crate::subagent::reaper::ARG)
    {
        crate::subagent::reaper::main();
    }
    if first.is_some_and(|a| a == BUILD_ARG) {
        println!("{BUILD_ID}");
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Subagent(SubagentArgs { action: None, .. })
    ) {
        eprintln!(
            "error: {BINARY} runs only `subagent` (without a command); use `baton` for the rest"
        );
        return ExitCode::from(EXIT_ERROR);
    }
    crate::daemon::init_logging(crate::daemon::DAEMON_LOG);
    tracing::info!(build = BUILD_ID, "{BINARY}: the subagent's own binary");
    // before any thread starts (subagent/memory.rs)
    crate::subagent::memory::one_arena();
    let system = actix::System::new();
    let run = async {
        let config = load_config(&cli)?;
        run_subagent(config).await
    };
    match system.block_on(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lean_subagent_is_found_beside_baton_but_never_runs_itself_again() {
        let dir = tempfile::tempdir().unwrap();
        let baton = dir.path().join("baton");
        assert_eq!(beside(&baton), None, "not there");
        std::fs::write(dir.path().join(BINARY), "").unwrap();
        assert_eq!(beside(&baton), Some(dir.path().join(BINARY)));
        assert_eq!(beside(&dir.path().join(BINARY)), None, "itself");
    }
}
