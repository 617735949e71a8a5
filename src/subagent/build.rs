//! Which build a lean binary (`baton-subagent`, `baton-reaper`) comes
//! from: each answers [`BUILD_ARG`] with [`BUILD_ID`], the id
//! `src/build.rs` stamps on every build of the crate, and `baton` uses one
//! beside it only when the ids match (`cargo run` builds `baton` alone and
//! leaves older ones there).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// This build's id (`src/build.rs`).
pub const BUILD_ID: &str = env!("CRATE_BUILD_ID");
/// The argument a lean binary answers with its build id and exits.
pub const BUILD_ARG: &str = "__build-id";

/// How long a lean binary may take to say its build id.
const ASK_LIMIT: Duration = Duration::from_secs(2);

/// Whether the lean binary at `path` comes from this build (asked with
/// [`BUILD_ARG`], for at most [`ASK_LIMIT`]); `Err` says why not.
pub fn same_build(path: &Path) -> Result<(), String> {
    let mut child = spawn_asking(path).map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = Instant::now() + ASK_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no build id from it within {ASK_LIMIT:?}"));
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = String::from_utf8_lossy(out.stdout.trim_ascii()).into_owned();
    if out.status.success() && said == BUILD_ID {
        Ok(())
    } else {
        Err(format!(
            "it is from another build (`cargo build` builds them all): {said:?}, not {BUILD_ID:?}"
        ))
    }
}

/// Starts `path BUILD_ARG`; again a few times while the file is busy (a
/// process forked while it was being written still holds it open).
fn spawn_asking(path: &Path) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        let spawned = std::process::Command::new(path)
            .arg(BUILD_ARG)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            spawned => return spawned,
        }
    }
}
