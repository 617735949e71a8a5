//! One round of `baton bench cluster`: SIGKILL a node of the orders
//! bucket's stream (its leader, or a follower), keep the orders coming
//! while it is down, start it again, and wait until it is a current
//! replica again; then measure the round from the times the bench noted.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::time::Instant;

use super::report::{first_after, longest_gap, Round, Victim};
use super::Watch;
use crate::bench::broker::traffic::Seen;
use crate::launch::LocalCluster;
use crate::natsd::NatsCluster;
use crate::time::now_ms;

/// Longest wait for the stream to report a leader, and for a restarted
/// node to catch up.
const LIMIT: Duration = Duration::from_secs(30);
/// How often the stream's placement is asked for.
const POLL: Duration = Duration::from_millis(200);

/// Kills the `victim` of the orders stream, restarts it after `down`, and
/// follows the traffic until it has caught up (or [`LIMIT`] passed).
pub(super) async fn round(
    w: &mut Watch,
    cluster: &mut LocalCluster,
    number: usize,
    victim: Victim,
    down: Duration,
) -> anyhow::Result<Round> {
    let node = pick(w, victim).await?;
    let index = (0..cluster.nodes().count())
        .find(|i| NatsCluster::server_name(*i) == node)
        .with_context(|| format!("no node named {node}"))?;
    let killed_ms = now_ms();
    cluster.node_mut(index).kill();
    w.follow(Instant::now() + down).await;
    let restart = cluster.node_mut(index).start_again();
    // nodes answer only once the cluster has a meta leader: keep the
    // traffic moving while the restarted node waits for one
    let restarted = {
        tokio::pin!(restart);
        loop {
            tokio::select! {
                done = &mut restart => break done,
                _ = w.follow(Instant::now() + POLL) => {}
            }
        }
    };
    restarted.with_context(|| format!("restarting {node}"))?;
    let restarted_ms = now_ms();
    let deadline = Instant::now() + LIMIT;
    let mut caught_up = false;
    while Instant::now() < deadline {
        if w.placement().await.is_some_and(|p| p.caught_up(&node)) {
            caught_up = true;
            break;
        }
        w.follow(Instant::now() + POLL).await;
    }
    let (end_ms, caught_ms) = (now_ms(), now_ms());
    // the first finished order after the kill may come after the catch-up
    if first_after(&w.finished_ms, killed_ms).is_none() {
        w.follow_until(Instant::now() + LIMIT, |seen| {
            matches!(seen, Seen::Finished(_))
        })
        .await;
    }
    let fires = w.fires();
    let from = killed_ms.saturating_sub(1000);
    // a stall lasting past the catch-up runs to the next accepted order
    let next_accepted = first_after(&w.accepted_ms, killed_ms);
    let end_ms = end_ms.max(killed_ms + next_accepted.unwrap_or(0));
    Ok(Round {
        round: number,
        victim,
        node,
        killed_at_ms: killed_ms,
        restarted_at_ms: restarted_ms,
        next_accepted_ms: next_accepted,
        next_finished_ms: first_after(&w.finished_ms, killed_ms),
        stall_ms: longest_gap(&w.accepted_ms, from, end_ms),
        trigger_gap_ms: (!fires.is_empty()).then(|| longest_gap(&fires, from, end_ms)),
        caught_up,
        catch_up_ms: caught_up.then_some(caught_ms - restarted_ms),
    })
}

/// The orders stream's leader, or one of its current followers.
async fn pick(w: &mut Watch, victim: Victim) -> anyhow::Result<String> {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if let Some(p) = w.placement().await {
            let follower = p.followers.iter().find(|f| f.current && !f.offline);
            let name = match victim {
                Victim::Leader => p.leader.clone(),
                Victim::Follower => follower.map(|f| f.name.clone()),
            };
            if let Some(name) = name.filter(|_| p.followers.iter().all(|f| f.current)) {
                return Ok(name);
            }
        }
        w.follow(Instant::now() + POLL).await;
    }
    bail!("the orders stream had no leader and current followers within {LIMIT:?}")
}
