//! The faults one seed brings: drawn up front, so the run replays exactly.

use crate::testing::Rng;

/// Until when faults happen (simulated milliseconds from the start).
pub const FAULTS_UNTIL: u64 = 12_000;

/// A fault at a moment of the run.
#[derive(Debug, Clone)]
pub enum Fault {
    /// SIGKILL a subagent; its reaper (if it has one) certifies the death.
    KillSubagent {
        s: usize,
        reaper: bool,
    },
    RestartSubagent {
        s: usize,
    },
    /// Cut a subagent off from the brokers until `until`.
    Partition {
        s: usize,
        until: u64,
    },
    /// Drop a live subagent's NATS connection until `until`: requests to
    /// it find no responders, and it is not heard.
    Disconnect {
        s: usize,
        until: u64,
    },
    /// SIGKILL the active broker; it comes back as a standby later.
    CrashBroker {
        restart_after: u64,
    },
    /// SIGSTOP the active broker for `ms`.
    PauseBroker {
        ms: u64,
    },
}

/// How the network and the journal misbehave while faults last.
#[derive(Debug, Clone, Copy)]
pub struct Weather {
    /// Per cent of messages lost, and duplicated.
    pub loss: u64,
    pub duplicate: u64,
    /// Per cent of messages delayed a lot.
    pub spike: u64,
    /// Per cent of journal writes slow, and failed (their fate unknown).
    pub slow_write: u64,
    pub failed_write: u64,
    /// Per mille of broker steps whose effects are cut short by a crash.
    pub crash_midway: u64,
    /// Per mille of journal writes and run requests held up for seconds
    /// (longer than the lease: they may land after a takeover).
    pub stall: u64,
}

/// The faults of a seed, by time.
pub fn draw(rng: &mut Rng, subagents: usize) -> (Vec<(u64, Fault)>, Weather) {
    let mut faults = Vec::new();
    let at = |rng: &mut Rng| 500 + rng.below(FAULTS_UNTIL - 3_000);
    for s in 0..subagents {
        if rng.percent(40) {
            let t = at(rng);
            let reaper = rng.percent(60);
            faults.push((t, Fault::KillSubagent { s, reaper }));
            faults.push((t + 200 + rng.below(3_000), Fault::RestartSubagent { s }));
        }
        if rng.percent(35) {
            let t = at(rng);
            let until = t + 300 + rng.below(5_000);
            faults.push((t, Fault::Partition { s, until }));
        }
        if rng.percent(25) {
            let t = at(rng);
            let until = t + 200 + rng.below(4_000);
            faults.push((t, Fault::Disconnect { s, until }));
        }
    }
    if rng.percent(35) {
        let restart_after = 300 + rng.below(3_000);
        faults.push((at(rng), Fault::CrashBroker { restart_after }));
    }
    if rng.percent(30) {
        let ms = 500 + rng.below(4_500);
        faults.push((at(rng), Fault::PauseBroker { ms }));
    }
    let weather = Weather {
        loss: rng.below(4),
        duplicate: rng.below(3),
        spike: rng.below(6),
        slow_write: rng.below(8),
        failed_write: rng.below(4),
        crash_midway: rng.below(4),
        stall: rng.below(20),
    };
    (faults, weather)
}
