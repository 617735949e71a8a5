//! What `/proc` tells about the machine while a thousand subagents run:
//! each subagent's resident memory with its reaper's (found as its child
//! running `baton __reaper`, in one pass over `/proc`), how often the
//! subagents wake, the memory the machine uses, and its load average.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

/// Resident memory of the subagents, in KiB: mean and max over them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub mean_kib: f64,
    pub max_kib: u64,
}

impl Spread {
    fn of(values: &[u64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        Spread {
            mean_kib: values.iter().sum::<u64>() as f64 / values.len() as f64,
            max_kib: values.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Per-subagent memory: the subagent process, its reaper, and both
/// together; `rss` is VmRSS (shared pages of the binary included, counted
/// whole in each process), `pss` the proportional share (`Pss` of
/// `/proc/PID/smaps_rollup`: each shared page divided among the processes
/// mapping it, so N subagents' PSS add up to what they take together),
/// `anon` the private part (RssAnon), what each more subagent really costs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SubagentMemory {
    /// Subagents measured (running, with a reaper found).
    pub measured: usize,
    pub subagent_rss: Spread,
    pub reaper_rss: Spread,
    pub total_rss: Spread,
    pub total_pss: Spread,
    pub total_anon: Spread,
}

/// The memory of `subagents` (their pids) and of the reaper each started.
pub fn subagent_memory(subagents: &[u32]) -> SubagentMemory {
    let reapers = reapers_by_parent();
    let (mut own, mut reaper, mut total, mut anon) = (vec![], vec![], vec![], vec![]);
    let mut pss = vec![];
    for pid in subagents {
        let Some(s) = status(*pid) else { continue };
        let Some(r) = reapers.get(pid).and_then(|r| status(*r)) else {
            continue;
        };
        own.push(s.rss);
        reaper.push(r.rss);
        total.push(s.rss + r.rss);
        anon.push(s.anon + r.anon);
        pss.push(s.pss + r.pss);
    }
    SubagentMemory {
        measured: total.len(),
        subagent_rss: Spread::of(&own),
        reaper_rss: Spread::of(&reaper),
        total_rss: Spread::of(&total),
        total_pss: Spread::of(&pss),
        total_anon: Spread::of(&anon),
    }
}

/// Reapers (`baton __reaper`) by the pid of the subagent that started them.
fn reapers_by_parent() -> HashMap<u32, u32> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let is_reaper = cmdline
            .split(|b| *b == 0)
            .nth(1)
            .is_some_and(|arg| arg == crate::subagent::reaper::ARG.as_bytes());
        if !is_reaper {
            continue;
        }
        if let Some(parent) = parent_of(pid) {
            found.insert(parent, pid);
        }
    }
    found
}

/// The parent of `pid` (field 4 of `/proc/PID/stat`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

struct Status {
    rss: u64,
    pss: u64,
    anon: u64,
}

fn status(pid: u32) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Some(Status {
        rss: crate::launch::status_kib(&text, "VmRSS:")?,
        pss: crate::launch::status_kib(&rollup, "Pss:").unwrap_or(0),
        anon: crate::launch::status_kib(&text, "RssAnon:").unwrap_or(0),
    })
}

/// How many times the threads of `pids` went to sleep and were woken
/// (`voluntary_ctxt_switches`, summed over each process's threads): each
/// is a wakeup, what an idle subagent's CPU goes to.
pub fn wakeups(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for thread in threads.flatten() {
            let text = std::fs::read_to_string(thread.path().join("status")).unwrap_or_default();
            total += switches(&text);
        }
    }
    total
}

/// The `voluntary_ctxt_switches` count of a `/proc` status text.
fn switches(text: &str) -> u64 {
    (text.lines())
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The machine's memory in use (MemTotal - MemAvailable), in KiB.
pub fn machine_used_kib() -> Option<u64> {
    let text = std::fs::read_to_string(Path::new("/proc/meminfo")).ok()?;
    Some(
        crate::launch::status_kib(&text, "MemTotal:")?
            .saturating_sub(crate::launch::status_kib(&text, "MemAvailable:")?),
    )
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_and_spreads() {
        let text = "Name:\tbaton\nVmRSS:\t    9216 kB\nRssAnon:\t  2048 kB\n";
        assert_eq!(crate::launch::status_kib(text, "VmRSS:"), Some(9216));
        assert_eq!(crate::launch::status_kib(text, "RssAnon:"), Some(2048));
        assert_eq!(crate::launch::status_kib(text, "VmHWM:"), None);
        let rollup = "Rss:   17376 kB\nPss:    5303 kB\nPss_Dirty:  2484 kB\n";
        assert_eq!(crate::launch::status_kib(rollup, "Pss:"), Some(5303));
        let switched = "voluntary_ctxt_switches:\t179\nnonvoluntary_ctxt_switches:\t119\n";
        assert_eq!(switches(switched), 179);
        assert_eq!(switches(""), 0);
        let s = Spread::of(&[1, 2, 6]);
        assert_eq!((s.mean_kib, s.max_kib), (3.0, 6));
        assert_eq!(Spread::of(&[]).max_kib, 0);
    }

    #[test]
    fn finds_this_process_parent_and_memory() {
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        assert!(status(std::process::id()).is_some_and(|s| s.rss > 0 && s.pss > 0));
        // this thread goes to sleep and wakes: one wakeup at least
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(wakeups(&[std::process::id()]) > 0);
        assert!(machine_used_kib().is_some_and(|k| k > 0));
    }
}
