//! What every bench's report shares: the spread of a set of measurements
//! (`Latency`: p50/p99/max) and the ways its tables print figures. Each
//! bench prints its report through `CommonArgs::emit`: as JSON, or as its
//! table.

use serde::Serialize;

/// The spread of a set of measurements, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// The names of [`Latency::values`], as tables print them.
    pub const NAMES: [&'static str; 3] = ["p50", "p99", "max"];

    /// p50, p99 and max.
    pub fn values(&self) -> [f64; 3] {
        [self.p50_ms, self.p99_ms, self.max_ms]
    }

    /// Sorts `values` (milliseconds) and takes p50, p99 and max.
    pub fn of(values: &mut [f64]) -> Latency {
        values.sort_by(|a, b| a.total_cmp(b));
        Latency {
            p50_ms: percentile(values, 0.50),
            p99_ms: percentile(values, 0.99),
            max_ms: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Milliseconds as printed: `n/a` when nothing was measured.
pub fn ms_or_na(value: f64, measured: usize) -> String {
    if measured == 0 {
        "n/a".to_string()
    } else {
        format!("{value:.0} ms")
    }
}

/// Prints `spread` as three lines (see [`spread_lines`]).
pub fn print_spread(label: &str, spread: &Latency, decimals: usize) {
    for line in spread_lines(label, spread, decimals) {
        println!("{line}");
    }
}

/// `spread` as three lines, `<label> p50`, `<label> p99` and `<label> max`,
/// in milliseconds with `decimals` places.
fn spread_lines(label: &str, spread: &Latency, decimals: usize) -> Vec<String> {
    let named = Latency::NAMES.into_iter().zip(spread.values());
    named
        .map(|(name, value)| format!("  {:<18}{value:.decimals$} ms", format!("{label} {name}")))
        .collect()
}

/// A peak memory in MiB as printed: `n/a` when unknown.
pub fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

/// A table of spreads, one row a measurement: p50, p99 and max, and how
/// many values each was taken over (`n/a` where none).
pub struct SpreadTable {
    /// Width of the label column.
    pub label: usize,
    /// Width of the count column.
    pub count: usize,
}

impl SpreadTable {
    /// A kill bench's table: the `rounds` killed, then the times from the
    /// kill, one row a `(label, spread, rounds it was measured in)`.
    pub fn print_kills(&self, rounds: usize, rows: &[(&str, &Latency, usize)]) {
        println!("  rounds (kills)    {rounds}");
        println!();
        self.header("from the kill to", "rounds");
        for &(label, spread, n) in rows {
            self.row(label, spread, n);
        }
    }

    /// The header: `title` over the labels, `count` over the counts.
    fn header(&self, title: &str, count: &str) {
        println!(
            "  {title:<w$}{:>10}{:>10}{:>10}{count:>c$}",
            "p50",
            "p99",
            "max",
            w = self.label,
            c = self.count
        );
    }

    /// One row: `spread`, taken over `n` values.
    fn row(&self, label: &str, spread: &Latency, n: usize) {
        println!(
            "  {label:<w$}{:>10}{:>10}{:>10}{n:>c$}",
            ms_or_na(spread.p50_ms, n),
            ms_or_na(spread.p99_ms, n),
            ms_or_na(spread.max_ms, n),
            w = self.label,
            c = self.count
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn latency_sorts_first() {
        let l = Latency::of(&mut [3.0, 1.0, 2.0]);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (2.0, 3.0, 3.0));
        assert_eq!(Latency::of(&mut []).max_ms, 0.0);
    }

    #[test]
    fn figures_print_n_a_when_unmeasured() {
        assert_eq!(ms_or_na(12.4, 0), "n/a");
        assert_eq!(ms_or_na(12.4, 1), "12 ms");
        assert_eq!(mib(Some(2048)), "2.0 MiB");
        assert_eq!(mib(None), "n/a");
    }

    #[test]
    fn a_spread_prints_as_three_aligned_lines() {
        let l = Latency {
            p50_ms: 12.34,
            p99_ms: 56.0,
            max_ms: 78.96,
        };
        assert_eq!(
            spread_lines("hand-off", &l, 1),
            [
                "  hand-off p50      12.3 ms",
                "  hand-off p99      56.0 ms",
                "  hand-off max      79.0 ms",
            ]
        );
        assert_eq!(
            spread_lines("lateness", &l, 0)[0],
            "  lateness p50      12 ms"
        );
    }
}
