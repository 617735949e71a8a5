//! A subagent's own memory, kept small so a thousand of them fit on one
//! machine. Two measures, both measured by `baton bench scale`:
//!
//! - one malloc arena ([`one_arena`]): glibc gives each thread that
//!   allocates an arena of its own, and what it touched stays resident; a
//!   subagent has little to allocate and no thread that needs its own.
//! - its startup code dropped from its map once it runs
//!   ([`drop_startup_code`]): the command line, configuration, logging and
//!   connecting run once, yet the kernel's fault-around kept about 14 MB of
//!   the executable's code mapped in each subagent. The code pages are
//!   read-only and clean, so dropping them from this process's map loses
//!   nothing: what runs again is mapped again from the page cache, which
//!   every `baton` process shares. Only the executable mapping is touched
//!   (never the relocated data beside it, which is private).

use std::path::Path;

/// Limits malloc to one arena. Call before any thread starts.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc setting; called at startup.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}

/// Drops this process's mapped pages of its own executable code (see the
/// module docs); returns the bytes of mappings advised.
pub fn drop_startup_code() -> usize {
    let Ok(exe) = std::env::current_exe() else {
        return 0;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for (start, end) in code_mappings(&maps, &exe) {
        // SAFETY: a private, read-only, executable file mapping of our own
        // executable: its pages are clean and are faulted back in from the
        // file when next run; no pointer into it is invalidated.
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

/// The address ranges of `exe`'s executable, read-only, private mappings
/// in `/proc/self/maps` text.
fn code_mappings(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    let exe = exe.to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if perms != "r-xp" || path != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_code_mapping_is_chosen() {
        let maps = "\
5590a000-5590b000 r--p 00000000 08:01 42 /usr/bin/baton
5590b000-5590f000 r-xp 00001000 08:01 42 /usr/bin/baton
5590f000-55910000 r--p 00005000 08:01 42 /usr/bin/baton
55910000-55911000 rw-p 00006000 08:01 42 /usr/bin/baton
7f00000-7f01000 r-xp 00000000 08:01 7 /usr/lib/libc.so.6
7f02000-7f03000 rw-p 00000000 00:00 0
7f04000-7f05000 r-xp 00000000 08:01 43 /usr/bin/baton-reaper
";
        let chosen = code_mappings(maps, Path::new("/usr/bin/baton"));
        assert_eq!(chosen, vec![(0x5590b000, 0x5590f000)]);
    }

    #[test]
    fn dropping_the_code_of_a_running_process_is_harmless() {
        // the test binary itself: it runs on after its code was dropped
        assert!(drop_startup_code() > 0);
        assert_eq!(code_mappings("", Path::new("/x")), vec![]);
        assert_eq!((1..=10).sum::<u32>(), 55);
    }
}
