//! One round of `baton bench cluster`: SIGKILL a node of the orders
//! bucket's stream (its leader, or a follower), keep the orders coming
//! while it is down, start it again, and wait until it is a current
//! replica again; then measure the round from the times the bench noted.

use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::future::join_all;
use tokio::time::Instant;

use super::elections::{baton_part, Elections};
use super::report::{first_after, longest_gap, Round, Victim};
use super::scatter;
use super::{placement_of, Watch};
use crate::bench::broker::traffic::Seen;
use crate::launch::LocalCluster;
use crate::natsd::NatsCluster;
use crate::time::now_ms;

/// Longest wait for the stream to report a leader, and for a restarted
/// node to catch up.
const LIMIT: Duration = Duration::from_secs(30);
/// After a kill, how long a write JetStream stored just before it may
/// still be confirmed: orders accepted later, while the node is down,
/// count as accepted while down.
const IN_FLIGHT: Duration = Duration::from_millis(500);
/// How often the stream's placement is asked for.
const POLL: Duration = Duration::from_millis(200);

/// Kills the `victim` of the orders stream (two nodes for
/// [`Victim::Quorum`]), restarts it after `down`, and follows the traffic
/// until it has caught up (or [`LIMIT`] passed).
pub(super) async fn round(
    w: &mut Watch,
    cluster: &mut LocalCluster,
    number: usize,
    victim: Victim,
    down: Duration,
) -> anyhow::Result<Round> {
    let nodes = pick(w, victim).await?;
    let indexes: Vec<usize> = (nodes.iter())
        .map(|node| {
            (0..cluster.nodes().count())
                .find(|i| NatsCluster::server_name(*i) == *node)
                .with_context(|| format!("no node named {node}"))
        })
        .collect::<anyhow::Result<_>>()?;
    // a follower round starts from the worst case: the victim leading the
    // brokers' lease stream, until the active broker moves it back
    let scatter = if victim == Victim::Follower {
        let (observer, node) = (w.observer.clone(), nodes[0].clone());
        let put = async move { scatter::scatter(&observer, &node).await };
        Some(w.while_following(put).await)
    } else {
        None
    };
    let lead_orders = victim != Victim::Follower;
    let ask = Elections::before_kill(w.observer.clone(), &nodes, lead_orders);
    let mut elections = w.while_following(ask).await;
    let killed_ms = now_ms();
    elections.killed_ms = killed_ms;
    for index in &indexes {
        cluster.node_mut(*index).kill();
    }
    // the traffic is followed throughout, so replies are timed as they come
    let back = Instant::now() + down;
    w.while_following(async {
        while Instant::now() < back {
            elections.poll().await;
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    let accepted_while_down = (w.accepted_ms.iter())
        .filter(|t| **t > killed_ms + IN_FLIGHT.as_millis() as u64 && **t <= now_ms())
        .count();
    // all at once: without quorum, a node answers only once the others
    // are back too (the cluster needs a meta leader)
    let restart = join_all(
        (cluster.nodes_mut().into_iter().enumerate())
            .filter(|(i, _)| indexes.contains(i))
            .map(|(_, node)| node.start_again()),
    );
    let restarted = w
        .while_following(async {
            tokio::pin!(restart);
            loop {
                tokio::select! {
                    done = &mut restart => break done,
                    _ = async { elections.poll().await; tokio::time::sleep(POLL).await } => {}
                }
            }
        })
        .await;
    let node = nodes.join("+");
    for started in restarted {
        started.with_context(|| format!("restarting {node}"))?;
    }
    let restarted_ms = now_ms();
    elections.restarted = true;
    let (observer, stream) = (w.observer.clone(), w.stream.clone());
    let caught_ms = w
        .while_following(async {
            let deadline = Instant::now() + LIMIT;
            while Instant::now() < deadline {
                let placement = placement_of(&observer, &stream).await;
                if placement.is_some_and(|p| nodes.iter().all(|n| p.caught_up(n))) {
                    return Some(now_ms());
                }
                elections.poll().await;
                tokio::time::sleep(POLL).await;
            }
            None
        })
        .await;
    w.while_following(elections.poll()).await;
    let caught_up = caught_ms.is_some();
    let end_ms = now_ms();
    // the first finished order after the kill may come after the catch-up
    if first_after(&w.finished_ms, killed_ms).is_none() {
        w.follow_until(Instant::now() + LIMIT, |seen| {
            matches!(seen, Seen::Finished(_))
        })
        .await;
    }
    // the stall and Baton's part run to the first order accepted after the
    // kill, and after the order path's elections
    let since = killed_ms + elections.order_path_ms().unwrap_or(0);
    if first_after(&w.accepted_ms, since).is_none() {
        let accepted = |seen: &Seen| matches!(seen, Seen::Accepted(..));
        w.follow_until(Instant::now() + LIMIT, accepted).await;
    }
    let fires = w.fires();
    let from = killed_ms.saturating_sub(1000);
    // a stall lasting past the catch-up runs to the next accepted order
    let next_accepted = first_after(&w.accepted_ms, killed_ms);
    let end_ms = end_ms.max(killed_ms + next_accepted.unwrap_or(0));
    let end_ms = end_ms.max(w.accepted_ms.iter().copied().max().unwrap_or(0));
    let baton_ms = baton_part(&w.accepted_ms, killed_ms, elections.order_path_ms());
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
        catch_up_ms: caught_ms.map(|at| at.saturating_sub(restarted_ms)),
        election_ms: elections.longest_ms(),
        baton_ms,
        led: elections.led,
        elected_ms: elections.elected_ms,
        accepted_while_down,
        scattered: scatter.as_ref().is_some_and(|s| s.scattered),
        colocated_ms: scatter.and_then(|s| s.colocated_ms),
    })
}

/// The orders stream's leader, or one of its current followers, or both.
async fn pick(w: &mut Watch, victim: Victim) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if let Some(p) = w.placement().await {
            let follower = p.followers.iter().find(|f| f.current && !f.offline);
            let follower = follower.map(|f| f.name.clone());
            let nodes = match victim {
                Victim::Leader => p.leader.clone().map(|l| vec![l]),
                Victim::Follower => follower.map(|f| vec![f]),
                Victim::Quorum => p.leader.clone().zip(follower).map(|(l, f)| vec![l, f]),
            };
            if let Some(nodes) = nodes.filter(|_| p.followers.iter().all(|f| f.current)) {
                return Ok(nodes);
            }
        }
        w.follow(Instant::now() + POLL).await;
    }
    bail!("the orders stream had no leader and current followers within {LIMIT:?}")
}
