//! Pure arithmetic on trigger slots for the Scheduler benches: which slots
//! ran twice or never, and how many slots of evenly spread interval
//! triggers fall in a window. No clock, no IO.

use std::collections::BTreeMap;

/// What the executions of a regular trigger say, slot by slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct SlotCheck {
    /// The first and last slot checked (the earliest executed, the last due).
    pub(super) first_ms: Option<u64>,
    pub(super) last_ms: Option<u64>,
    /// Slots from the first to the last, every one expected to run once.
    pub(super) checked: usize,
    /// Slots executed more than once.
    pub(super) doubles: Vec<u64>,
    /// Slots between the first and the last never executed.
    pub(super) missed: Vec<u64>,
}

/// The slot numbers in `text`, one a line; other lines are skipped.
pub(super) fn parse_slots(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Checks `executed` (slots in ms, any order, repeats meaning repeated runs)
/// of a trigger firing every `every_ms` on its multiples, from the earliest
/// executed slot up to `until_ms`: every slot in between must appear exactly
/// once. Slots after `until_ms` are not judged (they may still be running).
pub(super) fn check_slots(executed: &[u64], every_ms: u64, until_ms: u64) -> SlotCheck {
    let every_ms = every_ms.max(1);
    let mut runs = BTreeMap::<u64, usize>::new();
    for &slot in executed {
        *runs.entry(slot).or_default() += 1;
    }
    let Some(&first) = runs.keys().next() else {
        return SlotCheck::default();
    };
    if first > until_ms {
        return SlotCheck::default();
    }
    let last = first + (until_ms - first) / every_ms * every_ms;
    let mut check = SlotCheck {
        first_ms: Some(first),
        last_ms: Some(last),
        ..SlotCheck::default()
    };
    let mut slot = first;
    while slot <= last {
        check.checked += 1;
        match runs.get(&slot).copied().unwrap_or(0) {
            0 => check.missed.push(slot),
            1 => {}
            _ => check.doubles.push(slot),
        }
        slot += every_ms;
    }
    // an executed slot off the grid still counts if it repeats
    check.doubles.extend(
        runs.iter()
            .filter(|(&s, &n)| n > 1 && s <= last && (s - first) % every_ms != 0)
            .map(|(&s, _)| s),
    );
    check.doubles.sort_unstable();
    check
}

/// The start of schedule `index` of `count` sharing the period `every_ms`:
/// `anchor_ms` plus an even share of the period, so the slots of all
/// schedules together fall evenly through it.
pub(super) fn spread_start(anchor_ms: u64, every_ms: u64, index: usize, count: usize) -> u64 {
    anchor_ms + (index as u64 * every_ms) / count.max(1) as u64
}

/// The period giving `count` schedules together about `rate` fires per
/// second, at least `min_ms` and a whole number of milliseconds.
pub(super) fn period_for_rate(count: usize, rate: f64, min_ms: u64) -> u64 {
    let ms = (count as f64 * 1000.0 / rate.max(0.001)).ceil() as u64;
    ms.max(min_ms).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_run_has_no_doubles_or_misses() {
        let c = check_slots(&[3000, 1000, 2000, 4000], 1000, 3500);
        assert_eq!(c.first_ms, Some(1000));
        assert_eq!(c.last_ms, Some(3000));
        assert_eq!(c.checked, 3);
        assert!(c.doubles.is_empty() && c.missed.is_empty());
    }

    #[test]
    fn doubles_and_misses_are_named() {
        let executed = parse_slots("1000\n2000\n2000\n4000\njunk\n\n5000\n");
        let c = check_slots(&executed, 1000, 5000);
        assert_eq!(c.checked, 5);
        assert_eq!(c.doubles, vec![2000]);
        assert_eq!(c.missed, vec![3000]);
        // off-grid repeats count too
        let c = check_slots(&[1000, 1500, 1500, 2000], 1000, 2000);
        assert_eq!(c.doubles, vec![1500]);
        assert!(c.missed.is_empty());
    }

    #[test]
    fn nothing_to_check() {
        assert_eq!(check_slots(&[], 1000, 9000), SlotCheck::default());
        assert_eq!(check_slots(&[9000], 1000, 5000), SlotCheck::default());
        assert_eq!(check_slots(&[5000], 1000, 5000).checked, 1);
    }

    #[test]
    fn starts_spread_evenly_and_the_period_meets_the_rate() {
        let starts: Vec<u64> = (0..4).map(|i| spread_start(1000, 100, i, 4)).collect();
        assert_eq!(starts, vec![1000, 1025, 1050, 1075]);
        assert_eq!(period_for_rate(10_000, 100.0, 10_000), 100_000);
        assert_eq!(period_for_rate(100_000, 100.0, 10_000), 1_000_000);
        assert_eq!(period_for_rate(10, 100.0, 10_000), 10_000);
    }
}
