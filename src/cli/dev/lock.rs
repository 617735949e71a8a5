//! `baton dev`'s hold on its store folder: an exclusive `flock` on
//! `<store>/lock`, taken before anything else in the folder is touched, so a
//! second `baton dev` in the same folder is refused before it opens the
//! running one's JetStream store or rewrites its credentials. The file names
//! its holders, one `ROLE PID` line each (`baton-dev`, then `nats-server`),
//! for the refusal.
//!
//! The kernel drops the lock when the last descriptor of the locked file
//! closes. nats-server inherits one (`NatsServerOptions::shared_lock`), so
//! the store stays locked while a server left behind by a killed `baton dev`
//! still uses it, and a kill -9 of every holder leaves no stale lock.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The lock file's name inside the store folder.
pub const LOCK_FILE: &str = "lock";
/// The holder line of the `baton dev` process itself.
pub const BATON_DEV: &str = "baton-dev";
/// The holder line of its nats-server.
pub const NATS_SERVER: &str = "nats-server";

/// The exclusive lock on a store folder, held until dropped (which unlocks
/// it for every holder: drop it only after the nats-server sharing it has
/// stopped) or until every process sharing it has exited.
#[derive(Debug)]
pub struct StoreLock {
    file: Flock<File>,
}

/// Another process holds the store: the message says who, when the lock file
/// says so, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{}", refusal(dir, holders, pid_alive))]
pub struct StoreBusy {
    pub dir: PathBuf,
    pub holders: Vec<(String, u32)>,
}

impl StoreLock {
    /// Takes the lock on `dir` (made when missing) without waiting, and
    /// records this process as its holder; a held lock is a [`StoreBusy`].
    pub fn take(dir: &Path) -> anyhow::Result<StoreLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        // no truncation before the lock is ours: the file names the holder
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => file,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
                let holders = parse_holders(&text);
                return Err(StoreBusy { dir, holders }.into());
            }
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("cannot lock {}", path.display()))
            }
        };
        file.set_len(0)?;
        let mut lock = StoreLock { file };
        lock.record(BATON_DEV, std::process::id())?;
        Ok(lock)
    }

    /// Adds a holder line (nats-server's pid, once it runs).
    pub fn record(&mut self, role: &str, pid: u32) -> anyhow::Result<()> {
        writeln!(*self.file, "{role} {pid}").context("cannot write the lock file")
    }

    /// The locked file again, for a child process to inherit: the same open
    /// file, so it shares the lock.
    pub fn shared(&self) -> anyhow::Result<Arc<File>> {
        let file = self
            .file
            .try_clone()
            .context("cannot share the lock file")?;
        Ok(Arc::new(file))
    }
}

/// The `ROLE PID` lines of a lock file; anything else is skipped (a holder
/// may be writing it).
fn parse_holders(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|line| {
            let (role, pid) = line.trim().split_once(' ')?;
            Some((role.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

/// Whether process `pid` runs: it exists and is not a zombie waiting to be reaped.
fn pid_alive(pid: u32) -> bool {
    if kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
}

/// Why the store is busy, naming the holder when the lock file does, and
/// what to do. Never `--port`: two servers must not share one store.
fn refusal(dir: &Path, holders: &[(String, u32)], alive: impl Fn(u32) -> bool) -> String {
    let dir = dir.display();
    let pid = |role: &str| holders.iter().find(|(r, _)| r == role).map(|(_, pid)| *pid);
    let elsewhere =
        "or run this one from another directory (another checkout, with its own .baton/dev)";
    match (pid(BATON_DEV), pid(NATS_SERVER)) {
        (Some(dev), Some(nats)) if !alive(dev) && alive(nats) => format!(
            "{dir} is in use by nats-server (pid {nats}), left running by a `baton dev` \
             (pid {dev}) that has exited: stop it (`kill {nats}`), {elsewhere}"
        ),
        (Some(dev), _) => format!(
            "{dir} is in use by another `baton dev` (pid {dev}): stop the other `baton dev` \
             (pid {dev}), {elsewhere}"
        ),
        _ => format!(
            "{dir} is in use by another `baton dev`: stop the other `baton dev`, {elsewhere}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_read_line_by_line_skipping_half_written_ones() {
        let holders = parse_holders("baton-dev 12\nnats-server 34\nnats-ser");
        let expected = [(BATON_DEV.to_string(), 12), (NATS_SERVER.to_string(), 34)];
        assert_eq!(holders, expected);
        assert!(parse_holders("").is_empty());
    }

    #[test]
    fn the_refusal_names_the_folder_the_holder_and_the_fix_never_another_port() {
        let dir = Path::new("/repo/.baton/dev");
        let both = parse_holders("baton-dev 12\nnats-server 34\n");
        let running = refusal(dir, &both, |_| true);
        assert!(
            running.starts_with("/repo/.baton/dev is in use"),
            "{running}"
        );
        assert!(
            running.contains("stop the other `baton dev` (pid 12)"),
            "{running}"
        );
        assert!(
            running.contains("run this one from another directory"),
            "{running}"
        );

        let orphan = refusal(dir, &both, |pid| pid == 34);
        assert!(orphan.contains("nats-server (pid 34)"), "{orphan}");
        assert!(orphan.contains("`kill 34`"), "{orphan}");

        let unknown = refusal(dir, &[], |_| true);
        assert!(unknown.contains("stop the other `baton dev`"), "{unknown}");
        for message in [running, orphan, unknown] {
            assert!(!message.contains("--port"), "{message}");
        }
    }

    #[test]
    fn a_second_lock_on_the_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StoreLock::take(dir.path()).expect("first lock");
        let err = StoreLock::take(dir.path()).expect_err("the folder is held");
        let busy = err.downcast_ref::<StoreBusy>().expect("a StoreBusy");
        let me = std::process::id();
        assert_eq!(busy.holders, [(BATON_DEV.to_string(), me)]);
        drop(first);
        let again = StoreLock::take(dir.path()).expect("free again");
        drop(again);
    }
}
