//! A deterministic simulation of a Baton cluster, run by `cargo test`.
//!
//! One seed gives one run: brokers (each a real [`Core`], taking over from
//! the journal when the active one's lease runs out), simulated subagents
//! (`subagent.rs`), clients submitting job and workflow orders (some of
//! job `r`, whose tasks fail more often than not and which has two quick,
//! jittered retries) and operators cancelling some, an in-memory journal (`journal.rs`, with
//! the broker's own compare-and-swap write) and a simulated clock, all
//! driven by one queue of timed events. Faults come from the seed
//! (`faults.rs`): subagents killed (with or without their reaper's death
//! certificate) and restarted, partitions, lost, duplicated and delayed
//! messages, slow and failed journal writes, a broker crashed (also midway
//! through carrying out one step's effects), paused past its lease and
//! resumed, restarted. Failed workflow orders expire within the run
//! (`broker.failed_hold` is 3 s here), across those faults. After the
//! faults the run settles (every order ended for good) and `check.rs`
//! holds it to the guarantees.
//!
//! `cargo test` runs 3,000 seeds (`SEEDS`, about 15 s). A failing seed
//! prints its trace; `BATON_SIM_SEED=N cargo test --lib broker::sim --
//! --nocapture` replays it exactly (and prints the trace), and
//! `BATON_SIM_SEEDS=N` runs more seeds.
//!
//! Not yet simulated: suspend and resume, concurrency policies, drains,
//! deploys, and a new order's create held up until after a takeover (known
//! gap: the new broker has read the journal already, so such an order waits
//! for a repeat of its submit, which takes it up, or for the next takeover;
//! without a request id only the latter).
//!
//! A run request is held up at most a little longer than the lease
//! (`world/brokers.rs`): the server delivers a message to a subscriber
//! within its write deadline or drops the connection, and the orphan
//! timeout plus kill grace must exceed that deadline (10 s by default in
//! nats-server; Baton's defaults are 10 s + 5 s), or a task dispatched
//! before a subagent was counted out could start after it.

mod check;
mod faults;
mod journal;
mod subagent;
mod world;

use std::time::Instant;

/// How many seeds `cargo test` runs.
const SEEDS: u64 = 3_000;

#[test]
fn the_guarantees_hold_under_seeded_faults() {
    if let Some(seed) = std::env::var("BATON_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let run = world::run(seed);
        println!("{}", run.trace.join("\n"));
        assert!(
            run.violations.is_empty(),
            "seed {seed}: {:#?}",
            run.violations
        );
        return;
    }
    let seeds = std::env::var("BATON_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS);
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let failed: Vec<(u64, world::Outcome)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..seeds)
                        .filter(|seed| seed % threads == t)
                        .map(|seed| (seed, world::run(seed)))
                        .filter(|(_, run)| !run.violations.is_empty())
                        .take(1)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    if let Some((seed, run)) = failed.into_iter().min_by_key(|(seed, _)| *seed) {
        let tail = run.trace.len().saturating_sub(150);
        panic!(
            "seed {seed} broke a guarantee:\n{:#?}\nlast trace lines:\n{}\nreplay: BATON_SIM_SEED={seed} cargo test --lib broker::sim -- --nocapture",
            run.violations,
            run.trace[tail..].join("\n")
        );
    }
    println!(
        "{seeds} seeds held every guarantee in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_seed_replays_exactly() {
    let (a, b) = (world::run(7), world::run(7));
    assert_eq!(a.trace, b.trace);
    assert!(a.trace.len() > 100, "the run did something");
}
