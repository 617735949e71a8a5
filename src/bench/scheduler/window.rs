//! What `baton bench schedules` waits for and measures: an agent holding
//! every schedule as Scheduler ([`wait_held`]), a window of fires and their
//! lateness ([`measure`]), and with `--kill` a second agent taking over
//! from a SIGKILLed Scheduler ([`takeover`]): from the kill to the role
//! moving and to every schedule armed again, then a window after it, and
//! whether the slots due during the gap were all fired (caught up).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::{Stream, StreamExt as _};
use nix::sys::signal::Signal;
use serde::Serialize;

use super::spawn_agent;
use crate::bench::report::Latency;
use crate::bus::{Bus, Received};
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::now_ms;

/// How long after the window fires of its slots are still taken.
const LATE_GRACE: Duration = Duration::from_secs(5);
/// How often progress is printed while waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The agent that takes over with `--kill`.
pub(super) const SPARE: &str = "agent-2";
/// Longest wait for the spare agent's first heartbeat.
const SPARE_UP: Duration = Duration::from_secs(60);

/// An accepted order of a slot: its job, slot and the broker's `at_ms`.
pub(super) type Fire = (String, u64, u64);

/// How one job's slots are judged: the slots of a job in a time range,
/// and when a slot fires (a jittered slot fires after it on purpose).
pub(super) trait Slots {
    fn slots_in(&self, job: usize, from_ms: u64, to_ms: u64) -> anyhow::Result<u64>;
    fn fire_of(&self, job: &str, slot_ms: u64) -> anyhow::Result<u64>;
    fn count(&self) -> usize;
}

/// The fires of one window.
#[derive(Debug, Serialize)]
pub(super) struct Window {
    pub window_s: u64,
    /// Slots in the window, of all jobs.
    pub expected_fires: u64,
    /// Orders accepted for slots in the window.
    pub fires: usize,
    /// Slots in the window with no order accepted within the grace after it.
    pub missing_fires: u64,
    /// Fires later than the lateness tolerance.
    pub fires_over_tolerance: usize,
    /// Accepted minus fire.
    pub lateness: Latency,
}

/// A SIGKILL of the Scheduler and [`SPARE`] taking over.
#[derive(Debug, Serialize)]
pub(super) struct Takeover {
    /// From the kill to the spare's first heartbeat as Scheduler.
    pub role_moved_s: f64,
    /// From the kill to the spare reporting every schedule held.
    pub all_held_s: f64,
    /// Slots due from the kill until every schedule was held again.
    pub gap_slots: u64,
    /// Of those, slots no order was accepted for by the end of the window
    /// after (the misfire policy is `fire-all`: all are caught up).
    pub gap_missing: u64,
    /// The window measured once the spare holds every schedule.
    pub after: Window,
    pub spare_peak_rss_kib: Option<u64>,
}

type Beats = dyn Stream<Item = Received<AgentHeartbeat>> + Unpin;
type Accepted = dyn Stream<Item = Received<OrderAccepted>> + Unpin;

/// Waits until `agent` heartbeats as Scheduler holding `count` schedules.
pub(super) async fn wait_held(
    beats: &mut Beats,
    agent: &str,
    count: usize,
    timeout: Duration,
    mut on_beat: impl FnMut(&AgentHeartbeat),
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let started = Instant::now();
    let mut progress_at = Instant::now() + PROGRESS_EVERY;
    let mut last: Option<AgentHeartbeat> = None;
    loop {
        let beat = tokio::select! {
            beat = beats.next() => beat.context("the agent's heartbeats ended")?.body,
            _ = tokio::time::sleep_until(deadline) => {
                let seen = last.map_or("no heartbeat".to_string(), |hb| {
                    format!("last heartbeat: {}, {} schedules", hb.role.as_str(), hb.schedules)
                });
                bail!(
                    "{agent} did not hold {count} schedules within {} s ({seen})",
                    timeout.as_secs()
                );
            }
        };
        on_beat(&beat);
        if beat.role == AgentRole::Scheduler && beat.schedules as usize == count {
            return Ok(());
        }
        if Instant::now() >= progress_at {
            progress_at = Instant::now() + PROGRESS_EVERY;
            eprintln!(
                "{agent}: {}, {} of {count} schedules, {:.0} s",
                beat.role.as_str(),
                beat.schedules,
                started.elapsed().as_secs_f64()
            );
        }
        last = Some(beat);
    }
}

/// Takes every order accepted for a slot from now on for `seconds`, and
/// judges them against the slots due.
pub(super) async fn measure(
    bus: &Bus,
    seconds: u64,
    tolerance_ms: u64,
    slots: &impl Slots,
) -> anyhow::Result<Window> {
    let s = bus.subjects();
    let mut accepted = bus
        .listen::<OrderAccepted>(s.event("*", "*", EventKind::Accepted))
        .await?;
    bus.flush().await?;
    // slots from here on: the subscription is in place before they are due
    let from_ms = now_ms() + 100;
    let to_ms = from_ms + seconds * 1000;
    let fires = collect(&mut accepted, from_ms, to_ms).await?;
    judge(&fires, from_ms, to_ms, tolerance_ms, slots)
}

/// The fires of slots in `[from_ms, to_ms)` accepted until `LATE_GRACE`
/// after `to_ms`.
async fn collect(accepted: &mut Accepted, from_ms: u64, to_ms: u64) -> anyhow::Result<Vec<Fire>> {
    let stop = tokio::time::Instant::now()
        + Duration::from_millis(to_ms.saturating_sub(now_ms()))
        + LATE_GRACE;
    let mut fires = Vec::new();
    loop {
        let event = tokio::select! {
            event = accepted.next() => event.context("the event subscription ended")?.body,
            _ = tokio::time::sleep_until(stop) => return Ok(fires),
        };
        if let Some(slot) = event.slot_ms.filter(|s| (from_ms..to_ms).contains(s)) {
            fires.push((event.job, slot, event.at_ms));
        }
    }
}

fn judge(
    fires: &[Fire],
    from_ms: u64,
    to_ms: u64,
    tolerance_ms: u64,
    slots: &impl Slots,
) -> anyhow::Result<Window> {
    let mut lateness = Vec::with_capacity(fires.len());
    for (job, slot, at_ms) in fires {
        lateness.push(at_ms.saturating_sub(slots.fire_of(job, *slot)?) as f64);
    }
    let expected_fires = expected(slots, from_ms, to_ms)?;
    Ok(Window {
        window_s: (to_ms - from_ms) / 1000,
        expected_fires,
        fires: fires.len(),
        missing_fires: expected_fires.saturating_sub(fires.len() as u64),
        fires_over_tolerance: lateness
            .iter()
            .filter(|&&l| l > tolerance_ms as f64)
            .count(),
        lateness: Latency::of(&mut lateness),
    })
}

/// The slots of all jobs in `[from_ms, to_ms)`.
fn expected(slots: &impl Slots, from_ms: u64, to_ms: u64) -> anyhow::Result<u64> {
    (0..slots.count())
        .map(|i| slots.slots_in(i, from_ms, to_ms))
        .sum()
}

/// Starts [`SPARE`], SIGKILLs `scheduler` once the spare heartbeats, and
/// measures the takeover and a window of `seconds` after it.
pub(super) async fn takeover(
    cluster: &mut LocalCluster,
    bus: &Bus,
    scheduler: &str,
    (seconds, hold_timeout, tolerance_ms): (u64, Duration, u64),
    slots: &impl Slots,
) -> anyhow::Result<Takeover> {
    let s = bus.subjects().clone();
    let count = slots.count();
    spawn_agent(cluster, SPARE)?;
    let mut beats = bus
        .listen::<AgentHeartbeat>(s.agent_heartbeat(SPARE))
        .await?;
    tokio::time::timeout(SPARE_UP, beats.next())
        .await
        .with_context(|| format!("{SPARE} did not heartbeat within {SPARE_UP:?}"))?;
    let mut accepted = bus
        .listen::<OrderAccepted>(s.event("*", "*", EventKind::Accepted))
        .await?;
    bus.flush().await?;
    let killed_ms = now_ms();
    let killed = Instant::now();
    cluster.signal(scheduler, Signal::SIGKILL)?;
    eprintln!("SIGKILLed {scheduler}; {SPARE} takes over");
    // the gap's fires arrive while the spare loads: taken meanwhile
    let mut gap_fires: Vec<Fire> = Vec::new();
    let mut role_moved: Option<f64> = None;
    let held = {
        let wait = wait_held(&mut beats, SPARE, count, hold_timeout, |beat| {
            if beat.role == AgentRole::Scheduler && role_moved.is_none() {
                role_moved = Some(killed.elapsed().as_secs_f64());
            }
        });
        tokio::pin!(wait);
        loop {
            tokio::select! {
                held = &mut wait => break held,
                event = accepted.next() => {
                    let event = event.context("the event subscription ended")?.body;
                    if let Some(slot) = event.slot_ms.filter(|s| *s >= killed_ms) {
                        gap_fires.push((event.job, slot, event.at_ms));
                    }
                }
            }
        }
    };
    held?;
    let all_held_s = killed.elapsed().as_secs_f64();
    let held_ms = now_ms();
    eprintln!("{SPARE} holds all {count} schedules {all_held_s:.1} s after the kill; measuring for {seconds} s");
    let from_ms = now_ms() + 100;
    let to_ms = from_ms + seconds * 1000;
    let fires = collect(&mut accepted, killed_ms, to_ms).await?;
    let (in_gap, in_window): (Vec<Fire>, Vec<Fire>) = gap_fires
        .into_iter()
        .chain(fires)
        .filter(|f| f.1 < held_ms || f.1 >= from_ms)
        .partition(|f| f.1 < held_ms);
    let gap_slots = expected(slots, killed_ms, held_ms)?;
    let mut gap_seen: Vec<(&str, u64)> = in_gap.iter().map(|f| (f.0.as_str(), f.1)).collect();
    gap_seen.sort_unstable();
    gap_seen.dedup();
    let in_window: Vec<Fire> = in_window.into_iter().filter(|f| f.1 < to_ms).collect();
    Ok(Takeover {
        role_moved_s: role_moved.unwrap_or(all_held_s),
        all_held_s,
        gap_slots,
        gap_missing: gap_slots.saturating_sub(gap_seen.len() as u64),
        after: judge(&in_window, from_ms, to_ms, tolerance_ms, slots)?,
        spare_peak_rss_kib: cluster.pid(SPARE).and_then(LocalCluster::peak_memory_kib),
    })
}
