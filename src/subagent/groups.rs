//! What `/proc` says about a dead subagent's tasks, for its reaper: whether
//! a process group still has a live member, how long to wait for killed
//! groups to empty, and which processes carry the marks of a task the
//! reaper was told was about to start ([`process::TASK_ENV`],
//! [`process::INSTANCE_ENV`]) but not which group it got.
//!
//! Architecture invariant: reads `/proc` and sends signals, nothing else;
//! the reaper decides when.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::process;

/// Waits until every group has no live process; returns the tasks of the
/// groups that emptied and of those that did not within `limit` (a task
/// with a group left is a survivor, whatever its other groups did).
pub fn wait_gone(groups: &BTreeMap<i32, String>, limit: Duration) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut left: Vec<(i32, &String)> = groups.iter().map(|(p, t)| (*p, t)).collect();
    let mut emptied = BTreeSet::new();
    loop {
        left.retain(|(pgid, task)| {
            let gone = group_gone(*pgid);
            if gone {
                emptied.insert((*task).clone());
            } else {
                // a process that forked after the first kill
                let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
            }
            !gone
        });
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let survivors: BTreeSet<String> = left.into_iter().map(|(_, t)| t.clone()).collect();
    let killed = emptied.difference(&survivors).cloned().collect();
    (killed, survivors.into_iter().collect())
}

/// Whether no live process is left in the group: none at all, or only
/// zombies (dead, waiting for their new parent to collect them).
pub fn group_gone(pgid: i32) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Err(Errno::ESRCH) => true,
        Err(_) => false,
        Ok(()) => !live_member(pgid),
    }
}

/// Whether `/proc` shows a process of group `pgid` that is not a zombie.
fn live_member(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        pid_of(&entry).is_some()
            && std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| stat_state_and_group(&stat))
                .is_some_and(|(state, group)| group == pgid && live(state))
    })
}

/// The process groups of the live processes that carry the marks of the
/// subagent process `instance` and one of `tasks`: group -> task. A process
/// in the middle of its `exec` shows no environment yet (the kernel lets
/// its parent go and closes its inherited descriptors first); while one is
/// seen and a task is not found, the scan is repeated, up to `limit`.
pub fn marked(instance: &str, tasks: &BTreeSet<String>, limit: Duration) -> BTreeMap<i32, String> {
    let deadline = Instant::now() + limit;
    loop {
        let (found, in_exec) = scan(instance, tasks);
        let named: BTreeSet<&String> = found.values().collect();
        if named.len() == tasks.len() || !in_exec || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One pass of [`marked`]; also whether a process was seen in its `exec`.
fn scan(instance: &str, tasks: &BTreeSet<String>) -> (BTreeMap<i32, String>, bool) {
    let mut found = BTreeMap::new();
    let mut in_exec = false;
    if tasks.is_empty() {
        return (found, in_exec);
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (found, in_exec);
    };
    for entry in entries.flatten() {
        if pid_of(&entry).is_none() {
            continue;
        }
        // unreadable: another user's process, or gone already
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let Some((state, group)) = stat_state_and_group(&stat) else {
            continue;
        };
        if !live(state) || group <= 1 {
            continue;
        }
        if environ.is_empty() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            in_exec |= cmdline.is_empty() && !kernel_thread(&stat);
            continue;
        }
        if let Some(task) = mark_of(&environ, instance).filter(|t| tasks.contains(t)) {
            found.insert(group, task);
        }
    }
    (found, in_exec)
}

/// Whether a `/proc/PID/stat` line is a kernel thread's (`PF_KTHREAD` in
/// its flags, field 9): no environment, ever.
fn kernel_thread(stat: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    rest.split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// The task named in a process's environment (NUL-separated `KEY=VALUE`)
/// when it also names the subagent process `instance`.
pub fn mark_of(environ: &[u8], instance: &str) -> Option<String> {
    let (mut task, mut ours) = (None, false);
    for var in environ.split(|b| *b == 0) {
        let Some((key, value)) = std::str::from_utf8(var)
            .ok()
            .and_then(|v| v.split_once('='))
        else {
            continue;
        };
        if key == process::TASK_ENV {
            task = Some(value.to_string());
        } else if key == process::INSTANCE_ENV {
            ours = value == instance;
        }
    }
    task.filter(|_| ours)
}

fn pid_of(entry: &std::fs::DirEntry) -> Option<i32> {
    entry.file_name().to_str()?.parse().ok()
}

fn live(state: char) -> bool {
    state != 'Z' && state != 'X'
}

/// The state letter and process group in a `/proc/PID/stat` line (the
/// command name in parentheses may hold spaces and parentheses).
pub fn stat_state_and_group(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn proc_stat_lines_give_state_and_group() {
        let stat = "4242 (sh -c (x)) S 1 4240 4240 0 -1 4194560 100 0";
        assert_eq!(stat_state_and_group(stat), Some(('S', 4240)));
        assert_eq!(stat_state_and_group("7 (zombie) Z 1 7 7"), Some(('Z', 7)));
        assert_eq!(stat_state_and_group("garbage"), None);
    }

    #[test]
    fn a_mark_names_the_task_only_for_its_own_subagent_process() {
        let env = b"PATH=/bin\0BATON_TASK_ID=o-1\0BATON_SUBAGENT_INSTANCE=i1\0";
        assert_eq!(mark_of(env, "i1").as_deref(), Some("o-1"));
        assert_eq!(mark_of(env, "i2"), None);
        assert_eq!(mark_of(b"BATON_TASK_ID=o-1\0", "i1"), None);
        assert_eq!(mark_of(b"BATON_SUBAGENT_INSTANCE=i1\0", "i1"), None);
        assert_eq!(mark_of(b"\xff\0=\0", "i1"), None);
    }

    #[test]
    fn kernel_threads_are_told_by_their_flags() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0";
        assert!(kernel_thread(kthread));
        assert!(!kernel_thread(
            "7303 (sh) R 7279 7303 15661 0 -1 4194304 2 0"
        ));
        assert!(!kernel_thread("garbage"));
    }

    #[test]
    fn a_killed_group_is_seen_gone_and_an_empty_one_at_once() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pgid = child.id() as i32;
        assert!(!group_gone(pgid), "the group lives");
        killpg(Pid::from_raw(pgid), Signal::SIGKILL).unwrap();
        let groups = BTreeMap::from([(pgid, "t".to_string())]);
        let (killed, survivors) = wait_gone(&groups, Duration::from_secs(5));
        assert_eq!(killed, vec!["t".to_string()]);
        assert!(survivors.is_empty());
        let _ = child.wait();
        assert!(group_gone(pgid));
    }

    #[test]
    fn marked_processes_are_found_by_task_and_subagent_process() {
        let instance = format!("test-{}", std::process::id());
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .env(process::TASK_ENV, "o-7")
            .env(process::INSTANCE_ENV, &instance)
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pgid = child.id() as i32;
        let tasks = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let limit = Duration::from_secs(5);
        let found = marked(&instance, &tasks(&["o-7"]), limit);
        assert_eq!(found, BTreeMap::from([(pgid, "o-7".to_string())]));
        let quick = Duration::from_millis(50);
        assert!(marked(&instance, &tasks(&["o-8"]), quick).is_empty());
        assert!(marked("another", &tasks(&["o-7"]), quick).is_empty());
        killpg(Pid::from_raw(pgid), Signal::SIGKILL).unwrap();
        let _ = child.wait();
        assert!(wait_gone(&found, Duration::from_secs(5)).1.is_empty());
    }
}
