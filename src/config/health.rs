//! The health settings of `[scheduler]`: the thresholds grading an
//! agent's CPU and memory use ([`HealthThresholds`], checked to rise from
//! excellent to bad) and when the
//! Scheduler hands its role on ([`SwitchCondition`]). The broker grades
//! heartbeats with them (`broker::health`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::HealthLevel;

/// Upper bounds, in percent, of one figure for each level but the worst: a
/// figure at or below `excellent` is excellent, else at or below `good` is
/// good, and so on; above `bad` it is very bad.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelBounds {
    pub excellent: f32,
    pub good: f32,
    pub ok: f32,
    pub bad: f32,
}

impl Default for LevelBounds {
    fn default() -> Self {
        LevelBounds {
            excellent: 25.0,
            good: 50.0,
            ok: 75.0,
            bad: 90.0,
        }
    }
}

impl LevelBounds {
    fn ascending(&self) -> bool {
        let b = [self.excellent, self.good, self.ok, self.bad];
        b.iter().all(|x| !x.is_nan()) && b.windows(2).all(|w| w[0] <= w[1])
    }
}

/// Thresholds for CPU and memory use. In TOML:
///
/// ```toml
/// [cpu]
/// excellent = 25
/// good = 50
/// ok = 75
/// bad = 90
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthThresholds {
    pub cpu: LevelBounds,
    pub memory: LevelBounds,
}

/// Thresholds that cannot grade anything sensibly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdsError {
    #[error("{figure} thresholds must rise from excellent to bad")]
    NotAscending { figure: &'static str },
}

impl HealthThresholds {
    /// Checks that each figure's bounds rise (or stay equal) from excellent to bad.
    pub fn check(&self) -> Result<(), ThresholdsError> {
        for (figure, bounds) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            if !bounds.ascending() {
                return Err(ThresholdsError::NotAscending { figure });
            }
        }
        Ok(())
    }
}

/// When the current Scheduler should hand its role on: its level has been at
/// or below `at_or_below` continuously for at least `for_`. In TOML:
/// `{ at_or_below = "very_bad", for = "5m" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchCondition {
    pub at_or_below: HealthLevel,
    #[serde(rename = "for", with = "humantime_serde")]
    pub for_: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthLevel::*;

    #[test]
    fn thresholds_deserialize_with_defaults_for_what_is_left_out() {
        let t: HealthThresholds = toml::from_str("[cpu]\nexcellent = 10\n").expect("parse");
        assert_eq!(t.cpu.excellent, 10.0);
        assert_eq!(t.cpu.good, 50.0);
        assert_eq!(t.memory, LevelBounds::default());
        assert!(toml::from_str::<HealthThresholds>("[cpu]\nexcelent = 10\n").is_err());
        assert!(toml::from_str::<HealthThresholds>("disk = {}\n").is_err());
    }

    #[test]
    fn thresholds_must_rise() {
        assert!(HealthThresholds::default().check().is_ok());
        let mut t = HealthThresholds::default();
        t.memory.ok = 40.0;
        assert_eq!(
            t.check(),
            Err(ThresholdsError::NotAscending { figure: "memory" })
        );
        t.memory.ok = f32::NAN;
        assert!(t.check().is_err());
    }

    #[test]
    fn switch_condition_deserializes_humantime_and_snake_case_levels() {
        let c: SwitchCondition =
            toml::from_str("at_or_below = \"very_bad\"\nfor = \"5m\"\n").expect("parse");
        assert_eq!(
            c,
            SwitchCondition {
                at_or_below: VeryBad,
                for_: Duration::from_secs(300),
            }
        );
        assert_eq!(VeryBad.to_string(), "very_bad");
        assert!(
            toml::from_str::<SwitchCondition>("at_or_below = \"awful\"\nfor = \"5m\"\n").is_err()
        );
    }
}
