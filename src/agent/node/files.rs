//! File triggers, as IO on the [`Agent`] while it is the Scheduler: list
//! each watched directory (on a blocking thread) when inotify says it
//! changed (the `notify` crate), every `rescan`, and when a file is due to
//! settle; hand the listing to the pure [`Settling`]; for each settled file
//! write its record to the files bucket (`claimed`, [`claim`] decides how)
//! and only then submit its order with the request id of its identity,
//! then mark the record `submitted`; delete the records of files gone from
//! a directory that was listed ([`stale`]).
//!
//! A directory that cannot be listed is a *watch problem*: logged once when
//! it starts and once when it ends, counted, and carried in the heartbeat
//! (`watch_problems`) to `baton status`. Its records stay.
//!
//! `files/io.rs` holds the IO that needs no actor: the listing, the
//! inotify watch, and one file's claim, submit and mark.
//!
//! Everything here carries the term it was started in; a result of an
//! earlier spell as Scheduler is ignored (see `firing.rs`). Dropping the
//! state (the role ends) drops the inotify watchers.
//!
//! Size: a little over the ~500-line mark; the listing, inotify and one
//! file's claim-submit-mark are already in `files/io.rs`, and what is left
//! is one term's watch loop, read best in one place.

mod io;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::watched::Watched;
use super::Agent;
use crate::bus::{BusError, Kv};
use crate::protocol::{FileRecord, FileState, SubmitOrder};
use crate::time::now_ms;
use crate::triggers::files::{claim, record_key, stale, Claim, FileWatch, Found, Settling};
use crate::triggers::{submitted_name, workflow_key};
use io::Outcome;

/// After a change inotify reported, wait this long for more before listing.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// After a failed claim or submit, or failing to read the bucket, list again in this long.
const RETRY: Duration = Duration::from_secs(1);
/// At most one warning about failing claims in this long; the rest go to debug.
const FAILURE_WARN_EVERY: Duration = Duration::from_secs(5);

/// The file triggers of one spell as Scheduler.
#[derive(Default)]
pub(super) struct FileTriggers {
    kv: Option<Kv<FileRecord>>,
    /// Every record in the files bucket, with its revision, by key.
    records: HashMap<String, (FileRecord, u64)>,
    /// By schedule key, those with file triggers.
    schedules: HashMap<String, Watching>,
    /// Directories that cannot be listed, and why.
    problems: BTreeMap<PathBuf, String>,
    /// Settled files waiting for a claim to go (at most
    /// `agent.max_in_flight` at once, as slots).
    waiting: VecDeque<(String, Found, Claim)>,
    in_flight: usize,
    last_failure_warning: Option<std::time::Instant>,
}

struct Watching {
    watches: Vec<FileWatch>,
    settling: Settling,
    /// inotify, on the directories that could be listed.
    watcher: Option<notify::RecommendedWatcher>,
    watched_dirs: HashSet<PathBuf>,
    scanning: bool,
    /// A listing was asked for while one was under way.
    again: bool,
    /// The next listing: when, and its timer.
    timer: Option<(u64, SpawnHandle)>,
    /// Files whose claim or submit is under way, by path.
    busy: HashSet<String>,
}

impl FileTriggers {
    /// What keeps the file triggers from watching, one line each.
    pub(super) fn problems(&self) -> Vec<String> {
        self.problems.values().cloned().collect()
    }
}

/// inotify saw a change in a directory of `key`'s file triggers.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FilesChanged {
    term: u64,
    key: String,
}

impl Agent {
    fn files(&mut self, term: u64) -> Option<&mut FileTriggers> {
        self.firing(term).map(|f| &mut f.files)
    }

    /// Reads every record of the files bucket; the directories are listed
    /// only once it is read.
    pub(super) fn load_files(&mut self, term: u64, ctx: &mut Context<Self>) {
        let bus = self.bus.clone();
        let bucket = self.config.files_bucket();
        let load = async move {
            let kv: Kv<FileRecord> = bus.kv(&bucket).await?;
            let records = kv.entries_with_revisions().await?;
            Ok::<_, BusError>((kv, records))
        };
        ctx.spawn(load.into_actor(self).map(move |loaded, act, ctx| {
            let Some(files) = act.files(term) else {
                return;
            };
            match loaded {
                Ok((kv, records)) => {
                    info!(records = records.len(), "read the file records");
                    files.kv = Some(kv);
                    files.records = records;
                    let keys: Vec<String> = files.schedules.keys().cloned().collect();
                    for key in keys {
                        act.list_soon(term, &key, Duration::ZERO, ctx);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the file records; trying again");
                    ctx.run_later(RETRY, move |act, ctx| {
                        if act.files(term).is_some() {
                            act.load_files(term, ctx);
                        }
                    });
                }
            }
        }));
    }

    /// Follows a deploy, removal or pause of a job or workflow.
    pub(super) fn files_watched(&mut self, term: u64, change: &Watched, ctx: &mut Context<Self>) {
        match change {
            Watched::Schedule { key, schedule, .. } => {
                let watches = schedule
                    .as_ref()
                    .map_or_else(Vec::new, |(triggers, _)| FileWatch::all(triggers));
                self.set_file_watches(term, key, watches, ctx);
            }
            Watched::Pause {
                name,
                paused: false,
            } => {
                for key in [name.clone(), workflow_key(name)] {
                    // a file refused while the pause was on its way is tried again
                    let watching = self.files(term).and_then(|f| f.schedules.get_mut(&key));
                    if let Some(w) = watching {
                        w.settling.again_all();
                    }
                    self.list_soon(term, &key, Duration::ZERO, ctx);
                }
            }
            _ => {}
        }
    }

    fn set_file_watches(
        &mut self,
        term: u64,
        key: &str,
        watches: Vec<FileWatch>,
        ctx: &mut Context<Self>,
    ) {
        let Some(files) = self.files(term) else {
            return;
        };
        if watches.is_empty() {
            if let Some(gone) = files.schedules.remove(key) {
                if let Some((_, handle)) = gone.timer {
                    ctx.cancel_future(handle);
                }
                info!(job = %key, "no file triggers any more; forgetting its files");
                let keys: Vec<(String, u64)> = (files.records.iter())
                    .filter(|(_, (r, _))| r.job == key)
                    .map(|(k, (_, rev))| (k.clone(), *rev))
                    .collect();
                let schedules = &files.schedules;
                let in_use = |dir: &PathBuf| {
                    (schedules.values()).any(|w| w.watches.iter().any(|f| &f.dir == dir))
                };
                files.problems.retain(|dir, _| in_use(dir));
                self.delete_records(term, keys, ctx);
            }
            return;
        }
        let settle_ms = watches.iter().map(|w| w.settle_ms).max().unwrap_or(0);
        match files.schedules.get_mut(key) {
            Some(w) if w.watches == watches => return,
            Some(w) => {
                w.watches = watches;
                w.settling.set_settle(settle_ms);
                w.watched_dirs.clear();
                w.watcher = None;
            }
            None => {
                files.schedules.insert(
                    key.to_string(),
                    Watching {
                        watches,
                        settling: Settling::new(settle_ms),
                        watcher: None,
                        watched_dirs: HashSet::new(),
                        scanning: false,
                        again: false,
                        timer: None,
                        busy: HashSet::new(),
                    },
                );
            }
        }
        info!(job = %key, "watching files");
        self.list_soon(term, key, Duration::ZERO, ctx);
    }

    /// Lists `key`'s directories in `delay` (or sooner, if set sooner).
    fn list_soon(&mut self, term: u64, key: &str, delay: Duration, ctx: &mut Context<Self>) {
        let Some(files) = self.files(term) else {
            return;
        };
        let loaded = files.kv.is_some();
        let Some(w) = files.schedules.get_mut(key) else {
            return;
        };
        if !loaded {
            return;
        }
        let at = now_ms() + delay.as_millis() as u64;
        if w.timer.as_ref().is_some_and(|(when, _)| *when <= at) {
            return;
        }
        if let Some((_, handle)) = w.timer.take() {
            ctx.cancel_future(handle);
        }
        let owned = key.to_string();
        let handle = ctx.run_later(delay, move |act, ctx| act.list(term, owned, ctx));
        if let Some(w) = self.files(term).and_then(|f| f.schedules.get_mut(key)) {
            w.timer = Some((at, handle));
        }
    }

    fn list(&mut self, term: u64, key: String, ctx: &mut Context<Self>) {
        let Some(w) = self.files(term).and_then(|f| f.schedules.get_mut(&key)) else {
            return;
        };
        w.timer = None;
        if w.scanning {
            w.again = true;
            return;
        }
        w.scanning = true;
        let watches = w.watches.clone();
        let listing = tokio::task::spawn_blocking(move || io::list_dirs(&watches));
        ctx.spawn(listing.into_actor(self).map(move |listed, act, ctx| {
            let listed = listed.unwrap_or_default();
            act.on_listed(term, key, listed, ctx);
        }));
    }

    fn on_listed(
        &mut self,
        term: u64,
        key: String,
        listed: Vec<(PathBuf, Result<Vec<Found>, String>)>,
        ctx: &mut Context<Self>,
    ) {
        let paused = match self.firing(term) {
            Some(f) => f.paused.contains(submitted_name(&key)),
            None => return,
        };
        let addr = ctx.address();
        let Some(files) = self.files(term) else {
            return;
        };
        let Some(w) = files.schedules.get_mut(&key) else {
            return;
        };
        w.scanning = false;
        let mut found = Vec::new();
        let mut ok_dirs = Vec::new();
        for (dir, result) in listed {
            match result {
                Ok(files_in_dir) => {
                    if files.problems.remove(&dir).is_some() {
                        info!(job = %key, dir = %dir.display(), "directory readable again");
                    }
                    found.extend(files_in_dir);
                    io::watch_dir(w, &dir, term, &key, &addr);
                    ok_dirs.push(dir);
                }
                Err(why) => {
                    let problem = format!("{}: {why}", dir.display());
                    if files.problems.get(&dir) != Some(&problem) {
                        warn!(job = %key, dir = %dir.display(), error = %why, "cannot list the directory of a file trigger");
                        files.problems.insert(dir.clone(), problem);
                    }
                    w.watched_dirs.remove(&dir);
                }
            }
        }
        crate::metrics::agent()
            .file_watch_problems
            .set(files.problems.len() as i64);
        let scan = w.settling.scan(&found, now_ms(), paused);
        let rescan_ms = w
            .watches
            .iter()
            .map(|w| w.rescan_ms)
            .min()
            .unwrap_or(10_000);
        let next = scan
            .next_check_ms
            .map_or(rescan_ms, |at| at.saturating_sub(now_ms()).min(rescan_ms));
        let again = std::mem::take(&mut w.again);
        let settled: Vec<Found> = (scan.settled.into_iter())
            .filter(|f| w.busy.insert(f.path.clone()))
            .collect();
        let gone = stale(&files.records, &key, &found, &ok_dirs);
        let mut claims = Vec::new();
        for file in settled {
            let rk = record_key(&key, &file.path);
            let record = files.records.get(&rk).map(|(r, rev)| (r, *rev));
            match claim(record, &file) {
                Claim::Done => {
                    if let Some(w) = files.schedules.get_mut(&key) {
                        w.busy.remove(&file.path);
                    }
                }
                decision => claims.push((file, decision)),
            }
        }
        let queued = claims
            .into_iter()
            .map(|(file, decision)| (key.clone(), file, decision));
        files.waiting.extend(queued);
        self.send_files(term, ctx);
        self.delete_records(term, gone, ctx);
        let delay = if again {
            DEBOUNCE
        } else {
            Duration::from_millis(next)
        };
        self.list_soon(term, &key, delay, ctx);
    }

    /// Starts the waiting claims the in-flight bound lets go.
    fn send_files(&mut self, term: u64, ctx: &mut Context<Self>) {
        let max = self.config.agent.max_in_flight.max(1);
        let agent_id = self.id.clone();
        loop {
            let Some(files) = self.files(term) else {
                return;
            };
            let Some(kv) = files.kv.clone() else {
                return;
            };
            if files.in_flight >= max {
                return;
            }
            let Some((key, file, decision)) = files.waiting.pop_front() else {
                return;
            };
            files.in_flight += 1;
            self.claim_file(term, &key, kv, file, decision, &agent_id, ctx);
        }
    }

    /// Records the file (unless already `claimed` by this identity), then
    /// submits its order, then marks it `submitted`.
    #[allow(clippy::too_many_arguments)]
    fn claim_file(
        &mut self,
        term: u64,
        key: &str,
        kv: Kv<FileRecord>,
        file: Found,
        decision: Claim,
        agent_id: &str,
        ctx: &mut Context<Self>,
    ) {
        let job = key.to_string();
        let rk = record_key(key, &file.path);
        let claimed = file.record(key, FileState::Claimed, agent_id, now_ms());
        let order = SubmitOrder {
            job: submitted_name(key).to_string(),
            params: file.params(),
            request_id: Some(file.request_id(key)),
            slot_ms: None,
        };
        debug!(job = %key, path = %file.path, size = file.size, ?decision, "file settled");
        let bus = self.bus.clone();
        let subject = bus.subjects().submit();
        let timeout = self.config.nats.request_timeout;
        let work = io::claim_and_submit(
            kv,
            bus,
            subject,
            timeout,
            rk.clone(),
            claimed,
            order,
            decision,
        );
        self.submitting += 1;
        ctx.spawn(work.into_actor(self).map(move |outcome, act, ctx| {
            act.submitting = act.submitting.saturating_sub(1);
            act.on_claimed(term, job, rk, file, outcome, ctx);
        }));
    }

    fn on_claimed(
        &mut self,
        term: u64,
        key: String,
        rk: String,
        file: Found,
        outcome: Outcome,
        ctx: &mut Context<Self>,
    ) {
        let Some(files) = self.files(term) else {
            return;
        };
        files.in_flight = files.in_flight.saturating_sub(1);
        let now = std::time::Instant::now();
        let quiet = (files.last_failure_warning)
            .is_some_and(|at| now.duration_since(at) < FAILURE_WARN_EVERY);
        let mut retry = false;
        match outcome {
            Outcome::Submitted(record, revision, reply) => {
                crate::metrics::agent().fired(reply.duplicate, false);
                info!(job = %key, path = %file.path, order = %reply.order_id, duplicate = reply.duplicate, "file started its order");
                match revision {
                    Some(revision) => files.records.insert(rk, (record, revision)),
                    // not marked: the next Scheduler submits again and finds the order
                    None => files.records.remove(&rk),
                };
            }
            Outcome::Lost(current) => {
                debug!(job = %key, path = %file.path, "the file's record was written meanwhile");
                match current {
                    Some(current) => files.records.insert(rk, current),
                    None => files.records.remove(&rk),
                };
                retry = true;
            }
            Outcome::Failed {
                error,
                retry: again,
                record,
            } => {
                if let Some(record) = record {
                    files.records.insert(rk, record);
                }
                if again && quiet {
                    debug!(job = %key, path = %file.path, %error, "cannot start the file's order; will retry");
                    retry = true;
                } else if again {
                    files.last_failure_warning = Some(now);
                    warn!(job = %key, path = %file.path, %error, "cannot start the file's order; will retry");
                    retry = true;
                } else {
                    crate::metrics::agent().slot("skipped", "refused");
                    warn!(job = %key, path = %file.path, %error, "file not started: the broker refused its order");
                }
            }
        }
        if let Some(w) = files.schedules.get_mut(&key) {
            w.busy.remove(&file.path);
            if retry {
                w.settling.again(&file.path);
            }
        }
        if retry {
            self.list_soon(term, &key, RETRY, ctx);
        }
        self.send_files(term, ctx);
    }

    /// Deletes records (each only if still at its revision).
    fn delete_records(&mut self, term: u64, keys: Vec<(String, u64)>, ctx: &mut Context<Self>) {
        let Some(kv) = self.files(term).and_then(|f| f.kv.clone()) else {
            return;
        };
        for (rk, revision) in keys {
            let kv = kv.clone();
            let delete = async move {
                let deleted = kv.delete_if(&rk, revision).await;
                (rk, deleted)
            };
            ctx.spawn(delete.into_actor(self).map(move |(rk, deleted), act, _| {
                let Some(files) = act.files(term) else {
                    return;
                };
                match deleted {
                    Ok(()) => {
                        if files.records.get(&rk).is_some_and(|(_, r)| *r == revision) {
                            let gone = files.records.remove(&rk);
                            debug!(path = ?gone.map(|(r, _)| r.path), "file gone; record deleted");
                        }
                    }
                    Err(e) => debug!(key = %rk, error = %e, "cannot delete a file record"),
                }
            }));
        }
    }
}

impl Handler<FilesChanged> for Agent {
    type Result = ();

    fn handle(&mut self, changed: FilesChanged, ctx: &mut Self::Context) {
        self.list_soon(changed.term, &changed.key, DEBOUNCE, ctx);
    }
}
