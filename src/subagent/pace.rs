//! When a subagent heartbeats, when its clock ticks, and when it listens to
//! the broker's heartbeats (pure).
//!
//! Heartbeats: while it runs tasks or drains, every
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
//! Its clock ([`Pace::next_tick`]): at the busy pace while tasks run,
//! results wait for the broker's acknowledgement, it drains or is not yet
//! registered (its orphan check, result retries and registration run
//! there); idle, it ticks only when its next heartbeat is due. A tick sends
//! a heartbeat only when one is due ([`Pace::due`]). A task that starts
//! while idle brings the busy pace back at once.
//!
//! The broker's heartbeats ([`Pace::listens_always`]): the active broker
//! beats four times a second for its standbys, and every subagent
//! subscribed to them woke as often. A busy subagent listens all the time:
//! its orphan timer counts from them. An idle one has nothing to orphan,
//! and needs them only to learn a new broker's epoch (`epoch.rs`): it
//! listens at each of its ticks until it hears an active broker, then
//! stops listening until its next tick. A new broker's epoch is so learnt
//! within an idle period and a broker heartbeat; a broker gone leaves it
//! listening, as before.

use std::time::Duration;

/// What the subagent is doing, as its pace sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub running: usize,
    pub draining: bool,
    /// Results the broker has not acknowledged yet.
    pub unacked: usize,
    pub registered: bool,
}

impl Work {
    /// Tasks run or it drains: its orphan timer counts, and the broker
    /// wants its task list often.
    pub fn busy(&self) -> bool {
        self.running > 0 || self.draining
    }
}

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

    /// How long after a tick the next one comes: the busy period while it
    /// is busy, has results to retry or is not registered; idle, when its
    /// next heartbeat is due (`since` the last one, which announced
    /// `announced`), at least half a busy period away.
    pub fn next_tick(&self, since: Duration, announced: Duration, work: Work) -> Duration {
        if work.busy() || work.unacked > 0 || !work.registered {
            return self.busy;
        }
        let period = announced.min(self.idle);
        period.saturating_sub(since).max(self.busy / 2)
    }

    /// Whether it keeps listening to the broker's heartbeats after hearing
    /// an active broker: only while busy (see the module docs).
    pub fn listens_always(work: Work) -> bool {
        work.busy()
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

    fn work(running: usize, draining: bool, unacked: usize, registered: bool) -> Work {
        Work {
            running,
            draining,
            unacked,
            registered,
        }
    }

    #[test]
    fn an_idle_subagent_ticks_when_its_next_heartbeat_is_due() {
        let pace = Pace::new(MS(250), MS(750), Duration::from_secs(3));
        let idle = work(0, false, 0, true);
        // just after an idle heartbeat: one idle period away, not four ticks
        assert_eq!(pace.next_tick(MS(0), MS(750), idle), MS(750));
        // a tick that came late still lands on the heartbeat
        assert_eq!(pace.next_tick(MS(300), MS(750), idle), MS(450));
        // the last heartbeat announced the busy period: due soon
        assert_eq!(pace.next_tick(MS(0), MS(250), idle), MS(250));
        // never sooner than half a busy tick, even when overdue
        assert_eq!(pace.next_tick(MS(900), MS(750), idle), MS(125));
        // and each of those ticks finds the heartbeat due
        assert!(pace.due(MS(750), MS(750), 0, false));
    }

    #[test]
    fn tasks_results_draining_or_no_registration_tick_at_the_busy_pace() {
        let pace = Pace::new(MS(250), MS(750), Duration::from_secs(3));
        for w in [
            work(1, false, 0, true),
            work(0, true, 0, true),
            work(0, false, 2, true),
            work(0, false, 0, false),
        ] {
            assert_eq!(pace.next_tick(MS(0), MS(750), w), MS(250), "{w:?}");
        }
    }

    #[test]
    fn only_a_busy_subagent_listens_to_every_broker_heartbeat() {
        assert!(Pace::listens_always(work(1, false, 0, true)));
        assert!(Pace::listens_always(work(0, true, 0, true)));
        // idle, unacknowledged results or not: nothing to orphan
        assert!(!Pace::listens_always(work(0, false, 0, true)));
        assert!(!Pace::listens_always(work(0, false, 3, true)));
        assert!(!Pace::listens_always(work(0, false, 0, false)));
    }
}
