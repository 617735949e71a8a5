//! One child process of a [`LocalCluster`](super::LocalCluster), where its
//! log goes, and how it ended ([`Exited`]).

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ExitStatus};

use nix::sys::signal::Signal;

/// One `baton` child process.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    /// Its command line after `baton`, and the NATS URL it was given: what
    /// starting it again takes.
    pub(super) args: Vec<String>,
    pub(super) url: String,
    pub(super) log: Option<PathBuf>,
    pub(super) child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, once it has (reaped; `None` while it runs).
    pub(super) fn exited(&mut self) -> Option<Exited> {
        let status = self.child.try_wait().ok()??;
        Some(Exited {
            name: self.name.clone(),
            role: self.args.first().cloned().unwrap_or_default(),
            pid: self.pid(),
            status,
            log: self.log.clone(),
            args: self.args.clone(),
            url: self.url.clone(),
        })
    }
}

/// A process of a local cluster, nats-server included, that has ended and
/// been reaped. Its `Display` says which process it was, how it ended and
/// where its log is: "subagent sub-2 (pid 41) was killed by signal 9
/// (SIGKILL); its log: .baton/dev/logs/sub-2.log".
#[derive(Debug, Clone)]
pub struct Exited {
    pub name: String,
    /// `broker`, `subagent`, `agent`, ... or `nats-server`.
    pub role: String,
    pub pid: u32,
    pub status: ExitStatus,
    pub log: Option<PathBuf>,
    pub(super) args: Vec<String>,
    pub(super) url: String,
}

impl Exited {
    pub(super) fn nats_server(pid: u32, status: ExitStatus, log: PathBuf) -> Exited {
        Exited {
            name: NATS_SERVER.into(),
            role: NATS_SERVER.into(),
            pid,
            status,
            log: Some(log),
            args: Vec::new(),
            url: String::new(),
        }
    }

    pub fn is_nats_server(&self) -> bool {
        self.role == NATS_SERVER
    }
}

/// The name and role of the nats-server process in an [`Exited`].
const NATS_SERVER: &str = "nats-server";

impl fmt::Display for Exited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.role.is_empty() || self.role == self.name {
            write!(f, "{}", self.name)?;
        } else {
            write!(f, "{} {}", self.role, self.name)?;
        }
        write!(f, " (pid {}) {}", self.pid, ended(self.status))?;
        if let Some(log) = &self.log {
            write!(f, "; its log: {}", log.display())?;
        }
        Ok(())
    }
}

/// "exited with status 1", "was killed by signal 9 (SIGKILL)".
fn ended(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("was killed by signal {number} ({})", signal.as_str()),
            Err(_) => format!("was killed by signal {number}"),
        },
        None => format!("ended ({status})"),
    }
}

/// Copies a child's stderr, line by line, to ours prefixed with `[name] `
/// and to `log` when there is one; on a thread of its own, ending with the pipe.
pub(super) fn tee(stderr: ChildStderr, name: &str, mut log: Option<File>) {
    let prefix = format!("[{name}] ");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{prefix}{line}");
            if let Some(file) = &mut log {
                // a log that cannot be written must not stop the terminal copy
                let _ = writeln!(file, "{line}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(name: &str, role: &str, status: ExitStatus, log: Option<&str>) -> Exited {
        Exited {
            name: name.into(),
            role: role.into(),
            pid: 41,
            status,
            log: log.map(PathBuf::from),
            args: Vec::new(),
            url: String::new(),
        }
    }

    #[test]
    fn says_which_process_how_it_ended_and_where_its_log_is() {
        let killed = ExitStatus::from_raw(9);
        let failed = ExitStatus::from_raw(3 << 8);
        let sub = exited(
            "sub-2",
            "subagent",
            killed,
            Some(".baton/dev/logs/sub-2.log"),
        );
        assert_eq!(
            sub.to_string(),
            "subagent sub-2 (pid 41) was killed by signal 9 (SIGKILL); \
             its log: .baton/dev/logs/sub-2.log"
        );
        let broker = exited("broker", "broker", failed, None);
        assert_eq!(broker.to_string(), "broker (pid 41) exited with status 3");
        let nats = exited(NATS_SERVER, NATS_SERVER, killed, None);
        assert!(nats.is_nats_server());
        assert!(!sub.is_nats_server());
    }
}
