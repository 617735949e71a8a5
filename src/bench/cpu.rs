//! CPU time per order, read from `/proc/PID/stat` before and after a
//! bench's run: what each process of the cluster spent (user and system,
//! the subagents' reapers too), and what the children a process waited for
//! spent (a subagent's tasks).
//! Also the machine's raw spawn rate: the bench's own program started as
//! fast as possible by a few threads, without Baton, so a run's orders per
//! second can be read as a share of what the machine allows.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on Linux
/// whatever the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// CPU times of one process, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    pub user: u64,
    pub system: u64,
    /// User time of the children it waited for.
    pub children_user: u64,
    /// System time of the children it waited for.
    pub children_system: u64,
}

impl Times {
    /// The times in a `/proc/PID/stat` line (fields 14 to 17; the command
    /// name in parentheses may hold spaces and parentheses).
    pub fn parse(stat: &str) -> Option<Times> {
        let rest = &stat[stat.rfind(')')? + 1..];
        // after the name: state is field 3, utime field 14
        let mut fields = rest.split_whitespace().skip(11);
        let mut next = || fields.next()?.parse::<u64>().ok();
        Some(Times {
            user: next()?,
            system: next()?,
            children_user: next()?,
            children_system: next()?,
        })
    }

    /// The times of process `pid` now, if it runs.
    pub fn of(pid: u32) -> Option<Times> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Times::parse(&stat)
    }

    /// What was spent from `earlier` to `self`.
    pub fn since(&self, earlier: &Times) -> Times {
        Times {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            children_user: self.children_user.saturating_sub(earlier.children_user),
            children_system: self.children_system.saturating_sub(earlier.children_system),
        }
    }

    fn add(&self, other: &Times) -> Times {
        Times {
            user: self.user + other.user,
            system: self.system + other.system,
            children_user: self.children_user + other.children_user,
            children_system: self.children_system + other.children_system,
        }
    }
}

/// The processes whose CPU a run accounts, sampled together.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub broker: Times,
    pub nats_server: Times,
    /// All subagents, summed.
    pub subagents: Times,
    /// Their reapers (`subagent/reaper.rs`), summed: told of every task.
    pub reapers: Times,
    /// This process: the bench's client, submitting and following orders.
    pub client: Times,
}

impl Sample {
    /// Samples `broker`, `nats_server`, every pid in `subagents` and the
    /// reaper each started.
    pub fn take(broker: Option<u32>, nats_server: u32, subagents: &[u32]) -> Sample {
        let of = |pid: Option<u32>| pid.and_then(Times::of).unwrap_or_default();
        let sum = |pids: &mut dyn Iterator<Item = u32>| {
            pids.map(|p| of(Some(p)))
                .fold(Times::default(), |a, b| a.add(&b))
        };
        let mut reapers = subagents
            .iter()
            .filter_map(|p| crate::launch::reaper_of(*p));
        Sample {
            broker: of(broker),
            nats_server: of(Some(nats_server)),
            subagents: sum(&mut subagents.iter().copied()),
            reapers: sum(&mut reapers),
            client: of(Some(std::process::id())),
        }
    }
}

/// CPU per order, in microseconds, from two samples around a run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CpuPerOrder {
    /// The broker, user and system.
    pub broker_us: f64,
    pub nats_server_us: f64,
    /// The subagents' own time, user and system, all subagents summed.
    pub subagents_us: f64,
    /// Of `subagents_us`, the system time (where spawning shows).
    pub subagents_system_us: f64,
    /// The tasks the subagents ran (children they waited for).
    pub subagent_children_us: f64,
    /// The subagents' reapers, user and system.
    pub reapers_us: f64,
    /// The bench's own client (it shares the machine).
    pub client_us: f64,
}

impl CpuPerOrder {
    /// Per order of `orders` finished between `before` and `after`.
    pub fn between(before: &Sample, after: &Sample, orders: usize) -> CpuPerOrder {
        let per = |ticks: u64| {
            if orders == 0 {
                0.0
            } else {
                ticks as f64 / USER_HZ * 1e6 / orders as f64
            }
        };
        let broker = after.broker.since(&before.broker);
        let nats = after.nats_server.since(&before.nats_server);
        let subs = after.subagents.since(&before.subagents);
        let reapers = after.reapers.since(&before.reapers);
        let client = after.client.since(&before.client);
        CpuPerOrder {
            broker_us: per(broker.user + broker.system),
            nats_server_us: per(nats.user + nats.system),
            subagents_us: per(subs.user + subs.system),
            subagents_system_us: per(subs.system),
            subagent_children_us: per(subs.children_user + subs.children_system),
            reapers_us: per(reapers.user + reapers.system),
            client_us: per(client.user + client.system),
        }
    }
}

/// The machine's raw spawn rate: `spawns` runs of `program` (output to
/// /dev/null, each waited for) shared by `threads` threads, started as fast
/// as they go.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawSpawn {
    pub threads: usize,
    pub spawns: usize,
    pub failed: usize,
    pub elapsed_s: f64,
    pub spawns_per_s: f64,
}

impl RawSpawn {
    /// Measures; blocks the calling thread until all runs ended.
    pub fn measure(program: &str, spawns: usize, threads: usize) -> RawSpawn {
        let threads = threads.max(1);
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (next, failed, program) = (next.clone(), failed.clone(), program.to_string());
                std::thread::spawn(move || {
                    while next.fetch_add(1, Ordering::Relaxed) < spawns {
                        let ran = Command::new(&program)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                        if !ran.is_ok_and(|s| s.success()) {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.join();
        }
        let elapsed_s = started.elapsed().as_secs_f64();
        RawSpawn {
            threads,
            spawns,
            failed: failed.load(Ordering::Relaxed),
            elapsed_s,
            spawns_per_s: if elapsed_s > 0.0 {
                spawns as f64 / elapsed_s
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_the_four_times() {
        let stat = "4242 (sh -c (x) y) S 1 4240 4240 0 -1 4194560 100 0 0 0 \
                    17 5 230 41 20 0 1 0 100 0 0";
        let t = Times::parse(stat).unwrap();
        assert_eq!(
            t,
            Times {
                user: 17,
                system: 5,
                children_user: 230,
                children_system: 41
            }
        );
        assert_eq!(Times::parse("garbage"), None);
        assert_eq!(Times::parse("7 (short) S 1 2"), None);
    }

    #[test]
    fn our_own_times_are_readable() {
        assert!(Times::of(std::process::id()).is_some());
    }

    #[test]
    fn cpu_per_order_divides_the_difference() {
        let t = |u, s, cu, cs| Times {
            user: u,
            system: s,
            children_user: cu,
            children_system: cs,
        };
        let before = Sample {
            broker: t(10, 10, 0, 0),
            nats_server: t(5, 5, 0, 0),
            subagents: t(0, 0, 0, 0),
            reapers: t(3, 3, 0, 0),
            client: t(1, 1, 0, 0),
        };
        let after = Sample {
            broker: t(20, 20, 0, 0),
            nats_server: t(15, 5, 0, 0),
            subagents: t(30, 70, 40, 60),
            reapers: t(5, 7, 0, 0),
            client: t(6, 1, 0, 0),
        };
        // 100 ticks = 1 s over 1000 orders = 1000 µs
        let cpu = CpuPerOrder::between(&before, &after, 1000);
        assert_eq!(cpu.broker_us, 200.0);
        assert_eq!(cpu.nats_server_us, 100.0);
        assert_eq!(cpu.subagents_us, 1000.0);
        assert_eq!(cpu.subagents_system_us, 700.0);
        assert_eq!(cpu.subagent_children_us, 1000.0);
        assert_eq!(cpu.reapers_us, 60.0);
        assert_eq!(cpu.client_us, 50.0);
        assert_eq!(CpuPerOrder::between(&before, &after, 0).broker_us, 0.0);
        // a restarted process counts nothing rather than a negative
        assert_eq!(CpuPerOrder::between(&after, &before, 10).broker_us, 0.0);
    }

    #[test]
    fn raw_spawn_counts_runs_and_failures() {
        let r = RawSpawn::measure("true", 6, 2);
        assert_eq!((r.spawns, r.failed, r.threads), (6, 0, 2));
        assert!(r.spawns_per_s > 0.0);
        let r = RawSpawn::measure("/no/such/program", 2, 1);
        assert_eq!(r.failed, 2);
    }
}
