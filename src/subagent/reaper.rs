//! The reaper: a small companion process that kills what a subagent's tasks
//! left behind when the subagent itself dies.
//!
//! Each task runs in its own process group, and its direct process has a
//! parent-death signal; but that signal does not reach what the task started
//! (`sh -c 'work & ...'`). So every subagent starts `baton __reaper` with a
//! pipe on its stdin and tells it the process group of each task as it starts
//! (`+PGID`) and ends (`-PGID`). When the subagent dies, by kill -9 or any
//! other way, the kernel closes the pipe; the reaper reads end-of-file, kills
//! every group it still holds with SIGKILL, and exits. A killed subagent's
//! whole task trees are thus gone before the broker runs them elsewhere.
//!
//! Architecture invariant: synchronous, no runtime, no NATS; its own process
//! group, and deaf to terminal signals, so a Ctrl-C meant for the subagent
//! does not take it away before it has done its job.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::process::{ChildStdin, Command, Stdio};

use nix::sys::signal::{killpg, signal, SigHandler, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

/// The first argument that makes `baton` act as a reaper.
pub const ARG: &str = "__reaper";

/// Runs the reaper on stdin; never returns.
pub fn main() -> ! {
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let mut groups = BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        apply(&mut groups, &line);
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    std::process::exit(0)
}

/// One instruction: `+PGID` holds a group, `-PGID` lets it go.
fn apply(groups: &mut BTreeSet<i32>, line: &str) {
    let (op, pgid) = line.split_at(line.len().min(1));
    match (op, pgid.trim().parse::<i32>()) {
        ("+", Ok(pgid)) if pgid > 1 => {
            groups.insert(pgid);
        }
        ("-", Ok(pgid)) => {
            groups.remove(&pgid);
        }
        _ => {}
    }
}

/// The subagent's end of the pipe to its reaper.
pub struct Reaper {
    stdin: ChildStdin,
}

impl Reaper {
    /// Starts `exe __reaper` in its own process group.
    pub fn start(exe: &std::path::Path) -> std::io::Result<Reaper> {
        let mut child = Command::new(exe)
            .arg(ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        // the reaper outlives us by design; its exit status is of no interest
        std::thread::spawn(move || child.wait());
        Ok(Reaper { stdin })
    }

    /// A task's process group to kill if the subagent dies.
    pub fn hold(&mut self, pgid: u32) {
        let _ = writeln!(self.stdin, "+{pgid}");
    }

    /// The task's group ended; forget it.
    pub fn release(&mut self, pgid: u32) {
        let _ = writeln!(self.stdin, "-{pgid}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_hold_and_release_groups() {
        let mut g = BTreeSet::new();
        for line in [
            "+100", "+200", "-100", "+1", "+0", "garbage", "", "+x", "-999",
        ] {
            apply(&mut g, line);
        }
        assert_eq!(g, BTreeSet::from([200]));
    }
}
