//! When a subagent heartbeats (pure). While it runs tasks or drains, every
//! `subagent.heartbeat_interval`: the broker keeps its task list and load
//! fresh. While idle, every `subagent.idle_heartbeat_interval`, at most a
//! quarter of `broker.subagent_timeout`: an idle subagent's heartbeats only
//! say it lives (a killed one is certified dead by its reaper at once), and
//! a thousand idle subagents then cost the broker a third of the
//! heartbeats. Each heartbeat announces the period to the next one, and
//! the broker probes and declares loss by that period
//! (`broker::registry::lost_after`), so a subagent on the idle pace is
//! never declared lost for being quiet.
//!
//! The subagent's clock keeps ticking at the busy pace (its orphan check
//! and reaper check run there); a tick sends a heartbeat only when one is
//! due ([`Pace::due`]).

use std::time::Duration;

/// The two heartbeat periods of a subagent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub busy: Duration,
    pub idle: Duration,
}

impl Pace {
    /// From the settings: the idle period is at least the busy one and at
    /// most a quarter of the broker's subagent timeout.
    pub fn new(busy: Duration, idle: Duration, subagent_timeout: Duration) -> Pace {
        Pace {
            busy,
            idle: idle.min(subagent_timeout / 4).max(busy),
        }
    }

    /// The period a heartbeat announces: busy while tasks run or it drains.
    pub fn interval(&self, running: usize, draining: bool) -> Duration {
        if running > 0 || draining {
            self.busy
        } else {
            self.idle
        }
    }

    /// Whether a tick `since` the last heartbeat, which announced
    /// `announced`, sends one: once the announced period is (all but half a
    /// tick) over, or sooner when the subagent is busy now and the last one
    /// announced a longer period (the broker then hears its tasks soon).
    pub fn due(
        &self,
        since: Duration,
        announced: Duration,
        running: usize,
        draining: bool,
    ) -> bool {
        let period = announced.min(self.interval(running, draining));
        since + self.busy / 2 >= period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn idle_period_is_capped_by_the_broker_timeout_and_the_busy_period() {
        let pace = Pace::new(MS(250), MS(750), Duration::from_secs(3));
        assert_eq!(pace.idle, MS(750));
        // a short subagent timeout brings it down to a quarter of it
        assert_eq!(Pace::new(MS(250), MS(750), MS(1500)).idle, MS(375));
        // never below the busy period
        assert_eq!(Pace::new(MS(250), MS(750), MS(600)).idle, MS(250));
        assert_eq!(Pace::new(MS(250), MS(100), MS(3000)).idle, MS(250));
    }

    #[test]
    fn busy_or_draining_heartbeats_at_the_busy_pace() {
        let pace = Pace::new(MS(250), MS(750), Duration::from_secs(3));
        assert_eq!(pace.interval(0, false), MS(750));
        assert_eq!(pace.interval(1, false), MS(250));
        assert_eq!(pace.interval(0, true), MS(250));
    }

    #[test]
    fn a_tick_sends_when_the_announced_period_is_over() {
        let pace = Pace::new(MS(250), MS(750), Duration::from_secs(3));
        // idle, announced 750 ms: ticks at 250 and 500 stay quiet, 750 sends
        assert!(!pace.due(MS(250), MS(750), 0, false));
        assert!(!pace.due(MS(500), MS(750), 0, false));
        assert!(pace.due(MS(750), MS(750), 0, false));
        // a tick a little early (timer jitter) still sends
        assert!(pace.due(MS(640), MS(750), 0, false));
        // busy: every tick
        assert!(pace.due(MS(250), MS(250), 1, false));
        assert!(pace.due(MS(200), MS(250), 1, false));
        // a task started after an idle heartbeat: the next tick sends
        assert!(pace.due(MS(250), MS(750), 1, false));
        assert!(pace.due(MS(250), MS(750), 0, true));
        // just after a heartbeat nothing is due
        assert!(!pace.due(MS(0), MS(250), 1, false));
    }
}
