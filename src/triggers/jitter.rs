//! Where in its window a jittered slot fires. Pure, and the same on every
//! agent and build: FNV-1a and SplitMix64, not std's hasher, whose output
//! may change between Rust releases.

/// The schedule's part of the hash: its key (a job's name or a workflow's key).
pub fn seed(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An offset in `[0, room)` for `slot`; 0 when `room` is 0.
pub fn offset(seed: u64, slot_ms: u64, room_ms: u64) -> u64 {
    if room_ms == 0 {
        return 0;
    }
    let mut z = (seed ^ slot_ms).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % room_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_fixed_spread_and_in_range() {
        // fixed values: agents on other builds must compute the same
        assert_eq!(seed("tick"), 2_195_086_931_694_220_932);
        assert_eq!(
            offset(seed("tick"), 60_000, 30_000),
            offset(seed("tick"), 60_000, 30_000)
        );
        let offsets: Vec<u64> = (0..1000)
            .map(|i| offset(seed(&format!("job-{i}")), 0, 30_000))
            .collect();
        assert!(offsets.iter().all(|o| *o < 30_000));
        let early = offsets.iter().filter(|o| **o < 15_000).count();
        assert!(
            (400..600).contains(&early),
            "spread over the window: {early} of 1000 in its first half"
        );
        assert_eq!(offset(1, 2, 0), 0);
    }
}
