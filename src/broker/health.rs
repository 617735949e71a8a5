//! Agent health as the broker judges it: a level from the CPU and memory
//! use an agent's heartbeat reports, and whether an agent has been
//! unhealthy for long enough to lose the Scheduler role. Pure: callers pass
//! every figure and every timestamp in. The settings ([`HealthThresholds`],
//! [`SwitchCondition`]) are configuration (`config::health`); the agent
//! only measures and reports its figures.
//!
//! - [`level`] grades one heartbeat's CPU and memory percentages against
//!   [`HealthThresholds`]; the worse of the two figures decides.
//! - [`HealthHistory`] keeps the levels an agent had over time, and
//!   [`HealthHistory::condition_met`] says whether a [`SwitchCondition`]
//!   ("very bad for 5m") holds now.
//!
//! Levels are ordered worst first: `VeryBad < Bad < Ok < Good < Excellent`,
//! so a better level compares greater and "at or below" is `<=`.
//!
//! Load average and running work travel in heartbeats too, but do not enter
//! the level: like the seed, only CPU and memory percentages do.

use std::collections::VecDeque;
use std::time::Duration;

pub use crate::config::{HealthThresholds, LevelBounds, SwitchCondition};
pub use crate::protocol::HealthLevel;

/// The health level of an agent using `cpu_percent` of its CPU and
/// `memory_percent` of its memory: the worse of the two figures' levels.
pub fn level(cpu_percent: f32, memory_percent: f32, thresholds: &HealthThresholds) -> HealthLevel {
    grade(&thresholds.cpu, cpu_percent).min(grade(&thresholds.memory, memory_percent))
}

/// The level of one figure. A figure that is not a number (a broken
/// probe) counts as very bad.
fn grade(bounds: &LevelBounds, percent: f32) -> HealthLevel {
    if percent.is_nan() {
        HealthLevel::VeryBad
    } else if percent <= bounds.excellent {
        HealthLevel::Excellent
    } else if percent <= bounds.good {
        HealthLevel::Good
    } else if percent <= bounds.ok {
        HealthLevel::Ok
    } else if percent <= bounds.bad {
        HealthLevel::Bad
    } else {
        HealthLevel::VeryBad
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The levels one agent had, as a step function of time: each sample holds
/// from its timestamp until the next one (the latest holds until now).
///
/// Consecutive samples of the same level are merged, so the history grows
/// only with changes; [`HealthHistory::forget_before`] bounds it further.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthHistory {
    /// `(at_ms, level)`, timestamps strictly increasing, neighbours differing.
    samples: VecDeque<(u64, HealthLevel)>,
}

impl HealthHistory {
    pub fn new() -> Self {
        HealthHistory::default()
    }

    /// Records the level seen at `at_ms`. A sample older than the latest is
    /// ignored (it arrived late); one at the same time replaces it.
    pub fn record(&mut self, at_ms: u64, level: HealthLevel) {
        match self.samples.back().copied() {
            Some((last_at, _)) if at_ms < last_at => {}
            Some((last_at, _)) if at_ms == last_at => {
                self.samples.pop_back();
                self.record(at_ms, level);
            }
            Some((_, last)) if last == level => {}
            _ => self.samples.push_back((at_ms, level)),
        }
    }

    /// The latest level, if any was recorded.
    pub fn latest(&self) -> Option<HealthLevel> {
        self.samples.back().map(|&(_, level)| level)
    }

    /// The recorded changes, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = (u64, HealthLevel)> + '_ {
        self.samples.iter().copied()
    }

    /// Whether the level has been at or below `cond.at_or_below` without a
    /// break from `now_ms - cond.for_` until `now_ms`. Nothing is known before
    /// the first sample, so an empty history never meets a condition, and a
    /// streak that starts at the first sample starts there.
    pub fn condition_met(&self, cond: &SwitchCondition, now_ms: u64) -> bool {
        let mut streak_start = None;
        for &(at, level) in self.samples.iter().rev() {
            if level > cond.at_or_below {
                break;
            }
            streak_start = Some(at);
        }
        streak_start.is_some_and(|start| now_ms.saturating_sub(start) >= millis(cond.for_))
    }

    /// Drops samples superseded before `cutoff_ms`, keeping the one in force
    /// at `cutoff_ms`. [`HealthHistory::condition_met`] answers as before for
    /// any condition with `now_ms - for_ >= cutoff_ms`.
    pub fn forget_before(&mut self, cutoff_ms: u64) {
        while self.samples.len() > 1 && self.samples.get(1).is_some_and(|&(at, _)| at <= cutoff_ms)
        {
            self.samples.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthLevel::*;

    fn cond(at_or_below: HealthLevel, secs: u64) -> SwitchCondition {
        SwitchCondition {
            at_or_below,
            for_: Duration::from_secs(secs),
        }
    }

    #[test]
    fn better_levels_compare_greater() {
        assert!(VeryBad < Bad && Bad < Ok && Ok < Good && Good < Excellent);
        let mut sorted = HealthLevel::ALL;
        sorted.sort();
        assert_eq!(sorted, HealthLevel::ALL);
    }

    #[test]
    fn default_thresholds_grade_each_band_with_inclusive_upper_bounds() {
        let t = HealthThresholds::default();
        let cases = [
            (0.0, Excellent),
            (25.0, Excellent),
            (25.1, Good),
            (50.0, Good),
            (50.5, Ok),
            (75.0, Ok),
            (80.0, Bad),
            (90.0, Bad),
            (90.1, VeryBad),
            (100.0, VeryBad),
        ];
        for (percent, expected) in cases {
            assert_eq!(level(percent, percent, &t), expected, "{percent}%");
        }
    }

    #[test]
    fn the_worse_figure_decides() {
        let t = HealthThresholds::default();
        assert_eq!(level(10.0, 95.0, &t), VeryBad);
        assert_eq!(level(60.0, 10.0, &t), Ok);
        assert_eq!(level(10.0, 30.0, &t), Good);
    }

    #[test]
    fn thresholds_left_out_grade_by_default() {
        let t: HealthThresholds = toml::from_str("[cpu]\nexcellent = 10\n").expect("parse");
        assert_eq!(level(20.0, 0.0, &t), Good);
    }

    #[test]
    fn a_missing_figure_is_very_bad() {
        let t = HealthThresholds::default();
        assert_eq!(level(f32::NAN, 1.0, &t), VeryBad);
        assert_eq!(level(1.0, f32::NAN, &t), VeryBad);
    }

    #[test]
    fn empty_history_meets_nothing() {
        let h = HealthHistory::new();
        assert!(!h.condition_met(&cond(Excellent, 0), 1_000));
        assert_eq!(h.latest(), None);
    }

    #[test]
    fn condition_needs_the_whole_duration_without_a_break() {
        let mut h = HealthHistory::new();
        h.record(0, Good);
        h.record(10_000, VeryBad);
        let c = cond(VeryBad, 5);
        assert!(!h.condition_met(&c, 14_999));
        assert!(h.condition_met(&c, 15_000), "exactly the duration counts");
        h.record(16_000, Bad);
        assert!(!h.condition_met(&c, 30_000), "the streak broke");
        h.record(17_000, VeryBad);
        assert!(!h.condition_met(&c, 21_999));
        assert!(h.condition_met(&c, 22_000));
    }

    #[test]
    fn levels_below_the_bound_extend_the_streak() {
        let mut h = HealthHistory::new();
        h.record(0, Ok);
        h.record(1_000, Bad);
        h.record(2_000, VeryBad);
        h.record(3_000, Bad);
        assert!(h.condition_met(&cond(Bad, 3), 4_000));
        assert!(!h.condition_met(&cond(VeryBad, 0), 4_000));
        assert!(
            h.condition_met(&cond(Ok, 4), 4_000),
            "streak from the first sample"
        );
        assert!(
            !h.condition_met(&cond(Ok, 5), 4_000),
            "nothing known before it"
        );
    }

    #[test]
    fn record_merges_repeats_replaces_same_time_and_ignores_late_samples() {
        let mut h = HealthHistory::new();
        h.record(1_000, Good);
        h.record(2_000, Good);
        h.record(3_000, Bad);
        h.record(3_000, VeryBad);
        h.record(2_500, Excellent);
        assert_eq!(
            h.samples().collect::<Vec<_>>(),
            [(1_000, Good), (3_000, VeryBad)]
        );
        h.record(3_000, Good);
        assert_eq!(h.samples().collect::<Vec<_>>(), [(1_000, Good)]);
    }

    #[test]
    fn forgetting_keeps_answers_for_conditions_reaching_back_to_the_cutoff() {
        // Exhaustive over short histories of three levels and all small windows.
        let levels = [Good, Bad, VeryBad];
        for code in 0..levels.len().pow(4) {
            let mut h = HealthHistory::new();
            let mut c = code;
            for i in 0..4u64 {
                h.record(i * 1_000, levels[c % 3]);
                c /= 3;
            }
            let now = 5_000;
            for cutoff in (0..=now).step_by(500) {
                let mut pruned = h.clone();
                pruned.forget_before(cutoff);
                for secs in 0..=((now - cutoff) / 1_000) {
                    for bound in HealthLevel::ALL {
                        let k = cond(bound, secs);
                        assert_eq!(
                            pruned.condition_met(&k, now),
                            h.condition_met(&k, now),
                            "{h:?} cutoff {cutoff} {k:?}"
                        );
                    }
                }
            }
        }
    }
}
