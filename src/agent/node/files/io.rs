//! The IO of file triggers that needs no actor: listing directories (on a
//! blocking thread), the inotify watch that wakes a listing, and one
//! settled file's claim, submit and mark (see `files.rs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use actix::prelude::*;
use notify::{RecursiveMode, Watcher};
use tracing::debug;

use super::{Agent, FilesChanged, Watching};
use crate::agent::outbox::{submit_failure, SubmitFailure};
use crate::bus::{Bus, Kv};
use crate::protocol::{FileRecord, FileState, SubmitOrder, SubmitReply};
use crate::time::now_ms;
use crate::triggers::files::{Claim, FileWatch, Found};

/// What became of a settled file's claim and submit.
pub(super) enum Outcome {
    /// Submitted; the record as written last (revision `None`: the final
    /// write failed, so it stays `claimed` in the bucket and a later
    /// Scheduler submits it again, finding the same order).
    Submitted(FileRecord, Option<u64>, SubmitReply),
    /// Someone else wrote the record first: it is now this.
    Lost(Option<(FileRecord, u64)>),
    /// Failed; `retry` when worth trying again; the record if written.
    Failed {
        error: String,
        retry: bool,
        record: Option<(FileRecord, u64)>,
    },
}

/// Writes the file's record `claimed` as `decision` says (a create, or a
/// compare-and-swap of the earlier record), submits `order`, then marks
/// the record `submitted`: the record is stored before the submit.
#[allow(clippy::too_many_arguments)]
pub(super) async fn claim_and_submit(
    kv: Kv<FileRecord>,
    bus: Bus,
    subject: String,
    timeout: Duration,
    rk: String,
    claimed: FileRecord,
    order: SubmitOrder,
    decision: Claim,
) -> Outcome {
    let written = match decision {
        Claim::Create => kv.create_revision(&rk, &claimed).await,
        Claim::Replace { revision } => kv.update(&rk, &claimed, revision).await,
        Claim::Resubmit { revision } => Ok(Some(revision)),
        // nothing to write: read it again, the next listing decides
        Claim::Done => Ok(None),
    };
    let revision = match written {
        Ok(Some(revision)) => revision,
        Ok(None) => return Outcome::Lost(kv.get_with_revision(&rk).await.ok().flatten()),
        Err(e) => {
            return Outcome::Failed {
                error: e.to_string(),
                retry: true,
                record: None,
            }
        }
    };
    let reply = bus
        .request::<_, SubmitReply>(subject, &order, timeout)
        .await;
    match reply {
        Ok(reply) => {
            let mut done = claimed;
            done.state = FileState::Submitted;
            done.order_id = Some(reply.order_id.clone());
            done.at_ms = now_ms();
            let marked = kv.update(&rk, &done, revision).await.ok().flatten();
            Outcome::Submitted(done, marked, reply)
        }
        Err(e) => Outcome::Failed {
            retry: submit_failure(&e) == SubmitFailure::Retry,
            error: e.to_string(),
            record: Some((claimed, revision)),
        },
    }
}

/// Watches `dir` with inotify for `key`'s schedule, once.
pub(super) fn watch_dir(w: &mut Watching, dir: &Path, term: u64, key: &str, addr: &Addr<Agent>) {
    if w.watched_dirs.contains(dir) {
        return;
    }
    if w.watcher.is_none() {
        let addr = addr.clone();
        let owned = key.to_string();
        let made = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                addr.do_send(FilesChanged {
                    term,
                    key: owned.clone(),
                });
            }
        });
        match made {
            Ok(watcher) => w.watcher = Some(watcher),
            Err(e) => {
                // the rescan still finds the files
                debug!(job = %key, error = %e, "no inotify watcher");
                return;
            }
        }
    }
    if let Some(watcher) = w.watcher.as_mut() {
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                w.watched_dirs.insert(dir.to_path_buf());
            }
            Err(e) => debug!(dir = %dir.display(), error = %e, "cannot watch with inotify"),
        }
    }
}

/// Lists each directory of `watches` once: its regular files (symbolic
/// links followed) whose names match one of its patterns.
pub(super) fn list_dirs(watches: &[FileWatch]) -> Vec<(PathBuf, Result<Vec<Found>, String>)> {
    let mut dirs: Vec<&Path> = watches.iter().map(|w| w.dir.as_path()).collect();
    dirs.sort();
    dirs.dedup();
    dirs.into_iter()
        .map(|dir| {
            let of_dir: Vec<&FileWatch> = watches.iter().filter(|w| w.dir == dir).collect();
            (dir.to_path_buf(), list_dir(dir, &of_dir))
        })
        .collect()
}

fn list_dir(dir: &Path, watches: &[&FileWatch]) -> Result<Vec<Found>, String> {
    use std::os::unix::fs::MetadataExt;
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: cannot be a parameter
        };
        if !watches.iter().any(|w| w.matches(&name)) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // gone meanwhile
        };
        if !meta.is_file() {
            continue;
        }
        let mtime_ms = (meta.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        found.push(Found {
            path: path.to_string_lossy().into_owned(),
            name,
            size: meta.len(),
            mtime_ms,
            inode: meta.ino(),
        });
    }
    Ok(found)
}
