//! File triggers: a job (or workflow) starts one order for each new file
//! in a directory whose name matches a glob, once the file has settled.
//! Pure: the Scheduler agent lists the directories and talks to JetStream
//! (`agent/node/files.rs`); here is what it decides.
//!
//! - [`FileWatch`]: a `kind = "file"` trigger, checked and compiled
//!   (absolute `dir`, a glob `pattern`, `settle` and `rescan` in range).
//! - [`check_params`]: a job or workflow with a file trigger declares the
//!   parameters its orders get, `file` (the path) and `file_name`.
//! - [`Settling`]: which files a scan found have settled: seen with the
//!   same size and modification time for `settle`, by this Scheduler (a
//!   new Scheduler settles a file again).
//! - [`claim`]: what to do with a settled file, given its record in the
//!   files bucket; [`stale`]: which records belong to files that are gone.
//!
//! A file is known by its identity: the job, its path, size, modification
//! time and inode ([`Found`]). Its record is keyed by job and path
//! ([`record_key`]), so the bucket holds one key per path ever used, and a
//! different file at the same path replaces the record. The order's
//! request id derives from the whole identity ([`Found::request_id`]), so
//! a submit repeated after a crash or by a second Scheduler finds the
//! first order, and a new file at the same path starts a new one.
//!
//! Architecture invariant: the record of a file is written (`claimed`)
//! before its order is submitted, and only a record whose file is gone
//! from a directory that was listed is deleted; a directory that cannot
//! be listed deletes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobMatcher};

use super::TriggerError;
use crate::protocol::{FileRecord, FileState, ParamSpec, TriggerSpec};

/// The parameter an order gets the file's path in.
pub const PARAM_FILE: &str = "file";
/// The parameter an order gets the file's name (without its directory) in.
pub const PARAM_FILE_NAME: &str = "file_name";
/// The longest `settle` accepted.
pub const MAX_SETTLE: Duration = Duration::from_secs(24 * 3600);
/// The shortest and longest `rescan` accepted.
pub const RESCAN_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));

/// A file trigger, compiled.
#[derive(Debug, Clone)]
pub struct FileWatch {
    pub dir: PathBuf,
    pub pattern: String,
    matcher: GlobMatcher,
    pub settle_ms: u64,
    pub rescan_ms: u64,
}

impl PartialEq for FileWatch {
    fn eq(&self, other: &Self) -> bool {
        (&self.dir, &self.pattern, self.settle_ms, self.rescan_ms)
            == (&other.dir, &other.pattern, other.settle_ms, other.rescan_ms)
    }
}

impl FileWatch {
    /// Checks and compiles a `file` trigger (other kinds are an error).
    pub fn compile(spec: &TriggerSpec) -> Result<FileWatch, TriggerError> {
        let TriggerSpec::File {
            dir,
            pattern,
            settle,
            rescan,
        } = spec
        else {
            return Err(file_error("kind", "not a file trigger".into()));
        };
        let path = Path::new(dir);
        if !path.is_absolute() {
            return Err(file_error(
                "dir",
                format!("'{dir}' is not an absolute path: write it from the root (/data/in), as every agent sees it"),
            ));
        }
        if pattern.is_empty() || pattern.contains('/') {
            return Err(file_error(
                "pattern",
                format!(
                    "'{pattern}' must be a non-empty glob of file names (`*.csv`), without '/'"
                ),
            ));
        }
        let matcher = Glob::new(pattern)
            .map_err(|e| {
                file_error(
                    "pattern",
                    format!("'{pattern}' is not a glob: {}", e.kind()),
                )
            })?
            .compile_matcher();
        if *settle > MAX_SETTLE {
            return Err(file_error(
                "settle",
                format!("{} is longer than 24h", humantime::format_duration(*settle)),
            ));
        }
        let (least, most) = RESCAN_RANGE;
        if *rescan < least || *rescan > most {
            return Err(file_error(
                "rescan",
                format!(
                    "{} must be between 100ms and 1h",
                    humantime::format_duration(*rescan)
                ),
            ));
        }
        Ok(FileWatch {
            dir: path.to_path_buf(),
            pattern: pattern.clone(),
            matcher,
            settle_ms: settle.as_millis() as u64,
            rescan_ms: rescan.as_millis() as u64,
        })
    }

    /// The file triggers among `specs`, compiled (those that do not
    /// compile are left out: the deploy refused them).
    pub fn all(specs: &[TriggerSpec]) -> Vec<FileWatch> {
        specs
            .iter()
            .filter_map(|s| FileWatch::compile(s).ok())
            .collect()
    }

    /// Whether a file named `name` (no directory) counts.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

fn file_error(field: &'static str, reason: String) -> TriggerError {
    TriggerError::File { field, reason }
}

/// A job or workflow with a file trigger must declare `file` and
/// `file_name`, the parameters its file orders get. `Err`: the field and why.
pub fn check_params(
    triggers: &[TriggerSpec],
    params: &BTreeMap<String, ParamSpec>,
) -> Result<(), (String, String)> {
    let Some(i) = triggers
        .iter()
        .position(|t| matches!(t, TriggerSpec::File { .. }))
    else {
        return Ok(());
    };
    let missing: Vec<&str> = [PARAM_FILE, PARAM_FILE_NAME]
        .into_iter()
        .filter(|p| !params.contains_key(*p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let tables: Vec<String> = missing
        .iter()
        .map(|p| format!("[job.params.{p}]"))
        .collect();
    Err((
        format!("triggers[{i}]"),
        format!(
            "a file trigger gives each order the parameters `file` (the path) and `file_name`; declare {} (in a workflow: [workflow.params.…]; with a default, e.g. \"\", for orders submitted by hand)",
            tables.join(" and ")
        ),
    ))
}

/// A file a scan found: a regular file whose name matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: String,
    pub name: String,
    pub size: u64,
    pub mtime_ms: u64,
    pub inode: u64,
}

impl Found {
    /// The parameters its order gets.
    pub fn params(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (PARAM_FILE.to_string(), self.path.clone()),
            (PARAM_FILE_NAME.to_string(), self.name.clone()),
        ])
    }

    /// The request id of its order for schedule `job`: `JOB@file:UUID`,
    /// the UUID from the whole identity.
    pub fn request_id(&self, job: &str) -> String {
        let identity = format!(
            "{job}\0{}\0{}\0{}\0{}",
            self.path, self.size, self.mtime_ms, self.inode
        );
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, identity.as_bytes());
        format!("{job}@file:{}", id.simple())
    }

    /// Whether `record` is of this very file (not an earlier one at its path).
    pub fn is(&self, record: &FileRecord) -> bool {
        (&record.path, record.size, record.mtime_ms, record.inode)
            == (&self.path, self.size, self.mtime_ms, self.inode)
    }

    /// Its record for `job`, in `state`.
    pub fn record(&self, job: &str, state: FileState, agent_id: &str, now_ms: u64) -> FileRecord {
        FileRecord {
            job: job.to_string(),
            path: self.path.clone(),
            size: self.size,
            mtime_ms: self.mtime_ms,
            inode: self.inode,
            state,
            order_id: None,
            agent_id: agent_id.to_string(),
            at_ms: now_ms,
        }
    }
}

/// The files bucket's key of `job`'s record of `path`: `f` and a UUID of
/// both (KV keys allow few characters; paths have any).
pub fn record_key(job: &str, path: &str) -> String {
    let name = format!("{job}\0{path}");
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
    format!("f{}", id.simple())
}

/// What to do with a settled file, given the record of its path (and
/// that record's revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No record: create one (`claimed`), then submit.
    Create,
    /// The record is of an earlier file at this path: replace it (if still
    /// at `revision`), then submit.
    Replace { revision: u64 },
    /// This file's record is `claimed`: its submit may not have reached
    /// the broker; submit again (the same request id), then mark it.
    Resubmit { revision: u64 },
    /// Its order was submitted: nothing to do.
    Done,
}

/// Decides about a settled file from the record of its path.
pub fn claim(record: Option<(&FileRecord, u64)>, file: &Found) -> Claim {
    match record {
        None => Claim::Create,
        Some((r, revision)) if !file.is(r) => Claim::Replace { revision },
        Some((r, revision)) => match r.state {
            FileState::Claimed => Claim::Resubmit { revision },
            FileState::Submitted => Claim::Done,
        },
    }
}

/// The records of `job` whose file is gone: its path is not among `found`
/// while its directory is among `listed` (listed in full by this scan).
/// Their keys and revisions, for a delete that loses to a newer write.
pub fn stale(
    records: &HashMap<String, (FileRecord, u64)>,
    job: &str,
    found: &[Found],
    listed: &[PathBuf],
) -> Vec<(String, u64)> {
    let present: std::collections::HashSet<&str> = found.iter().map(|f| f.path.as_str()).collect();
    let mut out: Vec<(String, u64)> = (records.iter())
        .filter(|(_, (r, _))| r.job == job)
        .filter(|(_, (r, _))| {
            Path::new(&r.path)
                .parent()
                .is_some_and(|dir| listed.iter().any(|l| l == dir))
        })
        .filter(|(_, (r, _))| !present.contains(r.path.as_str()))
        .map(|(key, (_, revision))| (key.clone(), *revision))
        .collect();
    out.sort();
    out
}

/// One file as this Scheduler has seen it.
#[derive(Debug, Clone)]
struct Seen {
    size: u64,
    mtime_ms: u64,
    inode: u64,
    /// When it was first seen as it is now.
    since_ms: u64,
    /// Reported settled (as it is now).
    reported: bool,
}

/// What a scan settled.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Files that settled, each reported once (until [`Settling::again`]).
    pub settled: Vec<Found>,
    /// When the next file would settle, if nothing changes: scan then.
    pub next_check_ms: Option<u64>,
}

/// The files of one schedule being settled: a file has settled once two
/// scans `settle` apart found it with the same size, modification time and
/// inode. A file that changes starts settling again; one that is gone is
/// forgotten.
#[derive(Debug, Default)]
pub struct Settling {
    settle_ms: u64,
    files: BTreeMap<String, Seen>,
}

impl Settling {
    pub fn new(settle_ms: u64) -> Self {
        Settling {
            settle_ms,
            files: BTreeMap::new(),
        }
    }

    pub fn set_settle(&mut self, settle_ms: u64) {
        self.settle_ms = settle_ms;
    }

    /// Takes a scan's files at `now_ms`. While `paused`, files settle but
    /// none is reported (they are once resumed).
    pub fn scan(&mut self, found: &[Found], now_ms: u64, paused: bool) -> Scan {
        let mut current = BTreeMap::new();
        let mut scan = Scan::default();
        for file in found {
            let seen = match self.files.remove(&file.path) {
                Some(s)
                    if (s.size, s.mtime_ms, s.inode) == (file.size, file.mtime_ms, file.inode) =>
                {
                    s
                }
                _ => Seen {
                    size: file.size,
                    mtime_ms: file.mtime_ms,
                    inode: file.inode,
                    since_ms: now_ms,
                    reported: false,
                },
            };
            let mut seen = seen;
            if !seen.reported {
                let at = seen.since_ms.saturating_add(self.settle_ms);
                if at <= now_ms && !paused {
                    seen.reported = true;
                    scan.settled.push(file.clone());
                } else if at > now_ms {
                    scan.next_check_ms = Some(scan.next_check_ms.map_or(at, |n| n.min(at)));
                }
            }
            current.insert(file.path.clone(), seen);
        }
        self.files = current;
        scan
    }

    /// Reports `path` again at the next scan, if it is still as it was (its
    /// claim or submit failed and is to be tried again).
    pub fn again(&mut self, path: &str) {
        if let Some(seen) = self.files.get_mut(path) {
            seen.reported = false;
        }
    }

    /// Reports every file again at the next scan (after a resume: one
    /// refused meanwhile is tried again; [`claim`] skips those done).
    pub fn again_all(&mut self) {
        self.files.values_mut().for_each(|s| s.reported = false);
    }

    /// Files being watched.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests;
