//! The lean reaper: what runs beside every subagent while it lives. The
//! full reaper (`baton __reaper`, [`super::reaper`]) links the whole of
//! Baton, and a process of that binary costs, even asleep on a pipe, the
//! relocated data and the startup code of everything (about 10 MB resident,
//! 1.8 MB of it private). This one is a binary of its own, `baton-reaper`,
//! beside `baton`, linking only the pipe's line format and `Held`: it reads
//! the same lines ([`super::reaper::parse`]), holds the same state, and on
//! end-of-file (the subagent is gone) kills the groups it holds with
//! SIGKILL at once, then starts the full reaper, tells it everything it
//! held, and closes the pipe: the full reaper reads end-of-file at once and
//! does the rest (tasks still in their `exec`, waiting until the groups are
//! empty, results and the death certificate to the broker).
//!
//! A subagent uses it when `baton-reaper` lies beside its own executable,
//! from the same build (`build.rs`; `cargo build` and `cargo
//! install` make both), else it starts the full
//! reaper itself. Command line: `baton-reaper __reaper <path of baton>`,
//! so the reaper is found by its `__reaper` argument either way.
//!
//! Architecture invariant: as for the full reaper, it acts only on
//! end-of-file of the pipe only the subagent holds; it never certifies
//! anything itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::reaper::{self, Held};

/// The lean reaper's file name, beside `baton`.
pub const BINARY: &str = "baton-reaper";

/// The lean reaper beside `exe`, when it is there and from the same build.
pub fn beside(exe: &Path) -> Option<PathBuf> {
    let relay = exe.with_file_name(BINARY);
    (relay.is_file() && super::build::same_build(&relay).is_ok()).then_some(relay)
}

/// Runs the lean reaper on stdin; never returns. `args`: its command line
/// after the program name (`__reaper <path of baton>`).
pub fn main(args: &[String]) -> ! {
    reaper::ignore_terminal_signals();
    let full = match args {
        [arg, full] if arg == reaper::ARG => PathBuf::from(full),
        [arg] if arg == super::build::BUILD_ARG => {
            println!("{}", super::build::BUILD_ID);
            std::process::exit(0)
        }
        _ => {
            eprintln!(
                "{BINARY}: started by a subagent as `{BINARY} {} <path of baton>`, not by hand",
                reaper::ARG
            );
            std::process::exit(2)
        }
    };
    let mut lines = super::batched::stdin_lines();
    let Some(Ok(hello)) = lines.next() else {
        std::process::exit(0)
    };
    // asleep on the pipe from now on: what starting ran is not needed again
    super::memory::drop_clean_pages();
    let mut held = Held::default();
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(line) = reaper::parse(&line) {
            held.apply(line);
        }
    }
    // end of file: the subagent is gone
    for pgid in held.groups.keys() {
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
    if held.clean && held.groups.is_empty() && held.spawning.is_empty() {
        std::process::exit(0);
    }
    hand_over(&full, &hello, &held);
    std::process::exit(0)
}

/// Starts the full reaper and tells it what was held, then closes its pipe.
fn hand_over(full: &Path, hello: &str, held: &Held) {
    let child = Command::new(full)
        .arg(reaper::ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "{BINARY}: cannot start {} {}: {e}; the subagent's groups were killed, \
                 its death is not certified",
                full.display(),
                reaper::ARG
            );
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{hello}");
        for line in held.replay() {
            let _ = writeln!(stdin, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lean_reaper_is_found_beside_the_executable_only_from_the_same_build() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("baton");
        assert_eq!(beside(&exe), None);
        let relay = dir.path().join(BINARY);
        let answering = |build: &str| {
            let script = format!("#!/bin/sh\n[ \"$1\" = __build-id ] && echo '{build}'\n");
            std::fs::write(&relay, script).unwrap();
            std::fs::set_permissions(&relay, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        answering("another-build");
        assert_eq!(beside(&exe), None, "another build's");
        answering(crate::subagent::build::BUILD_ID);
        assert_eq!(beside(&exe), Some(relay.clone()));
    }
}
