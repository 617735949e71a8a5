//! A subagent's own memory, kept small so a thousand of them fit on one
//! machine. Two measures, both measured by `baton bench scale`:
//!
//! - one malloc arena ([`one_arena`]): glibc gives each thread that
//!   allocates an arena of its own, and what it touched stays resident; a
//!   subagent has little to allocate and no thread that needs its own.
//!   Rust's allocations go to mimalloc (`src/bin/baton-subagent.rs`: 34 µs
//!   less CPU per task, 0.9 MiB more private memory idle); this bounds
//!   what the C library allocates for itself.
//! - the clean pages of its executable and shared libraries dropped from
//!   its map ([`drop_clean_pages`]) once it is registered, again once it
//!   has been idle for [`DROP_AFTER_IDLE`] after running tasks, and every
//!   [`DROP_EVERY_IDLE`] while idle ([`drop_again`]: its heartbeats, the
//!   broker's and the connection's upkeep fault pages back in over time); the lean reaper (`relay.rs`) drops its own once it
//!   has been introduced. The command line, configuration, logging and
//!   connecting run once, a task's spawn and supervision only while it
//!   runs, yet the kernel's fault-around (64 KB mapped at each fault,
//!   `MADV_RANDOM` does not stop it) kept about 14 MB of the executable's
//!   code and 3 MB of its read-only data, and 1.6 MB of libc's, libm's and
//!   the loader's, mapped in each subagent. Those pages are read-only and
//!   clean, so dropping them from this process's map loses nothing: what
//!   runs again is mapped again from the page cache, which every process
//!   shares. Only read-only file mappings holding no anonymous page are
//!   touched: never the relocated data (RELRO, read-only once relocated
//!   but each page a private copy, about 1.6 MB of a subagent's private
//!   memory), nor the writable data.

use std::time::Duration;

/// How long a subagent stays idle after running tasks before it drops the
/// code they ran again.
pub const DROP_AFTER_IDLE: Duration = Duration::from_secs(5);

/// How often an idle subagent drops its clean pages again without having
/// run tasks.
pub const DROP_EVERY_IDLE: Duration = Duration::from_secs(10);

/// Limits malloc to one arena. Call before any thread starts.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc setting; called at startup.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}

/// Whether to drop the clean pages again: it has been idle (nothing
/// running, every result acknowledged) for [`DROP_AFTER_IDLE`], and tasks
/// ran since they were last dropped (`worked`) or that was
/// [`DROP_EVERY_IDLE`] ago (`since_drop`).
pub fn drop_again(worked: bool, idle_for: Option<Duration>, since_drop: Duration) -> bool {
    idle_for.is_some_and(|idle| idle >= DROP_AFTER_IDLE)
        && (worked || since_drop >= DROP_EVERY_IDLE)
}

/// Drops this process's mapped pages of its executable's and shared
/// libraries' code and read-only data (see the module docs); returns the
/// bytes of mappings advised.
pub fn drop_clean_pages() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut advised = 0;
    for (start, end) in clean_mappings(&smaps) {
        // SAFETY: a private, read-only mapping of a file (the executable
        // or a shared library) holding no anonymous page: every page is a clean copy of the file,
        // faulted back in from it when next used; no pointer into it is
        // invalidated, and read-only pages never become private copies.
        // It assumes nothing unmaps a library between the read of smaps and
        // this call (a subagent never unloads one).
        let done = unsafe {
            nix::libc::madvise(
                start as *mut nix::libc::c_void,
                end - start,
                nix::libc::MADV_DONTNEED,
            )
        };
        if done == 0 {
            advised += end - start;
        }
    }
    advised
}

/// The address ranges of the private read-only mappings of files (code
/// `r-xp`, data `r--p`; a path, not `[vdso]` or an anonymous mapping) whose
/// `Anonymous:` is 0, in `/proc/self/smaps` text (a mapping whose count is
/// missing is not chosen).
fn clean_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut chosen = Vec::new();
    // the mapping being read: its range if it is a candidate, and whether
    // its anonymous count was read as 0
    let mut current: Option<((usize, usize), bool)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.ends_with(':') {
            if first == "Anonymous:" {
                if let Some((_, clean)) = &mut current {
                    *clean = fields.next() == Some("0");
                }
            }
            continue;
        }
        if let Some((range, true)) = current.take() {
            chosen.push(range);
        }
        let perms = fields.next();
        let path = fields.nth(3);
        let file = path.is_some_and(|p| p.starts_with('/'));
        if !matches!(perms, Some("r-xp" | "r--p")) || !file {
            continue;
        }
        let range = first.split_once('-').and_then(|(start, end)| {
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end))
        });
        current = range.map(|r| (r, false));
    }
    if let Some((range, true)) = current {
        chosen.push(range);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `/proc/self/smaps` entry.
    fn entry(range: &str, perms: &str, path: &str, anonymous: Option<u64>) -> String {
        let mut text = format!("{range} {perms} 00000000 08:01 42 {path}\nRss:  8 kB\n");
        if let Some(kb) = anonymous {
            text += &format!("Anonymous:  {kb} kB\n");
        }
        text + "VmFlags: rd mr mw me\n"
    }

    #[test]
    fn only_clean_read_only_file_mappings_are_chosen() {
        let exe = "/usr/bin/baton";
        let smaps = [
            entry("5590a000-5590b000", "r--p", exe, Some(0)),
            entry("5590b000-5590f000", "r-xp", exe, Some(0)),
            // the relocated data: private copies, never dropped
            entry("5590f000-55910000", "r--p", exe, Some(4)),
            entry("55910000-55911000", "rw-p", exe, Some(0)),
            entry("7f00000-7f01000", "r-xp", "/usr/lib/libc.so.6", Some(0)),
            entry("7f02000-7f03000", "rw-p", "", Some(4)),
            entry("7f04000-7f05000", "r-xp", "[vdso]", Some(0)),
            entry("7f04800-7f04900", "r--p", "", Some(0)),
            // no count: not known clean
            entry("7f06000-7f07000", "r--p", exe, None),
            entry("7f08000-7f09000", "r-xp", exe, Some(0)),
        ]
        .concat();
        let chosen = clean_mappings(&smaps);
        assert_eq!(
            chosen,
            vec![
                (0x5590a000, 0x5590b000),
                (0x5590b000, 0x5590f000),
                (0x7f00000, 0x7f01000),
                (0x7f08000, 0x7f09000)
            ]
        );
        assert_eq!(clean_mappings(""), vec![]);
    }

    #[test]
    fn dropping_the_clean_pages_of_a_running_process_is_harmless() {
        // the test binary itself: it runs on after its code and read-only
        // data were dropped, and reads its strings and tables again
        assert!(drop_clean_pages() > 0);
        assert_eq!((1..=10).sum::<u32>(), 55);
        let text = format!("{:?}", vec!["read", "only"]);
        assert_eq!(text, "[\"read\", \"only\"]");
    }

    #[test]
    fn drops_again_after_work_or_a_while_and_only_when_idle() {
        let (after, every) = (DROP_AFTER_IDLE, DROP_EVERY_IDLE);
        let just = Duration::from_secs(1);
        assert!(drop_again(true, Some(after), just), "tasks ran");
        assert!(!drop_again(true, Some(after / 2), every), "idle too short");
        assert!(!drop_again(true, None, every * 10), "busy");
        assert!(!drop_again(false, Some(after * 10), just), "dropped lately");
        assert!(drop_again(false, Some(after), every), "idle upkeep");
    }
}
